"""The competition's run-length format: row-major, 1-based `start length` pairs, ascending."""

import numpy as np
import pytest

from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import read_mask
from tests.conftest import SHARED_SAMPLE, requires_sample, write_masks_csv


def test_hand_example_is_row_major_and_one_based():
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    # Flattened row by row: 0 1 1 1 0 0 -> one run from pixel 2 (1-based) of length 3.
    assert rle.encode(mask) == "2 3"
    assert rle.encode(np.array([[1, 0], [0, 1]])) == "1 1 4 1"
    assert np.array_equal(rle.decode("2 3", (2, 3)), mask)


@pytest.mark.parametrize(
    "name",
    ["empty", "full", "first_pixel", "last_pixel", "first_and_last", "random", "stripes"],
)
def test_round_trip(name):
    shape = (37, 53)
    rng = np.random.default_rng(0)
    mask = np.zeros(shape, np.uint8)
    if name == "full":
        mask[:] = 1
    elif name == "first_pixel":
        mask[0, 0] = 1
    elif name == "last_pixel":
        mask[-1, -1] = 1
    elif name == "first_and_last":
        mask[0, 0] = mask[-1, -1] = 1
    elif name == "random":
        mask = (rng.random(shape) > 0.5).astype(np.uint8)
    elif name == "stripes":
        mask[:, ::2] = 1
    encoded = rle.encode(mask)
    assert np.array_equal(rle.decode(encoded, shape), mask)
    numbers = [int(n) for n in encoded.split()]
    starts = numbers[0::2]
    assert starts == sorted(starts) and all(n >= 1 for n in numbers)
    assert {"empty": "", "full": f"1 {37 * 53}", "first_pixel": "1 1", "last_pixel": f"{37 * 53} 1"}.get(
        name, encoded
    ) == encoded


def test_bad_strings_are_errors():
    with pytest.raises(ValueError, match="odd"):
        rle.decode("1 2 3", (4, 4))
    with pytest.raises(ValueError, match="outside"):
        rle.decode("10 10", (4, 4))
    with pytest.raises(ValueError, match="ascending"):
        rle.decode("5 2 1 2", (4, 4))


def test_full_size_round_trip():
    yy, xx = np.mgrid[:1280, :1918]
    mask = ((((yy - 700) / 300) ** 2 + ((xx - 960) / 700) ** 2) <= 1).astype(np.uint8)
    assert np.array_equal(rle.decode(rle.encode(mask), mask.shape), mask)


def test_masks_from_csv_give_the_same_tensors_as_the_gifs(carvana_dir):
    write_masks_csv(carvana_dir)
    loaded = {}
    for source in ("files", "csv"):
        datamodule = CarvanaDataModule(carvana_dir, image_size=(24, 36), num_workers=0, mask_source=source)
        datamodule.setup("fit")
        loaded[source] = [datamodule.val_set[i]["mask"] for i in range(len(datamodule.val_set))]
    assert all(np.array_equal(a, b) for a, b in zip(loaded["files"], loaded["csv"], strict=True))


def test_auto_source_takes_the_csv_when_it_lists_every_photo_and_the_files_otherwise(carvana_dir, caplog):
    def rle_used() -> bool:
        datamodule = CarvanaDataModule(carvana_dir, image_size=(24, 36), num_workers=0)  # mask_source auto
        datamodule.setup("fit")
        return datamodule.train_set.rle_masks is not None

    assert not rle_used()  # no CSV: the GIFs
    write_masks_csv(carvana_dir)
    assert rle_used()
    lines = (carvana_dir / "train_masks.csv").read_text().splitlines()
    (carvana_dir / "train_masks.csv").write_text("\n".join(lines[:-1]) + "\n")  # one photo missing
    with caplog.at_level("INFO"):
        assert not rle_used()
    assert "lacks 1 photos" in caplog.text


def test_csv_source_names_the_photos_the_csv_lacks(carvana_dir):
    write_masks_csv(carvana_dir)
    lines = (carvana_dir / "train_masks.csv").read_text().splitlines()
    (carvana_dir / "train_masks.csv").write_text("\n".join(lines[:-1]) + "\n")
    missing = lines[-1].split(",")[0]
    datamodule = CarvanaDataModule(carvana_dir, num_workers=0, mask_source="csv")
    with pytest.raises(ValueError, match=f"(?s)without a row in .*train_masks.csv.*{missing}"):
        datamodule.setup("fit")


def test_csv_rows_of_photos_not_extracted_are_left_out_and_named(carvana_dir, caplog):
    write_masks_csv(carvana_dir)
    gone = sorted((carvana_dir / "train").iterdir())[:2]  # a partly extracted train.zip
    for photo in gone:
        photo.unlink()
        (carvana_dir / "train_masks" / photo.name.replace(".jpg", "_mask.gif")).unlink()
    datamodule = CarvanaDataModule(carvana_dir, image_size=(24, 36), num_workers=0, mask_source="csv")
    with caplog.at_level("WARNING"):
        datamodule.setup("fit")
    assert "lists 2 images with no photo" in caplog.text
    assert all(photo.name in caplog.text for photo in gone)
    used = {s.name for s in datamodule.train_set.samples} | {s.name for s in datamodule.val_set.samples}
    assert used.isdisjoint(p.name for p in gone)


def test_csv_source_without_the_csv_names_the_file(carvana_dir):
    datamodule = CarvanaDataModule(carvana_dir, num_workers=0, mask_source="csv")
    with pytest.raises(ValueError, match=r"train_masks\.csv"):
        datamodule.setup("fit")


@requires_sample
def test_real_gifs_and_train_masks_csv_agree_for_every_image():
    rows = rle.read_csv(SHARED_SAMPLE / "train_masks.csv")
    gifs = sorted((SHARED_SAMPLE / "train_masks").glob("*_mask.gif"))
    assert len(gifs) == len(rows) == 808
    for gif in gifs:
        assert rle.encode(read_mask(gif)) == rows[gif.name.replace("_mask.gif", ".jpg")], gif.name


def test_a_row_longer_than_csvs_default_field_limit_is_read_whole(tmp_path):
    # Every other pixel of a row car: 65,536 runs, about 590,000 characters (csv's limit is 131,072).
    striped = np.zeros((256, 512), np.uint8)
    striped[:, ::2] = 1
    text = rle.encode(striped)
    assert len(text) > 131_072
    path = tmp_path / "train_masks.csv"
    path.write_text(f"img,rle_mask\nnoisy_01.jpg,{text}\n")
    (row,) = rle.read_rows(path)
    assert row.rle == text
    assert rle.check_rows([row.rle], [striped.shape]) == {}
    np.testing.assert_array_equal(rle.decode(row.rle, striped.shape), striped)
