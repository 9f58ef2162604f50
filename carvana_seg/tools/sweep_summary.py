"""One table of a whole sweep: every job's overrides and its final and best validation scores.

Hydra runs the callback `SweepSummary` (configured in conf/hydra/default.yaml) around every multirun:
after each job it rebuilds `summary.md` and `summary.csv` in the sweep directory (so a sweep that stops
on a failed job still leaves its table), and at the end of the sweep it prints the markdown table.
`python -m carvana_seg.tools.sweep_summary SWEEP_DIR` rebuilds the same table from any finished sweep.

A job is a numbered folder of the sweep (`<sweep dir>/<job num>/`) with Hydra's
`.hydra/overrides.yaml` and, when it finished, the `metrics.json` that `train()` writes. A job without
metrics.json is listed as failed, with the error that `SweepSummary` recorded in `job_status.json`
when there is one.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from carvana_seg.durable import atomic_write  # per process and thread: parallel jobs may rebuild at once
from carvana_seg.errors import input_error_in

METRICS = (
    "val/dice",
    "val/dice_best",
    "val/accuracy",
    "val/iou",
    "val/dice_mean_classes",
    "val/loss",
    "epochs",
    "wall_time_s",
)
STATUS_FILE = "job_status.json"
MARKDOWN = "summary.md"
CSV = "summary.csv"


@dataclass
class Job:
    """One job of a sweep, as found on disk."""

    num: int
    overrides: dict[str, str]
    metrics: dict[str, Any] | None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.metrics is not None else "failed"


def _read_overrides(job_dir: Path) -> tuple[dict[str, str], str | None]:
    """The job's overrides, and why they could not be read (an edited or cut .hydra/overrides.yaml)."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return {}, None
    try:
        items = yaml.safe_load(path.read_text()) or []
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        return {}, f"unreadable .hydra/overrides.yaml ({type(err).__name__})"
    if not isinstance(items, list):
        return {}, ".hydra/overrides.yaml is not a list of overrides"
    overrides = {}
    for item in items:
        key, _, value = str(item).partition("=")
        overrides[key] = value
    return overrides, None


