"""The competition's run-length format, as in Kaggle's `train_masks.csv` and in submissions.

A mask is flattened row-major (left to right, then top to bottom), pixels are numbered from 1, and
the car is written as space-separated `start length` pairs in ascending order. An empty mask is the
empty string. Both directions are vectorised: a 1918x1280 car mask takes a few milliseconds.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def encode(mask: np.ndarray) -> str:
    """Run-length encode a 2-D mask (any dtype; non-zero is foreground)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    flat = np.asarray(mask).ravel(order="C") != 0
    # Pad with background on both ends so every run has a rising and a falling edge.
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-based start, then 1-based end (exclusive)
    edges[1::2] -= edges[0::2]  # turn each end into a length
    return " ".join(edges.astype(str).tolist())


def decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode a run-length string into a uint8 {0, 1} mask of `shape` (height, width)."""
    height, width = shape
    size = height * width
    numbers = np.array(rle.split(), dtype=np.int64) if rle and rle.strip() else np.zeros(0, np.int64)
    if numbers.size % 2:
        raise ValueError(f"run-length string has an odd number of values ({numbers.size})")
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    ends = starts + lengths
    if numbers.size and (starts.min() < 0 or lengths.min() < 1 or ends.max() > size):
        raise ValueError(f"run-length runs fall outside a {height}x{width} mask")
    if np.any(starts[1:] < ends[:-1]):
        raise ValueError("run-length runs overlap or are not in ascending order")
    # The mask is alternating background gaps and car runs: repeat 0 and 1 by those lengths.
    gaps = starts - np.concatenate(([0], ends[:-1]))
    lengths_in_order = np.empty(2 * len(starts) + 1, dtype=np.int64)
    lengths_in_order[0:-1:2] = gaps
    lengths_in_order[1::2] = lengths
    lengths_in_order[-1] = size - (ends[-1] if len(ends) else 0)
    values = np.zeros(len(lengths_in_order), dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, lengths_in_order).reshape(height, width)


def read_csv(path: str | Path) -> dict[str, str]:
    """Read an `img,rle_mask` file (train_masks.csv or a submission) into {image name: rle}."""
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"img", "rle_mask"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: expected the columns 'img,rle_mask', found {reader.fieldnames}")
        return {row["img"]: row["rle_mask"] or "" for row in reader}
