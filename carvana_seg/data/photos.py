"""Photos for evaluation and prediction: each decoded at the network's input size, with its name, its
full size and (when labelled) its mask, batched so that photos of different full sizes can share a
batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from carvana_seg.data import rle
from carvana_seg.data.decode import read_mask, read_photo, resize_mask
from carvana_seg.errors import DataError


class PhotoDataset(Dataset):
    """Photos at the network's input size (`size`; None: as stored, for a model that resizes them
    itself), with their name and full size and, when labelled, their
    mask at full and at input size. A file that cannot be read comes back as an item with `error`
    set (instead of an exception in a DataLoader worker), so the caller decides: stop or skip; so does
    a photo listed in `errors` (name: why), which a check before the run found broken, without being
    decoded (a truncated JPEG decodes without an error, into grey)."""

    def __init__(
        self,
        images: Sequence[Path],
        size: Sequence[int] | None,
        masks: Sequence[Path | None] | None = None,
        rle_masks: Mapping[str, str] | None = None,
        errors: Mapping[str, str] | None = None,
    ) -> None:
        self.images = list(images)
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.masks = list(masks) if masks is not None else None
        self.rle_masks = rle_masks
        self.errors = dict(errors or {})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.images[index]
        item: dict[str, Any] = {"name": path.name, "index": index, "error": ""}
        try:
            if path.name in self.errors:
                raise DataError(self.errors[path.name])
            image, full_size = read_photo(path, self.size)
            mask = self._mask(index, full_size)
        except DataError as err:
            placeholder = self.size or (1, 1)
            item.update(
                image=torch.zeros(3, *placeholder, dtype=torch.uint8), full_size=(0, 0), error=str(err)
            )
            return item
        item.update(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), full_size=full_size
        )
        if mask is not None:
            item["mask"] = torch.from_numpy(mask)
            item["mask_small"] = torch.from_numpy(resize_mask(mask, self.size or full_size))
        return item

    def _mask(self, index: int, full_size: tuple[int, int]) -> np.ndarray | None:
        name = self.images[index].name
        if self.rle_masks is not None:
            return rle.decode(self.rle_masks[name], full_size, name=name)
        if self.masks is None or self.masks[index] is None:
            return None
        mask = read_mask(self.masks[index])
        if mask.shape != full_size:
            raise DataError(f"mask {self.masks[index]} is {mask.shape}, its image {name} is {full_size}")
        return mask


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the photos; keep masks as lists, since photos of a folder may differ in full size."""
    batch: dict[str, Any] = {"image": torch.stack([item["image"] for item in items])}
    for key in ("name", "index", "error", "full_size", "mask", "mask_small"):
        if key in items[0]:
            batch[key] = [item.get(key) for item in items]
    return batch


def photo_loader(dataset: PhotoDataset, batch_size: int, num_workers: int, pin_memory: bool) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate,
        persistent_workers=False,
    )


def batches_by_size(full_sizes: Sequence[tuple[int, int]]) -> Iterator[tuple[tuple[int, int], list[int]]]:
    """Group batch positions by full size, so each group is resized in one call."""
    groups: dict[tuple[int, int], list[int]] = {}
    for position, size in enumerate(full_sizes):
        groups.setdefault(tuple(size), []).append(position)
    yield from groups.items()
