"""The seed's study as recipes: the experiment configs, `make study`'s multirun, the figures made from it,
and the two notebooks run top to bottom (committed without outputs)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from hydra import compose, initialize_config_dir

from carvana_seg.errors import InputError
from carvana_seg.tools import figures
from carvana_seg.tools.sweep_summary import find_jobs
from tests.conftest import CONF_DIR, ROOT, write_carvana

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=unused", *overrides], return_hydra_config=True)


def test_seed_recipes_are_the_seeds_runs_and_differ_by_the_network_only():
    cnn, unet = compose_train("experiment=seed_cnn"), compose_train("experiment=seed_unet")
    assert cnn.model._target_.endswith("SimpleCNN") and unet.model._target_.endswith("UNet")
    for cfg in (cnn, unet):
        assert cfg.loss._target_.endswith("BCELoss")
        assert cfg.trainer.max_epochs == 40
        assert cfg.data.hflip_p == 0.5
        assert cfg.callbacks.model_checkpoint.monitor == "val/dice"
    assert {k: v for k, v in cnn.items() if k not in ("model", "hydra")} == {
        k: v for k, v in unet.items() if k not in ("model", "hydra")
    }


def test_study_recipes_sweep_models_and_losses_and_short_versions_keep_the_recipe():
    study, losses = compose_train("experiment=study"), compose_train("experiment=loss_study")
    assert dict(study.hydra.sweeper.params) == {"model": "cnn,unet", "loss": "bce,dice,bce_dice"}
    assert dict(losses.hydra.sweeper.params) == {"loss": "bce,dice,bce_dice"}
    assert losses.model._target_.endswith("UNet")
    for name in ("seed_cnn", "seed_unet", "loss_study", "study"):
        full = compose_train(f"experiment={name}")
        short = compose_train(f"experiment={name}", "budget=short_cpu")
        assert short.trainer.max_epochs < full.trainer.max_epochs
        assert short.data.image_size[0] < full.data.image_size[0]
        assert short.model == full.model and short.loss == full.loss
        assert short.hydra.sweeper.params == full.hydra.sweeper.params


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """`make study`'s multirun (experiment=study budget=short_cpu: 2 models x 3 losses), seconds per job."""
    base = tmp_path_factory.mktemp("study")
    data = write_carvana(base / "data", cars=4, views=4, size=(64, 96))
    sweep = base / "sweep"
    command = [
        sys.executable,
        "-m",
        "carvana_seg.train",
        "-m",
        "experiment=study",
        "budget=short_cpu",
        "data=carvana",
        f"data.root={data}",
        "data.val_fraction=0.5",
        f"paths.cache_dir={base / 'cache'}",
        f"hydra.sweep.dir={sweep}",
        "debug=tiny",
        "trainer.max_epochs=2",
        "callbacks.prediction_grid=null",
    ]
    subprocess.run(command, cwd=base, check=True, capture_output=True, text=True, timeout=600)
    return sweep


def test_study_runs_every_model_with_every_loss_and_tabulates_them(study_dir: Path):
    jobs = find_jobs(study_dir)
    assert sorted((j.overrides["model"], j.overrides["loss"]) for j in jobs) == sorted(
        (m, loss) for m in ("cnn", "unet") for loss in ("bce", "dice", "bce_dice")
    )
    assert all(job.status == "ok" for job in jobs)
    summary = (study_dir / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("job,model,loss,status") and len(summary) == 7


def test_figures_show_the_curves_the_table_and_the_worst_error(study_dir: Path, tmp_path: Path):
    steps, values = figures.read_scalars(study_dir / "0", "val/dice")
    assert len(steps) == 2 and all(0.0 <= v <= 1.0 for v in values)  # one point per validation epoch
    paths = figures.make_all(study_dir, tmp_path / "images")
    assert [p.name for p in paths] == ["study_curves.png", "study_table.md", "worst_errors.png"]
    assert all(p.stat().st_size > 1000 for p in paths if p.suffix == ".png")
    assert "unet" in paths[1].read_text() and "cnn" in paths[1].read_text()
    evaluated = json.loads(next((study_dir / "eval").glob("*/summary.json")).read_text())
    assert evaluated["split"] == "val" and evaluated["images"] == 8


def test_figures_refuse_a_folder_without_finished_jobs(tmp_path: Path):
    with pytest.raises(InputError, match="make study"):
        figures.make_all(tmp_path, tmp_path / "images")
    assert not (tmp_path / "images").exists()


def test_figures_without_the_best_checkpoint_exit_2_and_keep_the_old_figures(study_dir: Path, tmp_path: Path):
    sweep = tmp_path / "study"
    shutil.copytree(study_dir, sweep, ignore=shutil.ignore_patterns("eval"))
    figures.best_checkpoint(sweep).unlink()
    images = tmp_path / "images"
    images.mkdir()
    (images / "study_curves.png").write_bytes(b"the figure of an earlier study")
    result = subprocess.run(
        [sys.executable, "-m", "carvana_seg.tools.figures", str(sweep), "--out", str(images)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "kept no best.ckpt" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in images.iterdir()] == ["study_curves.png"]
    assert (images / "study_curves.png").read_bytes() == b"the figure of an earlier study"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path: Path):
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def run_notebook(name: str, out: Path, **parameters) -> str:
    """Execute a notebook top to bottom as `make notebooks` does; return the text of all its outputs."""
    import papermill

    papermill.execute_notebook(
        str(ROOT / "notebooks" / name),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        progress_bar=False,
    )
    notebook = nbformat.read(out, as_version=4)
    return "\n".join(
        str(output.get("text", ""))
        + "".join(str(v) for k, v in output.get("data", {}).items() if k.startswith("text/"))
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


def test_data_and_metric_notebook_runs_on_a_carvana_folder(tmp_path: Path):
    data = write_carvana(tmp_path / "data", cars=4, views=16, size=(64, 96))
    text = run_notebook(
        "01_data_and_metric.ipynb",
        tmp_path / "01.ipynb",
        overrides=["data=carvana", f"data.root={data}", f"paths.cache_dir={tmp_path / 'cache'}"],
    )
    assert "none in both" in text and "foreground share over 64 masks" in text
    assert "'accuracy': 0.82" in text and "'dice': 0.0" in text and "all background" in text


def test_results_notebook_reads_the_study(study_dir: Path, tmp_path: Path):
    text = run_notebook(
        "02_results.ipynb", tmp_path / "02.ipynb", study_dir=str(study_dir), n_show=2, worst_k=2
    )
    assert "6 jobs, 6 finished, 0 failed" in text  # the study's table
    assert "full-size mean dice" in text and "on 8 images" in text  # the best U-Net scored on its val cars
