"""Kaggle-layout discovery, the by-car split, and every kind of bad input stopping with a named path."""

import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carvana_seg.data.datamodule import CarvanaDataModule, default_num_workers, resolve_num_workers
from carvana_seg.data.layout import check_pairs, find_samples, split_by_car
from carvana_seg.errors import DataError
from tests.conftest import SHARED_SAMPLE, car_id, requires_sample, write_carvana


def setup_module_on(root: Path, **kwargs) -> CarvanaDataModule:
    datamodule = CarvanaDataModule(root=root, image_size=(32, 48), num_workers=0, **kwargs)
    datamodule.setup("fit")
    return datamodule


def test_finds_every_pair_sorted_by_car_and_view(carvana_dir):
    samples = find_samples(carvana_dir)
    assert len(samples) == 12
    assert [(s.car_id, s.view) for s in samples] == sorted((s.car_id, s.view) for s in samples)
    assert all(s.mask.name == s.image.name.replace(".jpg", "_mask.gif") for s in samples)


def test_no_car_in_two_splits_and_split_is_deterministic(tmp_path):
    samples = find_samples(write_carvana(tmp_path / "d", cars=10, views=3, size=(8, 12)))
    train, val = split_by_car(samples, val_fraction=0.3, seed=7)
    train_cars, val_cars = {s.car_id for s in train}, {s.car_id for s in val}
    assert not train_cars & val_cars
    assert len(val_cars) == 3 and len(train) + len(val) == len(samples)
    again = split_by_car(list(reversed(samples)), val_fraction=0.3, seed=7)
    assert {s.car_id for s in again[1]} == val_cars
    other_seeds = [{s.car_id for s in split_by_car(samples, 0.3, seed=k)[1]} for k in range(8, 12)]
    assert any(cars != val_cars for cars in other_seeds)


def test_split_needs_a_car_on_each_side(carvana_dir):
    samples = find_samples(carvana_dir)
    with pytest.raises(DataError, match="val_fraction"):
        split_by_car(samples, val_fraction=0.99, seed=0)


@pytest.mark.parametrize("mask_format,mask_max", [("gif", 1), ("gif", 255), ("png", 1), ("png", 255)])
def test_masks_as_palette_gif_or_png_with_0_1_or_0_255_give_the_same_tensors(tmp_path, mask_format, mask_max):
    reference = setup_module_on(write_carvana(tmp_path / "ref")).train_set
    variant = setup_module_on(
        write_carvana(tmp_path / "v", mask_format=mask_format, mask_max=mask_max)
    ).train_set
    for i in range(len(reference)):
        assert np.array_equal(reference.load(i)[1], variant.load(i)[1])
    assert set(np.unique(variant.load(0)[1])) == {0, 1}


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "nowhere"))):
        setup_module_on(tmp_path / "nowhere")


def test_unset_root_says_how_to_set_it():
    with pytest.raises(DataError, match=r"data\.root"):
        CarvanaDataModule(root="???")


