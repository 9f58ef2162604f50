"""Locks for work that several processes may start at once (sweep jobs, DDP ranks), and publishing
what they make so that nothing half-written is ever seen.

- `file_lock`: one process at a time (the first builds, the others wait and then find the work done).
  The waiters say who holds it, and give up after a timeout with an error naming the lock and holder.
- `mark_in_use` / `claim_unused`: a reader marks a folder in use for as long as it reads it; a cleaner
  removes only folders that no other process marks.

Every lock is a POSIX record lock (`fcntl.lockf`): it belongs to the process that took it, so a child
process (a pool worker, a loader worker) never inherits it, and the kernel drops it when its holder
dies, even by `kill -9`; a lock file left behind is just a file. POSIX locks have one trap: closing
*any* descriptor of a locked file in the holding process releases the lock. So this module keeps one
descriptor per lock file per process and no other code here opens a lock file while it is held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from carvana_seg.durable import process_alive
from carvana_seg.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30 * 60.0
TIMEOUT_ENV = "CARVANA_SEG_LOCK_TIMEOUT"
_REPEAT_NOTE_S = 60.0  # how often a waiter says again that it is still waiting
# A holder writes its pid just after it takes the lock: a waiter whose time is up gives it this long to
# do so, so that the error names the process to stop (lock_wait=0 would otherwise often name nobody).
_PID_GRACE_S = 1.0
_BUSY = (errno.EACCES, errno.EAGAIN)


class LockTimeout(InputError):
    """Waited `timeout` seconds for a lock another process holds; the message names the lock and holder."""


def lock_timeout(timeout: float | None = None) -> float:
    """`timeout`, else the environment's CARVANA_SEG_LOCK_TIMEOUT (seconds), else 30 minutes. `inf` (or
    any wait past what a thread lock takes, some 292 years) waits without end."""
    if timeout is not None:
        if not timeout >= 0:
            raise ValueError(f"a lock timeout is a number of seconds >= 0, got {timeout!r}")
        return min(float(timeout), threading.TIMEOUT_MAX)
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {text!r}")
    return min(value, threading.TIMEOUT_MAX)


# One threading lock per lock file path: POSIX locks do not keep threads of one process apart.
_thread_locks: dict[str, threading.Lock] = {}
_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _guard:
        return _thread_locks.setdefault(os.path.abspath(path), threading.Lock())


def _holder_info(what: str) -> bytes:
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "what": what}
    return (json.dumps(info) + "\n").encode()


def _describe_holder(fd: int) -> tuple[str, int | None]:
    """Who holds the lock of `fd`, as the holder wrote it (JSON, read as data only), and its pid."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        pid, host = int(info["pid"]), str(info["host"])
        since, what = str(info.get("since", "?")), str(info.get("what", ""))
    except (OSError, ValueError, TypeError, KeyError):
        return "another process (it has not written its pid yet)", None
    text = f"pid {pid} on {host} since {since}" + (f" ({what})" if what else "")
    if host == socket.gethostname() and not process_alive(pid):
        text += (
            f"; pid {pid} is not running on this host, so the file system keeps the lock for it "
            "(e.g. a network file system): stop the jobs using this folder and delete the lock file"
        )
    return text, pid


@contextlib.contextmanager
def file_lock(
    path: Path, *, timeout: float | None = None, what: str = "", poll: float = 0.05
) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the duration of the block.

    The holder's pid, host, start time and `what` are written into the file; a waiter logs them, and
    after `timeout` seconds (default: `lock_timeout()`) raises `LockTimeout` saying what to do. A lock
    whose holder died is free at once (the kernel releases it), whatever the file still says.
    """
    path = Path(path)
    limit = lock_timeout(timeout)
    deadline = time.monotonic() + limit
    in_process = _thread_lock(path)
    if not in_process.acquire(timeout=limit):
        raise LockTimeout(
            f"gave up after {limit:g} s waiting for the lock {path}, held by another thread of this "
            f"process (pid {os.getpid()})"
        )
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            _wait_for(fd, path, limit, deadline, poll)
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, _holder_info(what), 0)
            except OSError:  # who holds it is a courtesy to waiters (a full disk must not stop us)
                pass
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # releases the lock
    finally:
        in_process.release()


def _wait_for(fd: int, path: Path, limit: float, deadline: float, poll: float) -> None:
    next_note, delay = 0.0, poll
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if next_note:
                log.info("took the lock %s", path)
            return
        except OSError as err:
            if err.errno not in _BUSY:
                raise
        holder, pid = _describe_holder(fd)
        now = time.monotonic()
        if now >= deadline and pid is None and now < deadline + _PID_GRACE_S:
            time.sleep(0.01)
            continue
        if now >= deadline:
            stop = f"stop it (kill {pid})" if pid is not None else "stop it"
            raise LockTimeout(
                f"gave up after {limit:g} s waiting for the lock {path}, held by {holder}. "
                f"If that job is still working, let it finish or allow a longer wait with "
                f"{TIMEOUT_ENV}=<seconds>; if it hangs, {stop} and start again."
            )
        if now >= next_note:
            log.info(
                "waiting for the lock %s, held by %s (giving up in %.0f s)", path, holder, deadline - now
            )
            next_note = now + _REPEAT_NOTE_S
        time.sleep(min(delay, max(deadline - now, 0.0)))
        delay = min(delay * 2, 1.0)


# Marks: shared locks that say "a process is reading this folder". One descriptor per file per process.
@dataclass
class _Mark:
    fd: int | None  # None: a folder that cannot be locked (read-only): nobody can remove it either
    key: tuple[int, int] | None
    count: int = 1
    pid: int = field(default_factory=os.getpid)
    spare: list[int] = field(default_factory=list)  # more descriptors of the same file, closed with fd


_marks: dict[tuple[int, int], _Mark] = {}
_marks_guard = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child holds none of its parent's locks (and must not release them): start empty."""
    global _marks_guard, _guard
    _marks.clear()
    _thread_locks.clear()
    _marks_guard, _guard = threading.Lock(), threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


