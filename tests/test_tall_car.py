"""TallCar, the training augmentation that stretches the car upwards about its lowest row so that its
roof stands in front of the backdrop: photo and mask move together, at any mask resolution."""

from __future__ import annotations

import numpy as np
import pytest

from carvana_seg.data.tall_car import TallCar
from carvana_seg.errors import DataError
from tests.conftest import STUDIO_CAR, augmented, fine_mask_module, studio

BACKDROP = (90, 90, 90)  # the letters' dark grey, behind the rows the car will grow into


@pytest.mark.parametrize("scale", [1, 2])
def test_the_car_grows_upwards_from_where_it_stands_in_photo_and_mask_alike(scale):
    photo, mask = studio(scale, BACKDROP)
    out = augmented(TallCar(stretch=(1.5, 1.5), p=1.0), photo, mask)
    image, grown = out["image"], out["mask"]
    # 20 rows stretched by 1.5 about row 40: the car now starts at row 10, at the mask's scale too.
    expected = np.zeros_like(mask)
    expected[10 * scale : 40 * scale, 25 * scale : 65 * scale] = 1
    assert grown.shape == mask.shape and np.array_equal(grown, expected)
    assert (image[11:39, 26:64] == STUDIO_CAR).all()  # the car's colour over what was backdrop
    assert np.abs(image[41:].astype(int) - photo[41:]).max() <= 2  # the floor under it stays
    assert np.array_equal(image[:, :24], photo[:, :24]) and np.array_equal(image[:, 66:], photo[:, 66:])
    assert np.array_equal(image[:9], photo[:9])  # above the new roof: the backdrop as it was


def test_a_fine_mask_stays_on_the_photo_pixels_it_covers():
    photo, mask = studio(1, BACKDROP)
    fine_photo, fine = studio(2, BACKDROP)
    for stretch in (1.13, 1.27, 1.4):
        coarse = augmented(TallCar(stretch=(stretch, stretch), p=1.0), photo, mask)
        finer = augmented(TallCar(stretch=(stretch, stretch), p=1.0), fine_photo, fine)
        # The photo's pixels blend the stretched car by its share: the two masks differ in the
        # share of the car's top and bottom edge rows only, by a few grey levels.
        differ = np.abs(coarse["image"].astype(int) - finer["image"]).max(axis=2)
        top = 40 - round(20 * stretch)
        assert differ.max() <= 8 and set(np.flatnonzero(differ.any(axis=1))) <= {top - 1, top, 39, 40}
        # Each photo pixel's share of car from the 2x mask against the 1x mask: at most one edge row.
        share = finer["mask"].reshape(60, 2, 90, 2).mean(axis=(1, 3))
        assert np.abs(share - coarse["mask"]).sum() <= 40  # a car row is 40 pixels wide


def test_a_soft_mask_keeps_its_coverage_and_grows_with_the_car():
    photo, mask = studio(2, BACKDROP)
    soft = mask * np.uint8(255)
    out = augmented(TallCar(stretch=(1.5, 1.5), p=1.0), photo, soft)
    assert out["mask"].dtype == np.uint8 and (out["mask"] >= soft).all()
    assert (out["mask"][22:78, 52:128] == 255).all() and out["mask"][:18].max() == 0


def test_a_photo_without_a_car_is_unchanged_and_it_is_drawn_from_the_seed():
    photo, mask = studio(2, BACKDROP)
    empty = np.zeros_like(mask)
    out = augmented(TallCar(p=1.0), photo, empty)
    assert np.array_equal(out["image"], photo) and not out["mask"].any()
    first, second = (
        augmented(TallCar(p=1.0), photo, mask, seed=3),
        augmented(TallCar(p=1.0), photo, mask, seed=3),
    )
    assert np.array_equal(first["mask"], second["mask"])
    assert len({augmented(TallCar(p=1.0), photo, mask, seed=s)["mask"].tobytes() for s in range(8)}) > 1
    assert np.array_equal(augmented(TallCar(p=0.0), photo, mask)["image"], photo)


@pytest.mark.parametrize("stretch", [(0.9, 1.2), (1.4, 1.1), (1.2,)])
def test_a_stretch_that_is_no_growth_range_is_refused_by_name(stretch):
    with pytest.raises(DataError, match="TallCar stretch must be"):
        TallCar(stretch=stretch)


def test_the_data_module_takes_it_with_finer_masks(tmp_path):
    module = fine_mask_module(tmp_path, {"tall_car": TallCar(stretch=(1.3, 1.3), p=1.0)})
    _, mask = module.train_set.load(0)
    item = module.train_set[0]
    assert item["mask"].shape == (1, 48, 72) and item["image"].shape == (3, 24, 36)
    grown = item["mask"][0].numpy()
    assert (grown >= mask).all() and grown.sum() > mask.sum()  # taller, never smaller
