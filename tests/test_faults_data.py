"""Faulty and odd data files, each a real file made here: a clear DataError naming the file (or the CSV
row) before any long work, never a crash mid-training nor a silent wrong answer.

- train_masks.csv rows that are broken (odd count, runs outside the photo, unsorted or overlapping,
  not numbers, an image listed twice, a missing column) stop the set-up, naming the file, row and image;
- truncated photos and masks stop the set-up (a truncated JPEG decodes into grey without an error), and
  so do photos and masks damaged inside (a JPEG with a hole of zeros decodes smeared without an error);
- a photo with an EXIF orientation tag is read as stored, like its mask; RGB masks, palette masks with
  the car at any index and other two-colour encodings read right; a mask that is not two-coloured is
  refused;
- an over-sized (decompression bomb) image is a DataError like any unreadable file;
- macOS's `._x.jpg` resource forks stay ignored.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import (
    check_complete,
    check_mask,
    encode_mask,
    image_size,
    read_image,
    read_mask,
)
from carvana_seg.data.labelled import labelled_samples
from carvana_seg.data.layout import check_pairs, find_samples
from carvana_seg.data.photos import PhotoDataset
from carvana_seg.data.sample import load_sample
from carvana_seg.errors import DataError
from tests.conftest import ROOT, SHARED_SAMPLE, TINY_UNET, car_id, requires_sample, write_carvana

SIZE = (40, 60)  # the fixture photos' (H, W)


def setup_data(root: Path, tmp_path: Path, **kwargs) -> CarvanaDataModule:
    datamodule = CarvanaDataModule(
        root, image_size=(20, 30), num_workers=0, cache_dir=tmp_path / "cache", **kwargs
    )
    datamodule.setup("fit")
    return datamodule


def val_masks(datamodule: CarvanaDataModule) -> list[torch.Tensor]:
    return [datamodule.val_set[i]["mask"] for i in range(len(datamodule.val_set))]


def train_cli(data: Path, tmp_path: Path, *args: str) -> tuple[int, str]:
    """`python -m carvana_seg.train` on `data` as a user runs it: (exit code, stdout + stderr)."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "carvana_seg.train",
            "data=carvana",
            f"data.root={data}",
            "debug=tiny",
            *TINY_UNET,
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / 'run'}",
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result.returncode, result.stdout + result.stderr


def assert_stopped_before_training(code: int, output: str, tmp_path: Path, *named: str) -> None:
    assert code == 2, output[-3000:]
    for text in named:
        assert text in output, (text, output[-3000:])
    assert "Traceback" not in output
    assert not (tmp_path / "run" / "checkpoints").exists()


# --- 1. train_masks.csv: every row checked up front, against its photo's size ----------------------

PIXELS = SIZE[0] * SIZE[1]


def csv_lines(root: Path) -> list[str]:
    return (root / "train_masks.csv").read_text().splitlines()


def break_row(root: Path, row: int, value: str) -> str:
    """Set the run-length value of file row `row` (the header is row 1); the image name of that row."""
    lines = csv_lines(root)
    name = lines[row - 1].split(",")[0]
    lines[row - 1] = f"{name},{value}"
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    return name


BROKEN_ROWS = {
    "odd number of values": ("5 3 20", r"odd number of values \(3\)"),
    "start before pixel 1": ("0 5", r"run 1 \('0 5'\) falls outside the mask"),
    "run past the photo's last pixel": (
        f"5 3 {PIXELS - 1} 5",
        rf"run 2 .* outside the 40x60 mask \(pixels 1..{PIXELS}\)",
    ),
    "start past the photo": (f"{PIXELS + 10} 1", r"run 1 .* outside the 40x60 mask"),
    "runs out of order": ("50 3 10 3", r"run 2 \('10 3'\) starts before run 1 ends .* ascending"),
    "overlapping runs": ("10 5 12 3", r"run 2 \('12 3'\) starts before run 1 ends \(pixel 14\)"),
    "zero length": ("10 0", r"run 1 \('10 0'\) has length 0"),
    "not a number": ("10 5 2O 3", r"value '2O' is not a whole number"),
    "negative number": ("10 5 -20 3", r"value '-20' is not a whole number"),
    "decimal number": ("10.5 5", r"value '10.5' is not a whole number"),
    "number too large for any photo": (
        "123456789012345678901 1",
        r"value 123456789012345678901 is too large",
    ),
}


