"""The competition's run-length format, as in Kaggle's `train_masks.csv` and in submissions.

A mask is flattened row-major (left to right, then top to bottom), pixels are numbered from 1, and
the car is written as space-separated `start length` pairs in ascending order. An empty mask is the
empty string. Both directions are vectorised: a 1918x1280 car mask takes a few milliseconds.

A malformed string is a `DataError` that says what is wrong (a value that is not a whole number, an
odd count, a run outside the mask, runs out of order or overlapping) and, given its `name`, whose mask
it is. `check_rows` checks a whole CSV's strings at once, so 5,088 rows cost a fraction of a second.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from carvana_seg.errors import DataError

# A noisy mask's row outgrows csv's default field limit (131,072 characters, about 11,000 runs; a
# 1918x1280 mask of one-pixel runs is 12 MB of text): every reader of these files reads whole rows.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))

_CANONICAL = re.compile(r"[0-9]{1,18}(?: [0-9]{1,18})*")  # single spaces; 18 digits always fit int64
_NUMBER = re.compile(r"[0-9]{1,18}")
_TOO_LARGE = 10**18


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


def _token_problem(text: str) -> str | None:
    """Why `text` is not a list of whole numbers, or None (then `" ".join(text.split())` parses)."""
    for token in text.split():
        if not _NUMBER.fullmatch(token):
            if token.isascii() and token.isdigit():
                return f"value {token[:30]} is too large"
            return f"value {token[:30]!r} is not a whole number"
    return None


def _run_problem(run: int, start: int, length: int, shape: tuple[int, int] | None, previous_end: int) -> str:
    """Why run number `run` (1-based), the first bad one of its string, is wrong."""
    pair = f"run {run} ('{start} {length}')"
    if start < 1:
        return f"{pair} falls outside the mask: pixels are numbered from 1"
    if shape is not None and start + length - 1 > shape[0] * shape[1]:
        return f"{pair} falls outside the {shape[0]}x{shape[1]} mask (pixels 1..{shape[0] * shape[1]})"
    if length < 1:
        return f"{pair} has length {length} (a run is at least 1 pixel long)"
    return (
        f"{pair} starts before run {run - 1} ends (pixel {previous_end}): runs must be in ascending "
        "order without overlap"
    )


def decode(rle: str, shape: tuple[int, int], name: str | Path | None = None) -> np.ndarray:
    """Decode a run-length string into a uint8 {0, 1} mask of `shape` (height, width); `name` (the
    image it belongs to) is named by the error a malformed string raises."""
    height, width = shape
    size = height * width
    whose = f"run-length mask of {name}" if name is not None else "run-length mask"
    if rle and not _CANONICAL.fullmatch(rle):
        problem = _token_problem(rle)
        if problem is not None:
            raise DataError(f"{whose}: {problem}")
        rle = " ".join(rle.split())
    numbers = np.fromstring(rle, dtype=np.int64, sep=" ") if rle else np.zeros(0, np.int64)
    if numbers.size % 2:
        raise DataError(
            f"{whose} has an odd number of values ({numbers.size}): expected 'start length' pairs"
        )
    starts, lengths = numbers[0::2] - 1, numbers[1::2]
    ends = starts + lengths
    bad = (starts < 0) | (lengths < 1) | (ends > size)
    bad[1:] |= starts[1:] < ends[:-1]
    if bad.any():
        run = int(np.argmax(bad))
        previous_end = int(ends[run - 1]) if run else 0
        problem = _run_problem(
            run + 1, int(starts[run]) + 1, int(lengths[run]), (height, width), previous_end
        )
        raise DataError(f"{whose}: {problem}")
    # The mask is alternating background gaps and car runs: repeat 0 and 1 by those lengths.
    gaps = starts - np.concatenate(([0], ends[:-1]))
    lengths_in_order = np.empty(2 * len(starts) + 1, dtype=np.int64)
    lengths_in_order[0:-1:2] = gaps
    lengths_in_order[1::2] = lengths
    lengths_in_order[-1] = size - (ends[-1] if len(ends) else 0)
    values = np.zeros(len(lengths_in_order), dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, lengths_in_order).reshape(height, width)


def _parse_rows(texts: Sequence[str], quick: bool) -> tuple[dict[int, str], np.ndarray, np.ndarray]:
    """{index: problem} of the strings that are not an even count of whole numbers, the count of
    numbers of each (0 for those with a problem), and all their numbers in one array. `quick`: when
    the joined strings hold only digits and single spaces (Kaggle's), skip the row-by-row look."""
    problems: dict[int, str] = {}
    canonical = list(texts)
    joined = " ".join(filter(None, texts))
    clean = (
        quick
        and joined.isascii()
        and not joined.encode().translate(None, b"0123456789 ")
        and "  " not in joined
        and all(text[0] != " " and text[-1] != " " for text in texts if text)
    )
    if not clean:
        for index, text in enumerate(texts):
            if text and not _CANONICAL.fullmatch(text):
                problem = _token_problem(text)
                if problem is not None:
                    problems[index] = problem
                else:
                    canonical[index] = " ".join(text.split())
    counts = np.array(
        [0 if i in problems or not t else t.count(" ") + 1 for i, t in enumerate(canonical)], np.int64
    )
    for index in np.flatnonzero(counts % 2):
        problems[int(index)] = f"odd number of values ({counts[index]}): expected 'start length' pairs"
        counts[index] = 0
    if clean and not problems:
        used = joined
    else:
        used = " ".join(t for t, count in zip(canonical, counts, strict=True) if count)
    numbers = np.fromstring(used, dtype=np.int64, sep=" ") if used else np.zeros(0, np.int64)
    return problems, counts, numbers


def check_rows(texts: Sequence[str], shapes: Sequence[tuple[int, int] | None]) -> dict[int, str]:
    """Check many run-length strings at once: {index: what is wrong} of the malformed ones.

    `shapes[i]` is the (H, W) of string i's photo, or None where it is unknown (every check but the
    upper bound then still applies). Vectorised over all strings: one parse, one pass of comparisons.
    """
    problems, counts, numbers = _parse_rows(texts, quick=True)
    if numbers.size and numbers.max() >= _TOO_LARGE:  # 19 digits or more: name them, row by row
        problems, counts, numbers = _parse_rows(texts, quick=False)
    pairs = counts // 2
    row = np.repeat(np.arange(len(texts)), pairs)
    pixels = np.array([np.iinfo(np.int64).max if s is None else s[0] * s[1] for s in shapes], np.int64)
    starts, lengths = numbers[0::2], numbers[1::2]
    ends = starts + lengths - 1  # the last pixel of each run
    bad = (starts < 1) | (lengths < 1) | (ends > pixels[row])
    bad[1:] |= (row[1:] == row[:-1]) & (starts[1:] <= ends[:-1])
    bad_pairs = np.flatnonzero(bad)
    rows, first = np.unique(row[bad_pairs], return_index=True)
    offsets = np.cumsum(pairs) - pairs
    for index, pair in zip(rows.tolist(), bad_pairs[first].tolist(), strict=True):
        run = pair - int(offsets[index])
        previous_end = int(ends[pair - 1]) if run else 0
        problems[index] = _run_problem(
            run + 1, int(starts[pair]), int(lengths[pair]), shapes[index], previous_end
        )
    return dict(sorted(problems.items()))


@dataclass(frozen=True)
class Row:
    """One row of an `img,rle_mask` file: its line in the file (the header is line 1)."""

    line: int
    img: str
    rle: str


def read_rows(path: str | Path) -> list[Row]:
    """The rows of an `img,rle_mask` file; a file that is not such a CSV, a row with another number of
    columns and an image listed twice are errors naming the file and the row."""
    path = Path(path)
    rows: list[Row] = []
    seen: dict[str, int] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:  # -sig: a spreadsheet's byte-order mark
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or not {"img", "rle_mask"} <= set(header):
                raise ValueError(f"{path}: expected the columns 'img,rle_mask', found {header}")
            img_column, rle_column = header.index("img"), header.index("rle_mask")
            for fields in reader:
                if not fields:
                    continue  # a blank line
                line = reader.line_num
                if len(fields) != len(header):
                    raise ValueError(
                        f"{path} row {line} ({fields[0][:60]}): {len(fields)} columns, the header has "
                        f"{len(header)} ({','.join(header)}); an empty mask is written 'name.jpg,'"
                    )
                img = fields[img_column]
                if img in seen:
                    raise ValueError(f"{path}: image {img} has two rows, {seen[img]} and {line}: keep one")
                seen[img] = line
                rows.append(Row(line, img, fields[rle_column]))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except csv.Error as err:
        raise ValueError(f"{path} is not a readable CSV file: {err}") from err
    return rows


def read_csv(path: str | Path) -> dict[str, str]:
    """Read an `img,rle_mask` file (train_masks.csv or a submission) into {image name: rle}."""
    return {row.img: row.rle for row in read_rows(path)}
