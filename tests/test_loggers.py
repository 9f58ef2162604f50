"""Loggers beside TensorBoard (CSV, MLflow to a local store, W&B offline), early stopping, and the
debug group's overfit and profiler runs."""

from __future__ import annotations

import csv

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from carvana_seg.train import train


def test_csv_and_mlflow_loggers_beside_tensorboard_record_the_metrics(make_cfg, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # what the command's hydra.job.env_set does
    store = tmp_path / "mlruns"
    out = tmp_path / "run"
    cfg = make_cfg(
        "logger=[tensorboard,csv,mlflow]",
        f"logger.mlflow.tracking_uri=file:{store}",
        "trainer.max_epochs=2",
        output_dir=out,
    )
    metrics = train(cfg)

    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    dice = [float(r["val/dice"]) for r in rows if r.get("val/dice")]
    assert len(dice) == 2 and dice[-1] == pytest.approx(metrics["val/dice"], abs=1e-6)
    assert (out / "tensorboard").is_dir()

    client = mlflow.tracking.MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("carvana_seg")
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "val/dice")
    assert [round(m.value, 6) for m in history] == [round(d, 6) for d in dice]
    assert run.data.params["model/_target_"] == "carvana_seg.models.unet.UNet"


def test_wandb_logs_offline_into_the_run_folder(make_cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    out = tmp_path / "run"
    train(make_cfg("logger=[csv,wandb]", output_dir=out))
    offline = list((out / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(p.suffix == ".wandb" for p in offline[0].iterdir())


def test_early_stopping_ends_a_run_that_stops_improving(make_cfg, tmp_path):
    cfg = make_cfg(
        "callbacks=[default,early_stopping]",
        "callbacks.early_stopping.patience=1",
        "callbacks.early_stopping.min_delta=1.0",  # no epoch can improve val/dice by a whole point
        "trainer.max_epochs=10",
        output_dir=tmp_path / "run",
    )
    metrics = train(cfg)
    assert metrics["epochs"] == 2  # the first validation sets the best; one without gain stops the run


def test_debug_overfit_and_profiler_runs(make_cfg, tmp_path):
    # debug=overfit replaces the tests' debug=tiny: its sizes are given here.
    small = ["data.image_size=[32,48]", "data.batch_size=2", "trainer.max_epochs=2"]
    overfit = train(make_cfg("debug=overfit", *small, output_dir=tmp_path / "overfit"))
    assert overfit["steps"] == 4  # the same two batches every epoch
    train(make_cfg("debug=profiler", *small[:2], output_dir=tmp_path / "profiler"))
    report = (tmp_path / "profiler" / "fit-profiler.txt").read_text()
    assert "run_training_epoch" in report and "training_step" in report


def test_tensorboards_hparams_tab_holds_the_config_and_the_validation_metrics(make_cfg, tmp_path):
    out = tmp_path / "run"
    train(make_cfg("trainer.max_epochs=2", output_dir=out))
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    records = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(records["_hparams_/experiment"]).experiment
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"val/dice", "val/dice_best", "val/accuracy", "val/iou"} <= metrics
    assert metrics <= set(events.Tags()["scalars"])  # each column has its values in the same run
    start = HParamsPluginData.FromString(records["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/_target_"].string_value == "carvana_seg.models.unet.UNet"
    assert start.hparams["data/image_size"].string_value == "[32, 48]"
    assert start.hparams["optimizer/lr"].number_value == pytest.approx(1e-3)
    assert len(events.Scalars("val/dice")) == 2  # the two validations only: no made-up starting value
