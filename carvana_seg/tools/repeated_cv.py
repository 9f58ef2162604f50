"""Repeated cross-validation: several cross-validations of one recipe (other seeds, other fold deals) read
car by car, so that a car's score is not one training run's draw.

One 20-minute run moves a car's mean dice by a few thousandths from seed to seed, as much as many levers
do; the mean over repeats is the estimate to judge a recipe by, the range says how far one run may fall.

    python -m carvana_seg.train -m experiment=carvana_cpu data.root=DIR data.folds=5 'data.fold=range(5)' \\
        'seed=42,1,2' hydra.sweep.dir=runs/cv_seeds
    python -m carvana_seg.tools.cross_validation runs/cv_seeds          # or several sweeps: A B --out FILE

`cross_validation` scores every repeat as one cross-validation; `write_repeats` then writes the markdown
(each repeat's mean, median and worst car; the mean over the repeats; each car worst first with its dice in
every repeat; the worst photos of all) and the CSV beside it (every car once: its dice per repeat, mean,
lowest and highest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from carvana_seg.tools.cv_folds import Report
from carvana_seg.tools.cv_report import WORST_PHOTOS, markdown_table, write_pair


def car_means(report: Report) -> dict[str, float]:
    """Each validated car's mean photo dice in one cross-validation."""
    return {car: float(np.mean([row["dice"] for row in rows])) for car, rows in report.by_car().items()}


def car_table(reports: Sequence[Report]) -> list[dict[str, Any]]:
    """Every car once, worst mean over the repeats first (cars no repeat validated last): its dice per
    repeat (blank where that repeat did not validate it), the mean, lowest and highest of those."""
    per_repeat = [car_means(report) for report in reports]
    one_sweep = len({report.folds.sweep_dir for report in reports}) == 1  # then the labels tell them apart
    columns = [f"dice {report.folds.label if one_sweep else report.name}" for report in reports]
    rows: list[tuple[float, dict[str, Any]]] = []
    for car in reports[0].cars:
        scores = [means[car] for means in per_repeat if car in means]
        mean = float(np.mean(scores)) if scores else float("inf")
        row = {
            "car_id": car,
            "repeats": len(scores),
            "dice_mean": f"{mean:.4f}" if scores else "",
            "dice_lowest_repeat": f"{min(scores):.4f}" if scores else "",
            "dice_highest_repeat": f"{max(scores):.4f}" if scores else "",
        }
        for column, means in zip(columns, per_repeat, strict=True):
            row[column] = f"{means[car]:.4f}" if car in means else ""
        rows.append((mean, row))
    return [row for _, row in sorted(rows, key=lambda item: (item[0], item[1]["car_id"]))]


def _summary_row(report: Report) -> list[Any]:
    dice = [row["dice"] for row in report.photos]
    means = car_means(report)
    worst = min(means, key=lambda car: (means[car], car)) if means else None
    return [
        report.name,
        len(dice),
        f"{len(means)} of {len(report.cars)}",
        f"{float(np.mean(dice)):.4f}" if dice else "",
        f"{float(np.median(dice)):.4f}" if dice else "",
        f"{worst} ({means[worst]:.4f})" if worst else "",
    ]


def _over_repeats(reports: Sequence[Report], scored: Sequence[dict[str, Any]]) -> str:
    means = [float(np.mean([row["dice"] for row in report.photos])) for report in reports if report.photos]
    if not means:
        return "Nothing scored."
    worst = scored[0]
    return (
        f"Over the {len(means)} repeats that scored photos: mean photo dice {np.mean(means):.4f} "
        f"({min(means):.4f} to {max(means):.4f}); worst car {worst['car_id']} {worst['dice_mean']} "
        f"({worst['dice_lowest_repeat']} to {worst['dice_highest_repeat']} "
        f"over its {worst['repeats']} repeats)."
    )


def to_markdown(reports: Sequence[Report]) -> str:
    first = reports[0]
    cars = car_table(reports)
    scored = [row for row in cars if row["repeats"]]
    photos = [(report.name, row) for report in reports for row in report.photos]
    worst_photos = sorted(photos, key=lambda item: item[1]["dice"])[:WORST_PHOTOS]
    lines = [
        f"# Repeated cross-validation: {len(reports)} repeats",
        "",
        f"{first.folds.data_root}, {len(first.cars)} cars; checkpoints/{first.ckpt}.ckpt of each job, scored "
        f"at full size by carvana_seg.evaluate{', flip TTA' if first.tta else ''}. Each repeat is one "
        "cross-validation, with its own report (cross_validation*.md beside its jobs); a car's dice over "
        "the repeats is the mean of its mean photo dice in each repeat that validated it.",
        "",
        *markdown_table(
            ["repeat", "photos", "cars", "mean dice", "median dice", "worst car"],
            [_summary_row(report) for report in reports],
        ),
        "",
        _over_repeats(reports, scored),
        "",
        "## Cars, worst mean over the repeats first",
        "",
        *markdown_table(list(cars[0]), [list(row.values()) for row in cars]),
        "",
        f"## The {len(worst_photos)} worst photos of all repeats",
        "",
        *markdown_table(
            ["photo", "car", "repeat", "dice"],
            [[row["img"], row["car_id"], name, f"{row['dice']:.4f}"] for name, row in worst_photos],
        ),
    ]
    return "\n".join(lines) + "\n"


def write_repeats(reports: Sequence[Report], markdown_path: Path) -> str:
    """The report over the repeats at `markdown_path`, the CSV beside it; returns the markdown."""
    return write_pair(markdown_path, to_markdown(reports), car_table(reports))