@pytest.mark.parametrize("fault", list(BROKEN_ROWS))
def test_a_broken_csv_row_stops_the_setup_naming_the_file_row_image_and_fault(tmp_path, fault):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    value, problem = BROKEN_ROWS[fault]
    name = break_row(root, 6, value)
    with pytest.raises(
        DataError, match=rf"(?s)broken rows in .*train_masks\.csv.*row 6 \({name}\): {problem}"
    ):
        setup_data(root, tmp_path, cache=True)  # the CSV is the default source: it lists every photo
    assert not (tmp_path / "cache" / "decoded").exists()  # before the cache build started


def test_every_broken_row_is_listed_not_only_the_first(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    first, second = break_row(root, 3, "1 2 3"), break_row(root, 9, "x y")
    with pytest.raises(DataError, match=rf"(?s)2 broken rows.*row 3 \({first}\).*row 9 \({second}\)"):
        setup_data(root, tmp_path, mask_source="csv")


def test_an_image_listed_twice_is_named_with_both_rows(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    lines = csv_lines(root)
    (root / "train_masks.csv").write_text("\n".join([*lines, lines[4]]) + "\n")  # a second row for row 5
    name = lines[4].split(",")[0]
    with pytest.raises(
        DataError, match=rf"train_masks\.csv: image {name} has two rows, 5 and {len(lines) + 1}"
    ):
        setup_data(root, tmp_path)


def test_a_row_without_its_run_length_column_is_named(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    lines = csv_lines(root)
    name = lines[2].split(",")[0]
    lines[2] = name  # "name" alone: not an empty mask, which is written "name,"
    (root / "train_masks.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=rf"train_masks\.csv row 3 \({name}\): 1 columns"):
        setup_data(root, tmp_path, mask_source="csv")


def test_a_csv_that_is_not_utf8_text_is_named(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    (root / "train_masks.csv").write_bytes(
        "img,rle_mask\n".encode("utf-16")
    )  # a spreadsheet's "Unicode text"
    with pytest.raises(DataError, match=r"train_masks\.csv is not UTF-8 text"):
        setup_data(root, tmp_path, mask_source="csv")


def test_a_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_and_crlf_reads_the_same(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    reference = val_masks(setup_data(root, tmp_path, mask_source="csv"))
    text = (root / "train_masks.csv").read_text().replace("\r\n", "\n")
    (root / "train_masks.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    again = val_masks(setup_data(root, tmp_path, mask_source="csv"))
    assert all(torch.equal(a, b) for a, b in zip(reference, again, strict=True))


def test_rows_are_checked_on_every_setup_even_when_the_listing_passed_before(tmp_path):
    root = write_carvana(tmp_path / "data", masks_csv=True)
    setup_data(root, tmp_path)  # passes: the listing, the CSV with it, is recorded as checked
    csv_file = root / "train_masks.csv"
    stat = csv_file.stat()
    lines = csv_file.read_bytes().split(b"\n")
    name, value = lines[3].split(b",")
    lines[3] = name + b",x" + value[1:]  # the same size, and the time put back: the record still matches
    csv_file.write_bytes(b"\n".join(lines))
    name = name.decode()
    os.utime(csv_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert csv_file.stat().st_size == stat.st_size
    with pytest.raises(DataError, match=rf"row 4 \({name}\): value 'x"):
        setup_data(root, tmp_path)


def test_a_run_past_the_photo_is_found_without_reading_headers_at_decode_time(tmp_path):
    # check_files=false skips the headers, so the bound is unknown up front: decoding still names the image.
    root = write_carvana(tmp_path / "data", masks_csv=True)
    name = break_row(root, 2, f"{PIXELS} 5")
    samples, masks = labelled_samples(root, mask_source="csv", check_files=False)
    sample = next(s for s in samples if s.name == name)
    with pytest.raises(DataError, match=rf"run-length mask of .*{name}: run 1 .* outside the 40x60 mask"):
        load_sample(sample, (20, 30), masks)


def test_a_photo_stored_rotated_is_named_when_its_mask_is_a_csv_row(tmp_path, caplog):
    # A run-length row counts pixels only: it fits a 60x40 photo as well as a 40x60 one. A warning, as a
    # data set may hold both orientations on purpose.
    root = write_carvana(tmp_path / "data", masks_csv=True)
    photo = sorted((root / "train").glob("*.jpg"))[3]
    Image.open(photo).transpose(Image.Transpose.ROTATE_90).save(photo)
    setup_data(root, tmp_path, mask_source="csv")
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert re.search(rf"(?s)1 photos are 60x40 \(H x W\) where most are 40x60.*{photo.name}", warned)


def test_decode_errors_name_the_image():
    with pytest.raises(DataError, match=r"run-length mask of a_01\.jpg has an odd number"):
        rle.decode("1 2 3", (4, 4), name="a_01.jpg")
    with pytest.raises(DataError, match=r"run-length mask of a_01\.jpg: value 'x'"):
        rle.decode("1 x", (4, 4), name="a_01.jpg")


def test_checking_5088_full_size_rows_is_cheap():
    yy, xx = np.mgrid[:1280, :1918]
    car = rle.encode(((yy - 700) / 300) ** 2 + ((xx - 960) / 700) ** 2 <= 1)
    rows = [car] * 5088
    rows[4000] = car + " 1"
    started = time.perf_counter()
    problems = rle.check_rows(rows, [(1280, 1918)] * 5088)
    assert problems == {4000: f"odd number of values ({len(car.split()) + 1}): expected 'start length' pairs"}
    assert time.perf_counter() - started < 5  # ~0.1 s on a laptop core: vectorised, not row by row


@pytest.mark.slow
def test_cli_a_broken_csv_row_exits_2_naming_the_row_before_training(tmp_path):
    data = write_carvana(tmp_path / "data", masks_csv=True)
    name = break_row(data, 7, f"1 {PIXELS + 1}")
    code, output = train_cli(data, tmp_path)
    assert_stopped_before_training(code, output, tmp_path, str(data / "train_masks.csv"), f"row 7 ({name})")


# --- 2. truncated files: found by the set-up check, never decoded into a half-grey photo ------------


def truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def big_photo(path: Path, size: tuple[int, int] = (128, 192)) -> Path:
    """A noisy photo, so its JPEG is mostly compressed data (where a cut lands)."""
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_a_truncated_jpeg_is_refused_where_opencv_would_decode_it_into_grey(tmp_path):
    photo = big_photo(tmp_path / "photo.jpg")
    truncate(photo)
    assert image_size(photo) == (128, 192)  # the header alone says nothing is wrong
    with pytest.raises(DataError, match=rf"{photo} is truncated: .*FFD9"):
        check_complete(photo)
    with pytest.raises(DataError, match=rf"{photo} is truncated"):
        read_image(photo, (64, 96))
    item = PhotoDataset([photo], (32, 48))[0]  # predict and evaluate: the item carries the error
    assert "truncated" in item["error"] and item["full_size"] == (0, 0)


def test_a_whole_jpeg_with_padding_after_its_end_marker_is_accepted(tmp_path):
    photo = big_photo(tmp_path / "photo.jpg")
    reference = read_image(photo)
    with photo.open("ab") as handle:
        handle.write(b"\x00" * 300)  # some cameras and copy tools pad the file
    check_complete(photo)
    assert np.array_equal(read_image(photo), reference)


def test_a_whole_jpeg_with_a_phones_trailer_after_its_end_marker_is_accepted(tmp_path):
    photo = big_photo(tmp_path / "photo.jpg")
    reference = read_image(photo)
    with photo.open("ab") as handle:
        handle.write(b"MotionPhoto_Data" + bytes(range(256)) * 40)  # a video or a vendor's record
    check_complete(photo)
    assert np.array_equal(read_image(photo), reference)
    cut = big_photo(tmp_path / "cut.jpg")
    truncate(cut)
    cut.write_bytes(cut.read_bytes() + b"MotionPhoto_Data" + bytes(range(256)) * 40)  # cut, then a trailer
    with pytest.raises(DataError, match=rf"{cut} is truncated"):
        check_complete(cut)


def punch_hole(path: Path, size: int = 1024) -> None:
    """Zero `size` bytes in the middle of the file, as an interrupted copy or a sparse download leaves
    them: the JPEG's end marker stays in place."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = bytes(size)
    path.write_bytes(bytes(data))


def damage_gif(path: Path) -> None:
    """Scramble 8 bytes of a GIF's compressed pixels, its block structure left whole."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    check_complete(path)  # the damage is inside the data: the structure walk passes it


def test_a_jpeg_with_a_hole_of_zeros_is_refused_where_opencv_and_pil_decode_it_smeared(tmp_path):
    photo = big_photo(tmp_path / "photo.jpg")
    punch_hole(photo)
    check_complete(photo)  # whole to the end marker
    assert cv2.imread(str(photo)) is not None  # OpenCV: smeared blocks and a libjpeg warning only
    with Image.open(photo) as img:
        img.load()  # PIL: the same, silently
    with pytest.raises(DataError, match=rf"{photo} is damaged \(libjpeg: Corrupt JPEG data"):
        read_image(photo, (64, 96))
    with pytest.raises(DataError, match=rf"{photo} is damaged"):
        read_image(photo)  # full size, as evaluate reads it
    item = PhotoDataset([photo], (32, 48))[0]  # predict and evaluate: the item carries the error
    assert "is damaged" in item["error"] and item["full_size"] == (0, 0)


def test_a_damaged_photo_or_gif_mask_stops_the_setup_naming_it_before_training(tmp_path):
    root = write_carvana(tmp_path / "data", size=(64, 96))
    photo = big_photo(root / "train" / f"{car_id(1)}_03.jpg", (64, 96))
    punch_hole(photo)
    mask = root / "train_masks" / f"{car_id(2)}_04_mask.gif"
    mask.write_bytes(encode_mask(np.random.default_rng(0).integers(0, 2, (64, 96), dtype=np.uint8), "gif"))
    damage_gif(mask)
    expected = rf"(?s)2 unreadable, truncated, damaged.*{photo.name} is damaged.*{mask.name}: broken data"
    with pytest.raises(DataError, match=expected):
        setup_data(root, tmp_path)


def test_mask_files_beside_train_masks_csv_are_not_decoded_since_training_reads_the_csv(tmp_path):
    root = write_carvana(tmp_path / "data", size=(64, 96), masks_csv=True)
    mask = root / "train_masks" / f"{car_id(2)}_04_mask.gif"
    mask.write_bytes(encode_mask(np.random.default_rng(0).integers(0, 2, (64, 96), dtype=np.uint8), "gif"))
    damage_gif(mask)
    assert len(setup_data(root, tmp_path).train_set) > 0  # its header and end are whole: not read
    with pytest.raises(DataError, match=rf"{mask.name}: broken data"):
        setup_data(root, tmp_path / "files", mask_source="files")


@pytest.mark.parametrize(
    "which,fmt",
    [("photo", "jpg"), ("photo", "png"), ("mask", "gif"), ("mask", "png")],
)
def test_a_truncated_photo_or_mask_stops_the_setup_naming_it(tmp_path, which, fmt):
    root = write_carvana(tmp_path / "data", size=(64, 96), mask_format="png" if which == "mask" else "gif")
    name = f"{car_id(1)}_03"
    if which == "photo":
        path = root / "train" / f"{name}.{fmt}"
        photo = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
        (root / "train" / f"{name}.jpg").unlink()
        Image.fromarray(photo).save(path)
    else:
        path = root / "train_masks" / f"{name}_mask.{fmt}"
        for old in (root / "train_masks").glob(f"{name}_mask.*"):
            old.unlink()
        mask = np.random.default_rng(0).integers(0, 2, (64, 96), dtype=np.uint8)  # noise: long data
        path.write_bytes(encode_mask(mask, fmt))
    truncate(path)
    with pytest.raises(DataError, match=rf"(?s)truncated.*{path.name} is truncated"):
        setup_data(root, tmp_path)


def test_a_gif_missing_only_its_trailer_byte_is_whole(tmp_path):
    mask = np.zeros(SIZE, np.uint8)
    mask[10:30, 20:40] = 1
    path = tmp_path / "m_mask.gif"
    path.write_bytes(encode_mask(mask, "gif")[:-1])  # the pixels are all there
    check_complete(path)
    assert np.array_equal(read_mask(path), mask)


def test_a_file_truncated_after_it_was_checked_is_checked_again(tmp_path):
    root = write_carvana(tmp_path / "data", size=(64, 96))
    setup_data(root, tmp_path)  # checked, and recorded
    photo = root / "train" / f"{car_id(2)}_01.jpg"
    big_photo(photo, (64, 96))
    truncate(photo)
    with pytest.raises(DataError, match=rf"{photo.name} is truncated"):
        setup_data(root, tmp_path)


@pytest.mark.slow
def test_cli_a_truncated_or_damaged_photo_exits_2_naming_it_before_training(tmp_path):
    data = write_carvana(tmp_path / "data", size=(64, 96))
    photo = big_photo(data / "train" / f"{car_id(0)}_02.jpg", (64, 96))
    truncate(photo)
    damaged = big_photo(data / "train" / f"{car_id(1)}_04.jpg", (64, 96))
    punch_hole(damaged)
    code, output = train_cli(data, tmp_path)
    assert_stopped_before_training(
        code, output, tmp_path, f"{photo} is truncated", f"{damaged} is damaged (libjpeg: Corrupt JPEG data"
    )


# --- 3. odd but valid files read right; masks that are not two-coloured are refused -----------------


def reference_mask() -> np.ndarray:
    mask = np.zeros(SIZE, np.uint8)
    mask[8:30, 12:50] = 1
    return mask


def test_a_photo_with_an_exif_orientation_tag_is_read_as_stored_like_its_mask(tmp_path):
    # Left half red, right half blue, and a tag saying "rotate 90 degrees to show": OpenCV used to
    # apply it (a 60x40 photo), PIL's header and the mask ignore it (40x60).
    photo = np.zeros((*SIZE, 3), np.uint8)
    photo[:, :30] = (220, 30, 30)
    photo[:, 30:] = (30, 30, 220)
    image = Image.fromarray(photo)
    exif = image.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=95)
    assert Image.open(path).getexif()[0x0112] == 6
    for size in (None, (20, 30)):
        read = read_image(path, size)
        assert read.shape[:2] == (size or SIZE)
        assert (
            read[:, : read.shape[1] // 3, 0].mean() > 180 and read[:, -read.shape[1] // 3 :, 2].mean() > 180
        )


def test_training_pairs_a_tagged_photo_with_its_mask(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2)
    reference = setup_data(root, tmp_path / "a", val_fraction=0.34).val_set
    for photo in (root / "train").glob("*.jpg"):
        image = Image.open(photo)
        exif = image.getexif()
        exif[0x0112] = 8  # "rotate 270"
        image.save(photo, exif=exif.tobytes(), quality=95)
    tagged = setup_data(root, tmp_path / "b", val_fraction=0.34).val_set
    for i in range(len(reference)):
        assert torch.equal(tagged[i]["mask"], reference[i]["mask"])
        difference = (tagged[i]["image"].float() - reference[i]["image"].float()).abs().mean()
        assert difference < 3  # the same pixels (re-saved as JPEG), not a rotated photo


def palette_mask(
    mask: np.ndarray, index: int, colour: tuple[int, int, int], background: tuple[int, int, int] = (0, 0, 0)
) -> Image.Image:
    """The mask as a palette image: the car at `index` in `colour`, the background at index 0."""
    image = Image.fromarray(mask * np.uint8(index), mode="P")
    palette = [0, 0, 0] * 256
    palette[0:3] = background
    palette[3 * index : 3 * index + 3] = colour
    image.putpalette(palette)
    return image


def write_encoding(path: Path, mask: np.ndarray, encoding: str) -> None:
    """The same two-colour mask, encoded as a user's tool might save it."""
    if encoding == "kaggle palette gif {0,1}":
        path.write_bytes(encode_mask(mask, "gif"))
    elif encoding == "grey png 0/255":
        Image.fromarray(mask * np.uint8(255)).save(path)
    elif encoding == "grey png 0/1":
        Image.fromarray(mask).save(path)
    elif encoding == "1-bit png":
        Image.fromarray(mask.astype(bool)).save(path)
    elif encoding == "16-bit png 0/65535":
        Image.fromarray(mask.astype(np.uint16) * np.uint16(65535)).save(path)
    elif encoding == "rgb png red car on black":
        rgb = np.zeros((*mask.shape, 3), np.uint8)
        rgb[mask == 1] = (255, 0, 0)
        Image.fromarray(rgb).save(path)
    elif encoding == "rgba png white car, transparent background":
        rgba = np.full((*mask.shape, 4), 255, np.uint8)
        rgba[mask == 0, 3] = 0
        Image.fromarray(rgba).save(path)
    elif encoding == "palette gif car at index 5 painted white":
        palette_mask(mask, 5, (255, 255, 255)).save(path, optimize=False)
        assert set(np.unique(np.asarray(Image.open(path)))) == {0, 5}
    elif encoding == "palette png car at index 200 painted green":
        palette_mask(mask, 200, (0, 200, 0)).save(path)
    else:
        raise ValueError(encoding)


ENCODINGS = [
    "kaggle palette gif {0,1}",
    "grey png 0/255",
    "grey png 0/1",
    "1-bit png",
    "16-bit png 0/65535",
    "rgb png red car on black",
    "rgba png white car, transparent background",
    "palette gif car at index 5 painted white",
    "palette png car at index 200 painted green",
]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_reasonable_two_colour_encoding_reads_as_the_car(tmp_path, encoding):
    mask = reference_mask()
    path = tmp_path / ("m_mask.gif" if "gif" in encoding else "m_mask.png")
    write_encoding(path, mask, encoding)
    assert check_mask(path) == SIZE
    assert np.array_equal(read_mask(path), mask)
    assert np.array_equal(read_mask(path, (20, 30)), mask[1::2, 1::2])


@pytest.mark.parametrize("colour", [(255, 0, 0), (255, 255, 255)])
def test_a_mask_saved_once_as_jpeg_reads_as_the_car_despite_its_noise(tmp_path, colour):
    # JPEG spreads the two colours over dozens of levels near each (near the edges): noise, not labels.
    mask = cv2.resize(reference_mask(), (480, 320), interpolation=cv2.INTER_NEAREST)
    rgb = np.zeros((*mask.shape, 3), np.uint8)
    rgb[mask == 1] = colour
    jpeg = tmp_path / "m.jpg"
    Image.fromarray(rgb).save(jpeg, quality=90)
    path = tmp_path / "m_mask.png"
    Image.open(jpeg).save(path)
    assert check_mask(path) == (320, 480)
    assert (read_mask(path) != mask).mean() < 0.005


@pytest.mark.parametrize("encoding", ["rgb png red car on black", "palette gif car at index 5 painted white"])
def test_a_data_set_with_odd_mask_encodings_trains_on_the_same_masks(tmp_path, encoding):
    root = write_carvana(tmp_path / "data", cars=3, views=2)
    reference = val_masks(setup_data(root, tmp_path / "a", val_fraction=0.34))
    for gif in (root / "train_masks").glob("*.gif"):
        mask = read_mask(gif)
        gif.unlink()
        write_encoding(gif.with_suffix(".gif" if "gif" in encoding else ".png"), mask, encoding)
    again = val_masks(setup_data(root, tmp_path / "b", val_fraction=0.34))
    assert all(torch.equal(a, b) for a, b in zip(reference, again, strict=True))
    assert all(m.sum() > 0 for m in again)


def not_two_coloured(path: Path, kind: str) -> None:
    mask = reference_mask()
    if kind == "a photo":
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)).save(path)
    elif kind == "a trimap (unknown band at 128)":
        trimap = mask * np.uint8(255)
        trimap[4:34, 8:54][trimap[4:34, 8:54] == 0] = 128
        Image.fromarray(trimap).save(path)
    elif kind == "class labels 0/1/2":
        labels = mask.copy()
        labels[:5] = 2
        Image.fromarray(labels).save(path)
    elif kind == "a soft mask (blurred edges)":
        soft = np.asarray(Image.fromarray(mask * np.uint8(255)).resize((15, 10), Image.Resampling.BILINEAR))
        Image.fromarray(soft).resize((60, 40), Image.Resampling.BILINEAR).save(path)


NOT_TWO_COLOURED = [
    "a photo",
    "a trimap (unknown band at 128)",
    "class labels 0/1/2",
    "a soft mask (blurred edges)",
]


@pytest.mark.parametrize("kind", NOT_TWO_COLOURED)
def test_a_mask_that_is_not_two_coloured_is_refused_naming_it(tmp_path, kind):
    path = tmp_path / "m_mask.png"
    not_two_coloured(path, kind)
    with pytest.raises(DataError, match=rf"mask {path} is not a two-colour mask"):
        read_mask(path)
    with pytest.raises(DataError, match=rf"mask {path} is not a two-colour mask"):
        check_mask(path)


def test_a_label_mask_with_an_outline_label_is_refused_not_read_as_its_outline(tmp_path):
    # VOC-style labels: 0 background, 1 car, 255 its outline. Brightest-is-car would keep only the outline.
    labels = reference_mask().copy()
    edge = labels.astype(bool) & ~cv2.erode(labels, np.ones((3, 3), np.uint8)).astype(bool)
    labels[edge] = 255
    path = tmp_path / "voc_mask.png"
    Image.fromarray(labels).save(path)
    for read in (read_mask, check_mask):
        with pytest.raises(DataError, match=rf"mask {path} has two dark levels that each cover a region"):
            read(path)


@pytest.mark.parametrize("background", [(255, 255, 255), (0, 255, 0)])
def test_a_car_of_one_colour_on_another_of_the_same_brightness_is_refused(tmp_path, background):
    # Brightest-is-car sees one brightness: the mask would read as all car.
    rgb = np.full((*SIZE, 3), background, np.uint8)
    rgb[reference_mask() == 1] = (255, 0, 0)
    path = tmp_path / "m_mask.png"
    Image.fromarray(rgb).save(path)
    for read in (read_mask, check_mask):
        with pytest.raises(DataError, match=rf"mask {path} has colours of one brightness \(255\)"):
            read(path)


@pytest.mark.parametrize("suffix", [".gif", ".png"])
def test_a_palette_mask_of_a_red_car_on_white_is_refused_at_set_up_and_when_read(tmp_path, suffix):
    # Index 0 white, index 1 red: brightest-is-car sees one brightness, and the header alone no longer
    # vouches for a palette that holds two such colours.
    path = tmp_path / f"m_mask{suffix}"
    palette_mask(reference_mask(), 1, (255, 0, 0), background=(255, 255, 255)).save(path)
    for read in (check_mask, read_mask):
        with pytest.raises(DataError, match=rf"^mask {path} has colours of one brightness \(255\)"):
            read(path)


def test_a_car_on_a_transparent_background_stored_white_reads_as_the_car(tmp_path):
    # The hidden pixels' colour has the car's brightness; their transparency tells them apart.
    rgba = np.full((*SIZE, 4), (255, 255, 255, 0), np.uint8)
    rgba[reference_mask() == 1] = (255, 0, 0, 255)
    path = tmp_path / "m_mask.png"
    Image.fromarray(rgba).save(path)
    assert check_mask(path) == SIZE and np.array_equal(read_mask(path), reference_mask())


def test_a_not_two_coloured_mask_stops_the_setup_before_any_decoding(tmp_path):
    root = write_carvana(tmp_path / "data")
    bad = root / "train_masks" / f"{car_id(2)}_04_mask.png"
    (root / "train_masks" / f"{car_id(2)}_04_mask.gif").unlink()
    not_two_coloured(bad, "a photo")
    with pytest.raises(DataError, match=rf"(?s)not two-coloured files.*{bad.name} is not a two-colour mask"):
        setup_data(root, tmp_path, cache=True)
    assert not (tmp_path / "cache" / "decoded").exists()


def test_a_few_grey_edge_pixels_of_a_full_size_mask_are_thresholded(tmp_path):
    yy, xx = np.mgrid[:640, :960]
    distance = np.sqrt(((yy - 320) / 200) ** 2 + ((xx - 480) / 300) ** 2)
    antialiased = np.clip((1.0 - distance) * 60000 + 128, 0, 255).astype(np.uint8)  # a ~1-pixel soft edge
    path = tmp_path / "m_mask.png"
    Image.fromarray(antialiased).save(path)
    check_mask(path)
    assert np.array_equal(read_mask(path), (antialiased >= 128).astype(np.uint8))


@requires_sample
def test_kaggle_gifs_read_exactly_as_their_palette_indices():
    for gif in sorted((SHARED_SAMPLE / "train_masks").glob("*_mask.gif"))[::16]:
        indices = np.asarray(Image.open(gif))
        assert np.array_equal(read_mask(gif), (indices == 1).astype(np.uint8)), gif.name
        small = np.asarray(Image.open(gif).resize((240, 160), Image.Resampling.NEAREST))
        assert np.array_equal(read_mask(gif, (160, 240)), (small == 1).astype(np.uint8)), gif.name
        assert check_mask(gif) == (1280, 1918)


@pytest.mark.slow
def test_cli_a_mask_that_is_not_two_coloured_exits_2_naming_it_before_training(tmp_path):
    data = write_carvana(tmp_path / "data")
    bad = data / "train_masks" / f"{car_id(1)}_01_mask.png"
    (data / "train_masks" / f"{car_id(1)}_01_mask.gif").unlink()
    not_two_coloured(bad, "a trimap (unknown band at 128)")
    code, output = train_cli(data, tmp_path)
    assert_stopped_before_training(code, output, tmp_path, str(bad), "not a two-colour mask")


# --- 4. decompression bombs: a DataError like any unreadable file ------------------------------------


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG whose header claims side x side pixels (400 megapixels) in a few dozen bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return path


def test_an_over_sized_image_is_a_data_error_naming_it(tmp_path):
    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=rf"cannot read image file {bomb}: .*decompression bomb"):
        image_size(bomb)
    with pytest.raises(DataError, match=rf"{bomb}"):
        read_image(bomb, (32, 48))
    with pytest.raises(DataError, match=rf"cannot read mask file {bomb}"):
        read_mask(bomb)
    item = PhotoDataset([bomb], (32, 48))[0]  # predict's on_error=skip skips such an item
    assert "decompression bomb" in item["error"]


def test_an_over_sized_photo_stops_the_setup_naming_it(tmp_path):
    root = write_carvana(tmp_path / "data")
    (root / "train" / f"{car_id(0)}_03.jpg").unlink()
    bomb = bomb_png(root / "train" / f"{car_id(0)}_03.png")
    with pytest.raises(DataError, match=rf"(?s)unreadable.*{bomb.name}.*decompression bomb"):
        setup_data(root, tmp_path)


def test_a_photo_whose_text_chunk_inflates_past_pils_limit_stops_the_setup_naming_it(tmp_path):
    from PIL import Image, PngImagePlugin

    root = write_carvana(tmp_path / "data")
    jpeg = root / "train" / f"{car_id(0)}_03.jpg"
    comment = PngImagePlugin.PngInfo()
    comment.add_text("Comment", "a" * 2 * PngImagePlugin.MAX_TEXT_CHUNK, zip=True)  # a few kB on disk
    photo = jpeg.with_suffix(".png")
    Image.open(jpeg).save(photo, pnginfo=comment)
    jpeg.unlink()
    with pytest.raises(DataError, match=rf"(?s)unreadable.*{photo.name}.*Decompressed data too large"):
        setup_data(root, tmp_path)


@pytest.mark.slow
def test_cli_an_over_sized_photo_exits_2_naming_it_before_training(tmp_path):
    data = write_carvana(tmp_path / "data")
    (data / "train" / f"{car_id(2)}_01.jpg").unlink()
    bomb = bomb_png(data / "train" / f"{car_id(2)}_01.png")
    code, output = train_cli(data, tmp_path)
    assert_stopped_before_training(code, output, tmp_path, str(bomb), "decompression bomb")


@pytest.mark.slow
def test_predict_skips_an_over_sized_photo_with_on_error_skip(trained, tmp_path):
    from hydra import compose, initialize_config_dir

    from carvana_seg.predict import predict
    from tests.conftest import CONF_DIR

    ckpt, data = trained
    photos = tmp_path / "test"
    photos.mkdir()
    for photo in sorted((data / "train").glob("*.jpg"))[:3]:
        (photos / photo.name).write_bytes(photo.read_bytes())
    bomb = bomb_png(photos / "ffffffffffff_01.png")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt_path={ckpt}",
                f"input={photos}",
                f"output={tmp_path / 'out'}",
                "data.num_workers=0",
                "on_error=skip",
            ],
        )
    result = predict(cfg)
    assert result["skipped_unreadable"] == 1
    assert bomb.name in (tmp_path / "out" / "unreadable.txt").read_text()


# --- macOS resource forks and other dot-files -------------------------------------------------------


def test_macos_resource_forks_are_ignored(tmp_path, caplog):
    root = write_carvana(tmp_path / "data")
    for folder, suffix in (("train", ".jpg"), ("train_masks", "_mask.gif")):
        (root / folder / f"._{car_id(0)}_01{suffix}").write_bytes(b"\x00\x05\x16\x07 AppleDouble junk")
        (root / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    with caplog.at_level("WARNING"):
        samples = find_samples(root)
    assert len(samples) == 12 and not any(s.name.startswith(".") for s in samples)
    assert "._" not in caplog.text  # skipped, not even reported as misnamed
    check_pairs(samples)
    datamodule = setup_data(root, tmp_path)
    assert len(datamodule.train_set) + len(datamodule.val_set) == 12


# --- no masks at all: photos alone are not a training set ---------------------------------------------


def test_photos_without_mask_files_or_csv_stop_the_setup_naming_both(tmp_path):
    root = write_carvana(tmp_path / "data")
    shutil.rmtree(root / "train_masks")  # train_masks.zip never unpacked
    with pytest.raises(DataError, match=r"has neither train_masks/ nor train_masks.csv"):
        setup_data(root, tmp_path)
    with pytest.raises(DataError, match=r"has neither train_masks/ nor train_masks.csv"):
        labelled_samples(root, check_files=False)


def test_cli_photos_without_masks_exit_2_before_the_cache_is_built(tmp_path):
    root = write_carvana(tmp_path / "data")
    shutil.rmtree(root / "train_masks")
    code, output = train_cli(root, tmp_path, "data.cache=true")
    assert_stopped_before_training(code, output, tmp_path, f"{root} has neither train_masks/ nor")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.npy"))
