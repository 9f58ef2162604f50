"""predict under faults: two runs into one folder, kills at random points, a changed input between runs,
a folder left inconsistent by an older version, bad options and photos, a network that returns NaN.

Real files and real processes throughout: `python -m carvana_seg.predict` in subprocesses, `kill -9`,
SIGSTOP to hold a run still while it holds its output folder.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from carvana_seg.core.module import SegmentationModule
from carvana_seg.data import rle
from carvana_seg.data.decode import read_mask
from carvana_seg.errors import InputError
from carvana_seg.inference.submission import verify_submission
from carvana_seg.predict import predict
from tests.conftest import CONF_DIR, ROOT
from tests.conftest import write_photos as photos

FAST = ["data.num_workers=0", "device=cpu"]


def predict_cfg(ckpt: Path, input_dir: Path, output: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "predict",
            overrides=[
                f"ckpt_path={ckpt}",
                f"input={input_dir}",
                f"output={output}",
                *FAST,
                "data.batch_size=4",
                "chunk_size=8",
                *overrides,
            ],
        )


def command(ckpt: Path, input_dir: Path, output: Path, logs: Path, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "carvana_seg.predict",
        f"ckpt_path={ckpt}",
        f"input={input_dir}",
        f"output={output}",
        *FAST,
        "data.batch_size=4",
        "chunk_size=8",
        f"hydra.run.dir={logs}",
        *overrides,
    ]


def start(argv: list[str], log: Path | None = None) -> subprocess.Popen:
    """The command in a process of its own; its log (Hydra logs to stdout) and errors to `log`."""
    if log is None:
        return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with log.open("w") as sink:
        return subprocess.Popen(argv, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """The command to its end; `.stdout` holds its log, its errors and its summary."""
    return subprocess.run(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )


def summary(output: str) -> dict:
    return json.loads(output[output.rindex("{\n") :])


def rows_of(output: Path) -> list[list[str]]:
    with gzip.open(output / "submission.csv.gz", "rt", newline="") as handle:
        return list(csv.reader(handle))[1:]


def masks_of(output: Path) -> dict[str, np.ndarray]:
    return {path.name: read_mask(path) for path in sorted((output / "masks").glob("*_mask.gif"))}


def snapshot(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def old_part(rows: list[list[str]]) -> bytes:
    """A committed part as every version wrote it: `img,rle_mask` rows, no header, one gzip member."""
    return gzip.compress("".join(f"{name},{encoded}\n" for name, encoded in rows).encode(), mtime=0)


def parts(output: Path) -> list[Path]:
    return sorted((output / ".parts").glob("part-*.csv.gz"))


# One folder, one predict at a time.


@pytest.mark.slow
def test_two_predicts_started_at_once_into_one_folder_end_with_one_row_per_photo(trained, tmp_path):
    """A real race: whichever claims the folder first predicts; the other is refused at once naming
    it (or, were it slow enough to start after the first ended, finds the work done)."""
    ckpt, _ = trained
    test = photos(tmp_path, cars=15, views=16)  # 240 photos: several seconds of work
    output = tmp_path / "out"
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    runs = [
        start(command(ckpt, test, output, tmp_path / f"logs{i}", "lock_wait=0"), logs[i]) for i in range(2)
    ]
    codes = [process.wait(timeout=300) for process in runs]
    said = [log.read_text() for log in logs]
    assert 0 in codes and set(codes) <= {0, 2}, (codes, [s[-2000:] for s in said])
    for me, other in ((0, 1), (1, 0)):
        if codes[me] == 2:
            assert "is in use by another predict" in said[me] and f"held by pid {runs[other].pid}" in said[me]
    if codes == [0, 0]:
        assert sorted(summary(s)["predicted_now"] for s in said) == [0, 240]
    names = sorted(p.name for p in test.iterdir())
    assert [r[0] for r in rows_of(output)] == names  # one row per photo, no duplicates

    again = predict(predict_cfg(ckpt, test, output, "lock_wait=0"))  # the lock is free again
    assert again["predicted_now"] == 0 and [r[0] for r in rows_of(output)] == names


@pytest.mark.slow
def test_while_one_predict_holds_the_folder_another_is_refused_or_waits_for_it(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path, cars=8, views=16)  # 128 photos; the first is held still meanwhile
    output = tmp_path / "out"
    first = start(command(ckpt, test, output, tmp_path / "logs1"))
    wait_for(lambda: parts(output))
    os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the folder
    try:
        # kill() returns before the signal lands: wait until the kernel shows the process stopped.
        wait_for(lambda: Path(f"/proc/{first.pid}/stat").read_text().split(") ")[1][0] == "T")
        time.sleep(0.2)
        before = snapshot(output)
        refused_log, waiting_log = tmp_path / "refused.log", tmp_path / "waiting.log"
        refused = start(command(ckpt, test, output, tmp_path / "logs2", "lock_wait=1"), refused_log)
        waiting = start(command(ckpt, test, output, tmp_path / "logs3", "lock_wait=300"), waiting_log)
        assert refused.wait(timeout=300) == 2
        said = refused_log.read_text()
        assert f"output {output} is in use by another predict" in said and f"held by pid {first.pid}" in said
        wait_for(lambda: f"held by pid {first.pid}" in waiting_log.read_text())
        assert waiting.poll() is None
        assert snapshot(output) == before  # neither wrote anything
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(timeout=300) == 0
    assert waiting.wait(timeout=300) == 0 and summary(waiting_log.read_text())["predicted_now"] == 0
    assert [r[0] for r in rows_of(output)] == sorted(p.name for p in test.iterdir())


# Killed at any point: the rerun ends with the result of a clean run.


@pytest.mark.slow
def test_kill_9_at_random_points_then_the_rerun_gives_the_clean_result(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path, cars=20, views=16)  # 320 photos: a run takes a few seconds after start-up
    clean = tmp_path / "clean"
    predict(predict_cfg(ckpt, test, clean))
    output = tmp_path / "out"
    argv = command(ckpt, test, output, tmp_path / "logs", "data.num_workers=1", "lock_wait=0")
    seed = time.time_ns() % 10_000
    rng = random.Random(seed)
    delays = sorted(round(rng.uniform(1.0, 15.0), 2) for _ in range(3))
    for delay in delays:
        process = start(argv)
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)  # no clean-up of any kind; its loader worker is orphaned
        process.wait()

    rerun = run(argv)
    assert rerun.returncode == 0, (seed, delays, rerun.stdout[-3000:])  # a dead holder's lock is free
    names = sorted(p.name for p in test.iterdir())
    verify_submission(output / "submission.csv.gz", names)
    assert rows_of(output) == rows_of(clean), (seed, delays)
    masks, expected = masks_of(output), masks_of(clean)
    assert masks.keys() == expected.keys()  # every mask file decodes: none is half-written
    assert all(np.array_equal(masks[name], expected[name]) for name in expected), (seed, delays)
    assert not [p for p in output.rglob("*.tmp")]


# A changed input between runs is refused, naming what changed.


@pytest.mark.slow
def test_a_photo_renamed_between_a_killed_run_and_its_rerun_is_refused_naming_it(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path, cars=15, views=16)
    output = tmp_path / "out"
    process = start(command(ckpt, test, output, tmp_path / "logs"))
    wait_for(lambda: len(parts(output)) >= 2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    old = sorted(test.iterdir())[3]
    new = old.with_name("renamed_" + old.name)
    old.rename(new)
    before = snapshot(output)

    refused = run(command(ckpt, test, output, tmp_path / "logs2"))
    assert refused.returncode == 2 and "different prediction run" in refused.stdout
    assert f"no longer in the input: {old.name}" in refused.stdout and f"new: {new.name}" in refused.stdout
    assert snapshot(output) == before  # nothing written, nothing lost

    new.rename(old)  # put back: the run continues
    result = predict(predict_cfg(ckpt, test, output))
    assert 0 < result["predicted_now"] < 240
    assert [r[0] for r in rows_of(output)] == sorted(p.name for p in test.iterdir())


@pytest.mark.parametrize("change", ["added", "removed"])
def test_a_photo_added_or_removed_after_a_run_is_refused_naming_it(trained, tmp_path, change):
    ckpt, _ = trained
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out"))
    if change == "added":
        shutil.copy(next(test.iterdir()), test / "ffffffffffff_01.jpg")
        named = "ffffffffffff_01.jpg"
    else:
        named = sorted(test.iterdir())[0].name
        (test / named).unlink()
    with pytest.raises(InputError, match=rf"differs in: images, photos\).*{named}"):
        predict(predict_cfg(ckpt, test, tmp_path / "out"))


# A folder left inconsistent by the version before this one is repaired, not refused forever.


def clean_run_and_a_copy_of_its_masks(
    ckpt: Path, tmp_path: Path, copy: str, size: tuple[int, int] = (64, 96)
) -> tuple[Path, list, Path]:
    """12 photos (`size`) predicted into `clean`: (photo folder, its rows, folder `copy` holding only its
    masks and an empty .parts/, for a test to fill as some earlier run left it)."""
    test = photos(tmp_path, size=size)
    clean = tmp_path / "clean"
    predict(predict_cfg(ckpt, test, clean))
    shutil.copytree(clean / "masks", tmp_path / copy / "masks")
    (tmp_path / copy / ".parts").mkdir()
    return test, rows_of(clean), tmp_path / copy


def test_a_folder_with_duplicate_rows_from_two_old_runs_is_repaired_by_a_rerun(trained, tmp_path):
    ckpt, _ = trained
    # What two old predicts into one folder left: both committed rows 0-3 and 4-7 as parts of their
    # own (numbered by counting the parts), and the manifest stored only the photo count.
    test, good, wedged = clean_run_and_a_copy_of_its_masks(ckpt, tmp_path, "wedged")
    clean = tmp_path / "clean"
    for number, chunk in enumerate([good[0:4], good[0:4], good[4:8], good[4:8], good[8:10]]):
        (wedged / ".parts" / f"part-{number:06d}.csv.gz").write_bytes(old_part(chunk))
    manifest = json.loads((clean / "predict.json").read_text())
    del manifest["photos"]
    (wedged / "predict.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    result = predict(predict_cfg(ckpt, test, wedged))
    assert result["predicted_now"] == 2  # the two photos no part held; nothing else redone
    assert rows_of(wedged) == good
    verify_submission(wedged / "submission.csv.gz", [r[0] for r in good])
    assert "photos" in json.loads((wedged / "predict.json").read_text())  # upgraded


@pytest.mark.parametrize(
    ("damage", "problem"),
    [("a b", "not"), ("1 99999999", "outside the 64x96 mask")],  # not numbers; a run far past the 64x96 photo
)
def test_a_damaged_run_length_in_a_committed_part_is_predicted_again_not_submitted(
    trained, tmp_path, damage, problem
):
    ckpt, _ = trained
    test, good, damaged = clean_run_and_a_copy_of_its_masks(ckpt, tmp_path, "damaged")
    clean = tmp_path / "clean"
    rows = [list(row) for row in good[:8]]
    rows[5][1] = damage
    (damaged / ".parts" / "part-000000.csv.gz").write_bytes(old_part(rows))
    shutil.copy(clean / "predict.json", damaged / "predict.json")
    result = predict(predict_cfg(ckpt, test, damaged))
    assert result["predicted_now"] == 7  # from the damaged row on; the five before it are kept
    assert rows_of(damaged) == good

    submission = tmp_path / "submission.csv.gz"
    with gzip.open(submission, "wt", newline="") as handle:
        handle.write("img,rle_mask\n" + "".join(f"{name},{mask}\n" for name, mask in rows))
    with pytest.raises(RuntimeError, match=rf"row 6 \({good[5][0]}\): .*{problem}"):
        verify_submission(submission, [r[0] for r in rows], [(64, 96)] * len(rows))


def test_a_committed_row_longer_than_csvs_default_field_limit_is_kept_and_submitted(trained, tmp_path):
    # A noisy mask's row (here 28,800 runs, 250,000 characters) once failed csv's 131,072-character
    # limit: its part was dropped and predicted again on every rerun, and the submission never passed.
    ckpt, _ = trained
    test, good, noisy = clean_run_and_a_copy_of_its_masks(ckpt, tmp_path, "noisy", size=(120, 480))
    striped = np.zeros((120, 480), np.uint8)  # within its photo: every other pixel
    striped[:, ::2] = 1
    rows = [list(row) for row in good[:8]]
    rows[5][1] = rle.encode(striped)
    (noisy / ".parts" / "part-000000.csv.gz").write_bytes(old_part(rows))
    shutil.copy(tmp_path / "clean" / "predict.json", noisy / "predict.json")
    result = predict(predict_cfg(ckpt, test, noisy))
    assert result["predicted_now"] == len(good) - 8  # only the photos no part held
    assert rows_of(noisy) == rows + good[8:]
    verify_submission(noisy / "submission.csv.gz", [r[0] for r in good])


def test_a_manifest_whose_photos_are_not_a_list_is_another_run_not_a_crash(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    output = tmp_path / "out"
    predict(predict_cfg(ckpt, test, output))
    manifest = json.loads((output / "predict.json").read_text())
    (output / "predict.json").write_text(json.dumps({**manifest, "photos": 12}))
    with pytest.raises(
        InputError, match=r"holds the results of a different prediction run \(it differs in: photos\)"
    ):
        predict(predict_cfg(ckpt, test, output))


# Smaller faults: refused before the output folder exists.


def test_two_photos_that_would_write_one_mask_file_are_refused_naming_both(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    first = sorted(test.iterdir())[0]
    shutil.copy(first, first.with_suffix(".png"))  # not a real PNG: refused before it is read anyway
    with pytest.raises(InputError, match=rf"{first.name} and .*{first.stem}\.png would both write"):
        predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_two_photos_that_would_write_one_overlay_are_refused_even_without_masks(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    first = sorted(test.iterdir())[0]
    shutil.copy(first, first.with_suffix(".png"))
    cfg = predict_cfg(ckpt, test, tmp_path / "out", "masks=none", "overlays=true")
    written = rf"{first.stem}\.png would both write the overlay overlays/{first.stem}\.jpg"
    with pytest.raises(InputError, match=written):
        predict(cfg)
    assert not (tmp_path / "out").exists()


def test_two_photos_of_one_name_in_two_folders_of_a_pattern_are_refused_naming_both(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    first = sorted(test.iterdir())[0]
    (tmp_path / "more").mkdir()
    shutil.copy(first, tmp_path / "more" / first.name)  # one submission row per name: which one?
    with pytest.raises(InputError, match=rf"are both named {first.name}") as refused:
        predict(predict_cfg(ckpt, f"'{tmp_path}/*/*.jpg'", tmp_path / "out"))
    assert str(first) in str(refused.value) and str(tmp_path / "more" / first.name) in str(refused.value)
    assert not (tmp_path / "out").exists()


def test_a_link_to_a_photo_that_is_gone_is_refused_naming_it(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    (test / "ffffffffffff_01.jpg").symlink_to(tmp_path / "unmounted" / "ffffffffffff_01.jpg")
    with pytest.raises(
        InputError, match=r"ffffffffffff_01.jpg is a link to .*unmounted.*which does not exist"
    ):
        predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_photo_twice_in_the_sample_submission_is_refused_naming_it_and_its_line(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    names = sorted(p.name for p in test.iterdir())
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("img,rle_mask\n" + "".join(f"{n},1 1\n" for n in [*names[:6], names[2], *names[6:]]))
    with pytest.raises(InputError, match=rf"line 8: {names[2]} is listed again \(first on line 4\)"):
        predict(predict_cfg(ckpt, test, tmp_path / "out", f"sample_submission={sample}"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("threshold=1", "threshold"),
        ("threshold=0", "threshold"),
        ("threshold=1.5", "threshold"),
        ("threshold=half", "threshold"),
        ("chunk_size=0", "chunk_size"),
        ("writer_threads=0", "writer_threads"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.image_size=[0,48]", "data.image_size"),
        ("lock_wait=-1", "lock_wait"),
        ("lock_wait=nan", "lock_wait"),
        ("data.num_workers=2.5", "data.num_workers"),  # refused, not cut to 2
        ("precision=double", "precision"),
        ("tta_hflip=maybe", "tta_hflip"),
        ("device=0", "device"),  # Hydra's number, not a device name
    ],
)
def test_a_bad_option_is_refused_before_the_output_folder_exists(trained, tmp_path, override, named):
    ckpt, _ = trained
    with pytest.raises(InputError, match=rf"^{named}"):
        predict(predict_cfg(ckpt, photos(tmp_path), tmp_path / "out", override))
    assert not (tmp_path / "out").exists()


def test_a_folder_begun_without_flip_tta_is_finished_by_passing_it_again(trained, tmp_path):
    # Begun before flip TTA became the default: the refusal says how to finish it, not only to remove it.
    ckpt, _ = trained
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out", "tta_hflip=false"))
    with pytest.raises(
        InputError, match=r"differs in: tta_hflip\); pass 'tta_hflip=false' to finish it as it began"
    ):
        predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert predict(predict_cfg(ckpt, test, tmp_path / "out", "tta_hflip=false"))["predicted_now"] == 0


def test_options_are_checked_before_the_checkpoint_is_read(tmp_path):
    # A missing checkpoint would be named first if the steps were checked after loading it.
    with pytest.raises(InputError, match="unknown postprocess"):
        predict(
            predict_cfg(tmp_path / "missing.ckpt", photos(tmp_path), tmp_path / "out", "postprocess=[blob]")
        )
    assert not (tmp_path / "out").exists()


def test_threshold_1_exits_2_with_the_message_and_writes_nothing(trained, tmp_path):
    ckpt, _ = trained
    result = run(command(ckpt, photos(tmp_path), tmp_path / "out", tmp_path / "logs", "threshold=1"))
    assert (
        result.returncode == 2 and "threshold must be a probability strictly between 0 and 1" in result.stdout
    )
    assert "Traceback" not in result.stdout and not (tmp_path / "out").exists()


def test_hidden_files_are_skipped_as_training_skips_them(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    (test / "._000000000000_01.jpg").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    result = predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert result["images"] == 12
    assert [r[0] for r in rows_of(tmp_path / "out")] == sorted(p.name for p in test.glob("[!.]*"))


def test_a_truncated_photo_stops_the_run_before_anything_is_written_or_is_skipped(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    truncated = sorted(test.iterdir())[5]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])  # the header reads; OpenCV would decode it into grey
    with pytest.raises(InputError, match=rf"{truncated.name} is truncated"):
        predict(predict_cfg(ckpt, test, tmp_path / "stopped"))
    assert not (tmp_path / "stopped").exists()

    result = predict(predict_cfg(ckpt, test, tmp_path / "skipped", "on_error=skip"))
    assert result["skipped_unreadable"] == 1
    rows = dict(rows_of(tmp_path / "skipped"))
    assert len(rows) == 12 and rows[truncated.name] == ""
    assert not (tmp_path / "skipped" / "masks" / truncated.name.replace(".jpg", "_mask.gif")).exists()
    assert truncated.name in (tmp_path / "skipped" / "unreadable.txt").read_text()


def test_a_photo_fetched_again_or_changed_after_a_run_is_predicted_again_on_the_rerun(
    trained, tmp_path, caplog
):
    # on_error=skip gave a truncated copy an empty row; fetched again, the rerun must not keep that row.
    ckpt, _ = trained
    test = photos(tmp_path)
    names = sorted(p.name for p in test.iterdir())
    truncated, changed = test / names[5], test / names[8]
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    output = tmp_path / "out"
    predict(predict_cfg(ckpt, test, output, "on_error=skip"))
    assert dict(rows_of(output))[truncated.name] == ""
    assert truncated.name in (output / "unreadable.txt").read_text()

    truncated.write_bytes(whole)
    changed.write_bytes((test / names[0]).read_bytes())  # another photo under the same name
    caplog.clear()
    again = predict(predict_cfg(ckpt, test, output, "on_error=skip"))
    assert again["predicted_now"] == 12 - 5  # the first changed photo and every one after it
    assert "committed photos changed since this folder's run began" in caplog.text
    assert f"{names[5]}, {names[8]}; they and the photos after {names[5]} are predicted again" in caplog.text
    assert "did not continue the photo list" not in caplog.text  # not a fault of the folder
    clean = tmp_path / "clean"
    predict(predict_cfg(ckpt, test, clean))
    assert rows_of(output) == rows_of(clean) and dict(rows_of(output))[truncated.name] != ""
    ours, theirs = masks_of(output), masks_of(clean)
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[k], theirs[k]) for k in ours)
    assert not (output / "unreadable.txt").exists()  # as a clean run leaves it
    unchanged = predict(predict_cfg(ckpt, test, output, "on_error=skip"))
    assert unchanged["predicted_now"] == 0

    changed.write_bytes(b"\xff\xd8 cut short")  # the other way: a photo predicted, then damaged in place
    damaged = predict(predict_cfg(ckpt, test, output, "on_error=skip"))
    assert damaged["predicted_now"] == 12 - 8 and dict(rows_of(output))[changed.name] == ""
    assert changed.name not in {name.replace("_mask.gif", ".jpg") for name in masks_of(output)}
    assert changed.name in (output / "unreadable.txt").read_text()


@pytest.mark.slow
def test_a_skipped_photo_stays_listed_when_the_run_is_killed_after_its_part(trained, tmp_path):
    """The rerun predicts only the photos after the committed parts: the list of unreadable photos
    must not depend on the first run reaching its end."""
    ckpt, _ = trained
    test = photos(tmp_path, cars=20, views=16)
    broken = sorted(test.iterdir())[2]
    broken.write_bytes(b"\xff\xd8 truncated")
    output = tmp_path / "out"
    argv = command(ckpt, test, output, tmp_path / "logs", "on_error=skip", "lock_wait=0")
    process = start(argv)
    try:
        wait_for(lambda: len(parts(output)) >= 2)
    finally:
        os.kill(process.pid, signal.SIGKILL)  # no clean-up of any kind
        process.wait()
    assert broken.name in (output / "unreadable.txt").read_text()

    rerun = run(argv)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert summary(rerun.stdout)["predicted_now"] < 320
    assert dict(rows_of(output))[broken.name] == ""
    assert broken.name in (output / "unreadable.txt").read_text()


def test_two_processes_writing_one_file_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "mask.gif"
    writer = (
        "import sys\nfrom pathlib import Path\nfrom carvana_seg.durable import atomic_write\n"
        "for _ in range(300):\n    atomic_write(Path(sys.argv[1]), sys.argv[2].encode() * 100_000)\n"
    )
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", writer, str(target), letter], cwd=ROOT, stderr=subprocess.PIPE
        )
        for letter in "ab"
    ]
    errors = [process.communicate(timeout=300)[1].decode() for process in writers]
    assert [process.returncode for process in writers] == [0, 0], (
        errors
    )  # the old shared name: FileNotFoundError
    assert target.read_bytes() in (b"a" * 100_000, b"b" * 100_000)  # one writer's, whole
    assert [p.name for p in tmp_path.iterdir()] == ["mask.gif"]


# A broken network.


@pytest.mark.slow
def test_a_network_that_returns_nan_stops_predict_with_exit_2_and_no_submission(trained, tmp_path):
    ckpt, _ = trained
    module = SegmentationModule.load_from_checkpoint(ckpt)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.fill_(1e38)  # finite weights whose products overflow: inf, then inf - inf = NaN
    broken = tmp_path / "broken.ckpt"
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(broken)
    output = tmp_path / "out"

    result = run(command(broken, photos(tmp_path), output, tmp_path / "logs"))
    assert result.returncode == 2, result.stdout[-2000:]
    assert "non-finite logits" in result.stdout and str(broken) in result.stdout
    assert "000000000000_01.jpg" in result.stdout  # the photos of the batch
    assert not (output / "submission.csv.gz").exists() and not parts(output)
    assert not list((output / "masks").iterdir())


def test_a_stray_duplicate_part_is_dropped_and_the_kept_rows_still_decode_to_their_masks(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    output = tmp_path / "out"
    predict(predict_cfg(ckpt, test, output))
    first = parts(output)[0]
    shutil.copy(first, output / ".parts" / "part-000099.csv.gz")  # a stray duplicate at the end
    predict(predict_cfg(ckpt, test, output))
    for name, encoded in rows_of(output):
        assert np.array_equal(
            rle.decode(encoded, (64, 96)), read_mask(output / "masks" / name.replace(".jpg", "_mask.gif"))
        )
