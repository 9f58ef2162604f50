"""DarkFloor, the training augmentation that darkens the studio floor below the car: only floor pixels
change, the mask never does, so it works with masks finer than the photo (`data.mask_scale > 1`)."""

from __future__ import annotations

import numpy as np
import pytest

from carvana_seg.data.dark_floor import DarkFloor
from carvana_seg.errors import DataError
from tests.conftest import augmented, fine_mask_module, studio


@pytest.mark.parametrize("scale", [1, 2])
def test_a_band_darkens_the_floor_below_the_car_and_nothing_else(scale):
    photo, mask = studio(scale)
    band = DarkFloor(band_p=1.0, shadow_p=0.0, darkness=(0.6, 0.6), band_gap=(0.05, 0.05), p=1.0)
    out = augmented(band, photo, mask)
    assert np.array_equal(out["mask"], mask)  # the same object or an equal copy, at its own size
    changed = np.flatnonzero((out["image"] != photo).any(axis=(1, 2)))
    assert len(changed) > 0
    assert changed.min() >= 40 + round(0.05 * 60) - 1  # starts a gap below the car's lowest row
    darkest = out["image"][changed].min()
    assert darkest == pytest.approx(200 * 0.4, abs=2)  # 60% of the light taken at the band's core
    # Across the whole width: the floor beyond the turntable.
    assert (out["image"][changed[len(changed) // 2]] < 200).all()


@pytest.mark.parametrize("scale", [1, 2])
def test_a_shadow_darkens_the_floor_under_the_car_and_never_the_car(scale):
    photo, mask = studio(scale)
    shadow = DarkFloor(band_p=0.0, shadow_p=1.0, darkness=(0.8, 0.8), shadow_height=(0.05, 0.05), p=1.0)
    out = augmented(shadow, photo, mask)
    assert np.array_equal(out["mask"], mask)
    assert np.array_equal(out["image"][20:40, 25:65], photo[20:40, 25:65])  # the car is untouched
    under = out["image"][40:42, 30:60]  # the floor just below the car's lowest row
    assert under.max() < 200 and out["image"][40, 45].max() < 200 * 0.4
    assert np.array_equal(out["image"][:15], photo[:15])  # far from the car: unchanged
    assert np.array_equal(out["image"][:, :10], photo[:, :10])  # beyond the car's width


def test_a_soft_mask_protects_the_car_by_its_coverage():
    photo, mask = studio(2)
    soft = mask * np.uint8(255)
    shadow = DarkFloor(band_p=1.0, shadow_p=1.0, band_gap=(0.0, 0.0), p=1.0)
    out = augmented(shadow, photo, soft)
    assert np.array_equal(out["image"][20:40, 25:65], photo[20:40, 25:65])
    assert np.array_equal(out["mask"], soft)


def test_it_is_drawn_from_the_seed_and_off_with_probability_zero():
    photo, mask = studio(2)
    make = lambda: DarkFloor(p=1.0)  # noqa: E731
    first, second = augmented(make(), photo, mask, seed=5), augmented(make(), photo, mask, seed=5)
    assert np.array_equal(first["image"], second["image"])
    draws = {augmented(make(), photo, mask, seed=s)["image"].tobytes() for s in range(8)}
    assert len(draws) > 1  # bands and shadows change from draw to draw
    assert np.array_equal(augmented(DarkFloor(p=0.0), photo, mask)["image"], photo)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"band_p": 1.5}, "band_p must be a probability"),
        ({"darkness": (0.9, 0.3)}, "darkness must be"),
        ({"band_height": (0.1,)}, "band_height must be"),
        ({"shadow_height": (0.0, 2.0)}, "shadow_height"),
        ({"car_p": -0.1}, "car_p must be a probability"),
        ({"car_darkness": (0.5, 1.5)}, "car_darkness"),
        ({"band_car_p": 2}, "band_car_p must be a probability"),
    ],
)
def test_bad_options_are_refused_by_name(kwargs, message):
    with pytest.raises(DataError, match=message):
        DarkFloor(**kwargs)


def test_the_data_module_takes_it_with_finer_masks(tmp_path):
    module = fine_mask_module(tmp_path, {"dark_floor": DarkFloor(band_p=1.0, shadow_p=1.0, p=1.0)})
    image, mask = module.train_set.load(0)
    item = module.train_set[0]
    assert item["mask"][0].numpy().tolist() == mask.tolist()
    assert item["image"].shape == (3, 24, 36)
    assert not np.array_equal(item["image"].numpy(), image.transpose(2, 0, 1))  # the floor darkened


@pytest.mark.parametrize("scale", [1, 2])
def test_the_car_itself_darkens_when_asked_and_the_floor_stays(scale):
    photo, mask = studio(scale)
    dark_car = DarkFloor(band_p=0.0, shadow_p=0.0, car_p=1.0, car_darkness=(0.5, 0.5), p=1.0)
    out = augmented(dark_car, photo, mask)
    assert np.array_equal(out["mask"], mask)
    assert np.array_equal(out["image"][:20], photo[:20]) and np.array_equal(out["image"][40:], photo[40:])
    assert np.abs(out["image"][20:40, 25:65].astype(int) - photo[20:40, 25:65] // 2).max() <= 1
    assert np.array_equal(augmented(DarkFloor(band_p=0.0, shadow_p=0.0, p=1.0), photo, mask)["image"], photo)


@pytest.mark.parametrize("scale", [1, 2])
def test_a_band_across_the_car_darkens_car_and_floor_alike(scale):
    photo, mask = studio(scale)
    across = DarkFloor(
        band_p=1.0, shadow_p=0.0, darkness=(0.5, 0.5), band_height=(0.1, 0.1), band_car_p=1.0, p=1.0
    )
    car_rows_seen = 0
    for seed in range(8):
        out = augmented(across, photo, mask, seed=seed)
        assert np.array_equal(out["mask"], mask)
        changed = np.flatnonzero((out["image"] != photo).any(axis=(1, 2)))
        assert 20 - 1 <= changed.min() < 40  # it starts within the car's rows
        core = changed.min() + 3  # inside the 6-row band, past its soft edge
        floor, car = out["image"][core, 5, 0], out["image"][core, 45, 0]
        assert floor == pytest.approx(200 * 0.5, abs=2)
        if core < 40:  # the car's pixels in the band lose the same share of their light
            assert car == pytest.approx(180 * 0.5, abs=2)
            car_rows_seen += 1
    assert car_rows_seen > 0
