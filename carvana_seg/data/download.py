"""Fetch the Kaggle Carvana competition files and unpack them into Kaggle's layout.

    python -m carvana_seg.data.download --out data/carvana [--hq] [--test] [--keep-zips]

    DIR/train/<car>_<NN>.jpg                 5,088 photos, 318 cars x 16 views (train.zip)
    DIR/train_masks/<car>_<NN>_mask.gif      their masks (train_masks.zip)
    DIR/train_masks.csv, DIR/metadata.csv    (train_masks.csv.zip, metadata.csv.zip)
    DIR/train_hq/<car>_<NN>.jpg              with --hq: the same photos at full quality (train_hq.zip)
    DIR/test/<car>_<NN>.jpg                  with --test: 100,064 photos of 6,254 cars (test.zip)
    DIR/sample_submission.csv                with --test (sample_submission.csv.zip)

Needs the optional `kaggle` package (`pip install -e '.[kaggle]'`), Kaggle credentials, and the
competition rules accepted on kaggle.com; without them it stops before writing anything. Re-running
only does what is missing: a folder or CSV that is already there is checked, not fetched again.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import shutil
import sys
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, NamedTuple, Protocol

COMPETITION = "carvana-image-masking-challenge"
RULES_URL = f"https://www.kaggle.com/c/{COMPETITION}/rules"
TOKEN_URL = "https://www.kaggle.com/settings/api"
INSTALL_HINT = "pip install -e '.[kaggle]'"

# Hidden work folders inside --out: a file only gets its final name once it is complete, so a run that
# was killed half-way leaves nothing that a later run could mistake for finished work.
STAGING_DIR = ".download"
UNPACK_PREFIX = ".unpack-"
# macOS zip tools add these resource-fork copies; they are never data.
_JUNK = "__MACOSX"


class DownloadError(Exception):
    """An expected failure (no kaggle package, no credentials, no network, wrong data) with its fix."""


class KaggleApiLike(Protocol):
    """The two calls of kaggle's KaggleApi that this module uses (tests pass a fake)."""

    def competition_list_files(self, competition: str) -> Any: ...

    def competition_download_file(
        self,
        competition: str,
        file_name: str,
        path: str | None = None,
        force: bool = False,
        quiet: bool = False,
    ) -> None: ...


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


# --- errors the user can fix -------------------------------------------------------------------------


def _kaggle_version() -> tuple[int, ...] | None:
    try:
        text = metadata.version("kaggle")
    except metadata.PackageNotFoundError:
        return None
    parts: list[int] = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def credentials_help() -> str:
    """How to give the installed kaggle package credentials, and the rules step everyone forgets."""
    version = _kaggle_version()
    config_dir = os.environ.get("KAGGLE_CONFIG_DIR")
    json_path = f"{config_dir}/kaggle.json" if config_dir else "~/.kaggle/kaggle.json"
    why = " (KAGGLE_CONFIG_DIR is set)" if config_dir else ""
    lines = [
        "To download the Carvana data:",
        f"  1. Sign in to kaggle.com, open {RULES_URL}",
        "     and accept the competition rules (until you do, Kaggle answers 403 Forbidden).",
        f"  2. Give the kaggle package your credentials ({TOKEN_URL} makes them), one of:",
        f"     - the legacy API key file kaggle.json: save it as {json_path}{why}",
        f"       and run: chmod 600 {json_path}",
        "     - or the environment variables KAGGLE_USERNAME and KAGGLE_KEY (the two fields of kaggle.json)",
    ]
    # Access tokens (KAGGLE_API_TOKEN, ~/.kaggle/access_token) arrived in kaggle 1.8.0.
    if version is not None and version >= (1, 8):
        lines.append(
            "     - or an API token: export KAGGLE_API_TOKEN=<token>, or save it in ~/.kaggle/access_token"
        )
    return "\n".join(lines)


def _http_status(err: BaseException) -> int | None:
    # kaggle >= 1.7 raises requests' HTTPError (status on .response); 1.6 had its own ApiException (.status).
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status is None:
        status = getattr(err, "status", None)
    return status if isinstance(status, int) else None


