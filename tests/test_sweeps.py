"""Sweeps on Hydra's own engines: the summary table of a sweep, the Optuna search, the joblib launcher,
and the configs of the launchers and DDP trainers."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import joblib
import pytest
import yaml
from hydra import compose, initialize_config_dir

from carvana_seg.tools.sweep_summary import find_jobs, write_summary
from tests.conftest import CONF_DIR, ROOT, write_carvana
from tests.test_cli import run_cli

TINY_SWEEP = ["data=carvana", "debug=tiny", "callbacks.prediction_grid=null"]
TINY_CNN = ["model=cnn", "model.hidden_channels=4"]


def run_sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
    """`python -m carvana_seg.train -m OVERRIDES` at the tests' size on three written cars; the sweep
    folder is tmp_path/sweep."""
    data = write_carvana(tmp_path / "data", cars=3)
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m",
        *overrides,
        *TINY_SWEEP,
        f"data.root={data}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    )
    return result, sweep


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    """The rows of the sweep's summary.csv."""
    with (sweep / "summary.csv").open() as handle:
        return list(csv.DictReader(handle))


def summary_cli(folder: Path) -> subprocess.CompletedProcess[str]:
    """`python -m carvana_seg.tools.sweep_summary FOLDER` as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "carvana_seg.tools.sweep_summary", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_job(sweep: Path, num: int, overrides: list[str], metrics: dict | None, status: dict | None = None):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if status is not None:
        (job / "job_status.json").write_text(json.dumps(status))


def scores(dice: float) -> dict:
    return {
        "val/dice": dice,
        "val/dice_best": dice + 0.01,
        "val/accuracy": 0.9,
        "val/iou": 0.5,
        "val/dice_mean_classes": 0.7,
        "val/loss": 0.3,
        "epochs": 3,
        "wall_time_s": 12.345,
        "best_checkpoint": "x/best.ckpt",
    }


def test_the_summary_of_a_sweep_lists_every_job_in_order_and_shows_failed_ones(tmp_path: Path):
    sweep = tmp_path / "sweep"
    common = ["data=carvana", "data.root=/data/carvana"]
    fake_job(sweep, 0, ["model=cnn", "loss=bce", *common], scores(0.61))
    fake_job(sweep, 1, ["model=cnn", "loss=dice", *common], scores(0.72))
    fake_job(
        sweep,
        2,
        ["model=unet", "loss=bce", *common],
        None,
        {"status": "failed", "error": "RuntimeError: boom"},
    )
    fake_job(sweep, 3, ["model=unet", "loss=dice", *common], None)  # killed: nothing recorded
    fake_job(sweep, 10, ["model=unet", "loss=bce_dice", *common], scores(0.85))
    (sweep / "multirun.yaml").write_text("hydra: {}\n")  # not a job folder

    assert [job.num for job in find_jobs(sweep)] == [0, 1, 2, 3, 10]
    markdown = write_summary(sweep)
    assert (sweep / "summary.md").read_text() == markdown
    lines = markdown.splitlines()
    assert lines[0] == (
        "| job | model | loss | status | val/dice | val/dice_best | val/accuracy | val/iou "
        "| val/dice_mean_classes | val/loss | epochs | wall_time_s |"
    )  # only the overrides that vary: data.root is the same for every job
    assert (
        lines[2] == "| 0 | cnn | bce | ok | 0.6100 | 0.6200 | 0.9000 | 0.5000 | 0.7000 | 0.3000 | 3 | 12.3 |"
    )
    assert lines[4].startswith("| 2 | unet | bce | failed: RuntimeError: boom |  |")
    assert lines[5].startswith("| 3 | unet | dice | failed: no metrics.json |  |")
    assert lines[6].startswith("| 10 | unet | bce_dice | ok | 0.8500 |")
    assert "5 jobs, 3 finished, 2 failed." in markdown
    assert "Best val/dice_best: 0.8600, job 10 (model=unet loss=bce_dice)." in markdown

    rows = summary_rows(sweep)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "10"]
    assert rows[1]["loss"] == "dice" and rows[1]["val/dice"] == "0.7200" and rows[1]["epochs"] == "3"
    assert rows[2]["status"] == "failed: RuntimeError: boom" and rows[2]["val/dice"] == ""

    # The command line rebuilds the same table from the folder alone.
    (sweep / "summary.md").unlink()
    (sweep / "summary.csv").unlink()
    result = summary_cli(sweep)
    assert result.returncode == 0, result.stderr
    assert result.stdout == markdown == (sweep / "summary.md").read_text()
    assert (sweep / "summary.csv").is_file()

    result = summary_cli(tmp_path)
    assert result.returncode == 2 and "no job folders" in result.stderr


def test_job_files_edited_or_cut_short_list_the_job_as_failed_saying_why(tmp_path: Path):
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["loss=bce"], scores(0.61))
    fake_job(sweep, 1, ["loss=dice"], scores(0.72))
    (sweep / "1" / "metrics.json").write_text("[0.72]")  # JSON, but not train's
    fake_job(sweep, 2, ["loss=bce_dice"], {**scores(0.9), "val/dice_best": "0.91"})  # a string
    fake_job(sweep, 3, ["loss=focal"], scores(0.99), {"status": "ok"})
    (sweep / "3" / ".hydra" / "overrides.yaml").write_text("[unclosed")  # cut short: not YAML
    fake_job(sweep, 4, ["loss=x"], scores(0.5), ["not", "a", "status"])  # any JSON: not the callback's
    result = summary_cli(sweep)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3].startswith("| 1 | dice | failed: metrics.json is not a JSON object |  |")
    assert lines[4].startswith("| 2 | bce_dice | failed: metrics.json: val/dice_best not a number |  |")
    assert lines[5].startswith("| 3 |  | failed: unreadable .hydra/overrides.yaml (")
    assert lines[6].startswith("| 4 | x | ok | 0.5000 |")
    assert "5 jobs, 2 finished, 3 failed." in result.stdout
    assert "Best val/dice_best: 0.6200, job 0 (loss=bce)." in result.stdout


def compose_with_hydra(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train", overrides=["data=carvana", "data.root=/data", *overrides], return_hydra_config=True
        )


def test_the_search_the_launchers_and_the_ddp_trainers_compose():
    cfg = compose_with_hydra("hparams_search=unet_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.sampler._target_.endswith("TPESampler")
    assert sweeper.sampler.seed is not None
    assert set(sweeper.params) == {
        "optimizer.lr",
        "loss.bce_weight",
        "loss.dice_weight",
        "model.base_channels",
        "model.depth",
        "data.batch_size",
    }
    assert cfg.optimized_metric == "val/dice_best"
    assert cfg.model._target_.endswith("UNet") and cfg.loss._target_.endswith("BCEDiceLoss")
    assert cfg.hydra.callbacks.sweep_summary._target_ == "carvana_seg.tools.sweep_summary.SweepSummary"

    cfg = compose_with_hydra("hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2

    cfg = compose_with_hydra("trainer=ddp")
    assert cfg.trainer.strategy == "ddp" and cfg.trainer.sync_batchnorm and cfg.trainer.num_nodes == 1

    # The SLURM launcher follows the trainer: one task per GPU, one SLURM node per Lightning node.
    cfg = compose_with_hydra("trainer=ddp_multinode", "hydra/launcher=slurm", "hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (2, 4)
    cfg = compose_with_hydra("hydra/launcher=slurm")  # single-device trainer: one task, one GPU
    assert (cfg.hydra.launcher.nodes, cfg.hydra.launcher.tasks_per_node) == (1, 1)


@pytest.mark.slow
def test_an_optuna_search_runs_its_trials_and_keeps_results_in_the_sweep_folder(tmp_path: Path):
    result, sweep = run_sweep(
        tmp_path,
        "hparams_search=unet_optuna",
        "hydra.sweeper.n_trials=2",
        # Fixed on the command line, so out of the search: a tiny U-Net at a tiny batch.
        "model.base_channels=4",
        "model.depth=2",
        "data.batch_size=4",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    best_dice = []
    for trial in ("0", "1"):
        overrides = yaml.safe_load((sweep / trial / ".hydra" / "overrides.yaml").read_text())
        assert "model.depth=2" in overrides and "model.base_channels=4" in overrides
        lr = float(next(o for o in overrides if o.startswith("optimizer.lr=")).split("=")[1])
        assert 1e-4 <= lr <= 1e-2
        best_dice.append(json.loads((sweep / trial / "metrics.json").read_text())["val/dice_best"])

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"optimizer.lr", "loss.bce_weight", "loss.dice_weight"}
    assert results["best_value"] == pytest.approx(max(best_dice))

    with warnings.catch_warnings():  # optuna 2.10 (what the sweeper needs) on SQLAlchemy 1.4
        warnings.simplefilter("ignore", DeprecationWarning)
        import optuna

    study = optuna.load_study(study_name="unet_optuna", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(best_dice))

    summary = (sweep / "summary.md").read_text()
    assert "| job | optimizer.lr | loss.bce_weight | loss.dice_weight | status |" in summary
    assert "2 jobs, 2 finished, 0 failed." in summary
    assert "Sweep summary" in result.stdout


@pytest.mark.slow
def test_the_joblib_launcher_runs_jobs_in_parallel_with_their_share_of_the_cores(tmp_path: Path):
    result, sweep = run_sweep(
        tmp_path,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *TINY_CNN,
        "loss=bce,dice",
        "data.num_workers=1",  # loader workers inside joblib's (loky) workers
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in result.stdout + result.stderr
    # loky sets OMP_NUM_THREADS = cores // n_jobs in each job, unless the environment already has it.
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(joblib.cpu_count() // 2, 1))
    for job, loss in (("0", "bce"), ("1", "dice")):
        assert f"loss={loss}" in (sweep / job / ".hydra" / "overrides.yaml").read_text()
        assert (sweep / job / "metrics.json").is_file()
        assert f"torch threads per process: {threads}" in (sweep / job / "train.log").read_text()

    # The table is printed at the end of the sweep and kept as summary.md / summary.csv.
    summary = (sweep / "summary.md").read_text()
    assert summary in result.stdout
    lines = summary.splitlines()
    assert lines[0].startswith("| job | loss | status | val/dice | val/dice_best |")
    assert lines[2].startswith("| 0 | bce | ok | ") and lines[3].startswith("| 1 | dice | ok | ")
    assert "2 jobs, 2 finished, 0 failed." in summary
    rows = summary_rows(sweep)
    assert [(row["job"], row["loss"], row["status"]) for row in rows] == [
        ("0", "bce", "ok"),
        ("1", "dice", "ok"),
    ]
    assert all(0.0 <= float(row["val/dice"]) <= 1.0 for row in rows)


@pytest.mark.slow
def test_a_grid_with_a_failing_job_still_leaves_its_summary(tmp_path: Path):
    result, sweep = run_sweep(
        tmp_path,
        *TINY_CNN,
        "optimizer.lr=0.001,-1",  # Adam refuses a negative learning rate: job 1 fails before its data
    )
    assert result.returncode != 0  # Hydra ends a sweep with a failed job with an error
    rows = summary_rows(sweep)
    assert [(row["job"], row["optimizer.lr"]) for row in rows] == [("0", "0.001"), ("1", "-1")]
    assert rows[0]["status"] == "ok" and float(rows[0]["val/dice"]) >= 0.0
    assert rows[1]["status"] == "failed: InputError: optimizer: Invalid learning rate: -1"
    assert rows[1]["val/dice"] == ""
    assert "2 jobs, 1 finished, 1 failed." in (sweep / "summary.md").read_text()


@pytest.mark.slow
def test_a_job_whose_option_a_constructor_refuses_is_listed_with_the_plain_message(tmp_path: Path):
    result, sweep = run_sweep(
        tmp_path,
        *TINY_CNN,
        "data.mask_scale=1,0",  # the data module refuses 0 under Hydra's instantiate
    )
    assert result.returncode != 0
    rows = summary_rows(sweep)
    assert [row["status"] for row in rows] == [
        "ok",
        "failed: DataError: data.mask_scale must be a whole number >= 1, got 0",
    ]
