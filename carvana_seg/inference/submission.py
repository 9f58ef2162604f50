"""The predict command's output folder: its lock, its manifest, the committed parts of the submission,
and the final `submission.csv.gz` assembled and checked row by row.

    OUTPUT/.predict.lock        held (POSIX `lockf`) by the one predict writing here; its pid inside
    OUTPUT/predict.json         the run's options, its ordered list of photos, each photo's size and time
    OUTPUT/.parts/part-*.csv.gz committed rows, each part a complete gzip member
    OUTPUT/masks/               one mask file per photo
    OUTPUT/unreadable.txt       with on_error=skip: why each photo given an empty row could not be read
    OUTPUT/submission.csv.gz    a header member followed by the parts, checked before it is renamed in

One predict at a time: the lock is a POSIX record lock, so the kernel drops it when its holder dies
(`kill -9` included) and forked loader workers never inherit it; a second predict waits a bounded
time, naming the holder, then stops. Killed at any point, a prediction continues where it stopped:
every file is written under a temporary name of its own process and thread, flushed to disk and
renamed into place (then its folder flushed), so nothing is ever half-written. The committed rows are
always a prefix of the manifest's photo list; rows that break that (duplicates or strays, as two
concurrent runs of older versions could leave) are dropped when the folder is claimed and those
photos predicted again, so a folder never wedges. A photo changed since the folder's run began (its
size or modification time: fetched again after a skipped, truncated copy) is predicted again, and so is
every photo after it; a submission never keeps a mask of a photo's earlier content.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any

from carvana_seg.data import rle
from carvana_seg.data.lock import LockTimeout, file_lock
from carvana_seg.durable import TMP_SUFFIX as _TMP
from carvana_seg.durable import atomic_write, fsync_dir, temporary_path
from carvana_seg.errors import InputError, shown

log = logging.getLogger(__name__)

MANIFEST = "predict.json"
# Options of the command in the manifest: a folder begun under other values is finished by passing them.
RESUMABLE_OPTIONS = ("tta_hflip", "threshold", "postprocess")
PARTS = ".parts"
MASKS = "masks"
OVERLAYS = "overlays"
SUBMISSION = "submission.csv.gz"
UNREADABLE = "unreadable.txt"
LOCK = ".predict.lock"
_PART = re.compile(r"part-(\d+)\.csv\.gz")


def _gzip_member(rows: list[tuple[str, str]] | list[list[str]], header: bool = False) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(["img", "rle_mask"])
    writer.writerows(rows)
    # mtime=0: the same rows always give the same bytes.
    return gzip.compress(text.getvalue().encode(), compresslevel=6, mtime=0)


def photo_differences(before: list[str], now: list[str]) -> str:
    """What changed between two ordered photo lists, in words (empty when nothing did)."""
    if before == now:
        return ""
    old, new = set(before), set(now)
    gone = [name for name in before if name not in new]
    added = [name for name in now if name not in old]
    said = []
    if gone:
        said.append(f"{len(gone)} photos of that run are no longer in the input: {shown(gone)}")
    if added:
        said.append(f"{len(added)} photos are new: {shown(added)}")
    if not said:
        at = next(i for i, (a, b) in enumerate(zip(before, now, strict=True)) if a != b)
        said.append(f"the same photos in another order (row {at + 1} was {before[at]}, is now {now[at]})")
    return "; ".join(said)


def _stat(path: Path) -> str | None:
    """The photo's "size:mtime_ns": one short manifest line per photo (100,064 for Kaggle's test set)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


