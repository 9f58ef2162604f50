"""A map-style dataset over Carvana samples: decode, resize, augment, hand back uint8 tensors.

Images leave the dataset as uint8 (3, H, W) and masks as uint8 (1, H, W): a quarter of the bytes of
float32 through the DataLoader's queues and the host-to-device copy. With soft masks, each item also
carries `coverage`, uint8 (1, H, W): the share of car in each pixel (0..255), the training target;
`mask` is then that share thresholded at one half, for the metrics. Normalisation happens on the
device, inside the LightningModule, so a checkpoint carries the statistics it was trained with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from carvana_seg.data.cache import DecodedCache
from carvana_seg.data.sample import Sample, load_sample
from carvana_seg.errors import DataError


def train_augmentation(
    hflip_p: float, extra: Sequence[A.BasicTransform] = (), seed: int | None = None, same_size: bool = True
) -> A.Compose:
    """The training-time augmentation: a horizontal flip, then any extra albumentations transforms.

    `same_size=False` lets the mask be a multiple of the photo's size: a flip acts on each array
    alone, so it stays exact, and `Reframe` scales its geometry to each array; other transforms with pixel
    geometry would not (the data module refuses them).
    """
    return A.Compose([A.HorizontalFlip(p=hflip_p), *extra], seed=seed, is_check_shapes=same_size)


def seed_worker_augmentation(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: give each worker's albumentations pipeline its own random stream.

    Albumentations keeps a private generator that every worker would otherwise inherit as an identical
    copy, so all workers would flip the same way. The torch seed of a worker is distinct per worker and
    deterministic under `seed_everything(workers=True)`.
    """
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info else None
    if transform is not None:
        transform.set_random_seed(info.seed % 2**32)


class CarvanaDataset(Dataset):
    """Photos (and masks) of `samples` at `size` = (H, W), optionally augmented.

    Masks come from the samples' mask files, or from run-length strings keyed by image name
    (`rle_masks`, as read from train_masks.csv); both give identical tensors. With a `cache`, the
    decoded arrays are read from it instead of from the files (augmentation still runs every time);
    the cache must hold masks of the same kind (`soft` or not) and size. With `soft`, items carry
    `coverage` (the training target) beside the thresholded `mask`. Masks are at `mask_size`
    (default: `size`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        size: tuple[int, int],
        transform: A.Compose | None = None,
        rle_masks: Mapping[str, str] | None = None,
        cache: DecodedCache | None = None,
        soft: bool = False,
        mask_size: tuple[int, int] | None = None,
    ) -> None:
        self.samples = list(samples)
        self.soft = soft
        self.cache = cache
        self.size = (int(size[0]), int(size[1]))
        self.mask_size = (int(mask_size[0]), int(mask_size[1])) if mask_size else self.size
        self.transform = transform
        self.rle_masks = rle_masks
        if rle_masks is not None:
            missing = [s.name for s in self.samples if s.name not in rle_masks]
            if missing:
                raise DataError(f"{len(missing)} images have no row in the masks CSV, e.g. {missing[:5]}")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The resized RGB photo and mask (or coverage) of sample `index`, before augmentation."""
        sample = self.samples[index]
        if self.cache is not None:
            return self.cache.get(sample.name)
        return load_sample(sample, self.size, self.rle_masks, self.soft, self.mask_size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        image, mask = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask) if mask is not None else self.transform(image=image)
            image, mask = out["image"], out.get("mask")
        item: dict[str, torch.Tensor | int] = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "index": index,
        }
        if mask is not None and self.soft:
            item["coverage"] = torch.from_numpy(np.ascontiguousarray(mask)[None])
            mask = (mask >= 128).view(np.uint8)
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask)[None])
        return item
