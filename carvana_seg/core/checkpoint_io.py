"""How checkpoints reach the disk: whole or not at all.

`AtomicCheckpointIO` (the Trainer's `plugins`, conf/trainer/default.yaml) writes each checkpoint to a
temporary file beside it, flushes it to the disk, and renames it into place: a process killed at any
moment (kill -9, out of memory, a lost node) leaves the previous checkpoint or the new one, never a
truncated file that a resumed run cannot read. Lightning's own writer goes through fsspec, which writes
into the system temporary folder and moves the file over: a copy into place when that folder is
another file system (a tmpfs /tmp), and a checkpoint-sized orphan in it after every kill.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning_fabric.utilities.cloud_io import get_filesystem
from typing_extensions import override

from carvana_seg.durable import fsync_dir, process_alive

# Hidden, and without "last" in it: Lightning takes any file of the folder named *last* for a last.ckpt.
PARTIAL_PREFIX = ".ckpt-"
PARTIAL_SUFFIX = ".partial"


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic and durable: a unique temporary file in the target's
    folder, fsync, `os.replace` into place, fsync of the folder. Remote paths (s3://...) keep Lightning's
    own writer; loading and removing are Lightning's."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)  # raises for storage_options
            return
        write_atomically(Path(path), lambda handle: torch.save(checkpoint, handle))


def write_atomically(target: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write` on a new temporary file beside `target`, make it durable, then rename it to `target`.

    Until the rename `target` is untouched; a process killed before it leaves only the temporary file,
    which the next write to that folder from this machine removes (its process is gone).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(target.parent)
    name = f"{PARTIAL_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}{PARTIAL_SUFFIX}"
    temporary = target.parent / name
    # O_EXCL: never someone else's file; mode 0o666 less the umask, as an ordinary new file gets.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_dir(target.parent)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def _remove_orphans(folder: Path) -> None:
    """Delete the temporary files that killed processes of this machine left in `folder`."""
    prefix = f"{PARTIAL_PREFIX}{_host()}-"
    for path in folder.glob(f"{prefix}*{PARTIAL_SUFFIX}"):
        pid = path.name.removeprefix(prefix).split("-", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                path.unlink()
