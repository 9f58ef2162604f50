"""carvana_seg.download under faults: hostile zips are refused by member name with nothing written outside
--out, kaggle's warning about a key file readable by others reaches the user, and nothing gets its final
name before it is on the disk. Offline, against the fake Kaggle API of test_download."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from carvana_seg import download as dl
from carvana_seg.download import DownloadError
from tests.conftest import ROOT
from tests.test_download import SMALL, TRAIN_CARS, FakeKaggleApi, _images, make_competition_files


@pytest.fixture(scope="module")
def competition_files() -> dict[str, bytes]:
    return make_competition_files()


def hostile_train_zip(path: Path, member: str, link_to: str | None = None) -> None:
    """Kaggle's train.zip with one more member: `member`, or a symbolic link `member` -> `link_to`."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in _images("train", TRAIN_CARS).items():
            zf.writestr(name, data)
        info = zipfile.ZipInfo(member)
        if link_to is not None:
            info.create_system = 3  # Unix: the mode bits below are read
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, link_to.encode() if link_to is not None else b"not a photo")


def listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("member", "link_to", "why"),
    [
        ("../escaped.jpg", None, "a '..' step"),
        ("train/../../escaped.jpg", None, "a '..' step"),
        ("{outside}/escaped.jpg", None, "an absolute path"),
        ("train/escaped.jpg", "{outside}/escaped.jpg", "a symbolic link"),
    ],
    ids=["dot-dot", "nested-dot-dot", "absolute", "symlink"],
)
def test_a_zip_member_that_escapes_the_folder_is_refused_by_name(
    tmp_path, competition_files, member, link_to, why
):
    outside = tmp_path / "outside"
    outside.mkdir()
    member = member.format(outside=outside)
    link_to = link_to.format(outside=outside) if link_to else None
    zip_path = tmp_path / "hostile.zip"
    hostile_train_zip(zip_path, member, link_to)
    api = FakeKaggleApi({**competition_files, "train.zip": zip_path.read_bytes()})
    out = tmp_path / "data"

    with pytest.raises(DownloadError) as refused:
        dl.download(out, api=api, expected_counts=SMALL)

    message = str(refused.value)
    assert f"train.zip: refusing to unpack it: its member {member!r} is {why}" in message
    assert f"delete {out / 'train.zip'}" in message
    assert listing(outside) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "hostile.zip", "outside"]
    assert not (out / "train").exists()  # not a single member of it got its final name
    assert not list(out.glob(f"{dl.UNPACK_PREFIX}*"))
    assert "escaped.jpg" not in " ".join(listing(out))


def test_the_command_refuses_a_hostile_zip_with_exit_2(tmp_path, competition_files, monkeypatch, capsys):
    zip_path = tmp_path / "hostile.zip"
    hostile_train_zip(zip_path, "../escaped.jpg")
    monkeypatch.setattr(dl, "EXPECTED_COUNTS", SMALL)
    monkeypatch.setattr(
        dl, "kaggle_api", lambda: FakeKaggleApi({**competition_files, "train.zip": zip_path.read_bytes()})
    )

    assert dl.main(["--out", str(tmp_path / "data")]) == 2

    err = capsys.readouterr().err
    assert err.startswith("error: train.zip: refusing to unpack it: its member '../escaped.jpg'")
    assert not (tmp_path / "escaped.jpg").exists()


def test_an_encrypted_member_is_a_download_error_naming_the_zip_not_a_traceback(tmp_path, competition_files):
    zip_path = tmp_path / "encrypted.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        for name, data in _images("train", TRAIN_CARS).items():
            zf.writestr(name, data)
    # zipfile writes no encryption, so the "encrypted" flag is set in each central directory entry (the
    # flags zipfile reads): it then asks for a password it was not given.
    raw = bytearray(zip_path.read_bytes())
    with zipfile.ZipFile(zip_path) as zf:
        entry = zf.start_dir
    while raw[entry : entry + 4] == b"PK\x01\x02":
        raw[entry + 8] |= 0x1
        name, extra, comment = (
            int.from_bytes(raw[entry + k : entry + k + 2], "little") for k in (28, 30, 32)
        )
        entry += 46 + name + extra + comment
    zip_path.write_bytes(bytes(raw))
    api = FakeKaggleApi({**competition_files, "train.zip": zip_path.read_bytes()})
    out = tmp_path / "data"
    with pytest.raises(DownloadError, match=rf"cannot unpack {out / 'train.zip'}: .*encrypted"):
        dl.download(out, api=api, expected_counts=SMALL)
    assert not (out / "train").exists() and not list(out.glob(f"{dl.UNPACK_PREFIX}*"))
    assert (out / "train.zip").is_file()  # kept, to unpack by hand


