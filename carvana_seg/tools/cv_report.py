"""The report of one cross-validation: cross_validation.md (photos and cars counted, mean and median photo
dice, each fold, the worst photos, each car worst first) and cross_validation.csv beside it (every car once:
its fold, job, photos and dice), each written whole or not at all."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carvana_seg.data.layout import car_folds
from carvana_seg.durable import atomic_write
from carvana_seg.tools.cv_folds import Report

MARKDOWN = "cross_validation.md"
EVAL_DIR = "eval_cv"  # each job's evaluation folder, where its per_image.csv is
WORST_PHOTOS = 10  # photos in the report's table of the worst


def _dice(values: Sequence[float]) -> str:
    return f"{float(np.mean(values)):.4f}" if len(values) else ""


def car_rows(report: Report) -> list[dict[str, Any]]:
    """Every car once, worst mean dice first, then the cars no fold validated."""
    by_car = report.by_car()
    fold_of = {
        car: k
        for k, cars in enumerate(car_folds(report.cars, report.folds.count, report.folds.split_seed))
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
    folds = report.folds
    photos = report.photos
    dice = [row["dice"] for row in photos]
    cars = car_rows(report)
    scored = [row for row in cars if row["photos"]]
    evaluated = sum(bool(result.photos) for result in report.results)
    worst_photos = sorted(photos, key=lambda row: row["dice"])[:WORST_PHOTOS]
    lines = [
        f"# Cross-validation of {report.name}",
        "",
        f"{folds.count} folds by car of {folds.data_root} (data.split_seed {folds.split_seed}); "
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
                    f"{evaluated} of {folds.count}",
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
        empty = sorted({row["fold"] for row in cars if not row["photos"]})
        lines.append(
            f"**Never validated: {len(missing)} cars** (fold {', '.join(map(str, empty))} has no evaluated "
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
    """The report at `markdown_path` (default: `report_path`) and the .csv beside it; returns the markdown."""
    return write_pair(markdown_path or report_path(report), to_markdown(report), car_rows(report))


def report_path(report: Report) -> Path:
    """Where one cross-validation's own report goes: cross_validation.md in its sweep folder, or
    cross_validation_<label>.md for one of several in a sweep (cross_validation_seed=1.md)."""
    folds = report.folds
    if not folds.label:
        return folds.sweep_dir / MARKDOWN
    return folds.sweep_dir / f"cross_validation_{re.sub(r'[^A-Za-z0-9=._-]+', '_', folds.label)}.md"
