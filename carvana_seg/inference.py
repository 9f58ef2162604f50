"""What evaluation and prediction share: a trained module from a checkpoint, photos at the network's
size, and logits brought back to each photo's full size.

Full size is where Kaggle scored: the network runs at its training size, its logits are resized
bilinearly to the photo's own size (1280x1918 for Carvana), and only then thresholded, so edges come
out smooth instead of as the staircase of an up-scaled binary mask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from carvana_seg.data import rle
from carvana_seg.data.decode import image_size, read_image, read_mask, resize_mask
from carvana_seg.data.errors import DataError
from carvana_seg.errors import InputError
from carvana_seg.module import SegmentationModule
from carvana_seg.runtime import resolve_precision


def load_module(ckpt_path: str | Path, device: torch.device | str = "cpu") -> tuple[SegmentationModule, dict]:
    """The trained module of a checkpoint written by `carvana_seg.train`, in eval mode, and its run config."""
    path = Path(ckpt_path).expanduser()
    if not path.is_file():
        raise InputError(f"ckpt_path {path} does not exist")
    try:
        # weights_only: tensors and plain containers only, never arbitrary pickled code.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise InputError(
            f"ckpt_path {path} is not a readable PyTorch checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict) or "carvana_seg" not in checkpoint or "state_dict" not in checkpoint:
        raise InputError(
            f"ckpt_path {path} is not a carvana_seg checkpoint: it has no run configuration "
            "(checkpoints written by `python -m carvana_seg.train` have one)"
        )
    config = checkpoint["carvana_seg"]["config"]
    options = {
        k: config["module"][k] for k in ("threshold", "mean", "std", "channels_last") if k in config["module"]
    }
    module = SegmentationModule(
        net=instantiate(config["model"]),
        loss=instantiate(config["loss"]),
        optimizer=None,
        run_config=config,
        **options,
    )
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    try:
        module.net.load_state_dict(weights)
    except RuntimeError as err:
        raise InputError(f"ckpt_path {path}: its weights do not fit its own model config: {err}") from err
    return module.to(device).eval(), config


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device} but no CUDA GPU is visible")
    return torch.device(device)


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device`: "auto" is bf16/16 mixed on CUDA and fp32 on the
    CPU, as in training; an explicit bf16-mixed autocasts on the CPU too (fast where it has AVX512-BF16)."""
    resolved = str(resolve_precision(precision, "cuda" if device.type == "cuda" else "cpu"))
    if resolved.startswith("32") or resolved.startswith("64"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved.startswith("bf16") else torch.float16
    if device.type != "cuda" and dtype != torch.bfloat16:
        raise ValueError(f"precision {precision} needs CUDA; on the CPU use 32-true or bf16-mixed")
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def predict_logits(module: SegmentationModule, images: Tensor, tta_hflip: bool = False) -> Tensor:
    """fp32 logits (B, 1, h, w) at the input size; with `tta_hflip`, of the mean of the probabilities
    of the photo and of its mirror image."""
    logits = module(images).float()
    if tta_hflip:
        mirrored = module(images.flip(-1)).float().flip(-1)
        probability = (torch.sigmoid(logits) + torch.sigmoid(mirrored)) / 2
        logits = torch.logit(probability, eps=1e-7)
    return logits


class PhotoDataset(Dataset):
    """Photos at the network's input size, with their name and full size and, when labelled, their
    mask at full and at input size. A file that cannot be read comes back as an item with `error`
    set (instead of an exception in a DataLoader worker), so the caller decides: stop or skip."""

    def __init__(
        self,
        images: Sequence[Path],
        size: Sequence[int],
        masks: Sequence[Path | None] | None = None,
        rle_masks: Mapping[str, str] | None = None,
    ) -> None:
        self.images = list(images)
        self.size = (int(size[0]), int(size[1]))
        self.masks = list(masks) if masks is not None else None
        self.rle_masks = rle_masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.images[index]
        item: dict[str, Any] = {"name": path.name, "index": index, "error": ""}
        try:
            full_size = image_size(path)
            image = read_image(path, self.size)
            mask = self._mask(index, full_size)
        except DataError as err:
            item.update(image=torch.zeros(3, *self.size, dtype=torch.uint8), full_size=(0, 0), error=str(err))
            return item
        item.update(
            image=torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))), full_size=full_size
        )
        if mask is not None:
            item["mask"] = torch.from_numpy(mask)
            item["mask_small"] = torch.from_numpy(resize_mask(mask, self.size))
        return item

    def _mask(self, index: int, full_size: tuple[int, int]) -> np.ndarray | None:
        name = self.images[index].name
        if self.rle_masks is not None:
            return rle.decode(self.rle_masks[name], full_size)
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
