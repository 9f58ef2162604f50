"""The LightningDataModule: a Carvana-layout folder in, by-car train/val DataLoaders out."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from carvana_seg.core.distributed import unrepeated
from carvana_seg.data.cache import open_or_build, usable_cache_dir
from carvana_seg.data.dataset import CarvanaDataset, seed_worker_augmentation, train_augmentation
from carvana_seg.data.labelled import MASK_SOURCES, MaskSource, labelled_samples
from carvana_seg.data.layout import MASK_CSV, check_folds, split_by_car
from carvana_seg.data.photos import PhotoDataset, photo_loader
from carvana_seg.data.sample import Sample
from carvana_seg.errors import DataError
from carvana_seg.options import boolean, pixel_size, whole_number

log = logging.getLogger(__name__)


def default_num_workers() -> int:
    """One loader process per spare core, at most 8: the training process keeps a core for itself."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, cores - 1))


def resolve_num_workers(num_workers: int | str) -> int:
    """A `num_workers` option (train, evaluate and predict alike): "auto" or a count."""
    if num_workers == "auto":
        return default_num_workers()
    if isinstance(num_workers, str) and num_workers.isdecimal():  # "${oc.env:WORKERS}" is text
        num_workers = int(num_workers)
    # A whole number only: 2.5 is refused, not cut to 2, and true is not 1.
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise DataError(f"data.num_workers must be 'auto' or a whole number >= 0, got {num_workers!r}")
    return num_workers


