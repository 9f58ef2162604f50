"""carvana_seg.download: the no-credentials error path, and downloads against a fake Kaggle API.

No network and no real Carvana files (their licence forbids redistribution): the fake API serves small zips
of made-up cars, laid out as Kaggle's are (train.zip holds train/<car>_<NN>.jpg, and so on).
"""

from __future__ import annotations

import csv
import errno
import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from carvana_seg import download as dl
from carvana_seg.download import COMPETITION, INSTALL_HINT, RULES_URL, DownloadError, ExpectedCount

TRAIN_CARS = ("0cdf5b5d0ce1", "11acc40dc0ea")
TEST_CARS = ("a1b2c3d4e5f6",)
VIEWS = 3
SMALL = {
    "train": ExpectedCount(images=len(TRAIN_CARS) * VIEWS, cars=len(TRAIN_CARS)),
    "train_hq": ExpectedCount(images=len(TRAIN_CARS) * VIEWS, cars=len(TRAIN_CARS)),
    "train_masks": ExpectedCount(images=len(TRAIN_CARS) * VIEWS, cars=len(TRAIN_CARS)),
    "test": ExpectedCount(images=len(TEST_CARS) * VIEWS, cars=len(TEST_CARS)),
}
DEFAULT_FILES = ["metadata.csv.zip", "train_masks.csv.zip", "train_masks.zip", "train.zip"]


# --- fake competition files ----------------------------------------------------------------------------


def _names(cars: tuple[str, ...], suffix: str = ".jpg") -> list[str]:
    return [f"{car}_{view:02d}{suffix}" for car in cars for view in range(1, VIEWS + 1)]


