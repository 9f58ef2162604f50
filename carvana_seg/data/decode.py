"""Read Carvana photos and masks from disk, already reduced towards the training size (and write
masks in the same formats).

JPEGs go through OpenCV, whose libjpeg-turbo can decode straight to 1/2, 1/4 or 1/8 of the full size
(much cheaper than decoding 1918x1280 and shrinking); the last step to the exact size uses area
interpolation. Masks go through PIL, which reads the Kaggle GIFs about 3x faster than OpenCV, and are
resized with exact nearest-neighbour sampling so they stay binary.
"""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from carvana_seg.errors import DataError

_REDUCED_FLAGS = (
    (8, cv2.IMREAD_REDUCED_COLOR_8),
    (4, cv2.IMREAD_REDUCED_COLOR_4),
    (2, cv2.IMREAD_REDUCED_COLOR_2),
)
_JPEG_SUFFIXES = {".jpg", ".jpeg"}


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image or mask file, read from its header only."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read image file {path}: {err}") from err
    return height, width


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 array (H, W, 3) of the photo at `path`, resized to `size` = (H, W) when given."""
    path = Path(path)
    flag = cv2.IMREAD_COLOR
    if size is not None and path.suffix.lower() in _JPEG_SUFFIXES:
        full_h, full_w = image_size(path)
        for factor, reduced in _REDUCED_FLAGS:
            # Only factors that divide the full size: libjpeg rounds a reduced size up (1918 / 8 -> 240
            # pixels covering 1920), which would shift the photo against its mask by up to 2 pixels.
            exact = full_h % factor == 0 and full_w % factor == 0
            if exact and full_h // factor >= size[0] and full_w // factor >= size[1]:
                flag = reduced
                break
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise DataError(f"cannot decode image {path}")
    if size is not None and bgr.shape[:2] != tuple(size):
        bgr = cv2.resize(bgr, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # after the resize: fewer pixels to convert


def binarize_mask(values: np.ndarray) -> np.ndarray:
    """uint8 {0, 1} mask from stored values {0, 1} (Kaggle's palette GIFs) or {0, 255} (other copies)."""
    threshold = 0 if values.max(initial=0) <= 1 else 127
    return (values > threshold).astype(np.uint8)


def read_mask(
    path: str | Path, size: tuple[int, int] | None = None, expect_size: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 {0, 1} mask (H, W) from a GIF or PNG, at the file's own size or resized to `size`;
    `expect_size` (H, W), when given, is the size the file must have (its photo's).

    The resize happens inside PIL, before the pixels become a numpy array: copying a full 1918x1280
    mask out of PIL costs more than decoding it. PIL's nearest filter samples pixel centres exactly
    as `resize_mask` does, so both paths give identical masks.
    """
    try:
        with Image.open(path) as img:
            if expect_size is not None and (img.size[1], img.size[0]) != tuple(expect_size):
                raise DataError(f"mask {path} is {img.size[1]}x{img.size[0]}, its photo {tuple(expect_size)}")
            if img.mode not in ("P", "L", "1"):
                img = img.convert("L")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.NEAREST)
            values = np.asarray(img)
    except (OSError, UnidentifiedImageError) as err:
        raise DataError(f"cannot read mask file {path}: {err}") from err
    return binarize_mask(values)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to (H, W); INTER_NEAREST_EXACT samples pixel centres like PIL does."""
    if mask.shape[:2] == tuple(size):
        return mask
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def mask_coverage(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) share of car in each pixel of a {0, 1} mask area-averaged to `size`, 0..255.

    A soft target for training below full size: a network that learns the share of car per pixel puts
    the 0.5 crossing of its bilinearly up-sampled logits where the edge really is, between pixels,
    instead of where a nearest-neighbour mask's staircase put it.
    """
    if mask.shape[:2] == tuple(size):
        return mask * np.uint8(255)
    return cv2.resize(mask * np.uint8(255), (size[1], size[0]), interpolation=cv2.INTER_AREA)


def encode_mask(mask: np.ndarray, file_format: str = "gif") -> bytes:
    """A {0, 1} mask as file bytes: a palette GIF with indices {0, 1} like Kaggle's, or a 0/255 PNG.

    The GIF is written with `optimize=False`: PIL's optimiser would otherwise renumber the palette of a
    mask that holds a single value, so an all-car mask would read back as all background.
    """
    buffer = io.BytesIO()
    if file_format == "gif":
        image = Image.fromarray(mask.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 255, 255, 255])
        image.save(buffer, format="GIF", optimize=False)
    elif file_format == "png":
        Image.fromarray(mask.astype(np.uint8) * np.uint8(255)).save(buffer, format="PNG")
    else:
        raise ValueError(f"mask format must be gif or png, got {file_format!r}")
    return buffer.getvalue()