class InUse:
    """A shared mark on a lock file; `release()` (or the owner's garbage collection) drops it."""

    def __init__(self, mark: _Mark) -> None:
        self._mark: _Mark | None = mark

    def release(self) -> None:
        mark, self._mark = self._mark, None
        if mark is None or mark.pid != os.getpid():  # released already, or a forked copy
            return
        with _marks_guard:
            mark.count -= 1
            if mark.count > 0:
                return
            if mark.key is not None and _marks.get(mark.key) is mark:
                del _marks[mark.key]
            for fd in (mark.fd, *mark.spare):
                if fd is not None:
                    os.close(fd)


def _open_lock_file(path: Path) -> int | None:
    """A read-write descriptor of `path` (created), a read-only one in a read-only folder, or None."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None


def _key(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def mark_in_use(path: Path) -> InUse | None:
    """Mark the lock file `path` (created if missing) in use by this process, without waiting.

    None when a cleaner holds it (the folder is being removed) or it was replaced meanwhile; raises
    FileNotFoundError when its folder is gone.
    """
    with _marks_guard:
        with contextlib.suppress(FileNotFoundError):
            mark = _marks.get(_key(os.stat(path)))
            if mark is not None:
                mark.count += 1
                return InUse(mark)
        fd = _open_lock_file(path)
        if fd is None:
            return InUse(_Mark(None, None))
        key = _key(os.fstat(fd))
        mark = _marks.get(key)
        if mark is not None:  # the path came to name a file this process marks: closing fd would unlock it
            mark.spare.append(fd)
            mark.count += 1
            return InUse(mark)
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in _BUSY:
                return None
            raise
        mark = _marks[key] = _Mark(fd, key)
    try:
        still_there = _key(os.stat(path)) == key  # a cleaner may have renamed it before we locked
    except FileNotFoundError:
        still_there = False
    if not still_there:
        InUse(mark).release()
        return None
    return InUse(mark)


@contextlib.contextmanager
def claim_unused(path: Path) -> Iterator[bool]:
    """Lock `path` exclusively without waiting: yields True when no other process marks it in use (the
    caller may then remove its folder; readers that come later see it being removed), else False.

    A process's own marks do not count: a process never protects a folder from itself."""
    fd, mark = _claim(path)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        if mark is None:  # converting this process's own mark back; its folder is most likely gone
            with contextlib.suppress(OSError):
                fcntl.lockf(fd, fcntl.LOCK_SH)
        else:
            InUse(mark).release()


def _claim(path: Path) -> tuple[int | None, _Mark | None]:
    """(descriptor now locked exclusively, or None; the temporary mark to release, None if our own)."""
    with _marks_guard:
        try:
            own = _marks.get(_key(os.stat(path)))
        except FileNotFoundError:
            own = None
        if own is not None and own.fd is None:
            return None, None
        fd = own.fd if own is not None else _open_lock_file(path)
        if fd is None:
            return None, None  # read-only: not ours to remove
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if own is None:
                os.close(fd)
            if err.errno in (*_BUSY, errno.EBADF):  # EBADF: opened read-only
                return None, None
            raise
        if own is not None:
            return fd, None
        key = _key(os.fstat(fd))
        mark = _marks[key] = _Mark(fd, key)
        return fd, mark
