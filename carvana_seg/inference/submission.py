"""The predict command's output folder: committed parts of the submission, its manifest, and the final
`submission.csv.gz` assembled and checked row by row.

Killed at any point, a prediction continues where it stopped: rows are committed in parts (each a
complete gzip member, renamed into place atomically) and the submission is the concatenation of the
parts behind a header, so nothing is ever half-written.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

from carvana_seg.errors import InputError

MANIFEST = "predict.json"
PARTS = ".parts"
SUBMISSION = "submission.csv.gz"


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` whole or not at all: a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _gzip_member(rows: list[tuple[str, str]], header: bool = False) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(["img", "rle_mask"])
    writer.writerows(rows)
    # mtime=0: the same rows always give the same bytes.
    return gzip.compress(text.getvalue().encode(), compresslevel=6, mtime=0)


class Output:
    """The output folder: its manifest, the committed parts, the mask files and the final submission."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.parts = folder / PARTS
        self.manifest = manifest

    def claim(self) -> None:
        """Start or continue: a folder of another run (or of other files) is refused before any work."""
        path = self.folder / MANIFEST
        if path.exists():
            previous = json.loads(path.read_text())
            different = sorted(
                k for k in set(previous) | set(self.manifest) if previous.get(k) != self.manifest.get(k)
            )
            if different:
                raise InputError(
                    f"output {self.folder} holds the results of a different prediction run "
                    f"(it differs in: {', '.join(different)}); choose another output folder or remove it"
                )
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise InputError(f"output {self.folder} is not empty and was not written by carvana_seg.predict")
        self.parts.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode())

    def committed(self) -> set[str]:
        names: set[str] = set()
        for part in sorted(self.parts.glob("part-*.csv.gz")):
            with gzip.open(part, "rt", newline="") as handle:
                names.update(row[0] for row in csv.reader(handle))
        return names

    def commit(self, rows: list[tuple[str, str]]) -> None:
        number = len(list(self.parts.glob("part-*.csv.gz")))
        atomic_write(self.parts / f"part-{number:06d}.csv.gz", _gzip_member(rows))

    def assemble(self, expected: list[str]) -> Path:
        """Concatenate the parts behind a header into the submission, then check it row by row."""
        final = self.folder / SUBMISSION
        tmp = self.folder / f".{SUBMISSION}.tmp"
        with tmp.open("wb") as out:
            out.write(_gzip_member([], header=True))
            for part in sorted(self.parts.glob("part-*.csv.gz")):
                out.write(part.read_bytes())
        verify_submission(tmp, expected)
        os.replace(tmp, final)
        return final


def verify_submission(path: Path, expected: list[str]) -> None:
    """One row per expected image, in order: no duplicates, no gaps, well-formed run-lengths."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != ["img", "rle_mask"]:
            raise RuntimeError(f"{path}: the header is not img,rle_mask")
        count = 0
        for count, row in enumerate(reader, start=1):
            if count > len(expected) or row[0] != expected[count - 1]:
                want = expected[count - 1] if count <= len(expected) else "no more rows"
                raise RuntimeError(f"{path}: row {count} is {row[0]}, expected {want}")
            numbers = row[1].split()
            if len(numbers) % 2:
                raise RuntimeError(f"{path}: row {count} ({row[0]}) has an odd number of run-length values")
    if count != len(expected):
        raise RuntimeError(f"{path}: {count} rows for {len(expected)} images")