def _jpeg(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _gif_mask(seed: int) -> bytes:
    mask = Image.new("P", (8, 6), 0)  # a palette GIF with indices {0, 1}, as Kaggle's masks are
    mask.putpalette([0, 0, 0, 255, 255, 255])
    mask.paste(1, (1 + seed % 3, 1, 6, 5))
    buffer = io.BytesIO()
    mask.save(buffer, format="GIF")
    return buffer.getvalue()


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _images(folder: str, cars: tuple[str, ...]) -> dict[str, bytes]:
    return {f"{folder}/{name}": _jpeg(i) for i, name in enumerate(_names(cars))}


def make_competition_files() -> dict[str, bytes]:
    """Every Carvana competition file this module can fetch, as small fakes in Kaggle's zip layout."""
    masks = {f"train_masks/{name}": _gif_mask(i) for i, name in enumerate(_names(TRAIN_CARS, "_mask.gif"))}
    rle_rows = [[name, "1 2 10 3"] for name in _names(TRAIN_CARS)]
    meta_rows = [[car, "2016", "Acme", "Roadster", "Base", ""] for car in TRAIN_CARS + TEST_CARS]
    return {
        "train.zip": _zip(_images("train", TRAIN_CARS)),
        "train_hq.zip": _zip(_images("train_hq", TRAIN_CARS)),
        "train_masks.zip": _zip(masks),
        "train_masks.csv.zip": _zip({"train_masks.csv": _csv(["img", "rle_mask"], rle_rows)}),
        "metadata.csv.zip": _zip(
            {"metadata.csv": _csv(["id", "year", "make", "model", "trim1", "trim2"], meta_rows)}
        ),
        "test.zip": _zip(_images("test", TEST_CARS)),
        "sample_submission.csv.zip": _zip(
            {"sample_submission.csv": _csv(["img", "rle_mask"], [[n, "1 1"] for n in _names(TEST_CARS)])}
        ),
    }


@pytest.fixture(scope="module")
def competition_files() -> dict[str, bytes]:
    return make_competition_files()


def _damage(data: bytes) -> bytes:
    """The same zip with one byte of its first member's data flipped: it opens, but fails its CRC check."""
    info = zipfile.ZipFile(io.BytesIO(data)).infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    damaged = bytearray(data)
    damaged[start + info.compress_size // 2] ^= 0xFF
    return bytes(damaged)


class FakeKaggleApi:
    """Stands in for kaggle's KaggleApi; like the real one it downloads `file_name` to `path/<file_name>`."""

    def __init__(
        self,
        files: dict[str, bytes],
        damaged: dict[str, int] | None = None,
        killed: set[str] | None = None,
        full_disk: set[str] | None = None,
        fail_list: BaseException | None = None,
        fail_download: BaseException | None = None,
    ) -> None:
        self.files = files
        self.damaged = dict(damaged or {})  # file name -> how many damaged copies to serve first
        self.killed = set(killed or ())  # file names whose first download dies half-way, like a killed run
        self.full_disk = set(full_disk or ())  # file names whose first download fills the disk half-way
        self.fail_list = fail_list
        self.fail_download = fail_download
        self.listed = 0
        self.downloads: list[tuple[str, bool]] = []

    def competition_list_files(self, competition: str, page_token: str | None = None, page_size: int = 20):
        assert competition == COMPETITION
        self.listed += 1
        if self.fail_list is not None:
            raise self.fail_list
        return SimpleNamespace(files=[SimpleNamespace(name=name) for name in self.files], next_page_token="")

    def competition_download_file(
        self,
        competition: str,
        file_name: str,
        path: str | None = None,
        force: bool = False,
        quiet: bool = False,
    ) -> None:
        assert competition == COMPETITION
        assert path is not None
        self.downloads.append((file_name, force))
        if self.fail_download is not None:
            raise self.fail_download
        data = self.files[file_name]
        target = Path(path) / file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        if file_name in self.killed:
            self.killed.discard(file_name)
            target.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt  # the user pressed Ctrl-C mid-download
        if file_name in self.full_disk:
            self.full_disk.discard(file_name)
            target.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")  # kaggle writes the chunks itself
        if self.damaged.get(file_name, 0) > 0:
            self.damaged[file_name] -= 1
            data = _damage(data)
        target.write_bytes(data)

    def downloaded(self) -> list[str]:
        return [name for name, _ in self.downloads]


class HTTPErrorLike(Exception):
    """Shaped like requests.HTTPError, which kaggle raises for an HTTP error status."""

    def __init__(self, status: int) -> None:
        super().__init__(f"{status} Client Error")
        self.response = SimpleNamespace(status_code=status)


@pytest.fixture
def no_real_kaggle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the code reaches for the real Kaggle API."""
    monkeypatch.setattr(dl, "kaggle_api", lambda: pytest.fail("the real Kaggle API was used"))


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# --- the command line without credentials ---------------------------------------------------------------


def _run_cli(args: list[str], home: Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command in a fresh interpreter whose HOME is `home` and whose environment has no KAGGLE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)
    if prelude:
        code = f"{prelude}\nfrom carvana_seg.download import main\nraise SystemExit(main({args!r}))"
        command = [sys.executable, "-c", code]
    else:
        command = [sys.executable, "-m", "carvana_seg.download", *args]
    return subprocess.run(
        command, env=env, cwd=home, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "empty-out"])
def test_missing_credentials_stops_at_once(tmp_path: Path, out_exists: bool) -> None:
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    if out_exists:
        out.mkdir()

    result = _run_cli(["--out", str(out)], home)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    if importlib.util.find_spec("kaggle") is None:
        assert INSTALL_HINT in result.stderr
    else:
        assert "kaggle.json" in result.stderr
        assert "chmod 600" in result.stderr
        assert "KAGGLE_USERNAME" in result.stderr
        assert RULES_URL in result.stderr
    assert _listing(out) == [] if out_exists else not out.exists()


def test_kaggle_not_installed_says_how_to_install(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # None in sys.modules makes `import kaggle` fail as if the package were not installed.
    result = _run_cli(["--out", str(out)], tmp_path, prelude="import sys\nsys.modules['kaggle'] = None")

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "not installed" in result.stderr
    assert INSTALL_HINT in result.stderr
    assert not out.exists()


# --- downloads against the fake API ---------------------------------------------------------------------


@pytest.mark.parametrize(("hq", "test"), [(False, False), (True, True)], ids=["default", "hq+test"])
def test_download_unpacks_kaggle_layout(
    tmp_path: Path, competition_files: dict[str, bytes], hq: bool, test: bool
) -> None:
    api = FakeKaggleApi(competition_files)
    out = tmp_path / "data"

    assert dl.download(out, hq=hq, test=test, api=api, expected_counts=SMALL) == out

    expected_files = (
        DEFAULT_FILES
        + (["train_hq.zip"] if hq else [])
        + (["sample_submission.csv.zip", "test.zip"] if test else [])
    )
    assert sorted(api.downloaded()) == sorted(expected_files)
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(_names(TRAIN_CARS))
    assert sorted(p.name for p in (out / "train_masks").iterdir()) == sorted(_names(TRAIN_CARS, "_mask.gif"))
    assert (out / "train_masks.csv").read_text().startswith("img,rle_mask\n")
    assert (out / "metadata.csv").read_text().startswith("id,year,make")
    assert (out / "train_hq").is_dir() == hq
    assert (out / "test").is_dir() == test
    assert (out / "sample_submission.csv").is_file() == test
    if test:
        assert sorted(p.name for p in (out / "test").iterdir()) == sorted(_names(TEST_CARS))
    with Image.open(out / "train_masks" / f"{TRAIN_CARS[0]}_01_mask.gif") as mask:
        assert mask.mode == "P"
    # No zips (deleted once unpacked) and no scratch folders are left behind.
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["train", "train_masks", "train_masks.csv", "metadata.csv"]
        + (["train_hq"] if hq else [])
        + (["test", "sample_submission.csv"] if test else [])
    )


def test_rerun_downloads_nothing(
    tmp_path: Path, competition_files: dict[str, bytes], no_real_kaggle: None
) -> None:
    out = tmp_path / "data"
    dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=SMALL)
    before = _listing(out)

    again = FakeKaggleApi(competition_files)
    dl.download(out, api=again, expected_counts=SMALL)
    # No API at all: finished work needs neither credentials nor the network.
    dl.download(out, expected_counts=SMALL)

    assert again.downloads == []
    assert again.listed == 0
    assert _listing(out) == before


def test_kept_zip_is_unpacked_without_downloading(
    tmp_path: Path, competition_files: dict[str, bytes], no_real_kaggle: None
) -> None:
    out = tmp_path / "data"
    dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=SMALL, keep_zips=True)
    assert all((out / name).is_file() for name in DEFAULT_FILES)
    for image in (out / "train").iterdir():
        image.unlink()
    (out / "train").rmdir()

    dl.download(out, expected_counts=SMALL, keep_zips=True)  # no api: the zip is there, so none is needed

    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(_names(TRAIN_CARS))


def test_partial_zip_is_downloaded_again(tmp_path: Path, competition_files: dict[str, bytes]) -> None:
    out = tmp_path / "data"
    out.mkdir()
    good = competition_files["train.zip"]
    (out / "train.zip").write_bytes(good[: len(good) // 2])  # e.g. a copy that was cut short

    api = FakeKaggleApi(competition_files)
    dl.download(out, api=api, expected_counts=SMALL)

    assert api.downloaded().count("train.zip") == 1
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(_names(TRAIN_CARS))


def test_killed_download_is_not_taken_for_complete(
    tmp_path: Path, competition_files: dict[str, bytes]
) -> None:
    out = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        dl.download(out, api=FakeKaggleApi(competition_files, killed={"train.zip"}), expected_counts=SMALL)
    assert not (out / "train.zip").exists()
    assert not (out / "train").exists()
    assert (out / "train_masks").is_dir()  # finished before the kill, so kept

    api = FakeKaggleApi(competition_files)
    dl.download(out, api=api, expected_counts=SMALL)

    assert api.downloaded() == ["train.zip"]
    assert sorted(p.name for p in (out / "train").iterdir()) == sorted(_names(TRAIN_CARS))
    assert not (out / dl.STAGING_DIR).exists()


def test_damaged_download_is_fetched_again_with_force(
    tmp_path: Path, competition_files: dict[str, bytes]
) -> None:
    out = tmp_path / "data"
    api = FakeKaggleApi(competition_files, damaged={"train_masks.zip": 1})

    dl.download(out, api=api, expected_counts=SMALL)

    assert [d for d in api.downloads if d[0] == "train_masks.zip"] == [
        ("train_masks.zip", False),
        ("train_masks.zip", True),
    ]
    assert len(list((out / "train_masks").iterdir())) == SMALL["train_masks"].images
    assert not list(out.glob(f"{dl.UNPACK_PREFIX}*"))


def test_download_that_stays_damaged_is_an_error(tmp_path: Path, competition_files: dict[str, bytes]) -> None:
    out = tmp_path / "data"
    api = FakeKaggleApi(competition_files, damaged={"train_masks.zip": 2})

    with pytest.raises(DownloadError, match=r"train_masks\.zip is damaged even after downloading it again"):
        dl.download(out, api=api, expected_counts=SMALL)
    assert not (out / "train_masks").exists()
    assert not (out / "train_masks.zip").exists()


def test_zip_without_top_folder_still_unpacks(tmp_path: Path, competition_files: dict[str, bytes]) -> None:
    # Not how Kaggle packs train.zip today, but the unpacking must not depend on it (nor on macOS junk).
    flat = {name.removeprefix("train/"): data for name, data in _images("train", TRAIN_CARS).items()}
    flat["__MACOSX/._" + _names(TRAIN_CARS)[0]] = b"junk"
    files = {**competition_files, "train.zip": _zip(flat)}

    dl.download(tmp_path / "data", api=FakeKaggleApi(files), expected_counts=SMALL)

    assert sorted(p.name for p in (tmp_path / "data" / "train").iterdir()) == sorted(_names(TRAIN_CARS))


# --- count checks ------------------------------------------------------------------------------------


def test_count_mismatch_in_a_new_download_names_folder_and_numbers(
    tmp_path: Path, competition_files: dict[str, bytes]
) -> None:
    out = tmp_path / "data"
    expected = {**SMALL, "train": ExpectedCount(images=7, cars=2)}

    with pytest.raises(DownloadError) as caught:
        dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=expected)

    message = str(caught.value)
    assert f"{out / 'train'}/ holds 6 images of 2 cars" in message
    assert "expected 7 images of 2 cars" in message
    assert not (out / "train").exists()  # checked before it got its final name
    assert not list(out.glob(f"{dl.UNPACK_PREFIX}*"))


def test_count_mismatch_in_an_existing_folder(tmp_path: Path, competition_files: dict[str, bytes]) -> None:
    out = tmp_path / "data"
    dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=SMALL)
    (out / "train_masks" / f"{TRAIN_CARS[0]}_01_mask.gif").unlink()

    with pytest.raises(
        DownloadError, match=r"train_masks/ holds 5 images of 2 cars.*expected 6 images of 2 cars"
    ):
        dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=SMALL)


def test_main_reports_count_mismatch_and_exits_2(
    tmp_path: Path,
    competition_files: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(dl, "kaggle_api", lambda: FakeKaggleApi(competition_files))
    monkeypatch.setattr(dl, "EXPECTED_COUNTS", {**SMALL, "train": ExpectedCount(images=5_088, cars=318)})

    assert dl.main(["--out", str(tmp_path / "data")]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "holds 6 images of 2 cars" in err and "expected 5,088 images of 318 cars" in err


# --- API errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "where", "expected"),
    [
        (HTTPErrorLike(403), "list", RULES_URL),
        (HTTPErrorLike(403), "download", RULES_URL),
        (HTTPErrorLike(401), "list", "kaggle.json"),
        (ConnectionError("Failed to resolve 'api.kaggle.com'"), "list", "could not reach Kaggle"),
        (TimeoutError("timed out"), "download", "could not reach Kaggle"),
    ],
    ids=["403-list", "403-download", "401", "offline", "timeout"],
)
def test_api_failures_stop_before_writing(
    tmp_path: Path, competition_files: dict[str, bytes], error: Exception, where: str, expected: str
) -> None:
    out = tmp_path / "data"
    api = FakeKaggleApi(
        competition_files,
        fail_list=error if where == "list" else None,
        fail_download=error if where == "download" else None,
    )

    with pytest.raises(DownloadError, match=re.escape(expected)):
        dl.download(out, api=api, expected_counts=SMALL)

    assert len(api.downloads) <= 1
    assert not out.exists()


def test_a_full_disk_mid_download_is_named_with_what_to_do_and_the_part_kept(
    tmp_path: Path, competition_files: dict[str, bytes]
) -> None:
    out = tmp_path / "data"
    name = next(iter(competition_files))
    api = FakeKaggleApi(competition_files, full_disk={name})

    with pytest.raises(DownloadError, match=rf"{name} into .*No space left on device; free space in {out}"):
        dl.download(out, api=api, expected_counts=SMALL)
    part = out / dl.STAGING_DIR / name
    assert part.read_bytes() == competition_files[name][: len(competition_files[name]) // 2]


def test_help_says_hq_is_in_addition(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        dl.main(["--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "train_hq.zip" in text and "train.zip is fetched as well" in text
    assert "test.zip" in text
