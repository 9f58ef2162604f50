"""Cross-validation by car, scored at full size: every fold's checkpoint through `carvana_seg.evaluate`.

    python -m carvana_seg.train -m experiment=carvana_cpu data.root=DIR data.folds=5 'data.fold=range(5)' \\
        hydra.sweep.dir=runs/cv
    python -m carvana_seg.tools.cross_validation runs/cv [--ckpt last|best] [--no-tta] [--out FILE] [OVERRIDE]

For every finished job of the sweep, `evaluate.evaluate` scores its checkpoint on its own validation cars
(split=val) into `<job>/eval_cv/`; the per_image.csv rows of all folds are then joined into
`cross_validation.md` (photos and cars counted, mean and median photo dice, each fold, the worst photos, each
car worst first) and `cross_validation.csv` (every car once: its fold, job, photos and dice) in the sweep
folder. A car validated by two jobs with the same overrides stops the report (not one cross-validation); cars
no finished job validated (a failed fold) are listed. OVERRIDEs are evaluate's options (device=cpu, ...).
The jobs are read and checked by `cv_folds` before the first evaluation, the report is `cv_report`'s.

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
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from carvana_seg import options
from carvana_seg.config import compose
from carvana_seg.data.layout import car_folds
from carvana_seg.errors import InputError
from carvana_seg.evaluate import check_options, evaluate
from carvana_seg.inference.forward import autocast, pick_device
from carvana_seg.tools.cv_folds import (
    FoldResult,
    Folds,
    Report,
    check_disjoint,
    check_repeats,
    cross_validations,
    read_folds,
)
from carvana_seg.tools.cv_report import EVAL_DIR, MARKDOWN, report_path, write_report
from carvana_seg.tools.repeated_cv import write_repeats

log = logging.getLogger(__name__)

REPEATS_MARKDOWN = "cross_validation_repeats.md"  # a sweep holding several cross-validations (seeds)
WORST_PICTURES = 2  # evaluate's worst-error pictures per fold


def evaluate_job(
    job_dir: Path, ckpt: Path, tta: bool, overrides: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """evaluate's per_image.csv rows and summary for `ckpt` on its own validation cars, in job_dir/eval_cv.

    evaluate writes into eval_cv.partial, which replaces eval_cv once it has succeeded: a failed evaluation
    leaves the earlier one in place (the report counts the fold as failed, not with the old rows)."""
    output = job_dir / EVAL_DIR
    staging = output.with_name(f"{EVAL_DIR}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # a run cut short before
    cfg = compose(
        "evaluate", ["split=val", f"worst_k={WORST_PICTURES}", f"tta_hflip={str(tta).lower()}", *overrides]
    )
    cfg.ckpt_path = str(ckpt)  # set, not overridden: paths need no quoting in Hydra's grammar
    cfg.paths.output_dir = str(staging)
    try:
        summary = evaluate(cfg)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # a failed evaluation leaves nothing behind
        raise
    shutil.rmtree(output, ignore_errors=True)
    staging.rename(output)
    log.info("job %s scored into %s", job_dir.name, output)
    with (output / "per_image.csv").open(newline="") as handle:
        rows = [{**row, "dice": float(row["dice"])} for row in csv.DictReader(handle)]
    return rows, summary


def score(folds: Folds, ckpt: str = "last", tta: bool = True, overrides: Sequence[str] = ()) -> Report:
    """Evaluate every finished job of `folds` on its own validation cars."""
    dealt = car_folds(folds.cars, folds.count, folds.split_seed)
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
    check_disjoint(as_scored, folds.name)
    return Report(folds, ckpt, tta, threshold, results)


def cross_validate(
    sweep_dir: str | Path, ckpt: str = "last", tta: bool = True, overrides: Sequence[str] = ()
) -> Report:
    """Check and evaluate every finished job of `sweep_dir`, one cross-validation."""
    return score(read_folds(sweep_dir), ckpt, tta, overrides)


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


SET_HERE = {
    "split": "",
    "ckpt_path": " (--ckpt last|best)",
    "tta_hflip": " (--no-tta)",
    "paths.output_dir": "",
}


def _check_options(overrides: Sequence[str]) -> None:
    """evaluate's options composed and checked as evaluate checks them, so that a bad one stops the report
    before any evaluation (and before a fold's earlier evaluation is touched)."""
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in SET_HERE:
            raise InputError(f"{override}: cross-validation sets {key} itself{SET_HERE[key]}")
    try:
        cfg = compose("evaluate", ["split=val", *overrides])
    except (HydraException, OmegaConfBaseException) as err:
        raise InputError(f"evaluate options {' '.join(overrides)}: {str(err).splitlines()[0]}") from err
    check_options(cfg)
    autocast(pick_device(cfg.device), cfg.precision)


def _check_trained(every: Sequence[Folds], ckpt: str) -> None:
    """A cross-validation none of whose jobs finished with a checkpoint stops before any evaluation."""
    for folds in every:
        if not any(
            job.status == "ok" and (folds.sweep_dir / str(job.num) / "checkpoints" / f"{ckpt}.ckpt").is_file()
            for job in folds.jobs
        ):
            raise InputError(f"{folds.name}: no job finished with checkpoints/{ckpt}.ckpt: nothing to score")


def _scored(report: Report) -> bool:
    return any(result.photos for result in report.results)


def _unscored(reports: Sequence[Report]) -> str:
    """The cross-validations no fold of which could be scored, with each job's reason ('' when none)."""
    return "; ".join(
        f"{report.name} ({', '.join(f'job {r.job}: {r.error}' for r in report.results if r.error)})"
        for report in reports
        if not _scored(report)
    )


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
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flip TTA, as evaluate's default tta_hflip=true (--no-tta: the photo alone)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the markdown file (default SWEEP_DIR/cross_validation.md, or cross_validation_repeats.md for a "
        "sweep over folds and seeds; needed for several sweep folders); the CSV goes beside it",
    )
    args = parser.parse_intermixed_args(argv)  # options before, between or after the overrides
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        folders, overrides = _targets(args.targets)
        if len(folders) > 1 and args.out is None:
            raise InputError("several sweep folders need --out FILE: where the report over them goes")
        if args.out is not None:  # the markdown; its CSV goes beside it
            options.report_file(args.out, f"--out {args.out}", (".csv",))
        _check_options(overrides)
        every: list[Folds] = []
        for folder in folders:
            every += cross_validations(folder)
        check_repeats(every)  # before hours of evaluation
        _check_trained(every, args.ckpt)
        reports = [score(folds, args.ckpt, args.tta, overrides) for folds in every]
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # A cross-validation with no fold scored gets no report (an earlier one stays); the others get theirs.
    unscored = _unscored(reports)
    if len(reports) == 1 and not unscored:
        out = args.out or folders[0] / MARKDOWN
        markdown = write_report(reports[0], out)
    else:
        for report in reports:  # each repeat's own report beside its jobs
            if _scored(report):
                write_report(report, report_path(report))
        if unscored:
            print(f"error: no fold scored, so no report written for {unscored}", file=sys.stderr)
            return 2
        out = args.out or folders[0] / REPEATS_MARKDOWN
        markdown = write_repeats(reports, out)
    print(f"\nCross-validation ({out}, {out.with_suffix('.csv')}):\n\n{markdown}", end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
