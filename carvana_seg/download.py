"""Fetch the Kaggle Carvana competition files and unpack them into Kaggle's layout.

    python -m carvana_seg.download --out data/carvana [--hq] [--test] [--keep-zips]

    DIR/train/<car>_<NN>.jpg                 5,088 photos, 318 cars x 16 views (train.zip)
    DIR/train_masks/<car>_<NN>_mask.gif      their masks (train_masks.zip)
    DIR/train_masks.csv, DIR/metadata.csv    (train_masks.csv.zip, metadata.csv.zip)
    DIR/train_hq/<car>_<NN>.jpg              with --hq: the same photos at full quality (train_hq.zip)
    DIR/test/<car>_<NN>.jpg                  with --test: 100,064 photos of 6,254 cars (test.zip)
    DIR/sample_submission.csv                with --test (sample_submission.csv.zip)

Needs the optional `kaggle` package (`pip install -e '.[kaggle]'`), Kaggle credentials, and the
competition rules accepted on kaggle.com; without them it stops before writing anything. Re-running
only does what is missing: a folder that is already there is counted (and train/ matched against
train_masks/), a CSV there is kept as it is (training checks every row), neither fetched again.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from carvana_seg.durable import fsync_dir, fsync_file
from carvana_seg.kaggle.archives import (
    BAD_ZIP,
    EXPECTED_COUNTS,
    UNPACK_PREFIX,
    Archive,
    ExpectedCount,
    archives_for,
    check_count,
    check_masks_match,
    is_done,
    unpack,
)
from carvana_seg.kaggle.client import (
    COMPETITION,
    INSTALL_HINT,
    RULES_URL,
    DownloadError,
    KaggleApiLike,
    call_api,
    kaggle_api,
)

# The names callers of the command's module use, whichever module of carvana_seg.kaggle holds them.
__all__ = [
    "COMPETITION",
    "EXPECTED_COUNTS",
    "INSTALL_HINT",
    "RULES_URL",
    "STAGING_DIR",
    "UNPACK_PREFIX",
    "DownloadError",
    "ExpectedCount",
    "download",
    "kaggle_api",
    "main",
]

# A hidden work folder inside --out: a zip only gets its final name once kaggle has finished downloading
# it, so a run that was killed half-way leaves nothing that a later run could mistake for finished work.
STAGING_DIR = ".download"


def download(
    out: Path,
    hq: bool = False,
    test: bool = False,
    api: KaggleApiLike | None = None,
    *,
    keep_zips: bool = False,
    expected_counts: Mapping[str, ExpectedCount] | None = None,
) -> Path:
    """Fetch and unpack the competition files into `out` in Kaggle's layout, skipping what is already there.

    `api` defaults to kaggle's own KaggleApi, imported and authenticated only if something must be
    downloaded. Zips are deleted once unpacked unless `keep_zips`. A zip already in
    `out` (e.g. downloaded by hand from the competition's data page) is unpacked without credentials.
    Raises DownloadError, with what to do, for everything a user can fix. Returns `out`.
    """
    out = Path(out).expanduser()
    expected = EXPECTED_COUNTS if expected_counts is None else expected_counts
    archives = archives_for(hq=hq, test=test)
    if out.exists() and not out.is_dir():
        raise DownloadError(f"--out {out} exists and is not a folder")

    ready = False

    def connected() -> KaggleApiLike:
        # Credentials and the network are checked before the first byte is written, so a run that cannot
        # download stops at once and leaves --out as it was.
        nonlocal api, ready
        if api is None:
            api = kaggle_api()
        if not ready:
            call_api("the competition's file list", api.competition_list_files, COMPETITION)
            ready = True
        return api

    created = not out.exists()
    try:
        pending = [a for a in archives if not is_done(out, a)]
        if any(not (out / a.name).is_file() for a in pending):
            connected()
        for archive in archives:
            if archive in pending:
                _install(connected, archive, out, expected, keep_zips)
            else:
                print(f"{archive.target}: already there", flush=True)
                if archive.is_folder:
                    check_count(out / archive.target, archive, expected)
        check_masks_match(out)
    except DownloadError:
        # A run refused on its first download (e.g. 403, rules not accepted) leaves --out as it found it.
        # rmdir removes only empty folders, so a partial download kept for resuming stays.
        for folder in [out / STAGING_DIR, *([out] if created else [])]:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
    return out


def _install(
    connected: Callable[[], KaggleApiLike],
    archive: Archive,
    out: Path,
    expected: Mapping[str, ExpectedCount],
    keep_zips: bool,
) -> None:
    """Make out/<target> from out/<name>, downloading the zip when it is missing or turns out damaged."""
    zip_path = out / archive.name
    for attempt in range(2):
        if not zip_path.is_file():
            # The second try forces a fresh download: kaggle skips a same-sized local file, damaged or not.
            _fetch(connected(), archive, out, force=attempt > 0)
        try:
            unpack(zip_path, archive, out, expected)
            break
        except BAD_ZIP as err:
            zip_path.unlink()
            if attempt:
                raise DownloadError(
                    f"{archive.name} is damaged even after downloading it again ({err}); try again later"
                ) from None
            print(f"{archive.name}: incomplete or damaged ({err}); downloading it again", flush=True)
    if not keep_zips:
        zip_path.unlink()


def _fetch(api: KaggleApiLike, archive: Archive, out: Path, force: bool) -> None:
    """Download `archive` to out/<name>; the final name appears only once kaggle returned."""
    staging = out / STAGING_DIR
    print(f"{archive.name}: downloading from Kaggle", flush=True)
    try:
        staging.mkdir(parents=True, exist_ok=True)
        # force=False lets kaggle resume a partial file that a killed run left in the staging folder.
        call_api(
            archive.name,
            api.competition_download_file,
            COMPETITION,
            archive.name,
            path=str(staging),
            force=force,
            quiet=False,
        )
    except ValueError as err:  # kaggle's own check, e.g. the file came out shorter than announced
        raise DownloadError(
            f"downloading {archive.name} failed: {err}. Run the same command again."
        ) from None
    except OSError as err:  # kaggle writes the chunks itself; requests' dropped connections are OSErrors too
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            todo = f"free space in {staging.parent} and run the same command again"
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            todo = f"{staging} cannot be written: choose another --out"
        else:
            todo = "run the same command again"
        raise DownloadError(
            f"downloading {archive.name} into {staging} failed: {err.strerror or err}; {todo} "
            "(the part already downloaded is kept and resumed)"
        ) from None
    # kaggle names the local file after the download URL, which for these files is the requested name.
    # Kaggle 2.x documents that large non-zip files are served wrapped as <name>.zip; all of ours are zips
    # already, so a different name means the service changed and unpacking would be guesswork.
    got = staging / archive.name
    if not got.is_file():
        found = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        raise DownloadError(
            f"kaggle finished downloading {archive.name} but {got} is not there (found: {found or 'nothing'})"
        )
    fsync_file(got)  # the final name only for bytes that are on the disk
    os.replace(got, out / archive.name)
    fsync_dir(out)


# --- command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.download",
        description=(
            f"Download the Kaggle Carvana competition files ({COMPETITION}) with the kaggle package and "
            "unpack them into Kaggle's layout: train/, train_masks/, train_masks.csv, metadata.csv. "
            f"Needs Kaggle credentials and the rules accepted at {RULES_URL}. "
            "Re-running skips what is already there."
        ),
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to put the data in")
    parser.add_argument(
        "--hq",
        action="store_true",
        help="also fetch train_hq.zip (the same 5,088 photos at full JPEG quality, a much larger download) "
        "into DIR/train_hq/; train.zip is fetched as well",
    )
    parser.add_argument(
        "--test",
        action="store_true",
        help="also fetch test.zip (100,064 photos of 6,254 cars, a large download) into DIR/test/ "
        "and sample_submission.csv",
    )
    parser.add_argument(
        "--keep-zips", action="store_true", help="keep the downloaded zips in DIR after unpacking them"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 for an error the user can fix)."""
    args = _parser().parse_args(argv)
    try:
        out = download(args.out, hq=args.hq, test=args.test, keep_zips=args.keep_zips)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Carvana data ready in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
