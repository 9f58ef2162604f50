"""The decoded cache and its lock under faults: builders killed by `kill -9`, jobs racing, a reader
whose cache goes stale, a full disk. Real processes, real signals, real files."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from carvana_seg.data.cache import open_or_build, usable_cache_dir
from carvana_seg.data.labelled import labelled_samples
from carvana_seg.data.lock import LockTimeout, file_lock
from carvana_seg.errors import DataError
from tests.conftest import ROOT, car_id, write_carvana

SIZE = (32, 48)

# One job of the cache: build or open the cache of a folder, say which one it got, and (as a reader)
# keep it open until told to read every row. Modes: "build", "reader", "no-locks" (a file system whose
# locks do not work: every builder gets "the lock", and all of them are inside it at once).
JOB = textwrap.dedent(
    """
    import contextlib, json, logging, os, sys, time
    from pathlib import Path

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(process)d %(name)s %(message)s")
    import carvana_seg.data.cache as cache
    from carvana_seg.data.labelled import labelled_samples

    root, cache_dir, mode, size = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], (32, 48)
    barrier = Path(sys.argv[4]) if len(sys.argv) > 4 else None

    def meet(name):  # wait until both racers got here
        (barrier / f"{name}-{os.getpid()}").touch()
        while len(list(barrier.glob(f"{name}-*"))) < 2:
            time.sleep(0.002)

    if mode == "no-locks":
        @contextlib.contextmanager
        def no_lock(*args, **kwargs):
            meet("inside")
            yield
        cache.file_lock = no_lock
    samples, _ = labelled_samples(root, check_files=False)
    if barrier is not None:
        meet("ready")
    opened = cache.open_or_build(cache_dir, root, samples, size, workers=2)
    print(json.dumps({"folder": str(opened.folder), "rows": len(opened)}), flush=True)
    if mode == "reader":
        sys.stdin.readline()
        total = sum(int(opened.get(name)[0].sum()) for name in opened.names)
        print(json.dumps({"read": len(opened.names), "total": total}), flush=True)
    """
)

HOLDER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from carvana_seg.data.lock import file_lock

    with file_lock(Path(sys.argv[1]), what="a test holding it"):
        if sys.argv[2] == "fork":  # a child that outlives its parent, as a build worker can
            child = os.fork()
            if child == 0:
                time.sleep(60)
                os._exit(0)
            print(child, flush=True)
        print("locked", flush=True)
        time.sleep(60)
    """
)


def script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def start(*args: object, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, **kwargs
    )


def cache_folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "decoded").glob("*/*") if p.is_dir())


