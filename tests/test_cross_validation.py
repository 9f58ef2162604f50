"""Cross-validation by car: the folds (data.folds, data.fold), a multirun over them, the full-size report."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from carvana_seg.config import compose
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.layout import car_folds, split_by_car
from carvana_seg.data.sample import Sample
from carvana_seg.errors import DataError, input_error_in
from carvana_seg.tools.cross_validation import cross_validate
from carvana_seg.tools.cross_validation import main as cross_validation_main
from carvana_seg.tools.cv_folds import cross_validations
from carvana_seg.tools.cv_report import write_report
from carvana_seg.train import train
from tests.conftest import ROOT, TINY_UNET, car_id, write_carvana
from tests.test_cli import run_cli


def samples_of(cars: int, views: int = 3) -> list[Sample]:
    return [
        Sample(Path(f"{car_id(c)}_{v:02d}.jpg"), None, car_id(c), v)
        for c in range(cars)
        for v in range(1, views + 1)
    ]


def cars_of(samples: list[Sample]) -> set[str]:
    return {s.car_id for s in samples}


@pytest.mark.parametrize("folds", [2, 5, 23])
def test_folds_deal_every_car_once_in_sizes_within_one_whatever_the_listing_order(folds: int):
    samples = samples_of(23)
    cars = sorted(cars_of(samples))
    dealt = car_folds(cars, folds, seed=3)
    assert (
        len(dealt) == folds and sorted(car for fold in dealt for car in fold) == cars
    )  # disjoint, and every car
    sizes = [len(fold) for fold in dealt]
    assert max(sizes) - min(sizes) <= 1
    assert car_folds(reversed(cars), folds, seed=3) == dealt == car_folds(cars * 2, folds, seed=3)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    validated: list[str] = []
    for fold in range(folds):
        train, val = split_by_car(samples, 0.2, 3, folds=folds, fold=fold)
        assert sorted(cars_of(val)) == dealt[fold] and cars_of(train) == set(cars) - set(dealt[fold])
        assert len(train) + len(val) == len(samples)
        again = split_by_car(shuffled, 0.2, 3, folds=folds, fold=fold)
        assert [cars_of(side) for side in again] == [cars_of(train), cars_of(val)]
        validated += sorted(cars_of(val))
    assert sorted(validated) == cars
    if folds < 23:
        assert car_folds(cars, folds, seed=4) != dealt  # the seed shuffles


def test_no_folds_is_the_val_fraction_split_as_before():
    samples = samples_of(17)
    for fraction, seed in [(0.2, 0), (0.3, 7), (0.0, 1)]:
        # The split as it was before folds existed.
        cars = sorted(cars_of(samples))
        n_val = max(1, round(fraction * len(cars))) if fraction > 0 else 0
        val_cars = {cars[i] for i in np.random.default_rng(seed).permutation(len(cars))[:n_val]}
        expected = (
            [s for s in samples if s.car_id not in val_cars],
            [s for s in samples if s.car_id in val_cars],
        )
        assert split_by_car(samples, fraction, seed) == expected
        assert split_by_car(samples, fraction, seed, folds=None, fold=None) == expected


@pytest.mark.parametrize(
    ("folds", "fold", "named"),
    [
        (1, 0, "data.folds must be a whole number >= 2"),
        (True, 0, "data.folds must be a whole number >= 2"),
        (3, 3, r"data.fold must be one of 0..2"),
        (3, -1, r"data.fold must be one of 0..2"),
        (3, None, r"data.fold must be one of 0..2"),
        (None, 1, "data.fold=1 needs data.folds"),
    ],
)
def test_bad_fold_options_are_named_before_anything_is_built(tmp_path: Path, folds, fold, named: str):
    with pytest.raises(DataError, match=named):
        CarvanaDataModule(tmp_path / "nowhere", folds=folds, fold=fold)


def test_more_folds_than_cars_stops_the_run_before_a_network(make_cfg, tmp_path: Path):
    with pytest.raises(Exception) as caught:
        train(make_cfg("data.folds=4", "data.fold=0", "data.cache=true"))  # the fixture has 3 cars
    assert "data.folds=4 is more folds than the 3 cars" in str(input_error_in(caught.value))
    assert not (tmp_path / "cache" / "decoded").exists()  # no decoded arrays, no run
    assert not (tmp_path / "run" / "split.json").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_the_recipe_composes_with_folds_and_the_synthetic_data_takes_them(tmp_path: Path):
    cfg = compose("train", ["experiment=carvana_cpu", "data.root=/data", "data.folds=5", "data.fold=4"])
    assert (cfg.data.folds, cfg.data.fold, cfg.data.mask_scale) == (5, 4, 2)
    assert (compose("train").data.folds, compose("train").data.fold) == (None, None)
    data = compose("train", ["data.folds=3", "data.fold=1", f"paths.cache_dir={tmp_path}"]).data
    module = instantiate(data)
    assert type(module).__name__ == "SyntheticDataModule" and (module.folds, module.fold) == (3, 1)


def fold_sweep(tmp_path: Path, sweep: Path, cars: int, views: int, folds: int, epochs: int, extra=()) -> None:
    """A multirun of a tiny U-Net over every fold of `cars` generated cars (and the `extra` overrides)."""
    data = write_carvana(tmp_path / "data", cars=cars, views=views, size=(64, 96))
    result = run_cli(
        "-m",
        "data=carvana",
        f"data.root={data}",
        f"data.folds={folds}",
        f"data.fold=range({folds})",
        *extra,
        "debug=tiny",
        *TINY_UNET,
        f"trainer.max_epochs={epochs}",
        "callbacks.prediction_grid=null",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_a_multirun_over_three_folds_and_its_full_size_report(tmp_path: Path, capsys):
    sweep, cache = tmp_path / "cv", tmp_path / "cache"
    fold_sweep(tmp_path, sweep, cars=6, views=4, folds=3, epochs=3)
    splits = [json.loads((sweep / str(job) / "split.json").read_text()) for job in range(3)]
    assert [(s["folds"], s["fold"]) for s in splits] == [(3, 0), (3, 1), (3, 2)]
    cars = sorted(car_id(c) for c in range(6))
    assert sorted(car for s in splits for car in s["val"]) == cars

    evaluate_options = [f"paths.cache_dir={cache}", "data.num_workers=0", "device=cpu"]
    report = subprocess.run(
        [
            sys.executable,
            "-m",
            "carvana_seg.tools.cross_validation",
            str(sweep),
            *evaluate_options,
            "--ckpt",
            "last",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    markdown = (sweep / "cross_validation.md").read_text()
    assert report.stdout.endswith(markdown)
    per_image = []
    for job, split in enumerate(splits):
        with (sweep / str(job) / "eval_cv" / "per_image.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert sorted({row["car_id"] for row in rows}) == split["val"]  # the run's own validation cars
        per_image += rows
    assert len(per_image) == 24
    overall = np.mean([float(row["dice"]) for row in per_image])
    assert 0.0 < overall < 1.0
    assert f"| 24 | 6 of 6 | 3 of 3 | {overall:.4f} |" in markdown
    assert "Every car validated once: 6 cars, none in two folds." in markdown
    with (sweep / "cross_validation.csv").open() as handle:
        by_car = list(csv.DictReader(handle))
    assert sorted(row["car_id"] for row in by_car) == cars  # every car once
    assert all(row["status"] == "ok" and row["photos"] == "4" for row in by_car)
    means = [float(row["dice_mean"]) for row in by_car]
    assert means == sorted(means)  # worst first
    assert {row["car_id"]: int(row["fold"]) for row in by_car} == {
        car: s["fold"] for s in splits for car in s["val"]
    }

    # A bad evaluate option, or one that fails every fold, leaves the earlier evaluations and report as is.
    before = {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()}
    for option, message in [
        ("threshold=1.5", "threshold must be a probability strictly between 0 and 1, got 1.5"),
        ("precision=fp32", "precision must be one of"),
        ("split=all", "split=all: cross-validation sets split itself"),
        ("tta_hflip=false", "cross-validation sets tta_hflip itself (--no-tta)"),
        (f"data.root={tmp_path / 'empty'}", f"no report written for {sweep} (job 0: evaluate:"),
    ]:
        assert cross_validation_main([str(sweep), *evaluate_options, option]) == 2, option
        assert message in capsys.readouterr().err
        assert {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()} == before, option

    # Fold 1's job failed (as SweepSummary records it): its cars are reported as never validated.
    (sweep / "1" / "metrics.json").unlink()
    (sweep / "1" / "job_status.json").write_text(
        json.dumps({"status": "failed", "error": "RuntimeError: boom"})
    )
    broken = cross_validate(sweep, overrides=evaluate_options)
    assert broken.missing == splits[1]["val"]
    assert np.mean([row["dice"] for row in broken.photos]) == pytest.approx(
        np.mean([float(row["dice"]) for row in per_image if row["car_id"] not in splits[1]["val"]])
    )
    markdown = write_report(broken, tmp_path / "report" / "cv.md")
    assert (
        f"**Never validated: 2 cars** (fold 1 has no evaluated job): {', '.join(splits[1]['val'])}."
        in markdown
    )
    assert "| 1 | 1 | failed: RuntimeError: boom | 2 | 0 |  |  |" in markdown
    with (tmp_path / "report" / "cv.csv").open() as handle:
        by_car = list(csv.DictReader(handle))
    assert sorted(row["car_id"] for row in by_car) == cars
    assert [row["car_id"] for row in by_car if row["status"] != "ok"] == splits[1]["val"]
    assert all(row["status"] == "not validated: failed: RuntimeError: boom" for row in by_car[-2:])

    # A car validated by two jobs is not one cross-validation.
    shutil.copytree(sweep / "0", sweep / "3")
    with pytest.raises(DataError, match=rf"car {splits[0]['val'][0]} is validated by jobs 0 and 3"):
        cross_validate(sweep, overrides=evaluate_options)


def test_a_sweep_over_folds_and_seeds_is_reported_car_by_car_over_the_seeds(tmp_path: Path, capsys):
    sweep, cache = tmp_path / "cv_seeds", tmp_path / "cache"
    fold_sweep(tmp_path, sweep, cars=4, views=2, folds=2, epochs=1, extra=["seed=0,1"])
    groups = cross_validations(sweep)
    assert [folds.label for folds in groups] == ["seed=0", "seed=1"]
    assert [sorted(job.overrides["data.fold"] for job in folds.jobs) for folds in groups] == [["0", "1"]] * 2

    evaluate_options = [f"paths.cache_dir={cache}", "data.num_workers=0", "device=cpu"]
    assert cross_validation_main([str(sweep), *evaluate_options]) == 0
    # Each car's dice in each repeat is its mean over the photos that repeat's fold job scored.
    by_seed: dict[str, dict[str, list[float]]] = {}
    for job_dir in sorted(path for path in sweep.iterdir() if path.name.isdigit()):
        seed = next(
            line
            for line in (job_dir / ".hydra" / "overrides.yaml").read_text().split()
            if line.startswith("seed=")
        )
        with (job_dir / "eval_cv" / "per_image.csv").open() as handle:
            for row in csv.DictReader(handle):
                by_seed.setdefault(seed, {}).setdefault(row["car_id"], []).append(float(row["dice"]))
    with (sweep / "cross_validation_repeats.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["car_id"] for row in rows) == sorted(car_id(c) for c in range(4))
    for row in rows:
        per_seed = [float(np.mean(by_seed[seed][row["car_id"]])) for seed in ("seed=0", "seed=1")]
        assert [row["dice seed=0"], row["dice seed=1"]] == [f"{d:.4f}" for d in per_seed]
        assert (row["repeats"], row["dice_mean"]) == ("2", f"{np.mean(per_seed):.4f}")
        assert (row["dice_lowest_repeat"], row["dice_highest_repeat"]) == (
            f"{min(per_seed):.4f}",
            f"{max(per_seed):.4f}",
        )
    assert [float(row["dice_mean"]) for row in rows] == sorted(float(row["dice_mean"]) for row in rows)
    markdown = (sweep / "cross_validation_repeats.md").read_text()
    assert markdown.startswith("# Repeated cross-validation: 2 repeats")
    assert f"worst car {rows[0]['car_id']} {rows[0]['dice_mean']} " in markdown
    assert f"| {sweep} seed=1 | 8 | 4 of 4 |" in markdown
    for seed in ("seed=0", "seed=1"):  # and each seed's own cross-validation report beside the jobs
        own = (sweep / f"cross_validation_{seed}.md").read_text()
        assert own.startswith(f"# Cross-validation of {sweep} {seed}") and "Every car validated once" in own
    assert not (sweep / "cross_validation.md").exists()

    # Two sweep folders are two repeats; the report needs a place, and the same cars on both sides.
    other = tmp_path / "other"
    shutil.copytree(sweep, other, ignore=shutil.ignore_patterns("eval_cv", "cross_validation.*"))
    for job_dir in (path for path in other.iterdir() if path.name.isdigit()):
        split = json.loads((job_dir / "split.json").read_text())
        (job_dir / "split.json").write_text(json.dumps({**split, "root": str(tmp_path / "elsewhere")}))
    assert cross_validation_main([str(sweep), str(other), *evaluate_options]) == 2
    assert "several sweep folders need --out FILE" in capsys.readouterr().err
    assert cross_validation_main([str(sweep), "--out", str(tmp_path)]) == 2  # a folder, not the file
    assert f"--out {tmp_path} is a folder" in capsys.readouterr().err
    assert cross_validation_main([str(sweep), "--out", str(tmp_path / "cv.csv")]) == 2  # the CSV goes there
    assert "the markdown report's file (.md)" in capsys.readouterr().err
    assert cross_validation_main([str(sweep), str(tmp_path / "runs/lr=0.1")]) == 2
    assert f"{tmp_path / 'runs/lr=0.1'} is not a folder" in capsys.readouterr().err
    assert cross_validation_main([str(sweep), "device=cpu", "no_such_option=1"]) == 2
    assert "evaluate options device=cpu no_such_option=1" in capsys.readouterr().err
    out = tmp_path / "report" / "repeats.md"
    cli = ["carvana_seg.tools.cross_validation", str(sweep), str(other), "--out", str(out), *evaluate_options]
    refused = subprocess.run(
        [sys.executable, "-m", *cli], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert f"was trained on {tmp_path / 'elsewhere'}" in refused.stderr and "the same cars" in refused.stderr
    assert not out.exists() and not (other / "0" / "eval_cv").exists()  # refused before any evaluation

    # One repeat whose checkpoints cannot be scored gets no report; the other repeat still gets its own.
    jobs = [job for job in sweep.iterdir() if job.name.isdigit()]
    seed1_jobs = [job for job in jobs if "seed=1" in (job / ".hydra" / "overrides.yaml").read_text()]
    kept = {name: (sweep / name).read_bytes() for name in ("cross_validation_seed=1.md", REPEATS)}
    for job in seed1_jobs:
        (job / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    assert cross_validation_main([str(sweep), *evaluate_options]) == 2
    assert f"no fold scored, so no report written for {sweep} seed=1 (job " in capsys.readouterr().err
    assert {name: (sweep / name).read_bytes() for name in kept} == kept
    assert (sweep / "cross_validation_seed=0.md").exists()
    for job in seed1_jobs:  # no checkpoint at all: refused before any evaluation
        (job / "checkpoints" / "last.ckpt").unlink()
    assert cross_validation_main([str(sweep), *evaluate_options]) == 2
    assert f"{sweep} seed=1: no job finished with checkpoints/last.ckpt" in capsys.readouterr().err


REPEATS = "cross_validation_repeats.md"


def fake_job(sweep: Path, num: int, overrides: list[str], val: list[str], cars: list[str]) -> None:
    """A finished job folder as a multirun leaves it: its overrides, metrics and split (no checkpoint)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {item}\n" for item in overrides))
    (job / "metrics.json").write_text("{}")
    split = {
        "root": "/data",
        "folds": 2,
        "split_seed": 0,
        "fold": int(overrides[0].split("=")[1]),
        "val": val,
        "train": sorted(set(cars) - set(val)),
    }
    (job / "split.json").write_text(json.dumps(split))


