"""Kaggle's Carvana folder layout: find image/mask pairs, check them, and split them by car.

    ROOT/train/<car_id>_<NN>.jpg               (or ROOT/train_hq/, Kaggle's high-quality copies)
    ROOT/train_masks/<car_id>_<NN>_mask.gif    (palette GIF {0, 1}; PNG and 0/255 are accepted too)
    ROOT/train_masks.csv                       (the same masks run-length encoded; optional)

Every check here runs before training starts, and every error names the files it is about. Names that
start with a dot (macOS's `._x.jpg` resource forks, `.DS_Store`) are not photos and are skipped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from carvana_seg.data.decode import check_complete, check_mask, check_photo
from carvana_seg.data.sample import Sample
from carvana_seg.errors import DataError

log = logging.getLogger(__name__)

IMAGE_DIRS = ("train", "train_hq")
MASK_DIR = "train_masks"
MASK_CSV = "train_masks.csv"
_IMAGE_NAME = re.compile(r"^(?P<car>[0-9A-Za-z]+)_(?P<view>\d{2})\.(?:jpe?g|png)$", re.IGNORECASE)
_MASK_NAME = re.compile(r"^(?P<car>[0-9A-Za-z]+)_(?P<view>\d{2})_mask\.(?:gif|png)$", re.IGNORECASE)
_MAX_LISTED = 10


def listing(paths: Sequence[Path | str]) -> str:
    shown = "\n  ".join(str(p) for p in list(paths)[:_MAX_LISTED])
    more = f"\n  ... and {len(paths) - _MAX_LISTED} more" if len(paths) > _MAX_LISTED else ""
    return f"\n  {shown}{more}"


def image_folder(root: Path, image_dir: str | None = None) -> Path:
    """The folder of photos under `root`: `image_dir` if given, else train/ or train_hq/."""
    if not root.is_dir():
        raise DataError(f"data.root {root} does not exist or is not a folder")
    candidates = [image_dir] if image_dir else list(IMAGE_DIRS)
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"no image folder in {root}: expected {' or '.join(f'{root}/{c}/' for c in candidates)} "
        "(Kaggle's layout: train/<car_id>_<NN>.jpg with train_masks/<car_id>_<NN>_mask.gif)"
    )


def check_link(path: Path) -> None:
    """Refuse a link whose target is gone (a dataset fetched in part, a disk not mounted), naming both:
    it is no file, and passing over it would lose a photo without a word."""
    if path.is_symlink() and not path.exists():
        raise DataError(
            f"{path} is a link to {os.readlink(path)}, which does not exist (a disk not mounted? "
            "a dataset fetched in part?)"
        )


def _scan(folder: Path, pattern: re.Pattern[str]) -> tuple[dict[tuple[str, int], Path], list[Path]]:
    """Files of `folder` keyed by (car, view), and the files whose names don't fit the scheme."""
    found: dict[tuple[str, int], Path] = {}
    misnamed: list[Path] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        match = pattern.match(entry.name)
        if match is not None:
            check_link(entry)  # passing over it would train on fewer photos, or blame its pair
        if not entry.is_file():
            continue
        if match is None:
            misnamed.append(entry)
            continue
        key = (match["car"], int(match["view"]))
        if key in found:
            raise DataError(f"two files for car {key[0]} view {key[1]:02d}:{listing([found[key], entry])}")
        found[key] = entry
    return found, misnamed


def find_samples(root: str | Path, image_dir: str | None = None, labelled: bool = True) -> list[Sample]:
    """All photos under `root` with their masks, sorted by car and view.

    With `labelled`, every photo needs a mask file in train_masks/ and every mask a photo. Files whose
    names don't follow Kaggle's scheme are left out and reported in the log, never used silently.
    """
    root = Path(root).expanduser()
    images, misnamed = _scan(image_folder(root, image_dir), _IMAGE_NAME)
    masks: dict[tuple[str, int], Path] = {}
    if labelled:
        mask_folder = root / MASK_DIR
        if not mask_folder.is_dir():
            raise DataError(f"no mask folder {mask_folder}/ (expected <car_id>_<NN>_mask.gif files)")
        masks, misnamed_masks = _scan(mask_folder, _MASK_NAME)
        misnamed += misnamed_masks
        orphans = sorted(set(images) - set(masks))
        if orphans:
            raise DataError(f"images without a mask in {mask_folder}:{listing([images[k] for k in orphans])}")
        strays = sorted(set(masks) - set(images))
        if strays:
            raise DataError(f"masks without an image:{listing([masks[k] for k in strays])}")
    if misnamed:
        log.warning(
            "ignoring %d files whose names don't follow Kaggle's scheme:%s", len(misnamed), listing(misnamed)
        )
    if not images:
        raise DataError(f"no images named <car_id>_<NN>.jpg in {image_folder(root, image_dir)}")
    return [Sample(images[key], masks.get(key), key[0], key[1]) for key in sorted(images)]


