"""predict: full-size masks and a submission whose rows decode back to them; order; resume; bad input."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from carvana_seg.data import rle
from carvana_seg.data.decode import read_mask
from carvana_seg.errors import InputError
from carvana_seg.inference.submission import verify_submission
from carvana_seg.predict import predict
from tests.conftest import CONF_DIR, ROOT
from tests.conftest import write_photos as photos


def predict_cfg(ckpt: Path, input_dir: Path, output: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "predict",
            overrides=[
                f"ckpt_path={ckpt}",
                f"input={input_dir}",
                f"output={output}",
                "data.num_workers=0",
                "data.batch_size=3",
                "chunk_size=4",
                *overrides,
            ],
        )


def submission_rows(output: Path) -> list[list[str]]:
    with gzip.open(output / "submission.csv.gz", "rt", newline="") as handle:
        return list(csv.reader(handle))


def test_rle_rows_decode_back_to_the_written_full_size_masks(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    result = predict(predict_cfg(ckpt, test, tmp_path / "out"))
    rows = submission_rows(tmp_path / "out")
    assert rows[0] == ["img", "rle_mask"] and len(rows) == 13 and result["images"] == 12
    assert [r[0] for r in rows[1:]] == sorted(p.name for p in test.iterdir())
    for name, encoded in rows[1:]:
        gif = tmp_path / "out" / "masks" / name.replace(".jpg", "_mask.gif")
        with Image.open(gif) as image:
            assert image.mode == "P" and image.size == (96, 64)  # full size, Kaggle-style palette GIF
        mask = read_mask(gif)
        assert set(np.unique(mask)) <= {0, 1}
        assert np.array_equal(rle.decode(encoded, (64, 96)), mask)


def test_the_edge_band_writes_the_masks_and_rows_of_the_full_interpolation(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    band = predict(predict_cfg(ckpt, test, tmp_path / "band", "edge_band=true"))
    full = predict(predict_cfg(ckpt, test, tmp_path / "full", "edge_band=false"))
    assert submission_rows(tmp_path / "band") == submission_rows(tmp_path / "full")
    for gif in sorted((tmp_path / "full" / "masks").iterdir()):
        assert (tmp_path / "band" / "masks" / gif.name).read_bytes() == gif.read_bytes()
    assert band["images_per_second_running"] > 0 and full["images_per_second_running"] > 0


def test_rows_follow_the_sample_submission_and_png_masks(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    names = sorted(p.name for p in test.iterdir())
    order = names[5:] + names[:5]
    sample = tmp_path / "sample_submission.csv"
    # as a spreadsheet saves it: a byte-order mark before the header
    sample.write_text("\ufeffimg,rle_mask\n" + "".join(f"{n},1 1\n" for n in order), encoding="utf-8")
    predict(predict_cfg(ckpt, test, tmp_path / "out", f"sample_submission={sample}", "masks=png"))
    assert [r[0] for r in submission_rows(tmp_path / "out")[1:]] == order
    assert len(list((tmp_path / "out" / "masks").glob("*_mask.png"))) == 12


def test_a_killed_run_resumes_and_ends_with_one_row_per_image(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path, cars=30, views=16)  # 480 photos
    output = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "carvana_seg.predict",
        f"ckpt_path={ckpt}",
        f"input={test}",
        f"output={output}",
        "data.num_workers=0",
        "data.batch_size=4",
        "chunk_size=8",
        "device=cpu",
        f"hydra.run.dir={tmp_path / 'logs'}",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((output / ".parts").glob("part-*.csv.gz"))) < 3:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)  # no clean-up of any kind
    process.wait()
    committed = len(list((output / ".parts").glob("part-*.csv.gz")))
    assert 3 <= committed < 60 and not (output / "submission.csv.gz").exists()

    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["images"] == 480 and 0 < summary["predicted_now"] <= 480 - 8 * committed
    rows = submission_rows(output)[1:]
    assert [r[0] for r in rows] == sorted(p.name for p in test.iterdir())  # no duplicates, no gaps
    verify_submission(output / "submission.csv.gz", [r[0] for r in rows])


def test_empty_input_folder(trained, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no \.jpg or \.png photos"):
        predict(predict_cfg(trained[0], tmp_path / "empty", tmp_path / "out"))


def test_unreadable_photos_stop_the_run_or_are_skipped_and_listed(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    broken = sorted(test.iterdir())[4]
    broken.write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(InputError, match=broken.name):
        predict(predict_cfg(ckpt, test, tmp_path / "stopped"))
    assert not (tmp_path / "stopped").exists()  # nothing written before the check
    result = predict(predict_cfg(ckpt, test, tmp_path / "skipped", "on_error=skip"))
    assert result["skipped_unreadable"] == 1
    rows = dict(submission_rows(tmp_path / "skipped")[1:])
    assert len(rows) == 12 and rows[broken.name] == ""
    assert broken.name in (tmp_path / "skipped" / "unreadable.txt").read_text()


def test_a_checkpoint_that_is_not_ours(tmp_path):
    import torch

    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"layer.weight": torch.zeros(1)}, "epoch": 3}, foreign)
    with pytest.raises(InputError, match="not a carvana_seg checkpoint"):
        predict(predict_cfg(foreign, photos(tmp_path), tmp_path / "out"))


def test_an_output_folder_of_another_run_is_refused_before_any_work(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out"))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    with pytest.raises(InputError, match=r"different prediction run.*threshold"):
        predict(predict_cfg(ckpt, test, tmp_path / "out", "threshold=0.7"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == before  # nothing lost
    (tmp_path / "stranger").mkdir()
    (tmp_path / "stranger" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        predict(predict_cfg(ckpt, test, tmp_path / "stranger"))


def test_a_checkpoint_replaced_in_place_does_not_finish_its_predecessors_run(trained, tmp_path):
    import torch

    ckpt = tmp_path / "last.ckpt"
    shutil.copy(trained[0], ckpt)
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out"))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")}
    # Training went on and wrote a new last.ckpt under the same name.
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    first = next(k for k, v in state["state_dict"].items() if v.is_floating_point())
    state["state_dict"][first] += 0.01
    torch.save(state, ckpt)
    with pytest.raises(InputError, match=r"different prediction run \(it differs in: model_sha256\)"):
        predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*")} == before  # nothing lost


def test_a_checkpoint_replaced_while_predict_reads_it_is_refused(trained, tmp_path, monkeypatch):
    import carvana_seg.predict as command

    ckpt = tmp_path / "last.ckpt"
    shutil.copy(trained[0], ckpt)
    load = command._load

    def load_then_a_run_saves(*args, **kwargs):  # a training run renames its new last.ckpt into place
        loaded = load(*args, **kwargs)
        newer = tmp_path / "newer.ckpt"
        newer.write_bytes(trained[0].read_bytes())
        os.replace(newer, ckpt)
        return loaded

    monkeypatch.setattr(command, "_load", load_then_a_run_saves)
    with pytest.raises(InputError, match="was replaced while it was read"):
        predict(predict_cfg(ckpt, photos(tmp_path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_folder_written_before_the_model_was_recorded_still_resumes(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out"))
    manifest = tmp_path / "out" / "predict.json"
    record = json.loads(manifest.read_text())
    del record["model_sha256"]
    manifest.write_text(json.dumps(record))
    assert predict(predict_cfg(ckpt, test, tmp_path / "out"))["predicted_now"] == 0


def test_a_finished_run_rerun_does_nothing_new(trained, tmp_path):
    ckpt, _ = trained
    test = photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out"))
    again = predict(predict_cfg(ckpt, test, tmp_path / "out"))
    assert again["predicted_now"] == 0 and len(submission_rows(tmp_path / "out")) == 13
