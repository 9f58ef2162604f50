"""Cross-validation by car, scored at full size: every fold's checkpoint through `carvana_seg.evaluate`.

    python -m carvana_seg.train -m experiment=carvana_cpu data.root=DIR data.folds=5 'data.fold=range(5)' \\
        hydra.sweep.dir=runs/cv
    python -m carvana_seg.tools.cross_validation runs/cv [--ckpt last|best] [--tta] [--out FILE] [OVERRIDE]

For every finished job of the sweep, `evaluate.evaluate` scores its checkpoint on its own validation cars
(split=val) into `<job>/eval_cv/`; the per_image.csv rows of all folds are then joined into
`cross_validation.md` (photos and cars counted, mean and median photo dice, each fold, the worst photos, each
car worst first) and `cross_validation.csv` (every car once: its fold, job, photos and dice) in the sweep
folder. A car validated by two jobs stops the report (not one cross-validation); cars no finished job
validated (a failed fold) are listed. OVERRIDEs are evaluate's options (device=cpu, data.batch_size=4, ...).
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from carvana_seg.config import compose
from carvana_seg.data.layout import car_folds
from carvana_seg.durable import atomic_write
from carvana_seg.errors import DataError, InputError
from carvana_seg.evaluate import evaluate
from carvana_seg.tools.sweep_summary import find_jobs, read_json

MARKDOWN = "cross_validation.md"
EVAL_DIR = "eval_cv"
WORST_PICTURES = 2  # evaluate's worst-error pictures per fold
WORST_PHOTOS = 10  # photos in the report's table of the worst


@dataclass
class FoldResult:
    """One job of the sweep: its fold, its validation cars and, when evaluated, its photos' rows."""

    job: int
    fold: int | None
    val_cars: list[str]
    photos: list[dict[str, Any]] = field(
        default_factory=list
    )  # per_image.csv rows (dice a float) + fold, job
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else f"failed: {self.error}"


@dataclass
class Report:
    """The sweep's folds, scored; `cars` is every car of the data, validated or not."""

    sweep_dir: Path
    data_root: str
    folds: int
    split_seed: int
    ckpt: str
    tta: bool
    threshold: float | None
    cars: list[str]
    results: list[FoldResult]

    @property
    def photos(self) -> list[dict[str, Any]]:
        return [row for result in self.results for row in result.photos]

    def by_car(self) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {}
        for row in self.photos:
            rows.setdefault(row["car_id"], []).append(row)
        return rows

    @property
    def missing(self) -> list[str]:
        """The cars no evaluated job validated."""
        validated = self.by_car()
        return [car for car in self.cars if car not in validated]


def _check_disjoint(validated: Sequence[tuple[int, Sequence[str]]], sweep_dir: Path) -> None:
    """Raise a DataError when a car is in two jobs' validation cars: (job, cars) pairs."""
    validated_by: dict[str, int] = {}
    for job, cars in validated:
        for car in sorted(set(cars)):
            if car in validated_by:
                raise DataError(
                    f"car {car} is validated by jobs {validated_by[car]} and {job} of {sweep_dir}: "
                    "not one cross-validation (one job per fold, the same data.folds and data.split_seed)"
                )
            validated_by[car] = job


