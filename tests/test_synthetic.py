"""The built-in synthetic data: determinism, Kaggle's layout, masks that are exactly the car, caching."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from carvana_seg.data import rle
from carvana_seg.synthetic import generate as synthetic
from carvana_seg.synthetic.camera import camera as _camera
from carvana_seg.synthetic.generate import (
    SPEC_FILE,
    VIEWS,
    ensure_dataset,
    main,
    make_car,
    render_view,
    write_dataset,
)

SMALL = (96, 144)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _car_with(colours: set[str] | None = None, antenna: bool | None = None, seed: int = 0):
    for index in range(200):
        car = make_car(seed, index)
        if (colours is None or car.colour_name in colours) and (
            antenna is None or (car.antenna > 0) == antenna
        ):
            return car
    raise AssertionError("no such car among the first 200")


def test_cars_and_views_are_deterministic():
    assert make_car(7, 3) == make_car(7, 3)
    assert make_car(7, 3) != make_car(7, 4)
    assert make_car(7, 3, split="test").car_id != make_car(7, 3).car_id
    car = make_car(7, 3)
    (img1, mask1), (img2, mask2) = render_view(car, 6, SMALL), render_view(car, 6, SMALL)
    assert img1.shape == (*SMALL, 3) and img1.dtype == np.uint8
    assert mask1.shape == SMALL and mask1.dtype == np.uint8
    assert np.array_equal(img1, img2) and np.array_equal(mask1, mask2)
    with pytest.raises(ValueError):
        render_view(car, 0, SMALL)
    with pytest.raises(ValueError):
        render_view(car, VIEWS + 1, SMALL)


def test_view_numbering_follows_carvana():
    """View 1 shows the front, view 5 the side with the nose on the left, view 9 the rear."""
    car = make_car(0, 0)
    nose_tail = np.array([[car.length / 2, 0.0, 0.6], [-car.length / 2, 0.0, 0.6]])

    def image_x_and_depth(view: int) -> tuple[np.ndarray, np.ndarray]:
        cam = _camera(car, (1280, 1918), view)
        world = cam.to_world(nose_tail)
        return cam.project(world)[:, 0], (world - cam.pos) @ cam.rot[2]

    assert image_x_and_depth(1)[1][0] < image_x_and_depth(1)[1][1]  # nose nearer the camera
    assert image_x_and_depth(9)[1][0] > image_x_and_depth(9)[1][1]
    assert image_x_and_depth(5)[0][0] < image_x_and_depth(5)[0][1]  # nose on the image's left
    assert image_x_and_depth(13)[0][0] > image_x_and_depth(13)[0][1]


def test_dataset_layout_and_byte_identical_rewrites(tmp_path):
    out = write_dataset(tmp_path / "a", cars=2, size=SMALL, seed=1, test_cars=1)
    train_ids = [make_car(1, k).car_id for k in range(2)]
    test_id = make_car(1, 0, split="test").car_id
    for car_id in [*train_ids, test_id]:
        assert len(car_id) == 12 and all(c in "0123456789abcdef" for c in car_id)

    names = sorted(p.name for p in (out / "train").iterdir())
    assert names == sorted(f"{c}_{v:02d}.jpg" for c in train_ids for v in range(1, VIEWS + 1))
    assert sorted(p.name for p in (out / "test").iterdir()) == [
        f"{test_id}_{v:02d}.jpg" for v in range(1, 17)
    ]
    with Image.open(out / "train" / names[0]) as jpg:
        assert jpg.format == "JPEG" and jpg.mode == "RGB" and jpg.size == (SMALL[1], SMALL[0])

    masks = rle.read_csv(out / "train_masks.csv")
    assert sorted(masks) == names
    for name in names:
        with Image.open(out / "train_masks" / name.replace(".jpg", "_mask.gif")) as gif:
            assert gif.format == "GIF" and gif.mode == "P" and getattr(gif, "n_frames", 1) == 1
            pixels = np.array(gif)
        assert set(np.unique(pixels)) == {0, 1}
        assert np.array_equal(rle.decode(masks[name], SMALL), pixels)

    with (out / "metadata.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", "year", "make", "model", "trim1", "trim2"]
    assert [row["id"] for row in rows] == [*train_ids, test_id]
    with (out / "sample_submission.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["img"] for row in rows] == [f"{test_id}_{v:02d}.jpg" for v in range(1, 17)]
    assert {row["rle_mask"] for row in rows} == {"1 1"}

    # Same arguments, same bytes; and car k does not depend on how many cars the set has.
    again = write_dataset(tmp_path / "b", cars=2, size=SMALL, seed=1, test_cars=1)
    assert _files(out) == _files(again)
    one = _files(write_dataset(tmp_path / "c", cars=1, size=SMALL, seed=1))
    first_car = {k: v for k, v in _files(out).items() if train_ids[0] in k}
    assert first_car and first_car == {k: v for k, v in one.items() if train_ids[0] in k}


def test_mask_excludes_the_shadow():
    car = _car_with(colours={"black", "dark grey"})
    for view in (1, 3, 5):
        shaded, mask = render_view(car, view, (160, 240))
        plain, mask_plain = render_view(dataclasses.replace(car, shadow=0.0), view, (160, 240))
        assert np.array_equal(mask, mask_plain)
        darkened = plain.astype(int).sum(2) - shaded.astype(int).sum(2) > 30
        assert (darkened & (mask == 0)).mean() > 0.01  # a visible shadow around the car...
        inside = cv2.erode(mask, np.ones((3, 3), np.uint8))  # ...never on it (the rim is anti-aliased)
        assert not (darkened & (inside == 1)).any()


def test_antenna_is_a_thin_part_of_the_mask():
    car = _car_with(antenna=True)
    image, mask = render_view(car, 5, (1280, 1918))
    _, bare = render_view(dataclasses.replace(car, antenna=0.0), 5, (1280, 1918))
    extra = (mask == 1) & (bare == 0)
    rows = np.flatnonzero(extra.any(axis=1))
    roof_row = np.flatnonzero(bare.any(axis=1))[0]
    assert rows.size and rows[0] < roof_row - 30  # it stands well above the roof
    widths = extra[rows[0] : roof_row].sum(axis=1)
    assert 2 <= np.median(widths) <= 8  # a few pixels wide at full size
    assert image[extra].mean() < 120  # and it is drawn (dark) where the mask says


def test_foreground_share_and_framing():
    shares = []
    for index in range(4):
        car = make_car(3, index)
        for view in range(1, VIEWS + 1):
            _, mask = render_view(car, view, SMALL)
            assert set(np.unique(mask)) == {0, 1}
            border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
            assert not border.any(), f"car {index} view {view} touches the border"
            shares.append(mask.mean())
    assert min(shares) >= 0.08 and max(shares) <= 0.35
    assert 0.14 <= np.mean(shares) <= 0.28


def test_paints_include_the_hard_cases():
    colours = [make_car(0, k).colour_name for k in range(100)]
    dark = sum(c in ("black", "dark grey", "dark blue") for c in colours)
    light = sum(c in ("white", "silver") for c in colours)
    assert dark >= 15 and light >= 20


def test_ensure_dataset_builds_once_and_refuses_other_sets(tmp_path, monkeypatch):
    root = tmp_path / "cache" / "synthetic"
    assert ensure_dataset(root, cars=1, size=(48, 72), seed=2) == root
    assert (root / SPEC_FILE).exists() and len(list((root / "train").iterdir())) == VIEWS
    assert not [p for p in root.parent.iterdir() if ".tmp-" in p.name]
    before = _files(root)

    def no_render(*args, **kwargs):
        raise AssertionError("rendered again")

    monkeypatch.setattr(synthetic, "write_dataset", no_render)
    assert ensure_dataset(root, cars=1, size=(48, 72), seed=2) == root
    assert _files(root) == before
    with pytest.raises(ValueError, match=str(root)):
        ensure_dataset(root, cars=2, size=(48, 72), seed=2)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=str(other)):
        ensure_dataset(other, cars=1, size=(48, 72))
    assert (other / "notes.txt").read_text() == "keep me"


def test_cli_writes_a_set(tmp_path, capsys):
    main(["--out", str(tmp_path / "cli"), "--cars", "1", "--size", "48x72", "--seed", "5"])
    assert "wrote 1 train + 0 test cars" in capsys.readouterr().out
    assert len(list((tmp_path / "cli" / "train").glob("*.jpg"))) == VIEWS
    with Image.open(next((tmp_path / "cli" / "train_masks").glob("*.gif"))) as gif:
        assert gif.size == (72, 48)


@pytest.mark.slow
def test_cli_module_runs(tmp_path):
    out = tmp_path / "module"
    args = ["--out", str(out), "--cars", "1", "--size", "48x72", "--test-cars", "1", "--workers", "2"]
    done = subprocess.run(
        [sys.executable, "-m", "carvana_seg.synthetic.generate", *args], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 1 train + 1 test cars" in done.stdout
    assert _files(out) == _files(write_dataset(tmp_path / "inline", cars=1, size=(48, 72), test_cars=1))
