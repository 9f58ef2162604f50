"""The command line as a user runs it: a training run, a multirun, TensorBoard over HTTP, bad input."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import ROOT, car_id, write_carvana

pytestmark = pytest.mark.slow

# conf/debug/tiny.yaml over 2 epochs.
SMALL = ["debug=tiny", "trainer.max_epochs=2"]


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "carvana_seg.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One real `python -m carvana_seg.train model=unet loss=bce_dice` run on the built-in data, shrunk."""
    base = tmp_path_factory.mktemp("cli")
    run_dir = base / "run"
    result = run_cli(
        "model=unet",
        "loss=bce_dice",
        "data.synthetic.cars=4",
        "data.synthetic.size=[64,96]",
        f"paths.cache_dir={base / 'cache'}",
        *SMALL,
        "model.base_channels=4",
        f"hydra.run.dir={run_dir}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


def test_a_cli_run_writes_config_metrics_and_tensorboard_events(finished_run):
    config = (finished_run / ".hydra" / "config.yaml").read_text()
    assert "carvana_seg.synthetic.datamodule.SyntheticDataModule" in config and "synthetic:" in config
    metrics = json.loads((finished_run / "metrics.json").read_text())
    assert 0.0 <= metrics["val/dice"] <= 1.0
    events = EventAccumulator(str(finished_run / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    tags = events.Tags()
    for tag in (
        "val/dice",
        "val/dice_best",
        "val/accuracy",
        "val/dice_mean_classes",
        "val/iou",
        "train/dice",
    ):
        assert tag in tags["scalars"], tag
    assert len(events.Scalars("val/dice")) == 2  # one value per epoch
    assert "val/predictions" in tags["images"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def test_tensorboard_serves_the_scalars_and_the_prediction_grid(finished_run):
    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen(
        [
            str(tensorboard),
            "--logdir",
            str(finished_run),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--reload_interval",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        tags: dict = {}
        while time.monotonic() < deadline:
            try:
                tags = json.loads(get(f"{base}/data/plugin/scalars/tags"))
                if any("val/dice" in run_tags for run_tags in tags.values()):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        run = next(name for name, run_tags in tags.items() if "val/dice" in run_tags)
        query = urllib.parse.urlencode({"run": run, "tag": "val/dice"})
        points = json.loads(get(f"{base}/data/plugin/scalars/scalars?{query}"))
        assert len(points) == 2 and all(0.0 <= value <= 1.0 for _, _, value in points)

        image_tags = json.loads(get(f"{base}/data/plugin/images/tags"))
        assert "val/predictions" in image_tags[run]
        query = urllib.parse.urlencode({"run": run, "tag": "val/predictions", "sample": 0})
        entries = json.loads(get(f"{base}/data/plugin/images/images?{query}"))
        assert len(entries) == 2  # one grid per validation epoch
        png = get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        from io import BytesIO

        grid = np.asarray(Image.open(BytesIO(png)))
        # Rows of (photo | true mask | predicted mask) for 4 samples of 32x48, with 2-pixel padding.
        assert grid.shape[:2] == (4 * 34 + 2, 3 * 50 + 2)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_multirun_gives_each_job_its_own_directory_and_tensorboard_run(tmp_path):
    data = write_carvana(tmp_path / "data", cars=3)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        "model=cnn,unet",
        "loss=bce",
        "data=carvana",
        f"data.root={data}",
        *SMALL,
        "trainer.max_epochs=1",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, model in zip(jobs, ["cnn", "unet"], strict=True):
        assert f"model={model}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert (job / "metrics.json").is_file()
        assert list((job / "tensorboard").glob("events.out.tfevents.*"))


def test_bad_data_stops_before_training_with_the_path_and_no_traceback(tmp_path):
    data = write_carvana(tmp_path / "data", cars=3)
    (data / "train_masks" / f"{car_id(1)}_02_mask.gif").unlink()
    result = run_cli("data=carvana", f"data.root={data}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}")
    output = result.stdout + result.stderr
    assert result.returncode == 2
    assert f"{car_id(1)}_02.jpg" in output and "without a mask" in output
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_data_root_is_reported(tmp_path):
    result = run_cli("data=carvana", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "data.root" in result.stdout + result.stderr


def test_unknown_option_of_a_group_is_hydras_error(tmp_path):
    result = run_cli("model=resnet9000", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 1
    assert "Could not find 'model/resnet9000'" in result.stderr