# Matched by name so that this module needs neither requests nor urllib3 to be importable.
_NETWORK_ERRORS = {
    "ConnectionError",
    "Timeout",
    "TimeoutError",
    "MaxRetryError",
    "NewConnectionError",
    "NameResolutionError",
    "ProtocolError",
    "SSLError",
    "gaierror",
}


def _is_network_error(err: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_ERRORS for cls in type(err).__mro__)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _network_message(err: BaseException) -> str:
    return (
        f"could not reach Kaggle ({type(err).__name__}: {_first_line(err)}).\n"
        "Check the internet connection (behind a proxy, set HTTPS_PROXY) and run the same command again."
    )


def _api_error(err: Exception, what: str) -> DownloadError | None:
    """The DownloadError for a failed Kaggle API call, or None when the failure is not one we expect."""
    status = _http_status(err)
    if status == 403:
        return DownloadError(
            f"Kaggle refused {what} (403 Forbidden): the Kaggle account of your credentials has not accepted "
            f"the competition rules.\nSign in, open {RULES_URL}, accept the rules, "
            "and run the same command again."
        )
    if status == 401:
        return DownloadError(
            f"Kaggle rejected your credentials (401 Unauthorized) while fetching {what}: the key or token is "
            f"wrong or expired.\n{credentials_help()}"
        )
    if status == 429:
        return DownloadError(
            f"Kaggle is rate-limiting this account (429) while fetching {what}; retry later."
        )
    if status is not None:
        return DownloadError(f"Kaggle answered HTTP {status} while fetching {what}: {_first_line(err)}")
    if _is_network_error(err):
        return DownloadError(_network_message(err))
    return None


