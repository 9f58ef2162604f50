"""Decode once, train many times: every photo and mask of a data set, resized to the training size,
kept on disk as uint8 arrays that every epoch, run and sweep job at that size memory-maps.

    <cache_dir>/decoded/<root name>-<hash of root>/<H>x<W>-<mask source>[-soft]-<hash of the listing>/
        images.npy (N, H, W, 3) uint8    masks.npy (N, H, W) uint8    names.json (row order)
        .in_use (the readers' marks)

Masks are {0, 1}, or with `soft` the share of car in each pixel, 0..255 (a cache of its own).

The listing hash covers every file's path, size and modification time, so a changed, added or removed
file gives another folder: the cache is rebuilt, and the stale ones that no running job reads removed.

Several jobs may start at once, and any of them may be killed:
- a lock file (`.lock`, see `data.lock`) makes them wait for one builder instead of all building; it
  dies with its holder, and the build workers exit when the builder is gone;
- each builder fills its own `<folder>.building-<pid>-<random>` (the arrays' space reserved first, so a
  full disk is an error that says so, not a crash), writes `names.json` last after flushing the arrays
  to disk, and publishes with one rename; a builder that finds the folder published meanwhile drops its
  copy and uses that one. So a folder with `names.json` is always complete;
- every process that opened a cache marks it in use for as long as the `DecodedCache` lives, and the
  clean-up after a build removes only folders that no other process marks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from tqdm import tqdm

from carvana_seg.data.lock import InUse, claim_unused, file_lock, mark_in_use
from carvana_seg.data.sample import Sample, load_sample
from carvana_seg.durable import fsync_dir, fsync_file
from carvana_seg.errors import DataError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_CHUNK = 32
IN_USE = ".in_use"
_PARENT_POLL_S = 0.2  # how often a build worker checks that the builder still lives


def usable_cache_dir(folder: Path) -> Path:
    """`folder` (data.cache_dir), created if missing: a file there, or a folder this process cannot write
    (read-only), is a DataError naming the option before any photo is read, not a traceback after."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "it cannot be written")
    except OSError as err:
        reason = "it is a file" if folder.is_file() else err.strerror or err
        raise DataError(
            f"data.cache_dir {folder} cannot be used ({reason}); point it "
            "(or paths.cache_dir, or CARVANA_SEG_CACHE) at a folder that can be written"
        ) from err
    return folder


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


class CacheGone(FileNotFoundError):
    """The cache folder was removed (or is being removed) before it could be opened."""