def test_empty_folder_names_the_expected_layout(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no image folder in .*empty.*train/"):
        setup_module_on(tmp_path / "empty")
    (tmp_path / "empty" / "train").mkdir()
    (tmp_path / "empty" / "train_masks").mkdir()
    with pytest.raises(DataError, match="no images"):
        setup_module_on(tmp_path / "empty")


def test_image_without_mask_names_the_image(carvana_dir):
    (carvana_dir / "train_masks" / f"{car_id(1)}_02_mask.gif").unlink()
    with pytest.raises(DataError, match=rf"images without a mask(.|\n)*{car_id(1)}_02\.jpg"):
        setup_module_on(carvana_dir)


def test_mask_without_image_names_the_mask(carvana_dir):
    (carvana_dir / "train" / f"{car_id(2)}_03.jpg").unlink()
    with pytest.raises(DataError, match=rf"masks without an image(.|\n)*{car_id(2)}_03_mask\.gif"):
        setup_module_on(carvana_dir)


@pytest.mark.parametrize("which", ["both", "photo", "mask"])
def test_a_link_whose_target_is_gone_is_named_not_passed_over(carvana_dir, tmp_path, which):
    # A dataset fetched in part (git-annex, DVC) or on a disk not mounted: its files are dangling links.
    gone = tmp_path / "unmounted"
    photo = carvana_dir / "train" / f"{car_id(1)}_02.jpg"
    mask = carvana_dir / "train_masks" / f"{car_id(1)}_02_mask.gif"
    links = {"both": [photo, mask], "photo": [photo], "mask": [mask]}[which]
    for link in links:
        link.unlink()
        link.symlink_to(gone / link.name)
    with pytest.raises(DataError, match=rf"{links[0].name} is a link to .*unmounted.*which does not exist"):
        setup_module_on(carvana_dir)


def test_a_gone_link_not_named_like_a_photo_is_passed_over_as_before(carvana_dir, tmp_path):
    (carvana_dir / "train" / "README").symlink_to(tmp_path / "gone")
    assert len(find_samples(carvana_dir)) == 12


@pytest.mark.parametrize(("given", "workers"), [("auto", None), (0, 0), (3, 3), ("2", 2)])
def test_num_workers_is_auto_or_a_whole_number_given_as_a_number_or_as_text(given, workers):
    expected = default_num_workers() if workers is None else workers
    assert resolve_num_workers(given) == expected  # "2": what ${oc.env:WORKERS} gives


@pytest.mark.parametrize("given", [2.5, -1, True, "two", "2.5", None])
def test_num_workers_that_is_no_whole_count_is_refused_not_rounded(given):
    with pytest.raises(DataError, match=r"data.num_workers must be 'auto' or a whole number >= 0"):
        resolve_num_workers(given)


def test_mask_of_another_size_names_both_files(carvana_dir):
    bad = carvana_dir / "train_masks" / f"{car_id(0)}_01_mask.gif"
    Image.new("P", (30, 20)).save(bad)
    with pytest.raises(DataError, match=rf"size(.|\n)*{bad.name}.*{car_id(0)}_01\.jpg"):
        setup_module_on(carvana_dir)


def test_unreadable_image_names_the_file(carvana_dir):
    broken = carvana_dir / "train" / f"{car_id(1)}_04.jpg"
    broken.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataError, match=rf"unreadable(.|\n)*{broken.name}"):
        setup_module_on(carvana_dir)


def test_misnamed_files_are_reported_and_not_used(carvana_dir, caplog):
    shutil.copy(carvana_dir / "train" / f"{car_id(0)}_01.jpg", carvana_dir / "train" / "holiday photo.jpg")
    with caplog.at_level(logging.WARNING):
        samples = find_samples(carvana_dir)
    assert len(samples) == 12
    assert "holiday photo.jpg" in caplog.text


def test_train_hq_folder_is_accepted_as_the_image_folder(carvana_dir):
    (carvana_dir / "train").rename(carvana_dir / "train_hq")
    assert len(find_samples(carvana_dir)) == 12


def test_split_is_written_as_car_ids(carvana_dir):
    split = setup_module_on(carvana_dir, val_fraction=0.34).split
    assert len(split["val"]) == 1 and len(split["train"]) == 2
    assert set(split["train"]).isdisjoint(split["val"])


@requires_sample
def test_real_carvana_sample_loads():
    samples = find_samples(SHARED_SAMPLE)
    assert len(samples) == 808 and len({s.car_id for s in samples}) == 51
    check_pairs(samples[:32])
    module = CarvanaDataModule(root=SHARED_SAMPLE, image_size=(160, 240), num_workers=0, check_files=False)
    module.setup("fit")
    item = module.val_set[0]
    assert item["image"].shape == (3, 160, 240) and item["image"].dtype.is_floating_point is False
    assert item["mask"].shape == (1, 160, 240)
    share = item["mask"].float().mean().item()
    assert 0.1 < share < 0.35  # the car is about a fifth of a Carvana photo