def arrays(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    return (
        json.loads((folder / "names.json").read_text()),
        np.load(folder / "images.npy"),
        np.load(folder / "masks.npy"),
    )


def assert_same_cache(folder: Path, clean: Path) -> None:
    names, images, masks = arrays(folder)
    clean_names, clean_images, clean_masks = arrays(clean)
    assert names == clean_names
    assert np.array_equal(images, clean_images) and np.array_equal(masks, clean_masks)


def build_here(root: Path, cache_dir: Path, size=SIZE, workers: int = 1):
    samples, _ = labelled_samples(root, check_files=False)
    return open_or_build(cache_dir, root, samples, size, workers=workers)


def _stat(pid: int) -> list[str] | None:
    """State, parent, group, ... of process `pid` from /proc (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    members = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return [pid for pid in members if (fields := _stat(pid)) and int(fields[2]) == pgid and fields[0] != "Z"]


def wait_for_build(cache_dir: Path, builder: subprocess.Popen) -> None:
    """Until `builder` is filling its build folder (or has finished)."""
    deadline = time.monotonic() + 20
    while not list(cache_dir.glob(f"decoded/*/*.building-{builder.pid}-*")) and builder.poll() is None:
        assert time.monotonic() < deadline, "the build never started"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def many_photos(tmp_path_factory) -> Path:
    """3,200 small photos (32 drawn ones, copied under 400 car ids): about a second to cache."""
    root = write_carvana(tmp_path_factory.mktemp("many") / "data", cars=4, views=8, size=(64, 96))
    drawn = [
        (p.read_bytes(), (root / "train_masks" / p.name.replace(".jpg", "_mask.gif")).read_bytes())
        for p in sorted((root / "train").glob("*.jpg"))
    ]
    for car in range(4, 400):
        for view in range(1, 9):
            photo, mask = drawn[(car * 8 + view) % len(drawn)]
            (root / "train" / f"{car_id(car)}_{view:02d}.jpg").write_bytes(photo)
            (root / "train_masks" / f"{car_id(car)}_{view:02d}_mask.gif").write_bytes(mask)
    return root


@pytest.mark.slow
def test_a_build_killed_at_random_points_never_blocks_the_next_and_its_workers_stop(tmp_path, many_photos):
    job = script(tmp_path, "job.py", JOB)
    # A clean build in a process of its own: the cache to compare with, and how long a build takes.
    clean = start(job, many_photos, tmp_path / "clean", "build")
    wait_for_build(tmp_path / "clean", clean)
    began = time.monotonic()
    clean_out, _ = clean.communicate(timeout=60)
    build_time = time.monotonic() - began
    cache_dir = tmp_path / "cache"
    seed = random.randrange(10**6)
    delays = [0.0] + [random.Random(seed + k).uniform(0, 0.8 * build_time) for k in range(2)]
    killed = 0
    for delay in delays:
        builder = start(job, many_photos, cache_dir, "build", start_new_session=True)
        try:
            wait_for_build(cache_dir, builder)
            time.sleep(delay)
            builder.send_signal(signal.SIGKILL)  # the main process only: its workers are orphaned
            killed += builder.wait() == -signal.SIGKILL
            deadline = time.monotonic() + 5
            while group_alive(builder.pid):
                assert time.monotonic() < deadline, f"orphaned build workers kept running (seed {seed})"
                time.sleep(0.05)
        finally:
            for pid in group_alive(builder.pid):  # only if the test failed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            builder.stdout.close()
    assert killed >= 1, f"every build finished before its kill (seed {seed}, build {build_time:.2f} s)"

    began = time.monotonic()
    final = start(job, many_photos, cache_dir, "build")
    out, _ = final.communicate(timeout=60)
    assert final.returncode == 0, f"seed {seed}"
    assert time.monotonic() - began < 30, f"seed {seed}"
    folder = Path(json.loads(out)["folder"])
    assert_same_cache(folder, Path(json.loads(clean_out)["folder"]))
    assert cache_folders(cache_dir) == [folder], f"leftovers of the killed builds (seed {seed})"


def test_a_waiter_names_the_live_holder_and_gives_up_after_its_timeout(tmp_path, caplog):
    lock = tmp_path / ".lock"
    caplog.set_level(logging.INFO, logger="carvana_seg.data.lock")
    holder = start(script(tmp_path, "holder.py", HOLDER), lock, "plain")
    try:
        assert holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        with pytest.raises(LockTimeout) as error, file_lock(lock, timeout=0.5):
            pass
        assert 0.5 <= time.monotonic() - began < 3
        message = str(error.value)
        assert str(lock) in message and f"pid {holder.pid}" in message and "a test holding it" in message
        assert f"kill {holder.pid}" in message and "CARVANA_SEG_LOCK_TIMEOUT" in message
        waiting = [r.getMessage() for r in caplog.records if "waiting for the lock" in r.getMessage()]
        assert waiting and f"pid {holder.pid}" in waiting[0]
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


# Takes the lock as file_lock does, but writes who it is only after argv[2] seconds.
SLOW_HOLDER = textwrap.dedent(
    """
    import fcntl, json, os, socket, sys, time

    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": "now", "what": "slow to say"}
    os.pwrite(fd, (json.dumps(info) + "\\n").encode(), 0)
    time.sleep(60)
    """
)


@pytest.mark.parametrize("says_after", [0.3, 60])
def test_a_waiter_that_does_not_wait_still_names_a_holder_that_has_just_taken_the_lock(tmp_path, says_after):
    """With no wait at all (predict's lock_wait=0) the waiter may look before the holder has written
    its pid: it gives the holder a moment to do so, and names nobody only when it never does."""
    lock = tmp_path / ".lock"
    holder = start(script(tmp_path, "holder.py", SLOW_HOLDER), lock, says_after)
    try:
        assert holder.stdout.readline().strip() == "locked"
        began = time.monotonic()
        with pytest.raises(LockTimeout) as error, file_lock(lock, timeout=0):
            pass
        waited = time.monotonic() - began
        if says_after < 1:
            assert f"held by pid {holder.pid}" in str(error.value) and waited < 1
        else:
            assert "it has not written its pid yet" in str(error.value) and 0.9 < waited < 3
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_cache_folder_is_named_before_any_photo_is_read(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(DataError, match=rf"{folder} cannot be used \(it cannot be written\)"):
            usable_cache_dir(folder)
    finally:
        folder.chmod(0o755)


def test_an_endless_wait_given_as_inf_takes_the_lock(tmp_path, monkeypatch):
    # predict's lock_wait=inf and CARVANA_SEG_LOCK_TIMEOUT=inf: beyond what a thread lock's wait takes.
    with file_lock(tmp_path / ".lock", timeout=float("inf")):
        pass
    monkeypatch.setenv("CARVANA_SEG_LOCK_TIMEOUT", "inf")
    with file_lock(tmp_path / ".lock"):
        pass


def test_a_lock_whose_holder_was_killed_is_taken_at_once_even_while_its_child_lives(tmp_path):
    lock = tmp_path / ".lock"
    holder = start(script(tmp_path, "holder.py", HOLDER), lock, "fork")
    child = int(holder.stdout.readline())
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        assert alive(child)  # the child kept the lock file open, and lives on
        assert str(holder.pid) in lock.read_text()  # and the file still names the dead holder
        began = time.monotonic()
        with file_lock(lock, timeout=10):
            assert time.monotonic() - began < 0.5
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        os.kill(child, signal.SIGKILL)
        holder.stdout.close()


@pytest.mark.parametrize("locks", ["locks", "no-locks"])
def test_two_builders_started_at_once_share_one_complete_published_cache(tmp_path, locks):
    root = write_carvana(tmp_path / "data", cars=8, views=8, size=(64, 96))
    clean = build_here(root, tmp_path / "clean").folder
    job, barrier, cache_dir = script(tmp_path, "job.py", JOB), tmp_path / "barrier", tmp_path / "cache"
    barrier.mkdir()
    mode = "build" if locks == "locks" else "no-locks"
    racers = [start(job, root, cache_dir, mode, barrier, stderr=subprocess.PIPE) for _ in range(2)]
    results = [racer.communicate(timeout=60) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], results
    folders = {json.loads(out)["folder"] for out, _ in results}
    assert len(folders) == 1
    folder = Path(folders.pop())
    assert_same_cache(folder, clean)
    logs = "".join(err for _, err in results)
    assert logs.count("published the decoded cache") == 1
    if locks == "no-locks":  # both built; the second to finish dropped its copy
        assert logs.count("published") == 2 and "dropping this copy" in logs
    assert cache_folders(cache_dir) == [folder]


def test_a_cache_a_running_job_reads_is_kept_by_a_rebuild_and_removed_after(tmp_path):
    root = write_carvana(tmp_path / "data", cars=4, views=4, size=(64, 96))
    cache_dir = tmp_path / "cache"
    reader = start(script(tmp_path, "job.py", JOB), root, cache_dir, "reader", stdin=subprocess.PIPE)
    try:
        first = Path(json.loads(reader.stdout.readline())["folder"])
        photo = root / "train" / f"{car_id(0)}_01.jpg"
        os.utime(photo, ns=(1, 10**18))
        second = build_here(root, cache_dir).folder
        assert second != first
        assert (first / "names.json").is_file()  # the reader's cache survived the clean-up
        out, _ = reader.communicate("read\n", timeout=30)
        assert reader.returncode == 0 and json.loads(out)["read"] == 16
    finally:
        reader.kill()
        reader.wait()
    os.utime(photo, ns=(1, 2 * 10**18))
    third = build_here(root, cache_dir).folder
    assert cache_folders(cache_dir) == [third]  # nobody reads the older ones any more


def test_no_space_for_the_cache_is_a_data_error_and_leaves_nothing_half_built(tmp_path, monkeypatch):
    root = write_carvana(tmp_path / "data", cars=2, views=2, size=(64, 96))
    cache_dir = tmp_path / "cache"
    kept = build_here(root, cache_dir, size=(16, 24)).folder

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)  # a disk this small cannot be made here
    with pytest.raises(DataError, match="no space") as error:
        build_here(root, cache_dir)
    assert str(kept.parent) in str(error.value) and "data.cache=false" in str(error.value)
    assert cache_folders(cache_dir) == [kept]  # no half-built folder, and the other size is intact
    assert build_here(root, cache_dir, size=(16, 24)).folder == kept


@pytest.fixture
def small_disk(tmp_path):
    """A 128 kB tmpfs (root with mount rights only; skipped elsewhere)."""
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux and mount")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_training_with_exit_code_2_and_a_no_space_message(
    small_disk, make_cfg, carvana_dir, caplog
):
    from carvana_seg.train import main

    kept = build_here(carvana_dir, small_disk, size=(16, 24))
    kept.close()
    cfg = make_cfg("data.cache=true", f"data.cache_dir={small_disk}", "data.image_size=[64,96]")
    with pytest.raises(SystemExit) as exit_code:
        main(cfg)
    assert exit_code.value.code == 2
    errors = " ".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    assert "no space" in errors and str(small_disk / "decoded") in errors
    assert cache_folders(small_disk) == [kept.folder]
    assert build_here(carvana_dir, small_disk, size=(16, 24)).folder == kept.folder
