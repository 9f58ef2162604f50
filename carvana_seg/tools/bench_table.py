"""The benchmark's table: how each figure is timed, one row of it, the rows as they come, and the
markdown that `python -m carvana_seg.tools.bench` prints."""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import threading
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


class PeakMemory:
    """How much resident memory the `with` block adds at its peak: this process and its children (the
    DataLoader's workers), sampled every 5 ms from /proc, less this process's memory at the start (the
    kernel's own high-water mark, `ru_maxrss`, cannot be reset between rows). `gib` is None where /proc
    is missing."""

    def __init__(self) -> None:
        self.gib: float | None = None
        self._start: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _resident(pid: int | str = "self") -> int | None:
        try:
            with open(f"/proc/{pid}/statm") as handle:
                return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _children() -> list[str]:
        found = []
        for task in Path("/proc/self/task").glob("*/children"):
            try:
                found += task.read_text().split()
            except OSError:
                continue
        return found

    def _sample(self) -> None:
        while True:
            own = self._resident()
            if own is not None and self._start is not None:
                total = own + sum(self._resident(pid) or 0 for pid in self._children())
                self.gib = max(self.gib or 0.0, (total - self._start) / 2**30)
            if self._stop.wait(0.005):
                return

    def __enter__(self) -> PeakMemory:
        self._start = self._resident()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def row(
    section: str,
    what: str,
    setting: str,
    rate: float | None = None,
    seconds: float | None = None,
    peak_gib: float | None = None,
    note: str = "",
    peak_rss_gib: float | None = None,
) -> dict[str, Any]:
    entry = {
        "section": section,
        "what": what,
        "setting": setting,
        "images_per_s": rate,
        "seconds": seconds,
        "peak_gpu_gib": peak_gib,
        "peak_rss_gib": peak_rss_gib,
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
        "| stage | what | setting | images/s | seconds | peak GPU GiB | peak RSS added GiB | note |",
        "|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        rate = f"{r['images_per_s']:.1f}" if r["images_per_s"] is not None else ""
        seconds = f"{r['seconds']:.3f}" if r["seconds"] is not None else ""
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else ""
        rss = f"{r['peak_rss_gib']:.2f}" if r.get("peak_rss_gib") is not None else ""
        lines.append(
            f"| {r['section']} | {r['what']} | {r['setting']} | {rate} | {seconds} | {peak} | {rss} "
            f"| {r['note']} |"
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += ["", f"Peak resident memory of the benchmark process: {peak_rss:.2f} GiB."]
    return "\n".join(lines)
