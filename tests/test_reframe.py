"""Reframe, the training augmentation that moves the camera: photo and a mask at any multiple of its
size move together, so it works with `data.mask_scale > 1` where albumentations' Affine does not."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from carvana_seg.data.reframe import Reframe, warp
from carvana_seg.errors import DataError
from tests.conftest import fine_mask_module


def box(shape: tuple[int, int], scale: int) -> np.ndarray:
    """A {0, 1} rectangle covering the same share of the frame at any `scale`."""
    mask = np.zeros((shape[0] * scale, shape[1] * scale), np.uint8)
    mask[12 * scale : 40 * scale, 20 * scale : 70 * scale] = 1
    return mask


@pytest.mark.parametrize(("zoom", "dx", "dy"), [(0.77, 0.0, 0.0), (0.83, 0.037, -0.029), (1.0, -0.04, 0.04)])
def test_a_photo_and_its_mask_at_twice_its_size_stay_aligned(zoom, dx, dy):
    coarse = warp(box((50, 90), 1) * np.uint8(255), zoom, dx, dy).astype(np.float64) / 255
    fine = warp(box((50, 90), 2), zoom, dx, dy).astype(np.float64)
    fine_at_coarse = fine.reshape(50, 2, 90, 2).mean(axis=(1, 3))
    # The same share of the frame moved to the same place: areas within a quarter of a coarse pixel
    # along the outline and centres within a quarter (the fine mask rounds its edge to its own pixels).
    perimeter = 2 * (28 + 50) * zoom
    assert abs(coarse.sum() - fine_at_coarse.sum()) < 0.25 * perimeter
    centre = [(np.indices(a.shape)[k] * a).sum() / a.sum() for a in (coarse, fine_at_coarse) for k in (0, 1)]
    assert centre[:2] == pytest.approx(centre[2:], abs=0.26)


def test_zooming_out_shrinks_the_car_about_the_centre_and_keeps_masks_binary():
    mask = box((50, 90), 2)
    out = warp(mask, 0.5, 0.0, 0.0)
    assert set(np.unique(out)) <= {0, 1}
    assert out.sum() == pytest.approx(mask.sum() / 4, rel=0.05)
    centre = np.argwhere(out).mean(axis=0)
    frame_centre = (np.array(mask.shape) - 1) / 2  # stays put
    expected = (np.argwhere(mask).mean(axis=0) - frame_centre) * 0.5 + frame_centre
    assert centre == pytest.approx(expected, abs=0.6)


def test_the_pipeline_draws_its_moves_from_the_seed_and_applies_them_to_both():
    photo = np.dstack([box((50, 90), 1) * np.uint8(255)] * 3)
    make = lambda: A.Compose([Reframe(zoom=(0.7, 0.9), p=1.0)], seed=3, is_check_shapes=False)  # noqa: E731
    first, second = make()(image=photo, mask=box((50, 90), 2)), make()(image=photo, mask=box((50, 90), 2))
    assert np.array_equal(first["image"], second["image"]) and np.array_equal(first["mask"], second["mask"])
    assert first["image"].shape == (50, 90, 3) and first["mask"].shape == (100, 180)
    assert first["mask"].sum() < box((50, 90), 2).sum()  # zoomed out: the car is smaller


def test_a_sideways_range_moves_the_car_across_the_frame_but_never_up_or_down():
    mask = box((50, 90), 1)
    reframe = A.Compose([Reframe(zoom=(1.0, 1.0), shift=(-0.12, 0.12), shift_y=(0.0, 0.0), p=1.0)], seed=5)
    moves = [reframe(image=np.dstack([mask] * 3), mask=mask)["mask"] for _ in range(6)]
    rows = [np.flatnonzero(m.any(axis=1)) for m in moves]
    columns = {int(np.flatnonzero(m.any(axis=0))[0]) for m in moves}
    assert all(r.tolist() == list(range(12, 40)) for r in rows)  # the floor line stays where it was
    assert len(columns) > 1  # while the car moves sideways
    assert Reframe(shift=(-0.1, 0.1)).shift_y == (-0.1, 0.1)  # by default one range for both


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"zoom": (0.9, 0.8)}, "zoom must be"),
        ({"shift": (0.1,)}, "shift must be"),
        ({"zoom": (0.0, 1.0)}, "zoom"),
        ({"shift_y": (0.2, -0.2)}, "shift_y must be"),
        ({"shift_y": 0}, "shift_y must be"),
    ],
)
def test_bad_ranges_are_refused_by_name(kwargs, message):
    with pytest.raises(DataError, match=message):
        Reframe(**kwargs)


def test_the_data_module_takes_reframe_with_finer_masks_and_its_items_move_together(tmp_path):
    module = fine_mask_module(tmp_path, {"reframe": Reframe(zoom=(0.6, 0.6), shift=(0.0, 0.0), p=1.0)})
    image, mask = module.train_set.load(0)
    item = module.train_set[0]
    assert item["image"].shape == (3, 24, 36) and item["mask"].shape == (1, 48, 72)
    assert item["image"].numpy().transpose(1, 2, 0).tolist() == warp(image, 0.6, 0.0, 0.0).tolist()
    assert item["mask"][0].numpy().tolist() == warp(mask, 0.6, 0.0, 0.0).tolist()
