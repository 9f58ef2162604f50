"""Cross-validation by car, scored at full size: every fold's checkpoint through `carvana_seg.evaluate`.

    python -m carvana_seg.train -m experiment=carvana_cpu data.root=DIR data.folds=5 'data.fold=range(5)' \\
        hydra.sweep.dir=runs/cv
    python -m carvana_seg.tools.cross_validation runs/cv [--ckpt last|best] [--tta] [--out FILE] [OVERRIDE]

For every finished job of the sweep, `evaluate.evaluate` scores its checkpoint on its own validation cars
(split=val) into `<job>/eval_cv/`; the per_image.csv rows of all folds are then joined into
`cross_validation.md` (photos and cars counted, mean and median photo dice, each fold, the worst photos, each
car worst first) and `cross_validation.csv` (every car once: its fold, job, photos and dice) in the sweep
folder. A car validated by two jobs with the same overrides stops the report (not one cross-validation); cars
no finished job validated (a failed fold) are listed. OVERRIDEs are evaluate's options (device=cpu, ...).

Repeated cross-validation: a sweep whose jobs differ in more than the fold (`'seed=42,1,2'
'data.fold=range(5)'`) holds one cross-validation per value of the other overrides, and several sweep
folders are one cross-validation each; either way each gets its own report (cross_validation.md, or
cross_validation_seed=1.md beside the others of its sweep) and `carvana_seg.tools.repeated_cv` reports
each car over the repeats (SWEEP_DIR/cross_validation_repeats.md, or --out; see there):

    python -m carvana_seg.tools.cross_validation runs/cv_seed42 runs/cv_seed1 --out runs/cv_repeats.md
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from carvana_seg.config import compose
from carvana_seg.data.layout import car_folds
from carvana_seg.durable import atomic_write
from carvana_seg.errors import DataError, InputError
from carvana_seg.evaluate import evaluate
from carvana_seg.tools.sweep_summary import Job, find_jobs, read_json

MARKDOWN = "cross_validation.md"
REPEATS_MARKDOWN = "cross_validation_repeats.md"  # a sweep holding several cross-validations (seeds)
EVAL_DIR = "eval_cv"
WORST_PICTURES = 2  # evaluate's worst-error pictures per fold
WORST_PHOTOS = 10  # photos in the report's table of the worst
REPEAT_KEYS = {"seed", "data.split_seed"}  # what repeats of one recipe may differ in
log = logging.getLogger(__name__)


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
    label: str = ""  # what sets this cross-validation apart from the others of its sweep ("seed=1")

    @property
    def name(self) -> str:
        """The sweep folder, and the label when its sweep holds more than one cross-validation."""
        return f"{self.sweep_dir} {self.label}".strip()

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


def _check_disjoint(validated: Sequence[tuple[int, Sequence[str]]], where: str | Path) -> None:
    """Raise a DataError when a car is in two jobs' validation cars: (job, cars) pairs."""
    validated_by: dict[str, int] = {}
    for job, cars in validated:
        for car in sorted(set(cars)):
            if car in validated_by:
                raise DataError(
                    f"car {car} is validated by jobs {validated_by[car]} and {job} of {where}: "
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


def _jobs(sweep_dir: Path) -> list[Job]:
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise DataError(f"{sweep_dir} has no job folders (0/, 1/, ...): not a sweep?")
    return jobs


def repeats(sweep_dir: str | Path) -> list[tuple[str, list[Job]]]:
    """The cross-validations of a sweep as (label, jobs): one, unless a car is validated by two finished
    jobs; then one per value of the overrides other than `data.fold`, labelled by those that differ."""
    sweep_dir = Path(sweep_dir)
    jobs = _jobs(sweep_dir)
    validated: list[str] = []
    for job in jobs:
        split = read_json(sweep_dir / str(job.num) / "split.json")
        if job.status == "ok" and split:
            validated += split.get("val", [])
    if len(validated) == len(set(validated)):
        return [("", jobs)]
    groups: dict[tuple[tuple[str, str], ...], list[Job]] = {}
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k != "data.fold"))
        groups.setdefault(key, []).append(job)
    if len(groups) == 1:
        return [("", jobs)]  # the same overrides twice: read_folds names the car
    values = [dict(key) for key in groups]
    differ = sorted(k for k in {k for v in values for k in v} if len({v.get(k) for v in values}) > 1)
    if set(differ) - REPEAT_KEYS:
        log.warning(
            "%s: its cross-validations differ in %s, not only in %s: a comparison of recipes, whose mean "
            "over the repeats mixes them",
            sweep_dir,
            ", ".join(sorted(set(differ) - REPEAT_KEYS)),
            " or ".join(sorted(REPEAT_KEYS)),
        )
    labels = [" ".join(f"{k}={v.get(k, '(unset)')}" for k in differ) for v in values]
    return list(zip(labels, groups.values(), strict=True))


