"""Which photos a prediction covers, in which order, and whether each is whole: a folder, one photo or
a glob pattern, ordered by Kaggle's sample submission when there is one, every photo's header and end
checked before any work starts."""

from __future__ import annotations

import csv
import glob
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from carvana_seg.data.decode import check_complete, image_size
from carvana_seg.data.layout import check_link
from carvana_seg.errors import DataError, InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def read_sample(sample: Path) -> list[str]:
    """The image names of a sample submission, in order; each at most once."""
    if not sample.is_file():
        raise InputError(f"sample_submission {sample} does not exist")
    names: list[str] = []
    first: dict[str, int] = {}
    try:
        with sample.open(newline="", encoding="utf-8-sig") as handle:  # a spreadsheet's byte-order mark
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None or not {"img", "rle_mask"} <= set(header):
                raise InputError(f"{sample}: expected the columns 'img,rle_mask', found {header}")
            column = header.index("img")
            for row in reader:
                if not any(row):
                    continue
                name = row[column].strip() if column < len(row) else ""
                if not name:
                    raise InputError(f"{sample}, line {reader.line_num}: the row has no image name")
                if name in first:
                    raise InputError(
                        f"{sample}, line {reader.line_num}: {name} is listed again (first on line "
                        f"{first[name]}); a submission has one row per photo"
                    )
                first[name] = reader.line_num
                names.append(name)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(f"cannot read sample_submission {sample}: {err}") from err
    if not names:
        raise InputError(f"sample_submission {sample} lists no photos")
    return names


def list_images(
    input_path: str | Path, sample_submission: Path | None, masks: str = "gif", overlays: bool = False
) -> list[Path]:
    """The photos to predict, in the order of the submission: `input_path` is a folder of photos, one
    photo, or a glob pattern (`/data/test/0cdf*.jpg`); the order is the sample submission's when given
    (`input_path` then a folder), else by name.

    Hidden files (`._x.jpg`: macOS resource forks) are left out, as training leaves them out. Two
    photos that would write the same mask file or overlay (`x.jpg` and `x.png`) are refused, naming both."""
    text = str(input_path)
    pattern = any(char in text for char in "*?[")
    if pattern:
        candidates = [Path(p) for p in sorted(glob.glob(os.path.expanduser(text)))]
    elif Path(text).expanduser().is_file():
        candidates = [Path(text).expanduser()]
    elif Path(text).expanduser().is_dir():
        candidates = sorted(Path(text).expanduser().iterdir())
    else:
        raise InputError(f"input {text} is not a folder, a photo or a pattern that matches photos")
    found = _photos_by_name(candidates)
    if sample_submission is None:
        if not found:
            raise InputError(f"input {text} holds no .jpg or .png photos")
        images = [found[name] for name in sorted(found)]
    else:
        if pattern or not Path(text).expanduser().is_dir():
            raise InputError(f"sample_submission needs input to be the folder of its photos, got {text}")
        names = read_sample(sample_submission)
        missing = [name for name in names if name not in found]
        if missing:
            raise InputError(
                f"{len(missing)} photos listed in {sample_submission} are not in {text}, e.g. {missing[:5]}"
            )
        images = [found[name] for name in names]
    written = [f"the mask {{}}_mask.{masks}"] if masks != "none" else []
    written += ["the overlay overlays/{}.jpg"] if overlays else []
    if written:
        by_stem: dict[str, Path] = {}
        for path in images:
            other = by_stem.setdefault(path.stem, path)
            if other != path:
                raise InputError(
                    f"{other} and {path} would both write {written[0].format(path.stem)}: "
                    "rename or remove one of them"
                )
    return images


def _photos_by_name(candidates: list[Path]) -> dict[str, Path]:
    """The photos among `candidates` by file name, the name a submission's row carries: two photos of one
    name (`a/x.jpg`, `b/x.jpg` from a pattern) and links whose target is gone are refused, naming them."""
    found: dict[str, Path] = {}
    for path in candidates:
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        check_link(path)
        if not path.is_file():
            continue
        resolved = path.resolve()
        other = found.setdefault(path.name, resolved)
        if other != resolved:
            raise InputError(
                f"{other} and {path} are both named {path.name}: a submission has one row per photo name; "
                "predict them apart or rename one"
            )
    return found


def photo_problem(path: Path) -> tuple[str, tuple[int, int] | None]:
    """Why a photo cannot be used, from its header and its last bytes, or "" when it looks whole (a
    photo cut short keeps a readable header; `check_complete` looks for the format's end marker); and
    its (H, W) when the header is readable."""
    try:
        size = image_size(path)
    except DataError as err:
        return str(err), None
    try:
        check_complete(path)
    except DataError as err:
        return str(err), size
    return "", size


def check_headers(images: list[Path]) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """Check every photo (header and end) before the long work starts: {name: why} of the bad ones, and
    {name: (H, W)} of those whose header could be read."""
    problems: dict[str, str] = {}
    sizes: dict[str, tuple[int, int]] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = pool.map(photo_problem, images, chunksize=64)
        for path, (problem, size) in tqdm(
            zip(images, found, strict=True),
            total=len(images),
            desc="check photos",
            unit="img",
            dynamic_ncols=True,
            disable=len(images) < 2000,
        ):
            if problem:
                problems[path.name] = problem
            if size is not None:
                sizes[path.name] = size
    return problems, sizes
