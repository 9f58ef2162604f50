"""Files that stay written: flush a file, a folder or a whole tree to the disk before (and after) the
rename that publishes it, so that a crash or power cut never leaves a name pointing at missing data;
and whether a process of this host that left something behind is still alive."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def fsync_file(path: Path) -> None:
    """Flush the data of the file at `path` to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in folder `path` durable (a no-op where folders cannot be synced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """A hidden name beside `path` that belongs to this process and thread only."""
    return path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}{TMP_SUFFIX}")


@contextlib.contextmanager
def atomic_file(
    path: Path, mode: str = "wb", *, sync_folder: bool = True, **kwargs: Any
) -> Iterator[IO[Any]]:
    """A file written whole or not at all: the with-block writes a temporary file of this process and
    thread, which is flushed to disk and renamed into place when the block ends (and removed if it
    fails), then the folder is flushed so that the rename is on disk too. `sync_folder=False` leaves
    that last flush to the caller (predict flushes the masks folder once per committed part)."""
    tmp = temporary_path(path)
    try:
        with tmp.open(mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_dir(path.parent)


def atomic_write(path: Path, data: bytes, *, sync_folder: bool = True) -> None:
    """`data` written to `path` by `atomic_file`."""
    with atomic_file(path, sync_folder=sync_folder) as handle:
        handle.write(data)


def fsync_tree(root: Path, skip: tuple[str, ...] = ()) -> None:
    """fsync every file under `root` (except names in `skip`: lock files), then every folder."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            if name not in skip:
                fsync_file(Path(folder, name))
        fsync_dir(Path(folder))


def flush_tree(root: Path) -> None:
    """A file's `fsync`; for a folder `fsync_tree`, or one system-wide flush where there is one: cheaper
    for a folder of thousands of files (Kaggle's test.zip holds 100,064)."""
    if not root.is_dir():
        fsync_file(root)
    elif hasattr(os, "sync"):
        os.sync()
    else:
        fsync_tree(root)


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host runs (someone else's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