def evaluate_job(
    job_dir: Path, ckpt: Path, tta: bool, overrides: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """evaluate's per_image.csv rows and summary for `ckpt` on its own validation cars, in job_dir/eval_cv."""
    output = job_dir / EVAL_DIR
    shutil.rmtree(output, ignore_errors=True)  # nothing of an earlier report is read back
    cfg = compose(
        "evaluate", ["split=val", f"worst_k={WORST_PICTURES}", f"tta_hflip={str(tta).lower()}", *overrides]
    )
    cfg.ckpt_path = str(ckpt)  # set, not overridden: paths need no quoting in Hydra's grammar
    cfg.paths.output_dir = str(output)
    summary = evaluate(cfg)
    with (output / "per_image.csv").open(newline="") as handle:
        rows = [{**row, "dice": float(row["dice"])} for row in csv.DictReader(handle)]
    return rows, summary


def cross_validate(
    sweep_dir: str | Path, ckpt: str = "last", tta: bool = False, overrides: Sequence[str] = ()
) -> Report:
    """Evaluate every finished job of `sweep_dir` (a multirun over `data.fold`) and check the folds."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise DataError(f"{sweep_dir} has no job folders (0/, 1/, ...): not a sweep?")
    splits = {job.num: read_json(sweep_dir / str(job.num) / "split.json") for job in jobs}
    known = [split for split in splits.values() if split]
    if not known:
        raise DataError(f"no job of {sweep_dir} wrote split.json: none got past loading the data")
    first = known[0]
    for split in known:
        if split.get("folds") is None:
            raise DataError(f"{sweep_dir}: a job was trained without data.folds, not one fold of a sweep")
        if [split[k] for k in ("root", "folds", "split_seed")] != [
            first[k] for k in ("root", "folds", "split_seed")
        ]:
            raise DataError(f"{sweep_dir}: the jobs differ in data.root, data.folds or data.split_seed")
    cars = sorted({car for split in known for car in split["train"] + split["val"]})
    dealt = car_folds(cars, first["folds"], first["split_seed"])
    _check_disjoint(
        [(job.num, splits[job.num]["val"]) for job in jobs if job.status == "ok" and splits[job.num]],
        sweep_dir,
    )

    results: list[FoldResult] = []
    threshold = None
    for job in jobs:
        job_dir = sweep_dir / str(job.num)
        split = splits[job.num]
        fold = split["fold"] if split else job.overrides.get("data.fold")
        fold = int(fold) if fold is not None and str(fold).isdigit() else None
        val_cars = split["val"] if split else (dealt[fold] if fold is not None and fold < len(dealt) else [])
        result = FoldResult(job.num, fold, list(val_cars), error=None if job.status == "ok" else job.error)
        checkpoint = job_dir / "checkpoints" / f"{ckpt}.ckpt"
        if result.error is None and not checkpoint.is_file():
            result.error = f"no checkpoints/{checkpoint.name}"
        if result.error is None:
            try:
                photos, summary = evaluate_job(job_dir, checkpoint, tta, overrides)
                result.photos = [{**row, "fold": fold, "job": job.num} for row in photos]
                threshold = summary.get("threshold", threshold)
            except InputError as err:
                result.error = f"evaluate: {str(err).splitlines()[0]}"
        results.append(result)

    _check_disjoint([(r.job, [row["car_id"] for row in r.photos]) for r in results], sweep_dir)  # as scored
    return Report(
        sweep_dir, first["root"], first["folds"], first["split_seed"], ckpt, tta, threshold, cars, results
    )


def _dice(values: Sequence[float]) -> str:
    return f"{float(np.mean(values)):.4f}" if len(values) else ""


def car_rows(report: Report) -> list[dict[str, Any]]:
    """Every car once, worst mean dice first, then the cars no fold validated."""
    by_car = report.by_car()
    fold_of = {
        car: k
        for k, cars in enumerate(car_folds(report.cars, report.folds, report.split_seed))
        for car in cars
    }
    result_of = {result.fold: result for result in report.results if result.fold is not None}
    rows: list[tuple[float, dict[str, Any]]] = []
    for car in report.cars:
        photos = by_car.get(car, [])
        result = result_of.get(fold_of[car])
        worst = min(photos, key=lambda row: row["dice"]) if photos else None
        mean = float(np.mean([row["dice"] for row in photos])) if photos else float("inf")
        rows.append(
            (
                mean,
                {
                    "car_id": car,
                    "fold": fold_of[car],
                    "job": "" if result is None else result.job,
                    "status": "ok" if photos else "not validated: " + (result.status if result else "no job"),
                    "photos": len(photos),
                    "dice_mean": _dice([row["dice"] for row in photos]),
                    "dice_min": f"{worst['dice']:.4f}" if worst else "",
                    "worst_photo": worst["img"] if worst else "",
                },
            )
        )
    return [row for _, row in sorted(rows, key=lambda item: (item[0], item[1]["car_id"]))]


def to_csv(report: Report) -> str:
    rows = car_rows(report)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]


def to_markdown(report: Report) -> str:
    photos = report.photos
    dice = [row["dice"] for row in photos]
    cars = car_rows(report)
    scored = [row for row in cars if row["photos"]]
    evaluated = sum(bool(result.photos) for result in report.results)
    worst_photos = sorted(photos, key=lambda row: row["dice"])[:WORST_PHOTOS]
    lines = [
        f"# Cross-validation of {report.sweep_dir}",
        "",
        f"{report.folds} folds by car of {report.data_root} (data.split_seed {report.split_seed}); "
        f"checkpoints/{report.ckpt}.ckpt of each job, scored at full size by carvana_seg.evaluate "
        f"(threshold {report.threshold if report.threshold is not None else '-'}"
        f"{', flip TTA' if report.tta else ''}); each job's photos in its {EVAL_DIR}/per_image.csv.",
        "",
        *_table(
            ["photos", "cars", "folds evaluated", "mean dice", "median dice", "worst car", "worst photo"],
            [
                [
                    len(photos),
                    f"{len(scored)} of {len(report.cars)}",
                    f"{evaluated} of {report.folds}",
                    _dice(dice),
                    f"{float(np.median(dice)):.4f}" if dice else "",
                    f"{scored[0]['car_id']} ({scored[0]['dice_mean']})" if scored else "",
                    f"{worst_photos[0]['img']} ({worst_photos[0]['dice']:.4f})" if worst_photos else "",
                ]
            ],
        ),
        "",
        "## Folds",
        "",
        *_table(
            ["fold", "job", "status", "cars", "photos", "mean dice", "median dice"],
            [
                [
                    "" if r.fold is None else r.fold,
                    r.job,
                    r.status,
                    len({row["car_id"] for row in r.photos}) if r.photos else len(r.val_cars),
                    len(r.photos),
                    _dice([row["dice"] for row in r.photos]),
                    f"{float(np.median([row['dice'] for row in r.photos])):.4f}" if r.photos else "",
                ]
                for r in sorted(report.results, key=lambda r: (r.fold is None, r.fold or 0, r.job))
            ],
        ),
        "",
    ]
    missing = report.missing
    if missing:
        folds = sorted({row["fold"] for row in cars if not row["photos"]})
        lines.append(
            f"**Never validated: {len(missing)} cars** (fold {', '.join(map(str, folds))} has no evaluated "
            f"job): {', '.join(missing)}."
        )
    else:
        lines.append(f"Every car validated once: {len(report.cars)} cars, none in two folds.")
    lines += [
        "",
        f"## The {len(worst_photos)} worst photos",
        "",
        *_table(
            ["photo", "car", "fold", "dice"],
            [[row["img"], row["car_id"], row["fold"], f"{row['dice']:.4f}"] for row in worst_photos],
        ),
        "",
        "## Cars, worst first",
        "",
        *_table(
            ["car", "fold", "job", "status", "photos", "mean dice", "worst dice", "worst photo"],
            [list(row.values()) for row in cars],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_report(report: Report, markdown_path: Path | None = None) -> str:
    """cross_validation.md (or `markdown_path`) and the .csv beside it; returns the markdown."""
    markdown_path = markdown_path or report.sweep_dir / MARKDOWN
    markdown = to_markdown(report)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(markdown_path, markdown.encode())
    atomic_write(markdown_path.with_suffix(".csv"), to_csv(report).encode())
    return markdown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.tools.cross_validation",
        description="Score every fold of a cross-validation sweep at full size (evaluate's way) and "
        "write cross_validation.md and cross_validation.csv into the sweep folder.",
    )
    parser.add_argument("sweep_dir", type=Path, help="the folder of a multirun over data.fold, e.g. runs/cv")
    parser.add_argument(
        "--ckpt", choices=("last", "best"), default="last", help="which checkpoint of each job"
    )
    parser.add_argument("--tta", action="store_true", help="flip TTA (evaluate's tta_hflip=true)")
    parser.add_argument(
        "--out",
        type=Path,
        help="the markdown file (default SWEEP_DIR/cross_validation.md); the CSV goes beside it",
    )
    parser.add_argument("overrides", nargs="*", help="evaluate options, e.g. device=cpu data.batch_size=4")
    args = parser.parse_intermixed_args(argv)  # options before, between or after the overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    try:
        report = cross_validate(args.sweep_dir, args.ckpt, args.tta, args.overrides)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    markdown = write_report(report, args.out)
    out = args.out or args.sweep_dir / MARKDOWN
    print(f"\nCross-validation ({out}, {out.with_suffix('.csv')}):\n\n{markdown}", end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