class Output:
    """The output folder of one prediction run: claimed (locked) by one predict at a time.

    `manifest` holds the run's options; `photos` the ordered photos, whose names are kept in the manifest
    so that a rerun on a changed input (a photo renamed, added or removed) is refused naming what
    differs, and whose sizes and modification times are kept so that a photo changed in place is
    predicted again.
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], photos: list[Path]) -> None:
        self.folder = folder
        self.parts = folder / PARTS
        self.masks = folder / MASKS
        self.overlays = folder / OVERLAYS
        self.photos = [path.name for path in photos]
        self._paths = [str(path) for path in photos]
        self.manifest = {
            **manifest,
            "images": len(self.photos),
            "photos": self.photos,
            "photo_stats": [_stat(path) for path in photos],
        }
        self._stats_before: list[Any] | None = None  # the folder's run's, read by check()
        # Each photo's (H, W) by name, once predict has read the headers: a committed run-length that
        # runs past its photo is then dropped like any malformed one. Unknown sizes skip that bound.
        self.sizes: dict[str, tuple[int, int]] = {}
        self._held = contextlib.ExitStack()

    def check(self) -> None:
        """Refuse a folder of another run (or of other files); reads only, writes nothing."""
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"output {self.folder} is a file, not a folder")
        names = [p.name for p in self.folder.iterdir()] if self.folder.is_dir() else []
        path = self.folder / MANIFEST
        # Listed first: another predict writes its manifest before anything else, so a listing that
        # saw its other files is always followed by a manifest that exists here.
        if path.exists():
            try:
                previous = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise InputError(
                    f"output {self.folder}: cannot read its {MANIFEST} ({err}); remove the folder"
                ) from err
            if not isinstance(previous, dict):
                raise InputError(
                    f"output {self.folder}: its {MANIFEST} is not a predict manifest (a JSON object); "
                    "remove the folder"
                )
            self._compare(previous)
        elif not all(self._ours_before_manifest(name) for name in names):
            raise InputError(f"output {self.folder} is not empty and was not written by carvana_seg.predict")

    @staticmethod
    def _ours_before_manifest(name: str) -> bool:
        """What a predict killed while claiming an empty folder leaves: the lock, a manifest's temporary."""
        return name == LOCK or (name.startswith(f".{MANIFEST}.") and name.endswith(_TMP))

    def _compare(self, previous: dict[str, Any]) -> None:
        """Refuse a folder whose manifest differs from this run's; name what differs."""
        legacy = "photos" not in previous  # written by a version that stored only the count
        keys = set(previous) | set(self.manifest)
        if legacy:
            keys.discard("photos")
        if "model_sha256" not in previous:  # written before the model's content was recorded
            keys.discard("model_sha256")
        # A photo changed in place is predicted again (`_forget_changed_photos`), not a different run.
        keys.discard("photo_stats")
        before = previous.get("photo_stats")
        if isinstance(before, list) and len(before) == len(self.photos):
            self._stats_before = before
        different = sorted(k for k in keys if previous.get(k) != self.manifest.get(k))
        if not different:
            return
        detail = ""
        if "photos" in different and isinstance(previous.get("photos"), list):
            detail = f" ({photo_differences(list(previous['photos']), self.photos)})"
        # An option changed since (flip TTA became the default): the run can still be finished as begun.
        options = [k for k in different if k in RESUMABLE_OPTIONS]
        finish = (
            "pass "
            + " ".join(f"'{k}={json.dumps(previous.get(k), separators=(',', ':'))}'" for k in options)
            + " to finish it as it began, "
            if options == different
            else ""
        )
        raise InputError(
            f"output {self.folder} holds the results of a different prediction run "
            f"(it differs in: {', '.join(different)}){detail}; {finish}choose another output folder "
            "or remove it"
        )

    def claim(self, wait: float = 0.0) -> None:
        """Start or continue: take the folder's lock (waiting at most `wait` seconds for another
        predict), refuse a folder of another run, clear what killed runs left half-done, write the
        manifest. Nothing is created before the checks that can be made without the lock pass."""
        self.check()
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            lock = file_lock(self.folder / LOCK, timeout=wait, what=f"predict into {self.folder}")
            self._held.enter_context(lock)
        except LockTimeout as err:
            raise InputError(
                f"output {self.folder} is in use by another predict; wait for it to finish (or stop it) and "
                f"run again, or choose another output folder. {err}"
            ) from None
        try:
            self.check()  # again, under the lock: another predict may have claimed it meanwhile
            self._remove_temporaries()
            self._forget_changed_photos()  # before the manifest records their new sizes and times
            path = self.folder / MANIFEST
            text = json.dumps(self.manifest, indent=2, sort_keys=True) + "\n"
            if not path.exists() or path.read_text() != text:
                atomic_write(path, text.encode())  # first: a folder with a manifest is known to be ours
            self.parts.mkdir(exist_ok=True)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        self._held.close()

    def __enter__(self) -> Output:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _remove_temporaries(self) -> None:
        """Temporary files of killed runs (no live writer can own one: this process holds the lock)."""
        for folder in (self.folder, self.parts, self.masks, self.overlays):
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith(".") and entry.name.endswith(_TMP) and entry.is_file():
                            Path(entry.path).unlink(missing_ok=True)

    def _forget_changed_photos(self) -> None:
        """Drop the committed rows of the photos changed since the folder's run began, with the rows
        after the first of them (the committed rows stay a prefix), and their lines of unreadable.txt.
        A folder begun before the manifest kept sizes and times has nothing to compare: it starts here."""
        now = self.manifest["photo_stats"]
        before = self._stats_before or now
        changed = [i for i, (old, new) in enumerate(zip(before, now, strict=True)) if old != new]
        if not changed:
            return
        first = changed[0]
        _, past = self._committed(limit=first)
        if past:
            log.warning(
                "committed photos changed since this folder's run began (their size or modification "
                "time): %s; they and the photos after %s are predicted again",
                shown([self.photos[i] for i in changed if self.photos[i] in past]),
                self.photos[first],
            )
        path = self.folder / UNREADABLE
        if path.exists():
            # Each line names its photo's path; a photo predicted again is listed again if still unreadable.
            again = self._paths[first:]
            lines = path.read_text().splitlines()
            kept = [line for line in lines if not any(photo in line for photo in again)]
            if not kept:
                path.unlink()
                fsync_dir(self.folder)
            elif len(kept) < len(lines):
                atomic_write(path, "".join(f"{line}\n" for line in kept).encode())

    def _part_files(self) -> list[Path]:
        """The committed parts, by number; any other file in .parts (a stray copy) is not one."""
        return sorted(p for p in self.parts.glob("part-*.csv.gz") if _PART.fullmatch(p.name))

    def committed(self) -> int:
        """How many photos, from the first, the committed parts already hold.

        The parts must hold a prefix of the photo list, in order, each photo once: a row that does not
        continue it (a duplicate, a photo not in the list, a malformed row) is dropped from its part,
        rewritten atomically, and its photo (if any) predicted again. Nothing valid is lost; a folder
        left inconsistent by an older version is repaired instead of failing every rerun."""
        return self._committed()[0]

    def _committed(self, limit: int | None = None) -> tuple[int, set[str]]:
        """`committed`, keeping at most `limit` rows; and the photos of the rows dropped past it."""
        done = 0
        dropped: list[str] = []
        past: set[str] = set()
        for part in self._part_files():
            try:
                with gzip.open(part, "rt", newline="") as handle:
                    rows = list(csv.reader(handle))
            except (OSError, EOFError, zlib.error, csv.Error, UnicodeDecodeError) as err:
                log.warning("%s cannot be read (%s): its photos will be predicted again", part, err)
                part.unlink()
                fsync_dir(self.parts)
                continue
            # A run-length that is not one (edited, damaged: "a b", runs out of order) is not a mask.
            malformed = rle.check_rows(
                [row[1] if len(row) == 2 else "" for row in rows],
                [self.sizes.get(row[0]) if row else None for row in rows],
            )
            kept = []
            for index, row in enumerate(rows):
                if limit is not None and done >= limit:
                    past.add(row[0] if row else "")  # to be predicted again, not a fault of the folder
                    continue
                fits = done < len(self.photos) and len(row) == 2 and row[0] == self.photos[done]
                if fits and index not in malformed:
                    kept.append(row)
                    done += 1
                else:
                    dropped.append(row[0] if row else "(empty row)")
            if len(kept) == len(rows):
                continue
            if kept:
                atomic_write(part, _gzip_member(kept))
            else:
                part.unlink()
                fsync_dir(self.parts)
        if dropped:
            log.warning(
                "dropped %d committed rows that did not continue the photo list (duplicates, strays, damaged "
                "run-lengths and the rows after them, predicted again): %s",
                len(dropped),
                shown(dropped),
            )
        return done, past

    def commit(self, rows: list[tuple[str, str]]) -> None:
        """Append rows as the next part, after flushing the mask files (and overlays) they stand for."""
        for folder in (self.masks, self.overlays):
            if folder.is_dir():
                fsync_dir(folder)
        parts = self._part_files()
        number = int(_PART.fullmatch(parts[-1].name)[1]) + 1 if parts else 0
        atomic_write(self.parts / f"part-{number:06d}.csv.gz", _gzip_member(rows))

    def assemble(self, expected: list[str]) -> Path:
        """Concatenate the parts behind a header into the submission, check it row by row, then rename
        it into place (flushed, like every file here)."""
        final = self.folder / SUBMISSION
        tmp = temporary_path(final)
        try:
            with tmp.open("wb") as out:
                out.write(_gzip_member([], header=True))
                for part in self._part_files():
                    out.write(part.read_bytes())
                out.flush()
                os.fsync(out.fileno())
            verify_submission(tmp, expected, [self.sizes.get(name) for name in expected])
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.folder)
        return final


def verify_submission(
    path: Path, expected: list[str], shapes: list[tuple[int, int] | None] | None = None
) -> None:
    """One row per expected image, in order: no duplicates, no gaps, well-formed run-lengths (each
    within its photo where `shapes`, the photos' (H, W) in the same order, are given)."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != ["img", "rle_mask"]:
            raise RuntimeError(f"{path}: the header is not img,rle_mask")
        count, texts = 0, []
        for count, row in enumerate(reader, start=1):
            if count > len(expected) or len(row) != 2 or row[0] != expected[count - 1]:
                want = expected[count - 1] if count <= len(expected) else "no more rows"
                raise RuntimeError(f"{path}: row {count} is {','.join(row)!r}, expected {want}")
            texts.append(row[1])
    if count != len(expected):
        raise RuntimeError(f"{path}: {count} rows for {len(expected)} images")
    malformed = rle.check_rows(texts, shapes if shapes is not None else [None] * len(texts))
    if malformed:
        index, problem = next(iter(malformed.items()))
        raise RuntimeError(f"{path}: row {index + 1} ({expected[index]}): {problem}")