class CarvanaDataModule(pl.LightningDataModule):
    """Train/val loaders over a folder in Kaggle's Carvana layout, split by car id.

    Args:
        root: the data folder (train/ or train_hq/, train_masks/, optionally train_masks.csv).
        image_size: (H, W) every image and mask is resized to.
        val_fraction: share of the cars held out for validation (not used with `folds`).
        split_seed: seed of the car-id split (independent of the training seed).
        folds: deal the cars into this many folds (`layout.car_folds`) for cross-validation; None: the
            `val_fraction` split.
        fold: with `folds`, the fold (0..folds-1) whose cars are the validation set.
        mask_source: "files" reads train_masks/; "csv" decodes train_masks.csv instead; "auto" (the
            default) takes the CSV when it lists every photo (Kaggle ships both with the same masks, and
            a run-length mask decodes ~25x faster than its GIF) and the files otherwise. The mask files,
            when there are, are paired and checked against the photos either way.
        soft_masks: train on the share of car in each pixel (the full-size mask area-averaged to
            `image_size`) instead of a nearest-neighbour binary mask: batches then carry `coverage`
            (uint8 0..255) beside `mask` (that share >= 1/2, for the metrics), and the module learns
            where edges fall between pixels, which is what scoring at full size rewards.
        mask_scale: masks at this multiple of `image_size` (1: the same size). Above 1 the module
            brings the logits to the masks' size bilinearly, as evaluation brings them to full size,
            and the loss teaches edges between the network's pixels while the targets stay binary.
            Only a flip, `data.reframe.Reframe` and pixel-level transforms (`augment`) keep photo and
            finer mask aligned; other geometric transforms are refused.
        hflip_p: probability of a horizontal flip of a training sample.
        augment: extra albumentations transforms for training samples (after the flip).
        check_files: decode every photo (a JPEG at 1/8 scale) and every mask file training reads at
            setup, so bad files stop the run before training; remembered (in `cache_dir`) until a file
            changes, so later start-ups only stat the files.
        cache: decode and resize every sample once into uint8 memory-mapped arrays in `cache_dir`,
            reused by later epochs, runs and sweep jobs, rebuilt when a file changes.
        cache_dir: where the decoded cache and the record of checked listings live.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: Sequence[int] = (160, 240),
        val_fraction: float = 0.2,
        split_seed: int = 0,
        folds: int | None = None,
        fold: int | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int | Literal["auto"] = "auto",
        pin_memory: bool = True,
        persistent_workers: bool = True,
        soft_masks: bool = False,
        mask_scale: int = 1,
        hflip_p: float = 0.5,
        augment: Sequence[A.BasicTransform] | Mapping[str, A.BasicTransform | None] = (),
        mask_source: MaskSource = "auto",
        image_dir: str | None = None,
        check_files: bool = True,
        cache: bool = False,
        cache_dir: str | Path | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if root is None or str(root).strip() in ("", "???"):
            raise DataError("data.root is not set: pass data.root=/path/to/carvana (Kaggle's layout)")
        if mask_source not in MASK_SOURCES:
            raise DataError(f"data.mask_source must be 'auto', 'files' or 'csv', got {mask_source!r}")
        size = pixel_size(image_size, "data.image_size")
        is_number = isinstance(val_fraction, int | float) and not isinstance(val_fraction, bool)
        if folds is None and (not is_number or not 0 <= val_fraction < 1):  # with folds it is not used
            raise DataError(f"data.val_fraction must be a share in [0, 1), got {val_fraction!r}")
        whole_number(split_seed, "data.split_seed", minimum=0)
        if isinstance(mask_scale, bool) or not isinstance(mask_scale, int) or mask_scale < 1:
            raise DataError(f"data.mask_scale must be a whole number >= 1, got {mask_scale!r}")
        for name, value in (
            ("data.root", root),
            ("data.image_dir", image_dir),
            ("data.cache_dir", cache_dir),
        ):
            # A folder named 2024 reaches here as an int; true or false as a bool, which is no folder.
            if value is not None and (isinstance(value, bool) or not isinstance(value, str | int | Path)):
                raise DataError(f"{name} must be a folder, got {value!r}")
        # A mapping (the config's named transforms: one can be dropped with null) keeps its order.
        augment = [
            t for t in (augment.values() if isinstance(augment, Mapping) else augment or ()) if t is not None
        ]
        for t in augment:
            if not isinstance(t, A.BasicTransform | A.BaseCompose):
                raise DataError(f"data.augment holds {t!r}, which is no albumentations transform")
        # Albumentations' geometric transforms move the mask by the photo's pixels; Reframe (and any
        # transform marked `any_resolution`) scales its geometry to each array's own size.
        moving = [
            type(t).__name__
            for t in augment
            if not isinstance(t, A.ImageOnlyTransform) and not getattr(t, "any_resolution", False)
        ]
        if mask_scale > 1 and moving:
            raise DataError(
                f"data.mask_scale={mask_scale} keeps masks finer than the photos, which only a flip, "
                f"Reframe and pixel-level transforms keep aligned; data.augment also has {', '.join(moving)}"
            )
        whole_number(batch_size, "data.batch_size")
        if val_batch_size is not None:  # None: batch_size
            whole_number(val_batch_size, "data.val_batch_size")
        if isinstance(hflip_p, bool) or not isinstance(hflip_p, int | float) or not 0 <= hflip_p <= 1:
            raise DataError(f"data.hflip_p must be a probability in [0, 1], got {hflip_p!r}")
        check_folds(folds, fold)
        switches = dict(pin_memory=pin_memory, persistent_workers=persistent_workers, soft_masks=soft_masks)
        for name, value in (switches | dict(check_files=check_files, cache=cache)).items():
            boolean(value, f"data.{name}")
        if cache and cache_dir is None:
            raise DataError("data.cache=true needs data.cache_dir (a folder for the decoded arrays)")
        self.root = Path(str(root)).expanduser().resolve()
        self.image_size = size
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.folds = folds
        self.fold = fold
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size if val_batch_size is not None else batch_size
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers
        self.soft_masks = soft_masks
        self.mask_size = (self.image_size[0] * mask_scale, self.image_size[1] * mask_scale)
        self.hflip_p = hflip_p
        self.augment = list(augment)
        self.mask_source = mask_source
        self.image_dir = None if image_dir is None else str(image_dir)
        self.check_files = check_files
        self.cache = cache
        self.cache_dir = Path(str(cache_dir)).expanduser().resolve() if cache_dir is not None else None
        if self.cache_dir is not None and (cache or check_files):  # check_files records its checks there
            usable_cache_dir(self.cache_dir)
        self.seed = seed
        self.train_set: CarvanaDataset | None = None
        self.val_set: CarvanaDataset | None = None

    def labelled_samples(self) -> tuple[list[Sample], dict[str, str] | None]:
        """Every labelled sample of `root` (checked when `check_files`), with the CSV masks if used."""
        return labelled_samples(self.root, self.image_dir, self.mask_source, self.check_files, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Find, check and split the samples; idempotent, so train() can call it before fit."""
        if self.train_set is not None:
            return
        samples, rle_masks = self.labelled_samples()
        train, val = split_by_car(samples, self.val_fraction, self.split_seed, self.folds, self.fold)
        cache = None
        if self.cache:
            masks_csv = self.root / MASK_CSV if rle_masks is not None else None
            workers = max(1, default_num_workers() + 1)  # the main process only waits during the build
            cache = open_or_build(
                self.cache_dir,
                self.root,
                samples,
                self.image_size,
                rle_masks,
                masks_csv,
                workers,
                soft=self.soft_masks,
                mask_size=self.mask_size,
            )
        same_size = self.mask_size == self.image_size
        augmentation = train_augmentation(self.hflip_p, self.augment, seed=self.seed, same_size=same_size)
        kinds = {"soft": self.soft_masks, "mask_size": self.mask_size}
        self.train_set = CarvanaDataset(train, self.image_size, augmentation, rle_masks, cache, **kinds)
        self.val_set = CarvanaDataset(val, self.image_size, None, rle_masks, cache, **kinds)
        log.info(
            "data %s: %d train images (%d cars), %d val images (%d cars) at %dx%d%s%s",
            self.root,
            len(train),
            len(self._cars(train)),
            len(val),
            len(self._cars(val)),
            *self.image_size,
            "" if same_size else " (masks at {}x{})".format(*self.mask_size),
            ", decoded cache" if cache is not None else "",
        )

    @staticmethod
    def _cars(samples: Sequence[Sample]) -> list[str]:
        return sorted({s.car_id for s in samples})

    @property
    def split(self) -> dict[str, Any]:
        """The car ids of each split, with what determined them (written into every run directory)."""
        if self.train_set is None or self.val_set is None:
            raise RuntimeError("call setup() before asking for the split")
        return {
            "root": str(self.root),
            "val_fraction": self.val_fraction,
            "split_seed": self.split_seed,
            "folds": self.folds,
            "fold": self.fold,
            "train": self._cars(self.train_set.samples),
            "val": self._cars(self.val_set.samples),
        }

    def _loader(self, dataset: CarvanaDataset | None, batch_size: int, shuffle: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and workers > 0,
            worker_init_fn=seed_worker_augmentation if workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def predict_dataloader(self) -> DataLoader:
        """The validation photos for `Trainer.predict`: each at the input size with its name and full size
        (`PhotoDataset`), so that `SegmentationModule.predict_step` gives full-size masks."""
        if self.val_set is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        photos = PhotoDataset([s.image for s in self.val_set.samples], self.image_size)
        pin = self.pin_memory and torch.cuda.is_available()
        return photo_loader(photos, self.val_batch_size, self.num_workers, pin_memory=pin)

    def val_dataloader(self) -> DataLoader:
        # Under DDP every validation image is scored once, by one process (see carvana_seg.core.distributed).
        return unrepeated(self._loader(self.val_set, self.val_batch_size, shuffle=False))