def _read_metrics(job_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The job's metrics.json, or None and why: missing (the job did not finish), or not train's
    (not an object of numbers, e.g. edited by hand): such a job is listed as failed, not summed up."""
    path = job_dir / "metrics.json"
    if not path.exists():
        return None, "no metrics.json"
    metrics = read_json(path)
    if not isinstance(metrics, dict):
        return None, "metrics.json is not a JSON object"
    odd = [name for name in METRICS if metrics.get(name) is not None and not _is_number(metrics[name])]
    if odd:
        return None, f"metrics.json: {', '.join(odd)} not a number"
    return metrics, None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_json(path: Path) -> dict[str, Any] | None:
    """A job's JSON file, or None when it is missing or unreadable (a job that did not finish)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job folder of `sweep_dir` (a folder named by a number), sorted by job number."""
    jobs = []
    for job_dir in Path(sweep_dir).iterdir():
        if not (job_dir.is_dir() and job_dir.name.isdigit()):
            continue
        status = read_json(job_dir / STATUS_FILE)
        recorded = status.get("error") if isinstance(status, dict) else None
        overrides, unreadable = _read_overrides(job_dir)
        metrics, missing = _read_metrics(job_dir)
        if unreadable:
            metrics = None  # scores without their overrides would be a row of nothing
        error = (str(recorded) if recorded else None) or unreadable or missing
        jobs.append(Job(int(job_dir.name), overrides, metrics, error))
    return sorted(jobs, key=lambda job: job.num)


def override_columns(jobs: Sequence[Job]) -> list[str]:
    """The override keys whose value differs between jobs (all keys when there is only one job)."""
    keys: list[str] = []
    for job in jobs:
        keys += [key for key in job.overrides if key not in keys]
    if len(jobs) < 2:
        return keys
    return [key for key in keys if len({job.overrides.get(key) for job in jobs}) > 1]


def _format(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name == "epochs":
        return str(int(value))
    if name == "wall_time_s":
        return f"{float(value):.1f}"
    if isinstance(value, int | float):
        return f"{float(value):.4f}"
    return str(value)


def _short(value: str) -> str:
    """An override value as the markdown table shows it: long floats (Optuna's samples) to 4 digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and not value.lstrip("-").isdigit() else value


def table(jobs: Sequence[Job], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary: job, varying overrides, status, metrics (`short`: overrides as
    `_short` writes them)."""
    keys = override_columns(jobs)
    header = ["job", *keys, "status", *METRICS]
    rows = []
    for job in jobs:
        metrics = job.metrics or {}
        status = job.status if job.error is None or job.status == "ok" else f"failed: {job.error}"
        rows.append(
            [
                str(job.num),
                *(_short(v) if short else v for v in (job.overrides.get(key, "") for key in keys)),
                status,
                *(_format(name, metrics.get(name)) for name in METRICS),
            ]
        )
    return header, rows


def best_job(jobs: Sequence[Job], metric: str = "val/dice_best") -> Job | None:
    """The finished job with the highest `metric` (None when no job has it)."""
    scored = [job for job in jobs if job.metrics and job.metrics.get(metric) is not None]
    return max(scored, key=lambda job: job.metrics[metric]) if scored else None  # type: ignore[index]


def to_markdown(jobs: Sequence[Job], metric: str = "val/dice_best") -> str:
    header, rows = table(jobs, short=True)

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    lines = [line(header), line(["---"] * len(header)), *(line(row) for row in rows)]
    failed = sum(job.status != "ok" for job in jobs)
    lines.append("")
    lines.append(f"{len(jobs)} jobs, {len(jobs) - failed} finished, {failed} failed.")
    best = best_job(jobs, metric)
    if best is not None:
        overrides = " ".join(f"{k}={_short(v)}" for k, v in best.overrides.items() if k in header) or "-"
        lines.append(f"Best {metric}: {best.metrics[metric]:.4f}, job {best.num} ({overrides}).")  # type: ignore[index]
    return "\n".join(lines) + "\n"


def to_csv(jobs: Sequence[Job]) -> str:
    header, rows = table(jobs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_summary(sweep_dir: str | Path, metric: str = "val/dice_best") -> str:
    """Write summary.md and summary.csv into `sweep_dir`; return the markdown table."""
    sweep_dir = Path(sweep_dir)
    jobs = find_jobs(sweep_dir)
    markdown = to_markdown(jobs, metric)
    atomic_write(sweep_dir / MARKDOWN, markdown.encode())
    atomic_write(sweep_dir / CSV, to_csv(jobs).encode())
    return markdown


def _is_rank_zero() -> bool:
    """False in the other processes of a job that runs on several (SLURM tasks, torchrun ranks)."""
    return all(int(os.environ.get(name, 0) or 0) == 0 for name in ("RANK", "SLURM_PROCID"))


class SweepSummary(Callback):
    """Hydra callback: keeps summary.md / summary.csv of a multirun up to date and prints the table.

    Args:
        metric: the metric named as best at the end of the table (the one sweeps optimise).
    """

    def __init__(self, metric: str = "val/dice_best") -> None:
        self.metric = metric

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # The sweep folder exists from the start (Optuna's storage database is kept there).
        Path(config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode != RunMode.MULTIRUN or not _is_rank_zero():
            return
        job_dir = Path(config.hydra.runtime.output_dir)
        status: dict[str, Any] = {"status": job_return.status.name.lower()}
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value
            error = input_error_in(error) or error  # the plain message, not Hydra's instantiate wrapper
            status["error"] = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        atomic_write(job_dir / STATUS_FILE, (json.dumps(status) + "\n").encode())
        # (Hydra turns an error in a callback into a warning: the job's result stands.)
        write_summary(config.hydra.sweep.dir, self.metric)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        markdown = write_summary(sweep_dir, self.metric)
        print(f"\nSweep summary ({sweep_dir / MARKDOWN}, {sweep_dir / CSV}):\n\n{markdown}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.tools.sweep_summary",
        description="Rebuild summary.md and summary.csv of a finished sweep and print the table.",
    )
    parser.add_argument("sweep_dir", type=Path, help="a sweep folder, e.g. runs/multirun/2026-01-01/12-00-00")
    parser.add_argument("--metric", default="val/dice_best", help="the metric to name the best job by")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder", file=sys.stderr)
        return 2
    if not find_jobs(args.sweep_dir):
        print(f"error: {args.sweep_dir} has no job folders (0/, 1/, ...): not a sweep?", file=sys.stderr)
        return 2
    print(write_summary(args.sweep_dir, args.metric), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