# --- kaggle's warning about the key file ---------------------------------------------------------------


def authenticate(tmp_path: Path, mode: int, where: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """kaggle_api() in a fresh interpreter whose only credentials are a real kaggle.json of `mode`."""
    home = tmp_path / "home"
    folder = home / ".kaggle" if where == "home" else tmp_path / "kaggle-config"
    folder.mkdir(parents=True)
    key_file = folder / "kaggle.json"
    key_file.write_text('{"username": "someone", "key": "0123456789abcdef0123456789abcdef"}\n')
    key_file.chmod(mode)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAGGLE_")}
    env.pop("XDG_CONFIG_HOME", None)
    env["HOME"] = str(home)
    if where == "KAGGLE_CONFIG_DIR":
        env["KAGGLE_CONFIG_DIR"] = str(folder)
    code = "from carvana_seg.kaggle.client import kaggle_api\nkaggle_api()\nprint('authenticated')"
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    return key_file, result


@pytest.mark.skipif(importlib.util.find_spec("kaggle") is None, reason="the kaggle package is not installed")
@pytest.mark.parametrize("where", ["home", "KAGGLE_CONFIG_DIR"])
def test_a_key_file_readable_by_others_is_a_warning_the_user_sees(tmp_path, where):
    key_file, result = authenticate(tmp_path, 0o644, where)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "authenticated"  # kaggle's own printing stays off stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: Your Kaggle API key is readable by other users on this system! "
        f"To fix this, you can run 'chmod 600 {key_file}'"
    ]


@pytest.mark.skipif(importlib.util.find_spec("kaggle") is None, reason="the kaggle package is not installed")
def test_a_private_key_file_gives_no_warning(tmp_path):
    _, result = authenticate(tmp_path, 0o600, "home")

    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr.lower()


# --- durability: flushed, then renamed -----------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_nothing_gets_its_final_name_before_it_is_on_the_disk(tmp_path, competition_files, monkeypatch):
    # Spies around the real calls: the order of flushes and renames is what a power cut would expose.
    events: list[tuple[str, ...]] = []
    real_fsync, real_sync, real_replace = os.fsync, getattr(os, "sync", None), os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def sync() -> None:
        events.append(("sync",))
        assert real_sync is not None
        real_sync()

    def replace(src, dst, **kwargs) -> None:
        real_replace(src, dst, **kwargs)
        events.append(("replace", str(src), str(dst)))

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    if real_sync is not None:
        monkeypatch.setattr(os, "sync", sync)
    out = tmp_path / "data"

    dl.download(out, api=FakeKaggleApi(competition_files), expected_counts=SMALL)
    monkeypatch.undo()

    published = [e for e in events if e[0] == "replace"]
    zips = ["metadata.csv.zip", "train.zip", "train_masks.csv.zip", "train_masks.zip"]
    assert sorted(Path(e[2]).name for e in published) == sorted(
        [*zips, "metadata.csv", "train", "train_masks", "train_masks.csv"]
    )
    for position, event in enumerate(events):
        if event[0] != "replace":
            continue
        _, src, dst = event
        before, after = events[:position], events[position + 1 :]
        flushed = ("fsync", src) in before or (Path(dst).is_dir() and ("sync",) in before)
        assert flushed, f"{dst} was given its name before its data was flushed"
        assert ("fsync", str(Path(dst).parent)) in after, f"the rename to {dst} was not flushed"
