"""The files the Carvana competition ships, what each unpacks to, and the checks that a folder is complete;
unpacking goes through a scratch folder so that a half-unpacked zip never has its final name."""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from carvana_seg.durable import flush_tree, fsync_dir
from carvana_seg.kaggle.client import DownloadError

# A hidden scratch folder inside --out: a folder only gets its final name once it is complete and checked,
# so a run that was killed half-way leaves nothing that a later run could mistake for finished work.
UNPACK_PREFIX = ".unpack-"
# macOS zip tools add these resource-fork copies; they are never data.
_JUNK = "__MACOSX"

# What a truncated or damaged zip raises, on opening or while its members are read (CRC checks).
BAD_ZIP = (zipfile.BadZipFile, EOFError, zlib.error)


class ExpectedCount(NamedTuple):
    """How many photos (or masks) of how many cars a folder must hold."""

    images: int
    cars: int


EXPECTED_COUNTS: dict[str, ExpectedCount] = {
    "train": ExpectedCount(images=5_088, cars=318),
    "train_hq": ExpectedCount(images=5_088, cars=318),
    "train_masks": ExpectedCount(images=5_088, cars=318),
    "test": ExpectedCount(images=100_064, cars=6_254),
}


@dataclass(frozen=True)
class Archive:
    """One competition file and what it unpacks to under --out."""

    name: str  # the file's name on Kaggle, e.g. "train.zip"
    target: str  # a folder ("train") or a single file ("metadata.csv")
    pattern: str = ""  # glob of the images in a folder target; empty for a file target

    @property
    def is_folder(self) -> bool:
        return bool(self.pattern)


TRAIN = Archive("train.zip", "train", "*.jpg")
TRAIN_HQ = Archive("train_hq.zip", "train_hq", "*.jpg")
TRAIN_MASKS = Archive("train_masks.zip", "train_masks", "*_mask.gif")
TRAIN_MASKS_CSV = Archive("train_masks.csv.zip", "train_masks.csv")
METADATA_CSV = Archive("metadata.csv.zip", "metadata.csv")
TEST = Archive("test.zip", "test", "*.jpg")
SAMPLE_SUBMISSION = Archive("sample_submission.csv.zip", "sample_submission.csv")


def archives_for(hq: bool = False, test: bool = False) -> list[Archive]:
    """The competition files one run needs, in download order (small files first)."""
    archives = [METADATA_CSV, TRAIN_MASKS_CSV, TRAIN_MASKS, TRAIN]
    if hq:
        archives.append(TRAIN_HQ)
    if test:
        archives += [SAMPLE_SUBMISSION, TEST]
    return archives


def is_done(out: Path, archive: Archive) -> bool:
    """Whether the archive's target is already in `out` (it only gets its name once complete)."""
    return (out / archive.target).exists()


# --- unpacking ---------------------------------------------------------------------------------------