def _check_pair(
    sample: Sample, decode_masks: bool = True
) -> tuple[tuple[int, int] | None, list[str], str | None]:
    """One sample's photo size (None if unreadable), its files' problems, and a size mismatch."""
    sizes: list[tuple[int, int] | None] = []
    problems: list[str] = []
    for path in (sample.image, sample.mask):
        if path is None:
            continue
        try:
            if path == sample.image:
                sizes.append(check_photo(path))  # its end marker first, then the decode
            else:
                check_complete(path)  # "truncated", before the decode's less direct message
                sizes.append(check_mask(path, decode=decode_masks))
        except DataError as err:
            problems.append(str(err))
            sizes.append(None)
    size = sizes[0]
    mask_size = sizes[1] if len(sizes) > 1 else size
    mismatch = None
    if size is not None and mask_size is not None and mask_size != size:
        mismatch = f"{sample.mask} is {mask_size}, {sample.image} is {size}"
    return size, problems, mismatch


def check_pairs(samples: Sequence[Sample], decode_masks: bool = True) -> dict[Path, tuple[int, int]]:
    """Decode every image (`check_photo`: its end marker, header and data, a JPEG at 1/8 scale) and
    check every mask (`check_mask`: whole and two-coloured, its pixels decoded when `decode_masks`,
    i.e. when training reads the mask files rather than train_masks.csv): unreadable, truncated,
    damaged or not two-coloured files and size mismatches stop here, before any training. Returns the
    (H, W) of every image. Files are checked by a few threads (decoding and reading release the GIL)."""
    unreadable: list[str] = []
    mismatched: list[str] = []
    sizes: dict[Path, tuple[int, int]] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for sample, (size, problems, mismatch) in zip(
            samples,
            pool.map(partial(_check_pair, decode_masks=decode_masks), samples, chunksize=32),
            strict=True,
        ):
            unreadable += problems
            if mismatch is not None:
                mismatched.append(mismatch)
            if size is not None:
                sizes[sample.image] = size
    if unreadable:
        raise DataError(
            f"{len(unreadable)} unreadable, truncated, damaged or not two-coloured files:"
            f"{listing(unreadable)}"
        )
    if mismatched:
        raise DataError(
            f"{len(mismatched)} masks whose size (H, W) differs from their image's:{listing(mismatched)}"
        )
    return sizes


def check_folds(folds: int | None, fold: int | None, cars: int | None = None) -> None:
    """Raise a DataError naming `data.folds` or `data.fold` when they do not pick one fold of K >= 2
    (`cars`: how many cars there are to deal, when known). Both None: the `val_fraction` split."""
    if folds is None:
        if fold is not None:
            raise DataError(f"data.fold={fold} needs data.folds (how many folds the cars are dealt into)")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DataError(f"data.folds must be a whole number >= 2 (or null: no folds), got {folds!r}")
    if cars is not None and folds > cars:
        raise DataError(f"data.folds={folds} is more folds than the {cars} cars: every fold needs a car")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise DataError(f"data.fold must be one of 0..{folds - 1} with data.folds={folds}, got {fold!r}")


def car_folds(car_ids: Iterable[str], folds: int, seed: int) -> list[list[str]]:
    """The cars dealt into `folds` folds: the sorted ids shuffled with `seed`, then dealt round-robin,
    so fold sizes differ by at most one car and every car is in exactly one fold. Depends only on the
    set of ids, `folds` and `seed`. Each fold's ids come back sorted."""
    check_folds(folds, 0)
    cars = sorted(set(car_ids))
    order = np.random.default_rng(seed).permutation(len(cars))
    return [sorted(cars[i] for i in order[k::folds]) for k in range(folds)]


def split_by_car(
    samples: Sequence[Sample],
    val_fraction: float,
    seed: int,
    folds: int | None = None,
    fold: int | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """Split into (train, val) so that all views of a car land on the same side.

    The split depends only on the set of car ids, the fraction and the seed: the same data gives the
    same split on every machine, whatever the order the files were listed in. With `folds`, the
    validation cars are fold `fold` of `car_folds` instead, and `val_fraction` is not used.
    """
    cars = sorted({s.car_id for s in samples})
    check_folds(folds, fold, len(cars))
    if folds is not None:
        val_cars = set(car_folds(cars, folds, seed)[fold])  # type: ignore[index]
        return [s for s in samples if s.car_id not in val_cars], [s for s in samples if s.car_id in val_cars]
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * len(cars))
    if val_fraction > 0:
        n_val = max(1, n_val)
    if n_val >= len(cars):
        raise DataError(
            f"cannot hold out {n_val} of {len(cars)} cars for validation and still train: "
            "lower data.val_fraction or add cars"
        )
    order = np.random.default_rng(seed).permutation(len(cars))
    val_cars = {cars[i] for i in order[:n_val]}
    train = [s for s in samples if s.car_id not in val_cars]
    val = [s for s in samples if s.car_id in val_cars]
    return train, val