class DecodedCache:
    """The decoded arrays of one data set at one size; rows are looked up by image name.

    Opening one marks its folder in use by this process until the object is closed or garbage
    collected, so that no other job's clean-up removes it. The memory maps are opened lazily in each
    process, and never pickled: a DataLoader worker that receives this object (by fork or by spawn) maps
    the files itself instead of copying the arrays (and relies on its parent's mark).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        try:
            mark = mark_in_use(folder / IN_USE)
        except FileNotFoundError:
            mark = None
        if mark is None:
            raise CacheGone(f"the decoded cache {folder} was removed")
        self._release = weakref.finalize(self, mark.release)
        try:
            self.names: list[str] = json.loads((folder / "names.json").read_text())
        except FileNotFoundError:
            self.close()
            raise CacheGone(f"the decoded cache {folder} was removed") from None
        except ValueError as err:  # not JSON: a damaged or foreign file, never a half-written one
            self.close()
            raise _damaged(folder, err) from err
        if not (isinstance(self.names, list) and all(isinstance(name, str) for name in self.names)):
            self.close()
            raise _damaged(folder, ValueError("names.json is not a list of image names"))
        self.rows = {name: row for row, name in enumerate(self.names)}
        self._images: np.ndarray | None = None
        self._masks: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.names)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None, "_masks": None, "_release": None}

    def close(self) -> None:
        """Drop this process's mark (the maps already open stay readable)."""
        if self._release is not None:
            self._release()

    def get(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the photo (H, W, 3) and mask (H, W) of image `name` (augmentation may write them)."""
        images, masks = self._maps()
        row = self.rows[name]
        return np.array(images[row]), np.array(masks[row])

    def check(self, names: Sequence[str], size: tuple[int, int], mask_size: tuple[int, int]) -> None:
        """Refuse a cache that does not hold these photos at this size as uint8 (a damaged or hand-edited
        folder): named here, not as a KeyError in a loader worker or a run at the wrong size."""
        missing = [name for name in names if name not in self.rows]
        images, masks = self._maps()
        wrong = [
            f"{what} {array.dtype}{list(array.shape[1:])}, not uint8{list(shape)}"
            for what, array, shape in (("images", images, (*size, 3)), ("masks", masks, mask_size))
            if array.dtype != np.uint8 or array.shape[1:] != tuple(shape)
        ]
        if missing:
            wrong.append(f"names.json lacks {len(missing)} of the photos, such as {missing[0]}")
        if wrong:
            raise _damaged(self.folder, ValueError("; ".join(wrong)))

    def _maps(self) -> tuple[np.ndarray, np.ndarray]:
        """The memory maps of the photos and masks, opened once per process, a row per name."""
        if self._images is None or self._masks is None:
            try:
                images = np.load(self.folder / "images.npy", mmap_mode="r")
                masks = np.load(self.folder / "masks.npy", mmap_mode="r")
            except (OSError, ValueError) as err:
                raise _damaged(self.folder, err) from err
            rows = len(self.names)
            if (
                images.shape[:1] != (rows,)
                or images.ndim != 4
                or masks.shape[:1] != (rows,)
                or masks.ndim != 3
            ):
                shapes = f"images {images.shape} and masks {masks.shape} for {rows} names"
                raise _damaged(self.folder, ValueError(shapes))
            self._images, self._masks = images, masks
        return self._images, self._masks


def _damaged(folder: Path, err: Exception) -> DataError:
    return DataError(f"the decoded cache {folder} is damaged ({err}): remove that folder and run again")


def _open(folder: Path) -> DecodedCache | None:
    """The published cache in `folder`, or None when there is none (or it is being removed)."""
    if not (folder / "names.json").is_file():
        return None
    try:
        return DecodedCache(folder)
    except CacheGone:
        return None


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
    lock_timeout: float | None = None,
) -> DecodedCache:
    """The cache of these samples at `size` (masks at `mask_size`, default `size`), built (in parallel,
    with a progress bar) if missing. A job that finds another one building waits for it, at most
    `lock_timeout` seconds (default: `data.lock.lock_timeout()`).

    Raises:
        DataError: files that cannot be decoded (named), or no space for the arrays (how much, where).
    """
    mask_size = tuple(mask_size or size)
    source = ("csv" if rle_masks is not None else "files") + ("-soft" if soft else "")
    if mask_size != tuple(size):
        source += f"-masks{mask_size[0]}x{mask_size[1]}"
    key = listing_key(sample_files(samples, masks_csv), root, size, source)
    parent = Path(cache_dir) / "decoded" / f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:8]}"
    prefix = f"{size[0]}x{size[1]}-{source}-"
    folder = parent / f"{prefix}{key}"
    names = [s.name for s in samples]
    cache = _open(folder)
    if cache is not None:
        cache.check(names, size, mask_size)
        return cache
    need = len(samples) * (size[0] * size[1] * 3 + mask_size[0] * mask_size[1]) + 256
    with _no_space_is_a_data_error(parent, need, len(samples), size):
        parent.mkdir(parents=True, exist_ok=True)
        with file_lock(parent / ".lock", timeout=lock_timeout, what=f"building {folder.name}"):
            cache = _open(folder)  # another job may have built it while we waited
            if cache is not None:
                cache.check(names, size, mask_size)
            else:
                cache = _build(folder, samples, size, rle_masks, workers, soft, mask_size)
                _remove_unused(parent, prefix, keep=folder)
    return cache


def _remove_unused(parent: Path, prefix: str, keep: Path) -> None:
    """Remove the other folders of this size and mask source (stale caches, killed builds) that no
    other process marks in use; a marked one is left for a later build to remove."""
    for stale in sorted(parent.glob(f"{prefix}*")):
        if stale == keep or not stale.is_dir():
            continue
        try:
            with claim_unused(stale / IN_USE) as unused:
                if not unused:
                    log.info("keeping %s: another job is reading it", stale)
                    continue
                doomed = stale.with_name(f"{stale.name}.deleting-{os.getpid()}-{secrets.token_hex(4)}")
                os.rename(stale, doomed)  # readers arriving now find nothing, not half a folder
        except FileNotFoundError:  # another cleaner got there first
            continue
        except OSError as err:  # a clean-up that fails must not fail the run
            log.warning("could not remove the stale cache %s: %s", stale, err)
            continue
        shutil.rmtree(doomed, ignore_errors=True)


@contextmanager
def _no_space_is_a_data_error(parent: Path, need: int, count: int, size: tuple[int, int]) -> Iterator[None]:
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        existing = next((p for p in (parent, *parent.parents) if p.exists()), parent)
        try:
            free = f", and {_human(shutil.disk_usage(existing).free)} is free"
        except OSError:
            free = ""
        raise DataError(
            f"no space left on the device for the decoded cache in {parent}: it needs {_human(need)} "
            f"({count} images at {size[0]}x{size[1]}){free}. Free some space, point data.cache_dir "
            "(or paths.cache_dir, or CARVANA_SEG_CACHE) to a disk with room, or run without the cache "
            "(data.cache=false)"
        ) from err


def _human(size: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError  # unreachable


# What each build worker process needs, set once by the pool's initializer.
_WORKER: dict = {}


def _init_worker(
    folder: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks,
    soft: bool,
    mask_size: tuple[int, int],
    builder: int | None = None,
) -> None:
    _WORKER.update(
        samples=samples,
        size=size,
        mask_size=mask_size,
        rle_masks=rle_masks,
        soft=soft,
        images=np.load(folder / "images.npy", mmap_mode="r+"),
        masks=np.load(folder / "masks.npy", mmap_mode="r+"),
        builder=builder,
    )
    if builder is not None:  # also while idle, waiting for work that will never come
        threading.Thread(target=_exit_when_orphaned, daemon=True, name="watch-builder").start()


def _orphaned() -> bool:
    """The builder that forked this worker died (it may have died before the worker even started)."""
    return _WORKER.get("builder") is not None and os.getppid() != _WORKER["builder"]


def _exit_when_orphaned() -> None:
    while not _orphaned():
        time.sleep(_PARENT_POLL_S)
    os._exit(1)  # the builder died (kill -9, OOM killer): its folder is garbage, stop writing it


def _decode_rows(start: int, stop: int) -> list[str]:
    """Decode samples start..stop-1 into the arrays; the error messages of those that failed."""
    errors = []
    for row in range(start, stop):
        if _orphaned():
            os._exit(1)
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


def _allocate(path: Path, shape: tuple[int, ...]) -> None:
    """An .npy file of zeros with all its blocks reserved: writing through a memory map of a sparse
    file on a full disk kills the writer with SIGBUS; reserving first turns that into ENOSPC here."""
    np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no reservation here: write as before
            raise
    finally:
        os.close(fd)


def _build(
    folder: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks: Mapping[str, str] | None,
    workers: int,
    soft: bool,
    mask_size: tuple[int, int],
) -> DecodedCache:
    building = folder.with_name(f"{folder.name}.building-{os.getpid()}-{secrets.token_hex(4)}")
    building.mkdir()
    mark: InUse | None = None
    try:
        mark = mark_in_use(building / IN_USE)  # ours: other jobs' clean-ups leave it alone
        _fill(building, folder, samples, size, rle_masks, workers, soft, mask_size)
        _publish(building, folder)
        cache = _open(folder)
        if cache is None:
            raise DataError(f"the decoded cache {folder} was removed as soon as it was built; run again")
        return cache
    finally:
        if mark is not None:
            mark.release()
        shutil.rmtree(building, ignore_errors=True)  # a failed build, or the copy of a lost race


def _fill(
    building: Path,
    folder: Path,
    samples: Sequence[Sample],
    size: tuple[int, int],
    rle_masks: Mapping[str, str] | None,
    workers: int,
    soft: bool,
    mask_size: tuple[int, int],
) -> None:
    """Decode every sample into the arrays of `building`; flush them, then write names.json."""
    count, (height, width) = len(samples), size
    _allocate(building / "images.npy", (count, height, width, 3))
    _allocate(building / "masks.npy", (count, *mask_size))
    chunks = [(start, min(start + _CHUNK, count)) for start in range(0, count, _CHUNK)]
    log.info("building the decoded cache of %d images at %dx%d in %s", count, height, width, folder)
    errors: list[str] = []
    progress = tqdm(total=count, desc="decode cache", unit="img", dynamic_ncols=True)
    try:
        if workers <= 1:
            _init_worker(building, samples, size, rle_masks, soft, mask_size)
            for start, stop in chunks:
                errors += _decode_rows(start, stop)
                progress.update(stop - start)
        else:
            initargs = (building, list(samples), size, rle_masks, soft, mask_size, os.getpid())
            fork = multiprocessing.get_context("fork")  # the builder is the workers' parent
            pool = ProcessPoolExecutor(workers, mp_context=fork, initializer=_init_worker, initargs=initargs)
            with pool:
                futures = {pool.submit(_decode_rows, start, stop): stop - start for start, stop in chunks}
                for future in as_completed(futures):
                    errors += future.result()
                    progress.update(futures[future])
    finally:
        progress.close()
        _WORKER.clear()
    if errors:
        raise DataError(
            f"{len(errors)} files could not be decoded while building the cache:\n  " + "\n  ".join(errors)
        )
    fsync_file(building / "images.npy")
    fsync_file(building / "masks.npy")
    names = building / "names.json"
    with names.open("w") as handle:  # last: its presence says the arrays are complete
        handle.write(json.dumps([s.name for s in samples]))
        handle.flush()
        os.fsync(handle.fileno())
    fsync_dir(building)


def _publish(building: Path, folder: Path) -> None:
    """Rename the finished `building` to `folder` (one atomic step); if another builder published it
    first, keep theirs (the caller drops this copy)."""
    try:
        os.rename(building, folder)
    except OSError as err:
        if err.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if (folder / "names.json").is_file():
            log.info("another job published %s first: using it and dropping this copy", folder)
            return
        # A folder without names.json is no cache (nothing here publishes one): move it aside, retry.
        aside = folder.with_name(f"{folder.name}.deleting-{os.getpid()}-{secrets.token_hex(4)}")
        os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(building, folder)
    fsync_dir(folder.parent)
    log.info("published the decoded cache %s", folder)
