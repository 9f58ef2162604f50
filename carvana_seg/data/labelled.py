"""The labelled photos of a folder: each photo with its mask, read from the mask files or from
train_masks.csv, every photo and mask file read (decoded once) and every CSV row checked before any
training or scoring starts."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from carvana_seg.data import rle
from carvana_seg.data.cache import listing_key, sample_files
from carvana_seg.data.layout import MASK_CSV, MASK_DIR, check_pairs, find_samples, listing
from carvana_seg.data.sample import Sample
from carvana_seg.errors import DataError

log = logging.getLogger(__name__)

MaskSource = Literal["auto", "files", "csv"]
MASK_SOURCES = ("auto", "files", "csv")
# What a "checked" record vouches for: a new version here re-checks listings checked by an older one.
_CHECKS = "headers, file ends, decodes, csv rows, rotated photos"


def labelled_samples(
    root: Path,
    image_dir: str | None = None,
    mask_source: MaskSource = "auto",
    check_files: bool = True,
    cache_dir: Path | None = None,
) -> tuple[list[Sample], dict[str, str] | None]:
    """Every labelled sample of `root`, and the run-length masks by image name when the CSV is used.

    `mask_source`: "files" reads train_masks/; "csv" decodes train_masks.csv; "auto" takes the CSV when
    it lists every photo (a run-length mask decodes ~25x faster than its GIF) and the files otherwise.
    With `check_files`, every photo and mask file read is decoded once (and the CSV's rows checked
    against their photos' sizes), once per listing when `cache_dir` can record it; the CSV's rows are checked
    on every call all the same (~0.1 s per 1,000 rows), a broken row being a DataError naming it.
    """
    if mask_source not in MASK_SOURCES:
        raise DataError(f"data.mask_source must be 'auto', 'files' or 'csv', got {mask_source!r}")
    auto = mask_source == "auto"
    has_files = (root / MASK_DIR).is_dir()
    samples = find_samples(root, image_dir, labelled=mask_source == "files" or (auto and has_files))
    if auto and not has_files and not (root / MASK_CSV).is_file():
        raise DataError(
            f"{root} has neither {MASK_DIR}/ nor {MASK_CSV}: no masks to learn or score from "
            f"(unpack {MASK_DIR}.zip or {MASK_CSV}.zip there, or point data.root at the folder that has them)"
        )
    use_csv = mask_source == "csv" or (auto and (root / MASK_CSV).is_file())
    rows = read_rle_rows(root / MASK_CSV) if use_csv else None
    rle_masks = {row.img: row.rle for row in rows} if rows is not None else None
    if rle_masks is not None:
        missing = [s.image for s in samples if s.name not in rle_masks]
        if missing and auto and has_files:
            log.info("%s lacks %d photos: reading the mask files", root / MASK_CSV, len(missing))
            rows = rle_masks = None
        elif missing:
            raise DataError(f"photos without a row in {root / MASK_CSV}:{listing(missing)}")
    if rle_masks is not None:
        # A partly extracted train/ trains on what is there: said, not silent.
        photos = {s.name for s in samples}
        strays = [name for name in rle_masks if name not in photos]
        if strays:
            log.warning(
                "%s lists %d images with no photo in %s (left out):%s",
                root / MASK_CSV,
                len(strays),
                samples[0].image.parent if samples else root,
                listing(strays),
            )
    masks_csv = root / MASK_CSV if rows is not None else None
    checked = check_files and _check_once(samples, root, cache_dir, masks_csv, rows)
    if masks_csv is not None and rows is not None and not checked:
        check_rle_rows(
            masks_csv, rows, {}
        )  # every check but the photo-size bound (checked before, or not asked)
    return samples, rle_masks


def read_rle_rows(path: Path) -> list[rle.Row]:
    """The rows of train_masks.csv; a missing or malformed file (columns, an image listed twice, not
    UTF-8) is named, with the row."""
    if not path.is_file():
        raise DataError(f"data.mask_source=csv but {path} does not exist")
    try:
        return rle.read_rows(path)
    except ValueError as err:
        raise DataError(str(err)) from err
    except OSError as err:  # no permission, a folder of that name, an I/O error
        raise DataError(f"cannot read {path}: {err.strerror or err}") from err


def check_rle_rows(path: Path, rows: Sequence[rle.Row], sizes: Mapping[str, tuple[int, int] | None]) -> None:
    """Check every row's run-length string at once, against its photo's (H, W) where `sizes` has it
    (rows of other images, and photos whose header was not read, get every check but that bound):
    the broken rows are a DataError naming the file, each row's number (its line, the header being
    row 1), its image and what is wrong."""
    problems = rle.check_rows([row.rle for row in rows], [sizes.get(row.img) for row in rows])
    if problems:
        broken = [f"row {rows[i].line} ({rows[i].img}): {problem}" for i, problem in problems.items()]
        raise DataError(
            f"{len(broken)} broken rows in {path} (fix them, or use data.mask_source=files):{listing(broken)}"
        )


def _check_orientation(masks_csv: Path, sizes: Mapping[Path, tuple[int, int]]) -> None:
    """Photos turned on their side (W x H where most are H x W) under train_masks.csv, named in a warning:
    a run-length string counts pixels only, so a row written before its photo was rotated fits it and
    decodes into a scrambled mask. A warning, not a refusal: a data set may hold both orientations."""
    counts = Counter(sizes.values())
    if not counts:
        return
    (height, width), _ = counts.most_common(1)[0]
    rotated = sorted(path.name for path, size in sizes.items() if height != width and size == (width, height))
    if rotated:
        log.warning(
            "%d photos are %dx%d (H x W) where most are %dx%d: if they were turned after %s was written, "
            "their masks decode scrambled; turn them back:%s",
            len(rotated),
            width,
            height,
            height,
            width,
            masks_csv.name,
            listing(rotated),
        )


def _check_once(
    samples: Sequence[Sample],
    root: Path,
    cache_dir: Path | None,
    masks_csv: Path | None = None,
    rows: Sequence[rle.Row] | None = None,
) -> bool:
    """Decode every photo and mask file read once (header, end and data; see `check_pairs`) and check
    every CSV row against its photo's size, unless this exact listing (names, sizes, times, and the
    CSV when it is used) passed before. Whether the checks ran."""
    record = None
    if cache_dir is not None:
        record = cache_dir / "checked" / listing_key(sample_files(samples, masks_csv), root, _CHECKS)
        if record.exists():
            return False
    # Training reads the CSV's masks then: decoding the GIFs too would cost 2.5 ms each for nothing.
    sizes = check_pairs(samples, decode_masks=masks_csv is None) or {}
    if masks_csv is not None and rows is not None:
        _check_orientation(masks_csv, sizes)
        check_rle_rows(masks_csv, rows, {s.name: sizes.get(s.image) for s in samples})
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.touch()
    return True
