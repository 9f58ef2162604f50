"""Decode once, train many times: every photo and mask of a data set, resized to the training size,
kept on disk as uint8 arrays that every epoch, run and sweep job at that size memory-maps.

    <cache_dir>/decoded/<root name>-<hash of root>/<H>x<W>-<mask source>[-soft]-<hash of the listing>/
        images.npy (N, H, W, 3) uint8    masks.npy (N, H, W) uint8    names.json (row order)

Masks are {0, 1}, or with `soft` the share of car in each pixel, 0..255 (a cache of its own).

The listing hash covers every file's path, size and modification time, so a changed, added or removed
file gives another folder: the cache is rebuilt, and the stale one removed. A lock file makes jobs
that start together wait for one builder instead of all building. `names.json` is written last and
the folder renamed into place, so a build that was killed is never mistaken for a finished one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
from tqdm import tqdm

from carvana_seg.data.lock import file_lock
from carvana_seg.data.sample import Sample, load_sample
from carvana_seg.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_CHUNK = 32


def listing_key(paths: Sequence[Path], *extra: object) -> str:
    """A hash of the files' paths, sizes and modification times (one stat each, no reading)."""
    digest = hashlib.sha256(json.dumps([CACHE_FORMAT, *map(str, extra)]).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def sample_files(samples: Sequence[Sample], masks_csv: Path | None = None) -> list[Path]:
    files = [s.image for s in samples] + [s.mask for s in samples if s.mask is not None]
    return [*files, masks_csv] if masks_csv is not None else files


class DecodedCache:
    """The decoded arrays of one data set at one size; rows are looked up by image name.

    The memory maps are opened lazily in each process, and never pickled: a DataLoader worker that
    receives this object (by fork or by spawn) maps the files itself instead of copying the arrays.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.names: list[str] = json.loads((folder / "names.json").read_text())
        self.rows = {name: row for row, name in enumerate(self.names)}
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_masks": None}

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the photo (H, W, 3) and mask (H, W) of image `name` (augmentation may write them)."""
        if self._images is None or self._masks is None:
            self._images = np.load(self.folder / "images.npy", mmap_mode="r")
            self._masks = np.load(self.folder / "masks.npy", mmap_mode="r")
        row = self.rows[name]
        return np.array(self._images[row]), np.array(self._masks[row])


def open_or_build(
    cache_dir: Path,
    root: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks: Mapping[str, str] | None = None,
    masks_csv: Path | None = None,
    workers: int = 1,
    soft: bool = False,
    mask_size: tuple[int, int] | None = None,
) -> DecodedCache:
    """The cache of these samples at `size` (masks at `mask_size`, default `size`), built (in parallel,
    with a progress bar) if missing."""
    mask_size = tuple(mask_size or size)
    source = ("csv" if rle_masks is not None else "files") + ("-soft" if soft else "")
    if mask_size != tuple(size):
        source += f"-masks{mask_size[0]}x{mask_size[1]}"
    key = listing_key(sample_files(samples, masks_csv), root, size, source)
    parent = Path(cache_dir) / "decoded" / f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    prefix = f"{size[0]}x{size[1]}-{source}-"
    folder = parent / f"{prefix}{key}"
    if (folder / "names.json").is_file():
        return DecodedCache(folder)
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / ".lock"):
        if not (folder / "names.json").is_file():  # another job may have built it while we waited
            _build(folder, samples, size, rle_masks, workers, soft, mask_size)
            for stale in parent.glob(f"{prefix}*"):
                if stale != folder and stale.is_dir():
                    shutil.rmtree(stale, ignore_errors=True)
    return DecodedCache(folder)


# What each build worker process needs, set once by the pool's initializer.
_WORKER: dict = {}


def _init_worker(
    folder: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks,
    soft: bool,
    mask_size: tuple[int, int],
) -> None:
    _WORKER.update(
        samples=samples,
        size=size,
        mask_size=mask_size,
        rle_masks=rle_masks,
        soft=soft,
        images=np.load(folder / "images.npy", mmap_mode="r+"),
        masks=np.load(folder / "masks.npy", mmap_mode="r+"),
    )


def _decode_rows(start: int, stop: int) -> list[str]:
    """Decode samples start..stop-1 into the arrays; the error messages of those that failed."""
    errors = []
    for row in range(start, stop):
        sample = _WORKER["samples"][row]
        try:
            image, mask = load_sample(
                sample, _WORKER["size"], _WORKER["rle_masks"], _WORKER["soft"], _WORKER["mask_size"]
            )
            if mask is None:
                raise DataError(f"{sample.image} has no mask")
        except DataError as err:
            errors.append(str(err))
            continue
        _WORKER["images"][row] = image
        _WORKER["masks"][row] = mask
    _WORKER["images"].flush()
    _WORKER["masks"].flush()
    return errors


def _build(
    folder: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks: Mapping[str, str] | None,
    workers: int,
    soft: bool,
    mask_size: tuple[int, int],
) -> None:
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    count, (height, width) = len(samples), size
    np.lib.format.open_memmap(
        building / "images.npy", mode="w+", dtype=np.uint8, shape=(count, height, width, 3)
    )
    masks_shape = (count, *mask_size)
    np.lib.format.open_memmap(building / "masks.npy", mode="w+", dtype=np.uint8, shape=masks_shape)
    chunks = [(start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]
    log.info("building the decoded cache of %d images at %dx%d in %s", count, height, width, folder)
    errors: list[str] = []
    progress = tqdm(total=count, desc="decode cache", unit="img", dynamic_ncols=True)
    if workers <= 1:
        _init_worker(building, samples, size, rle_masks, soft, mask_size)
        for start, stop in chunks:
            errors += _decode_rows(start, stop)
            progress.update(stop - start)
    else:
        initargs = (building, list(samples), size, rle_masks, soft, mask_size)
        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=initargs) as pool:
            futures = {pool.submit(_decode_rows, start, stop): stop - start for start, stop in chunks}
            for future in as_completed(futures):
                errors += future.result()
                progress.update(futures[future])
    progress.close()
    _WORKER.clear()
    if errors:
        shutil.rmtree(building, ignore_errors=True)
        raise DataError(
            f"{len(errors)} files could not be decoded while building the cache:\n  " + "\n  ".join(errors)
        )
    (building / "names.json").write_text(json.dumps([s.name for s in samples]))
    os.replace(building, folder)
