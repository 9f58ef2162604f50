"""The benchmark's table: how each figure is timed, one row of it, the rows as they come, and the
markdown that `python -m carvana_seg.tools.bench` prints."""

from __future__ import annotations

import json
import logging
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Items per second of `run` (which returns how many items it handled): median of `repeats`."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def row(
    section: str,
    what: str,
    setting: str,
    rate: float | None = None,
    seconds: float | None = None,
    peak_gib: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    entry = {
        "section": section,
        "what": what,
        "setting": setting,
        "images_per_s": rate,
        "seconds": seconds,
        "peak_gpu_gib": peak_gib,
        "note": note,
    }
    log.info("%s", entry)
    return entry


class Rows(list):
    """The measured rows; each is also appended to `path` (JSON lines) as soon as it exists, so a
    benchmark that is stopped early still leaves what it measured."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def append(self, entry: dict[str, Any]) -> None:
        super().append(entry)
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "| stage | what | setting | images/s | seconds | peak GPU GiB | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        rate = f"{r['images_per_s']:.1f}" if r["images_per_s"] is not None else ""
        seconds = f"{r['seconds']:.3f}" if r["seconds"] is not None else ""
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else ""
        lines.append(
            f"| {r['section']} | {r['what']} | {r['setting']} | {rate} | {seconds} | {peak} | {r['note']} |"
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += ["", f"Peak resident memory of the benchmark process: {peak_rss:.2f} GiB."]
    return "\n".join(lines)