def test_repeats_are_told_apart_by_the_overrides_other_than_the_fold(tmp_path: Path, caplog):
    cars = ["a", "b", "c", "d"]
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["data.fold=0", "seed=1", "loss=dice"], ["a", "b"], cars)
    fake_job(sweep, 1, ["data.fold=1", "loss=dice", "seed=1"], ["c", "d"], cars)  # another order
    one = cross_validations(sweep)  # no car validated twice: one cross-validation, whatever the overrides
    assert [(folds.label, [job.num for job in folds.jobs]) for folds in one] == [("", [0, 1])]
    fake_job(sweep, 2, ["data.fold=0"], ["a", "b"], cars)
    fake_job(sweep, 3, ["data.fold=1"], ["c", "d"], cars)
    groups = cross_validations(sweep)
    assert [(folds.label, [job.num for job in folds.jobs]) for folds in groups] == [
        ("loss=dice seed=1", [0, 1]),
        ("loss=(unset) seed=(unset)", [2, 3]),
    ]
    assert "differ in loss, not only in data.split_seed or seed" in caplog.text  # a comparison, said so
    fake_job(sweep, 4, ["data.fold=0"], ["a", "b"], cars)  # the same overrides twice: not repeats
    with pytest.raises(
        DataError, match=re.escape(f"car a is validated by jobs 2 and 4 of {sweep} loss=(unset)")
    ):
        cross_validations(sweep)


@pytest.mark.parametrize(
    "text",
    [
        '["a", "b"]',
        '{"root": "/data", "folds": 2}',
        '{"root": "/data", "folds": 2, "split_seed": 0, "fold": 0, "train": ["a"], "val": "b"}',
        '{"root": "/da',
    ],
    ids=["a list", "no cars", "val not a list", "cut short"],
)
def test_a_split_json_that_is_not_a_split_is_named_before_any_evaluation(tmp_path: Path, capsys, text: str):
    cars = ["a", "b", "c", "d"]
    sweep = tmp_path / "sweep"
    fake_job(sweep, 0, ["data.fold=0"], ["a", "b"], cars)
    fake_job(sweep, 1, ["data.fold=1"], ["c", "d"], cars)
    (sweep / "1" / "split.json").write_text(text)
    with pytest.raises(DataError, match=re.escape(f"{sweep / '1' / 'split.json'} is not a split")):
        cross_validations(sweep)
    assert cross_validation_main([str(sweep)]) == 2
    assert "is not a split written by carvana_seg.train" in capsys.readouterr().err
    assert not (sweep / "cross_validation.md").exists()