@dataclass
class Folds:
    """The jobs of one cross-validation, read and checked before any is evaluated: their split.json files."""

    sweep_dir: Path
    label: str
    jobs: list[Job]
    splits: dict[int, dict[str, Any] | None]  # by job number; None where a job wrote none

    @property
    def name(self) -> str:
        return f"{self.sweep_dir} {self.label}".strip()

    @property
    def first(self) -> dict[str, Any]:
        return next(split for split in self.splits.values() if split)

    @property
    def data_root(self) -> str:
        return self.first["root"]

    @property
    def cars(self) -> list[str]:
        return sorted(
            {car for split in self.splits.values() if split for car in split["train"] + split["val"]}
        )


def read_folds(sweep_dir: str | Path, jobs: Sequence[Job] | None = None, label: str = "") -> Folds:
    """Every job of `sweep_dir` (a multirun over `data.fold`), or the given `jobs` of it (one of its
    `repeats`), checked to be one cross-validation: the same data, folds and deal, no car validated twice."""
    sweep_dir = Path(sweep_dir)
    jobs = list(jobs) if jobs is not None else _jobs(sweep_dir)
    splits = {job.num: read_json(sweep_dir / str(job.num) / "split.json") for job in jobs}
    folds = Folds(sweep_dir, label, jobs, splits)
    known = [split for split in splits.values() if split]
    if not known:
        raise DataError(f"no job of {folds.name} wrote split.json: none got past loading the data")
    for split in known:
        if split.get("folds") is None:
            raise DataError(f"{folds.name}: a job was trained without data.folds, not one fold of a sweep")
        if [split[k] for k in ("root", "folds", "split_seed")] != [
            known[0][k] for k in ("root", "folds", "split_seed")
        ]:
            raise DataError(f"{folds.name}: the jobs differ in data.root, data.folds or data.split_seed")
    _check_disjoint(
        [(job.num, splits[job.num]["val"]) for job in jobs if job.status == "ok" and splits[job.num]],
        folds.name,
    )
    return folds


def check_repeats(every: Sequence[Folds]) -> None:
    """Raise a DataError unless the cross-validations are of the same data (the same root and cars)."""
    first = every[0]
    for other in every[1:]:
        if (other.data_root, other.cars) != (first.data_root, first.cars):
            raise DataError(
                f"{other.name} was trained on {other.data_root} ({len(other.cars)} cars), {first.name} "
                f"on {first.data_root} ({len(first.cars)} cars): repeats must cross-validate the same cars"
            )


def score(folds: Folds, ckpt: str = "last", tta: bool = False, overrides: Sequence[str] = ()) -> Report:
    """Evaluate every finished job of `folds` on its own validation cars."""
    first, cars = folds.first, folds.cars
    dealt = car_folds(cars, first["folds"], first["split_seed"])
    results: list[FoldResult] = []
    threshold = None
    for job in folds.jobs:
        job_dir = folds.sweep_dir / str(job.num)
        split = folds.splits[job.num]
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

    as_scored = [(r.job, [row["car_id"] for row in r.photos]) for r in results]
    _check_disjoint(as_scored, folds.name)
    return Report(
        folds.sweep_dir,
        first["root"],
        first["folds"],
        first["split_seed"],
        ckpt,
        tta,
        threshold,
        cars,
        results,
        folds.label,
    )


