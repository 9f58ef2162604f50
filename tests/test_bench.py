"""The benchmark, shrunk: every section measures and prints one table (the figures come from real runs)."""

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir

from carvana_seg.errors import InputError
from carvana_seg.tools.bench import bench
from tests.conftest import CONF_DIR, ROOT, write_masks_csv


def test_bench_prints_every_section_of_one_table(carvana_dir, tmp_path, capsys):
    write_masks_csv(carvana_dir)  # Kaggle's layout: the start-up from train_masks.csv is measured too
    overrides = [
        "data=carvana",
        f"data.root={carvana_dir}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"output={tmp_path / 'bench' / 'table.md'}",
        "device=cpu",
        "repeats=1",
        "loader.size=[32,48]",
        "loader.count=4",
        "loader.startup_files=64",
        "train.sizes.cpu=[[32,48]]",
        "train.steps=2",
        "train.warmup_steps=1",
        "models.unet.base_channels=4",
        "models.unet.depth=2",
        "predict.images=4",
        "predict.batch_size=2",
        "predict.num_workers=0",
        "predict.input_size.cpu=[32,48]",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        rows = bench(compose("bench", overrides=overrides))
    assert {r["section"] for r in rows} == {"loader", "train", "predict"}
    parity = [r for r in rows if r["what"].startswith("parity")]
    measured = [r for r in rows if not r["note"].startswith("skipped") and r not in parity]
    assert all((r["images_per_s"] or r["seconds"] or 0) > 0 for r in measured)
    assert any("Lightning vs plain" in r["what"] for r in rows)
    # Predict's two ways to full size side by side, their outputs compared, and the exported network.
    assert [r["note"] for r in parity] == ["identical", "identical"]
    assert any("edge band" in r["what"] for r in measured) and any(
        "full interpolation" in r["what"] for r in measured
    )
    assert any("ONNX Runtime" in r["what"] for r in measured)
    assert any("without flip TTA" in r["what"] for r in measured)  # the cost of predict's second pass
    assert any("start-up, train_masks.csv" in r["what"] for r in measured)
    assert any(r["note"].endswith("pixels identical") for r in measured)  # the reader against OpenCV
    table = (tmp_path / "bench" / "table.md").read_text()
    assert table in capsys.readouterr().out and table.count("\n| ") == len(rows) + 1


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sections=[loader,trian]", "sections must be a list of loader, train, predict"),
        ("sections=[]", "sections must be a list"),
        ("repeats=0", "repeats must be a whole number >= 1"),
        ("device=gpu", "device must be auto, cpu or cuda"),
        # The predict section runs last: its options are checked with the benchmark's own.
        ("predict.precision=16mixed", "predict.precision must be one of"),
        ("predict.batch_size=0", "predict.batch_size must be a whole number >= 1"),
        ("predict.images=0", "predict.images must be a whole number >= 1"),
        ("predict.num_workers=-1", "predict.num_workers must be a whole number >= 0"),
        ("predict.onnx=no", "predict.onnx must be true or false"),
        ("predict.input_size.cpu=[160]", "predict.input_size.cpu"),
    ],
)
def test_a_bad_option_is_named_before_any_section_runs(tmp_path, override, message):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"output={tmp_path / 'table.md'}", "device=cpu", override])
    with pytest.raises(InputError, match=message):
        bench(cfg)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("output", ["a_folder", "bench.jsonl"])
def test_an_output_that_would_lose_the_table_is_refused_before_any_section(tmp_path, output):
    (tmp_path / "a_folder").mkdir()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("bench", overrides=[f"output={tmp_path / output}"])
    with pytest.raises(InputError, match=f"output={tmp_path / output}"):
        bench(cfg)
    assert [p.name for p in tmp_path.iterdir()] == ["a_folder"]


def test_a_missing_checkpoint_exits_2_before_the_first_section(tmp_path):
    missing = tmp_path / "runs" / "best.ckpt"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carvana_seg.tools.bench",
            "sections=[loader,predict]",
            f"predict.ckpt_path={missing}",
            f"output={tmp_path / 'bench' / 'table.md'}",
            f"hydra.run.dir={tmp_path / 'logs'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2 and f"{missing}" in output and "does not exist" in output, output[-2000:]
    assert "Traceback" not in output and not (tmp_path / "bench").exists()