def unpack(zip_path: Path, archive: Archive, out: Path, expected: Mapping[str, ExpectedCount]) -> None:
    """Unpack a zip into a scratch folder, check it, then move the result into place in one rename."""
    tmp = out / f"{UNPACK_PREFIX}{archive.target}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed run
    try:
        print(f"{archive.name}: unpacking to {out / archive.target}", flush=True)
        with zipfile.ZipFile(zip_path) as zf:
            _check_member_names(zf, zip_path, out / archive.target)  # before a byte is written
            members = _members(zf)
            if not members:
                raise zipfile.BadZipFile("no files in it")
            try:
                zf.extractall(tmp, members)  # checks every member's CRC
            except (RuntimeError, NotImplementedError) as err:  # encrypted, or a compression zipfile lacks
                raise DownloadError(
                    f"cannot unpack {zip_path}: {err}; unpack it by hand into {out}"
                ) from None
            except OSError as err:  # a full disk, a read-only folder: nothing of it is left in place
                raise DownloadError(
                    f"unpacking {zip_path} into {out} failed: {err.strerror or err}; free space or choose "
                    "another --out and run again (what is done is kept)"
                ) from None
        root = _unpacked_root(tmp, archive)
        if archive.is_folder:
            check_count(root, archive, expected, shown_as=out / archive.target)
        flush_tree(root)  # the final name only for data that is on the disk
        os.replace(root, out / archive.target)
        fsync_dir(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _check_member_names(zf: zipfile.ZipFile, zip_path: Path, target: Path) -> None:
    """Refuse, naming it, a member that would land outside the unpacking folder: an absolute path, a '..'
    step or a symbolic link (zipfile would quietly rewrite the first two and write the link as a file)."""
    for info in zf.infolist():
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            why = "an absolute path"
        elif ".." in parts:
            why = "a '..' step out of the folder"
        elif stat.S_ISLNK(info.external_attr >> 16):
            why = "a symbolic link"
        else:
            continue
        raise DownloadError(
            f"{zip_path.name}: refusing to unpack it: its member {name!r} is {why}, which could write "
            f"outside {target}. Kaggle's files have none: delete {zip_path} and run the same command again"
        )


def _members(zf: zipfile.ZipFile) -> list[str]:
    return [n for n in zf.namelist() if not n.startswith(f"{_JUNK}/") and not n.endswith("/")]


def _unpacked_root(tmp: Path, archive: Archive) -> Path:
    """Where the archive's payload landed in the scratch folder, whether or not the zip had a top folder."""
    nested = tmp / archive.target
    if nested.exists():
        return nested
    if archive.is_folder and any(tmp.glob(archive.pattern)):
        return tmp
    files = [p for p in tmp.rglob("*") if p.is_file()]
    if not archive.is_folder and len(files) == 1:
        return files[0]
    listing = sorted(p.relative_to(tmp).as_posix() for p in files)[:5]
    raise DownloadError(
        f"{archive.name} does not hold {archive.target}{'/' if archive.is_folder else ''} "
        f"(its first files: {listing})"
    )


# --- checks ------------------------------------------------------------------------------------------


def check_count(
    folder: Path, archive: Archive, expected: Mapping[str, ExpectedCount], shown_as: Path | None = None
) -> None:
    """Raise DownloadError unless `folder` holds the expected number of images of the expected cars."""
    want = expected.get(archive.target)
    if want is None:
        return
    names = [p.name for p in folder.glob(archive.pattern)]
    got = ExpectedCount(images=len(names), cars=len({_car_id(n) for n in names}))
    if got != want:
        shown = shown_as or folder
        raise DownloadError(
            f"{shown}/ holds {got.images:,} images of {got.cars:,} cars ({archive.pattern}), expected "
            f"{want.images:,} images of {want.cars:,} cars. The download is incomplete or Kaggle changed the "
            f"data: delete {shown}/ (and {archive.name} if it is next to it) and run the same command again."
        )


def check_masks_match(out: Path) -> None:
    """Raise DownloadError unless every photo in out/train/ has a mask in out/train_masks/ and vice versa."""
    images = {p.stem for p in (out / TRAIN.target).glob(TRAIN.pattern)}
    masks = {p.stem.removesuffix("_mask") for p in (out / TRAIN_MASKS.target).glob(TRAIN_MASKS.pattern)}
    if images != masks:
        no_mask, no_image = sorted(images - masks), sorted(masks - images)
        raise DownloadError(
            f"{out / TRAIN.target}/ and {out / TRAIN_MASKS.target}/ disagree: {len(no_mask)} images "
            f"without a mask (e.g. {no_mask[:3]}), {len(no_image)} masks without an image "
            f"(e.g. {no_image[:3]}). Delete both folders and run the same command again."
        )


def _car_id(file_name: str) -> str:
    # "<car>_<NN>.jpg" and "<car>_<NN>_mask.gif": Carvana's car ids are hex, without underscores.
    return file_name.split("_", 1)[0]