def cross_validate(
    sweep_dir: str | Path, ckpt: str = "last", tta: bool = False, overrides: Sequence[str] = ()
) -> Report:
    """Check and evaluate every finished job of `sweep_dir`, one cross-validation."""
    return score(read_folds(sweep_dir), ckpt, tta, overrides)


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
                    "job": photos[0]["job"] if photos else ("" if result is None else result.job),
                    "status": "ok" if photos else "not validated: " + (result.status if result else "no job"),
                    "photos": len(photos),
                    "dice_mean": _dice([row["dice"] for row in photos]),
                    "dice_min": f"{worst['dice']:.4f}" if worst else "",
                    "worst_photo": worst["img"] if worst else "",
                },
            )
        )
    return [row for _, row in sorted(rows, key=lambda item: (item[0], item[1]["car_id"]))]


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rows of one shape as CSV text, the first row's keys as header."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def to_csv(report: Report) -> str:
    return csv_text(car_rows(report))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
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
        f"# Cross-validation of {report.name}",
        "",
        f"{report.folds} folds by car of {report.data_root} (data.split_seed {report.split_seed}); "
        f"checkpoints/{report.ckpt}.ckpt of each job, scored at full size by carvana_seg.evaluate "
        f"(threshold {report.threshold if report.threshold is not None else '-'}"
        f"{', flip TTA' if report.tta else ''}); each job's photos in its {EVAL_DIR}/per_image.csv.",
        "",
        *markdown_table(
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
        *markdown_table(
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
        *markdown_table(
            ["photo", "car", "fold", "dice"],
            [[row["img"], row["car_id"], row["fold"], f"{row['dice']:.4f}"] for row in worst_photos],
        ),
        "",
        "## Cars, worst first",
        "",
        *markdown_table(
            ["car", "fold", "job", "status", "photos", "mean dice", "worst dice", "worst photo"],
            [list(row.values()) for row in cars],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_pair(markdown_path: Path, markdown: str, rows: Sequence[dict[str, Any]]) -> str:
    """The markdown at `markdown_path` and the rows as CSV beside it, each whole or not at all."""
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(markdown_path, markdown.encode())
    atomic_write(markdown_path.with_suffix(".csv"), csv_text(rows).encode())
    return markdown


def write_report(report: Report, markdown_path: Path | None = None) -> str:
    """cross_validation.md (or `markdown_path`) and the .csv beside it; returns the markdown."""
    return write_pair(markdown_path or report.sweep_dir / MARKDOWN, to_markdown(report), car_rows(report))


def _targets(items: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Sweep folders (the items that are folders) and evaluate's overrides (the others, KEY=VALUE)."""
    folders: list[Path] = []
    overrides: list[str] = []
    for item in items:
        if Path(item).is_dir():
            if Path(item).resolve() in {folder.resolve() for folder in folders}:
                raise InputError(f"{item} is given twice: each sweep folder is one repeat")
            folders.append(Path(item))
        elif "=" in item and "/" not in item.partition("=")[0]:  # runs/lr=0.1 is a folder, mistyped
            overrides.append(item)
        else:
            raise InputError(f"{item} is not a folder (a sweep) nor an evaluate option (KEY=VALUE)")
    if not folders:
        raise InputError(
            "no sweep folder given (e.g. runs/cv, the hydra.sweep.dir of a multirun over data.fold)"
        )
    return folders, overrides


def report_path(report: Report) -> Path:
    """Where one cross-validation's own report goes: cross_validation.md in its sweep folder, or
    cross_validation_<label>.md for one of several in a sweep (cross_validation_seed=1.md)."""
    if not report.label:
        return report.sweep_dir / MARKDOWN
    return report.sweep_dir / f"cross_validation_{re.sub(r'[^A-Za-z0-9=._-]+', '_', report.label)}.md"


def _check_options(overrides: Sequence[str]) -> None:
    """evaluate's options composed once, so that a bad one stops the report before any evaluation."""
    try:
        compose("evaluate", ["split=val", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"evaluate options {' '.join(overrides)}: {str(err).splitlines()[0]}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.tools.cross_validation",
        description="Score every fold of a cross-validation sweep at full size (evaluate's way) and "
        "write cross_validation.md and cross_validation.csv into the sweep folder. Several cross-validations "
        "(several sweep folders, or one sweep over the folds and seeds) are also reported car by car over "
        "the repeats.",
    )
    parser.add_argument(
        "targets",
        nargs="+",
        metavar="SWEEP_DIR|OVERRIDE",
        help="the folder(s) of a multirun over data.fold, e.g. runs/cv; evaluate options, e.g. device=cpu",
    )
    parser.add_argument(
        "--ckpt", choices=("last", "best"), default="last", help="which checkpoint of each job"
    )
    parser.add_argument("--tta", action="store_true", help="flip TTA (evaluate's tta_hflip=true)")
    parser.add_argument(
        "--out",
        type=Path,
        help="the markdown file (default SWEEP_DIR/cross_validation.md, or cross_validation_repeats.md for a "
        "sweep over folds and seeds; needed for several sweep folders); the CSV goes beside it",
    )
    args = parser.parse_intermixed_args(argv)  # options before, between or after the overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    from carvana_seg.tools.repeated_cv import write_repeats  # it builds on this module

    try:
        folders, overrides = _targets(args.targets)
        if len(folders) > 1 and args.out is None:
            raise InputError("several sweep folders need --out FILE: where the report over them goes")
        _check_options(overrides)
        every: list[Folds] = []
        for folder in folders:
            every += [read_folds(folder, jobs, label) for label, jobs in repeats(folder)]
        check_repeats(every)  # before hours of evaluation
        reports = [score(folds, args.ckpt, args.tta, overrides) for folds in every]
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(reports) == 1:
        out = args.out or folders[0] / MARKDOWN
        markdown = write_report(reports[0], out)
    else:
        for report in reports:  # each repeat's own report beside its jobs
            write_report(report, report_path(report))
        out = args.out or folders[0] / REPEATS_MARKDOWN
        markdown = write_repeats(reports, out)
    print(f"\nCross-validation ({out}, {out.with_suffix('.csv')}):\n\n{markdown}", end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
