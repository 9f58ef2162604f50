"""inference.stress: studio shifts keep photo and mask aligned; evaluate's `stress` option scores them."""

from __future__ import annotations

import csv
import json
import logging

import cv2
import numpy as np
import pytest

from carvana_seg.errors import InputError, exit_on_input_error
from carvana_seg.evaluate import evaluate
from carvana_seg.inference.stress import TRANSFORMS, apply, check_names, dark_band, zoom_out
from tests.conftest import draw_view
from tests.test_evaluate import eval_cfg

SIZE = (120, 180)
RED = (200, 40, 40)


def red_car(seed: int = 0, floor: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """draw_view's ellipse car painted red (told from any grey by its redness, under any cast), on its
    light backdrop; `floor` paints the rows below 80% of the height that grey, behind the car."""
    photo, mask = draw_view(SIZE, np.random.default_rng(seed))
    if floor is not None:
        photo[int(0.8 * SIZE[0]) :] = floor
    photo[mask == 1] = RED
    return photo, mask


def edge_zone(mask: np.ndarray) -> np.ndarray:
    """Pixels within one pixel of the mask's edge."""
    kernel = np.ones((3, 3), np.uint8)
    return cv2.dilate(mask, kernel) > cv2.erode(mask, kernel)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_each_transform_keeps_photo_and_mask_aligned(name):
    photo, mask = red_car(floor=170)
    before = photo.copy(), mask.copy()
    out, out_mask = apply(name, photo, mask)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert out_mask.shape == mask.shape and out_mask.dtype == np.uint8 and set(np.unique(out_mask)) == {0, 1}
    assert np.array_equal(photo, before[0]) and np.array_equal(mask, before[1])  # inputs untouched
    redness = out[..., 0].astype(int) - out[..., 1]
    car_coloured = (redness > 60).astype(np.uint8)
    wrong = car_coloured != out_mask
    assert not (wrong & ~edge_zone(out_mask)).any(), (
        f"{name}: {int(wrong.sum())} pixels disagree off the edge"
    )
    again = apply(name, photo, mask)
    assert np.array_equal(again[0], out) and np.array_equal(again[1], out_mask)  # deterministic


def test_zoom_out_extends_the_studio_and_darkens_the_floor_below_when_asked():
    photo, mask = red_car(floor=170)
    out, out_mask = zoom_out(photo, mask, 0.8)
    height, width = SIZE
    top, left = (height - 96) // 2, (width - 144) // 2
    assert abs(int(out_mask.sum()) - 0.64 * int(mask.sum())) < 0.05 * mask.sum()
    assert not out_mask[:top].any() and not out_mask[top + 96 :].any() and not out_mask[:, :left].any()
    # No black borders: the backdrop continues above and at the sides, the floor below.
    assert out[0].min() >= 200 and out[: top + 96, 0].min() >= 160 and out[: top + 96, -1].min() >= 160
    assert out[-1].min() > 20  # dark, never black
    assert out[-1].mean() < 0.4 * 170  # the dark floor band at the bottom
    assert abs(float(out[top + 96 + 2].mean()) - 170) < 6  # the lit floor right below the photo
    plain, plain_mask = zoom_out(photo, mask, 0.8, darken=0.0)
    assert np.array_equal(plain_mask, out_mask)
    assert np.abs(plain[top + 96 :].astype(int) - 170).max() <= 3  # no band unless asked


def test_dark_band_lies_below_the_car_and_leaves_the_car_alone():
    photo, mask = red_car()
    out, out_mask = dark_band(photo, mask, 0.7)
    assert np.array_equal(out_mask, mask)
    car_bottom = np.flatnonzero(mask.any(axis=1))[-1]
    assert np.array_equal(out[: car_bottom + 1], photo[: car_bottom + 1])
    darkest = out.mean(axis=(1, 2)).argmin()
    assert car_bottom < darkest and out[darkest].mean() < 0.4 * 225


def test_unknown_names_are_refused_with_the_known_ones():
    assert check_names(["zoom_out", "warm"]) == ["zoom_out", "warm"]
    with pytest.raises(InputError, match=r"zoom_in.*zoom_out, zoom_far"):
        check_names(["zoom_out", "zoom_in"])
    with pytest.raises(InputError, match="twice"):
        check_names(["warm", "warm"])


def test_evaluate_scores_each_transform_on_the_same_photos(trained, tmp_path):
    ckpt, _ = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "worst_k=0", "stress=[zoom_out,warm]"))
    stress = summary["stress"]
    assert list(stress["transforms"]) == ["zoom_out", "warm"] and stress["images"] == 8
    rows = list(csv.DictReader((tmp_path / "eval" / "stress.csv").open()))
    assert len(rows) == 16 and {r["transform"] for r in rows} == {"zoom_out", "warm"}
    original = {
        r["img"]: float(r["dice"]) for r in csv.DictReader((tmp_path / "eval" / "per_image.csv").open())
    }
    assert {r["img"] for r in rows} == set(original)
    for name, block in stress["transforms"].items():
        dice = [float(r["dice"]) for r in rows if r["transform"] == name]
        unstressed = [original[r["img"]] for r in rows if r["transform"] == name]
        assert [float(r["dice_unstressed"]) for r in rows if r["transform"] == name] == pytest.approx(
            unstressed
        )
        assert block["dice"] == pytest.approx(np.mean(dice), abs=1e-6)
        assert block["dice_min"] == pytest.approx(min(dice), abs=1e-6)
        assert block["drop"] == pytest.approx(np.mean(unstressed) - np.mean(dice), abs=1e-6)
        assert block["strength"] == TRANSFORMS[name].strength
    assert stress["score"] == pytest.approx(np.mean([b["dice"] for b in stress["transforms"].values()]))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["stress"]["score"] == pytest.approx(stress["score"])


def test_the_identity_control_scores_as_the_originals(trained, tmp_path):
    ckpt, _ = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "worst_k=0", "stress=[identity]"))
    assert abs(summary["stress"]["transforms"]["identity"]["drop"]) < 0.01  # only the decode path differs


def test_no_stress_leaves_the_evaluation_as_it_was(trained, tmp_path):
    ckpt, _ = trained
    evaluate(eval_cfg(tmp_path, ckpt, "worst_k=0"))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(saved) == [
        *("ckpt_path", "data_root", "split", "images", "input_size", "threshold", "tta_hflip", "upsample"),
        "postprocess",
        *("full_size", "train_size", "dice_by_threshold", "worst", "seconds"),
    ]
    assert not (tmp_path / "eval" / "stress.csv").exists()


def test_a_bad_name_exits_2_naming_it_before_any_work(tmp_path, caplog):
    cfg = eval_cfg(tmp_path, tmp_path / "never_read.ckpt", "stress=[zoom_out,fisheye]")
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        exit_on_input_error(evaluate, cfg)
    assert exit_info.value.code == 2
    assert "fisheye" in caplog.text and "dark_band" in caplog.text