def _call(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the Kaggle API, turning the failures a user can fix into DownloadError."""
    try:
        return fn(*args, **kwargs)
    except DownloadError:
        raise
    except Exception as err:
        mapped = _api_error(err, what)
        if mapped is None:
            raise  # a bug, here or in kaggle: keep the traceback
        raise mapped from None


# --- the Kaggle API ----------------------------------------------------------------------------------


def kaggle_api() -> KaggleApiLike:
    """Import and authenticate kaggle's KaggleApi; any failure becomes a DownloadError with the fix."""
    noise = io.StringIO()  # kaggle prints its own (CLI-oriented) help; ours replaces it
    try:
        # Importing any kaggle module runs kaggle/__init__.py, which authenticates at import time:
        # 1.6-1.7 raise OSError, 1.8 calls exit(1), 2.x swallows the failure and we meet it below.
        with contextlib.redirect_stdout(noise):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            # 2.x: no credentials -> exit(1); an access token is checked online -> requests' ConnectionError.
            api.authenticate()
    except ImportError as err:
        if importlib.util.find_spec("kaggle") is None:
            raise DownloadError(
                "the optional dependency 'kaggle' is not installed. Install it with:\n"
                f"  {INSTALL_HINT}\n(or: pip install kaggle six)"
            ) from None
        # kaggle 2.2.x imports `six` without declaring it, so a bare `pip install kaggle` can land here.
        name = getattr(err, "name", None) or ""
        missing = f" (pip install {name})" if name and not name.startswith("kaggle") else ""
        raise DownloadError(
            f"the kaggle package is installed but cannot be imported: {err}. "
            f"Install what it is missing{missing}, or reinstall the extra: {INSTALL_HINT}"
        ) from None
    except (Exception, SystemExit) as err:
        if _is_network_error(err):
            raise DownloadError(_network_message(err)) from None
        # kaggle 1.x's "Could not find kaggle.json" names only its fallback folder; the help below is clearer.
        quiet = isinstance(err, SystemExit) or "kaggle.json" in str(err)
        detail = "" if quiet else f" (kaggle said: {_first_line(err)})"
        message = f"no usable Kaggle credentials were found{detail}.\n{credentials_help()}"
        raise DownloadError(message) from None
    return api


# --- zips --------------------------------------------------------------------------------------------

# What a truncated or damaged zip raises, on opening or while its members are read (CRC checks).
_BAD_ZIP = (zipfile.BadZipFile, EOFError, zlib.error)


def _fetch(api: KaggleApiLike, archive: Archive, out: Path, force: bool) -> None:
    """Download `archive` to out/<name>; the final name appears only once kaggle returned."""
    staging = out / STAGING_DIR
    staging.mkdir(parents=True, exist_ok=True)
    print(f"{archive.name}: downloading from Kaggle", flush=True)
    try:
        # force=False lets kaggle resume a partial file that a killed run left in the staging folder.
        _call(
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
    # kaggle names the local file after the download URL, which for these files is the requested name.
    # Kaggle 2.x documents that large non-zip files are served wrapped as <name>.zip; all of ours are zips
    # already, so a different name means the service changed and unpacking would be guesswork.
    got = staging / archive.name
    if not got.is_file():
        found = sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []
        raise DownloadError(
            f"kaggle finished downloading {archive.name} but {got} is not there (found: {found or 'nothing'})"
        )
    os.replace(got, out / archive.name)


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


def _unpack(zip_path: Path, archive: Archive, out: Path, expected: Mapping[str, ExpectedCount]) -> None:
    """Unpack a zip into a scratch folder, check it, then move the result into place in one rename."""
    tmp = out / f"{UNPACK_PREFIX}{archive.target}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed run
    try:
        print(f"{archive.name}: unpacking to {out / archive.target}", flush=True)
        with zipfile.ZipFile(zip_path) as zf:
            members = _members(zf)
            if not members:
                raise zipfile.BadZipFile("no files in it")
            zf.extractall(tmp, members)  # checks every member's CRC; strips absolute and '..' paths
        root = _unpacked_root(tmp, archive)
        if archive.is_folder:
            check_count(root, archive, expected, shown_as=out / archive.target)
        os.replace(root, out / archive.target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- checks ------------------------------------------------------------------------------------------


def _car_id(file_name: str) -> str:
    # "<car>_<NN>.jpg" and "<car>_<NN>_mask.gif": Carvana's car ids are hex, without underscores.
    return file_name.split("_", 1)[0]


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


def _check_masks_match(out: Path) -> None:
    images = {p.stem for p in (out / TRAIN.target).glob(TRAIN.pattern)}
    masks = {p.stem.removesuffix("_mask") for p in (out / TRAIN_MASKS.target).glob(TRAIN_MASKS.pattern)}
    if images != masks:
        no_mask, no_image = sorted(images - masks), sorted(masks - images)
        raise DownloadError(
            f"{out / TRAIN.target}/ and {out / TRAIN_MASKS.target}/ disagree: {len(no_mask)} images "
            f"without a mask (e.g. {no_mask[:3]}), {len(no_image)} masks without an image "
            f"(e.g. {no_image[:3]}). Delete both folders and run the same command again."
        )


# --- the whole job -----------------------------------------------------------------------------------


def _done(out: Path, archive: Archive) -> bool:
    return (out / archive.target).exists()


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
            _call("the competition's file list", api.competition_list_files, COMPETITION)
            ready = True
        return api

    created = not out.exists()
    try:
        pending = [a for a in archives if not _done(out, a)]
        if any(not (out / a.name).is_file() for a in pending):
            connected()
        for archive in archives:
            if archive in pending:
                _install(connected, archive, out, expected, keep_zips)
            else:
                print(f"{archive.target}: already there", flush=True)
                if archive.is_folder:
                    check_count(out / archive.target, archive, expected)
        _check_masks_match(out)
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
            _unpack(zip_path, archive, out, expected)
            break
        except _BAD_ZIP as err:
            zip_path.unlink()
            if attempt:
                raise DownloadError(
                    f"{archive.name} is damaged even after downloading it again ({err}); try again later"
                ) from None
            print(f"{archive.name}: incomplete or damaged ({err}); downloading it again", flush=True)
    if not keep_zips:
        zip_path.unlink()


# --- command line ------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m carvana_seg.data.download",
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
