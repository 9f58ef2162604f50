"""Post-processing of full-size masks: keep the largest piece of car (the default of evaluate, predict
and the Predictor), fill holes; named in evaluate and predict, and an unknown step is refused before
any work."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from carvana_seg.core.postprocess import check_steps, fill_holes, largest, pieces, postprocess
from carvana_seg.errors import InputError
from carvana_seg.evaluate import evaluate
from carvana_seg.predict import predict
from tests.conftest import write_photos
from tests.test_evaluate import eval_cfg
from tests.test_predict import predict_cfg, submission_rows


def car_with_blob_and_hole() -> np.ndarray:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:30, 10:40] = 1  # the car
    mask[18:22, 20:24] = 0  # a hole in it
    mask[35:38, 50:55] = 1  # a blob on the floor
    return mask


def test_largest_keeps_only_the_biggest_piece():
    out = largest(car_with_blob_and_hole())
    assert out[35:38, 50:55].sum() == 0 and out[10:30, 10:40].sum() == 20 * 30 - 16
    one_piece = np.zeros((8, 8), np.uint8)
    one_piece[2:5, 2:5] = 1
    assert np.array_equal(largest(one_piece), one_piece)


def labelled_largest(mask: np.ndarray) -> np.ndarray:
    """The definition: label every pixel's 8-connected piece and keep the biggest."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    return mask if count <= 2 else (labels == 1 + np.argmax(stats[1:, cv2.CC_STAT_AREA])).astype(np.uint8)


@pytest.mark.parametrize("seed", range(40))
def test_pieces_are_counted_from_borders_as_labelling_counts_them(seed):
    # Noise at several densities and blob sizes: pieces touching only at a corner (one 8-connected piece),
    # pieces inside another's hole, pieces on the frame's edge, single pixels, an empty and a full frame.
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(1, 60)), int(rng.integers(1, 90)))
    if seed == 0:
        mask = np.zeros(shape, np.uint8)
    elif seed == 1:
        mask = np.ones(shape, np.uint8)
    else:
        coarse = rng.random((max(1, shape[0] // 4), max(1, shape[1] // 4))) < rng.uniform(0.2, 0.8)
        mask = cv2.resize(coarse.astype(np.uint8), shape[::-1], interpolation=cv2.INTER_NEAREST)
        mask ^= (rng.random(shape) < rng.uniform(0, 0.2)).astype(np.uint8)  # holes and single pixels
    assert pieces(mask) == cv2.connectedComponents(mask, connectivity=8)[0] - 1
    assert np.array_equal(largest(mask), labelled_largest(mask))


def test_a_piece_inside_a_hole_and_pieces_meeting_at_a_corner():
    ring = np.zeros((20, 20), np.uint8)
    ring[2:18, 2:18] = 1
    ring[5:15, 5:15] = 0
    ring[9:11, 9:11] = 1  # a blob inside the hole: a second piece, which RETR_EXTERNAL would not see
    assert pieces(ring) == 2 and largest(ring)[9:11, 9:11].sum() == 0
    corner = np.zeros((4, 4), np.uint8)
    corner[0, 0] = corner[1, 1] = 1  # diagonal neighbours: one 8-connected piece
    assert pieces(corner) == 1 and np.array_equal(largest(corner), corner)


def test_fill_holes_fills_enclosed_background_and_keeps_background_that_reaches_the_edge():
    out = fill_holes(car_with_blob_and_hole())
    assert out[18:22, 20:24].all() and out[0].sum() == 0 and out[35:38, 50:55].all()
    # A car across the whole width splits the background in two pieces, both touching the edge: kept.
    band = np.zeros((20, 30), np.uint8)
    band[8:12] = 1
    assert np.array_equal(fill_holes(band), band)


def test_steps_run_in_order_and_unknown_ones_are_named():
    mask = car_with_blob_and_hole()
    assert np.array_equal(postprocess(mask, ["largest", "fill_holes"]), fill_holes(largest(mask)))
    assert np.array_equal(postprocess(mask, []), mask)
    assert check_steps("largest") == ["largest"]  # postprocess=largest on the command line: one step
    with pytest.raises(InputError, match=r"unknown postprocess step\(s\) \['biggest'\]: choose from largest"):
        check_steps(["biggest"])


def test_evaluate_and_predict_apply_the_steps_and_refuse_unknown_ones_first(trained, tmp_path):
    ckpt, _ = trained
    summary = evaluate(eval_cfg(tmp_path / "e", ckpt, "postprocess=[largest,fill_holes]", "worst_k=0"))
    assert summary["postprocess"] == ["largest", "fill_holes"] and 0 < summary["full_size"]["dice"] <= 1
    test = write_photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out", "postprocess=[largest]", "masks=none"))
    assert len(submission_rows(tmp_path / "out")) == 13
    with pytest.raises(InputError, match="unknown postprocess"):
        predict(predict_cfg(ckpt, test, tmp_path / "bad", "postprocess=[blob]"))
    assert not (tmp_path / "bad").exists()
    with pytest.raises(InputError, match="unknown postprocess"):
        evaluate(eval_cfg(tmp_path / "e2", ckpt, "postprocess=[blob]"))


def test_both_keep_the_largest_piece_by_default_and_nothing_on_request(trained, tmp_path):
    ckpt, _ = trained
    assert evaluate(eval_cfg(tmp_path / "e", ckpt, "worst_k=0"))["postprocess"] == ["largest"]
    assert evaluate(eval_cfg(tmp_path / "n", ckpt, "postprocess=[]", "worst_k=0"))["postprocess"] == []
    test = write_photos(tmp_path)
    predict(predict_cfg(ckpt, test, tmp_path / "out", "masks=none"))
    assert json.loads((tmp_path / "out" / "predict.json").read_text())["postprocess"] == ["largest"]
