"""What one cross-validation is: the jobs of a sweep over `data.fold`, their split.json files, and the
checks that make them one (the same data, folds and deal; no car validated twice), before any evaluation.

A sweep over the folds and something else (`'seed=42,1,2'`) holds one cross-validation per value of the
other overrides: `cross_validations` tells them apart, `check_repeats` that several are of the same cars.
`Report` is one cross-validation once scored.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from carvana_seg.errors import DataError
from carvana_seg.tools.sweep_summary import Job, find_jobs, read_json

REPEAT_KEYS = {"seed", "data.split_seed"}  # what repeats of one recipe may differ in
DEAL = ("root", "folds", "split_seed")  # what every job of one cross-validation shares
log = logging.getLogger(__name__)


@dataclass
class Folds:
    """The jobs of one cross-validation and their split.json files, read and checked."""

    sweep_dir: Path
    label: str  # what sets it apart from the others of its sweep ("seed=1"); "" when alone
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
    def count(self) -> int:
        """The number of folds (data.folds)."""
        return self.first["folds"]

    @property
    def split_seed(self) -> int:
        return self.first["split_seed"]

    @cached_property  # read by every report row; the splits do not change once read
    def cars(self) -> list[str]:
        """Every car of the data, validated or not."""
        return sorted(
            {car for split in self.splits.values() if split for car in split["train"] + split["val"]}
        )


@dataclass
class FoldResult:
    """One job of the sweep: its fold, its validation cars and, when evaluated, its photos' rows."""

    job: int
    fold: int | None
    val_cars: list[str]
    photos: list[dict[str, Any]] = field(default_factory=list)  # per_image.csv rows, dice a float
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else f"failed: {self.error}"


@dataclass
class Report:
    """One cross-validation, scored: every job's checkpoint on its own validation cars."""

    folds: Folds
    ckpt: str
    tta: bool
    threshold: float | None
    results: list[FoldResult]

    @property
    def name(self) -> str:
        return self.folds.name

    @property
    def cars(self) -> list[str]:
        return self.folds.cars

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


def check_disjoint(validated: Sequence[tuple[int, Sequence[str]]], where: str | Path) -> None:
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


def _read_split(path: Path) -> dict[str, Any] | None:
    """A job's split.json, None when it wrote none (it stopped before its data was loaded); one that is
    there but not a split (edited, truncated, another program's) stops the report, naming the file."""
    if not path.exists():
        return None
    split = read_json(path)
    cars = (split.get("train"), split.get("val")) if isinstance(split, dict) else (None, None)
    if not (
        isinstance(split, dict)
        and all(key in split for key in (*DEAL, "fold"))
        and all(isinstance(names, list) and all(isinstance(n, str) for n in names) for names in cars)
    ):
        raise DataError(f"{path} is not a split written by carvana_seg.train (root, folds, train, val, ...)")
    return split


def _read_jobs(sweep_dir: Path) -> tuple[list[Job], dict[int, dict[str, Any] | None]]:
    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise DataError(f"{sweep_dir} has no job folders (0/, 1/, ...): not a sweep?")
    return jobs, {job.num: _read_split(sweep_dir / str(job.num) / "split.json") for job in jobs}


def checked(folds: Folds) -> Folds:
    """`folds`, once it is one cross-validation: the same data, folds and deal, no car validated twice."""
    known = [split for split in folds.splits.values() if split]
    if not known:
        raise DataError(f"no job of {folds.name} wrote split.json: none got past loading the data")
    for split in known:
        if split["folds"] is None:
            raise DataError(f"{folds.name}: a job was trained without data.folds, not one fold of a sweep")
        if [split[k] for k in DEAL] != [known[0][k] for k in DEAL]:
            raise DataError(f"{folds.name}: the jobs differ in data.root, data.folds or data.split_seed")
    check_disjoint(
        [
            (job.num, split["val"])
            for job in folds.jobs
            if job.status == "ok" and (split := folds.splits[job.num])
        ],
        folds.name,
    )
    return folds


def read_folds(sweep_dir: str | Path) -> Folds:
    """Every job of `sweep_dir` (a multirun over `data.fold`) as one cross-validation, checked."""
    sweep_dir = Path(sweep_dir)
    jobs, splits = _read_jobs(sweep_dir)
    return checked(Folds(sweep_dir, "", jobs, splits))


def cross_validations(sweep_dir: str | Path) -> list[Folds]:
    """The cross-validations of a sweep, each checked: one, unless a car is validated by two finished jobs;
    then one per value of the overrides other than `data.fold`, labelled by those that differ."""
    sweep_dir = Path(sweep_dir)
    jobs, splits = _read_jobs(sweep_dir)
    validated = [
        car for job in jobs if job.status == "ok" and splits[job.num] for car in splits[job.num]["val"]
    ]
    groups: dict[tuple[tuple[str, str], ...], list[Job]] = {}
    for job in jobs:
        key = tuple(sorted((k, v) for k, v in job.overrides.items() if k != "data.fold"))
        groups.setdefault(key, []).append(job)
    if len(validated) == len(set(validated)) or len(groups) == 1:
        return [checked(Folds(sweep_dir, "", jobs, splits))]  # one, or the same overrides twice: named
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
    return [
        checked(Folds(sweep_dir, label, group, {job.num: splits[job.num] for job in group}))
        for label, group in zip(
            [" ".join(f"{k}={v.get(k, '(unset)')}" for k in differ) for v in values],
            groups.values(),
            strict=True,
        )
    ]


def check_repeats(every: Sequence[Folds]) -> None:
    """Raise a DataError unless the cross-validations are of the same data (the same root and cars)."""
    first = every[0]
    for other in every[1:]:
        if (other.data_root, other.cars) != (first.data_root, first.cars):
            raise DataError(
                f"{other.name} was trained on {other.data_root} ({len(other.cars)} cars), {first.name} "
                f"on {first.data_root} ({len(first.cars)} cars): repeats must cross-validate the same cars"
            )
