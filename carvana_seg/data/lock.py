"""One lock for work that several processes may start at once (sweep jobs, DDP ranks): the first
builds, the others wait and then find the work done."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive POSIX lock on `path` (created if missing) for the duration of the block."""
    with Path(path).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
