"""Studio shifts: named, deterministic changes of a labelled photo and its full-size mask, the same
geometry applied to both, so that evaluate can score a network on photos framed or lit unlike its
training sample (`stress=[zoom_out,dark_band,warm]`).

Each transform is a pure function `(photo, mask, strength) -> (photo, mask)` of a uint8 RGB photo
(H, W, 3) and a uint8 {0, 1} mask (H, W) at the photo's full size; sizes, dtypes and mask values are
kept. Exposure and white balance act in linear light (sRGB taken as gamma 2.2). `TRANSFORMS` fixes
each name's strength, so a stress score is reproducible; nothing is random.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from carvana_seg.data.decode import read_image, resize_mask
from carvana_seg.data.photos import PhotoDataset
from carvana_seg.errors import DataError, InputError

Pair = tuple[np.ndarray, np.ndarray]


def identity(photo: np.ndarray, mask: np.ndarray, strength: float = 0.0) -> Pair:
    """The photo unchanged, through the stress path (full-size decode, area resize): the control."""
    return photo, mask


def zoom_out(photo: np.ndarray, mask: np.ndarray, strength: float = 0.8, darken: float = 0.75) -> Pair:
    """The camera farther back: the photo shrunk to `strength` of its size, centred on a canvas of the
    original size. The backdrop above and the sides are continued by replicating the edge pixels; the
    floor below by the photo's last rows, blurred along the row, which darken after a third of the
    margin (the turntable's front edge) into a dark floor band, down to `1 - darken` of their light.
    The mask is shrunk alike (area share >= 1/2) and is 0 outside the shrunk photo."""
    height, width = mask.shape
    small_h, small_w = round(height * strength), round(width * strength)
    small = cv2.resize(photo, (small_w, small_h), interpolation=cv2.INTER_AREA)
    share = cv2.resize(mask * np.uint8(255), (small_w, small_h), interpolation=cv2.INTER_AREA)
    top, left = (height - small_h) // 2, (width - small_w) // 2
    bottom, right = height - small_h - top, width - small_w - left
    canvas = cv2.copyMakeBorder(small, top, bottom, left, right, cv2.BORDER_REPLICATE)
    out_mask = np.zeros_like(mask)
    out_mask[top : top + small_h, left : left + small_w] = share >= 128
    if bottom > 0:
        end = top + small_h  # the first row of the floor margin
        rows = max(1, round(0.02 * height))
        last = canvas[end - 1].astype(np.float32)
        floor = canvas[end - rows : end].astype(np.float32).mean(axis=0)
        floor = cv2.blur(floor[None], (max(3, width // 40 | 1), 1), borderType=cv2.BORDER_REPLICATE)[0]
        t = (np.arange(bottom, dtype=np.float32) + 1) / bottom  # 0..1 down the margin
        blend = np.clip(t / 0.25, 0, 1)[:, None, None]  # from the last row into the blurred floor
        gain = 1 - darken * np.clip((t - 0.35) / 0.15, 0, 1)[:, None, None]
        margin = ((1 - blend) * last + blend * floor) * gain
        canvas[end:] = np.clip(np.rint(margin), 0, 255).astype(np.uint8)
    return canvas, out_mask


def shift(photo: np.ndarray, mask: np.ndarray, strength: float = 0.05) -> Pair:
    """The car moved right and down by `strength` of the width and height (left and up if negative),
    whole pixels; the uncovered edges replicate the photo's (backdrop and floor) and the mask's."""
    dy, dx = round(strength * mask.shape[0]), round(strength * mask.shape[1])
    return _translate(photo, dy, dx), _translate(mask, dy, dx)


def _translate(array: np.ndarray, dy: int, dx: int) -> np.ndarray:
    height, width = array.shape[:2]
    pad = [(max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0))] + [(0, 0)] * (array.ndim - 2)
    padded = np.pad(array, pad, mode="edge")
    y0, x0 = max(-dy, 0), max(-dx, 0)
    return np.ascontiguousarray(padded[y0 : y0 + height, x0 : x0 + width])


def dark_band(photo: np.ndarray, mask: np.ndarray, strength: float = 0.7) -> Pair:
    """A dark horizontal band across the floor below the car (the floor beyond the turntable): 8% of
    the height, starting 3% below the car's lowest pixel, its light cut by `strength`, soft edges of
    1.5%; clipped at the bottom of the frame. It never touches the car, so the mask is unchanged."""
    height = mask.shape[0]
    rows = np.flatnonzero(mask.any(axis=1))
    start = (rows[-1] + 1 if len(rows) else round(0.8 * height)) + round(0.03 * height)
    end = min(height, start + round(0.08 * height))
    if start >= end:
        return photo, mask
    ramp = max(1.0, 0.015 * height)
    y = np.arange(start, end, dtype=np.float32) + 0.5
    depth = np.clip(np.minimum(y - start, start + round(0.08 * height) - y) / ramp, 0, 1)
    out = photo.copy()
    gain = (1 - strength * depth)[:, None, None]
    out[start:end] = np.clip(np.rint(photo[start:end] * gain), 0, 255).astype(np.uint8)
    return out, mask


def _light_lut(gains: Sequence[float]) -> np.ndarray:
    """A (1, 256, 3) table that multiplies each channel's linear light by its gain, clipped."""
    linear = (np.arange(256, dtype=np.float64) / 255) ** 2.2
    table = [np.clip(np.rint(255 * (linear * g) ** (1 / 2.2)), 0, 255) for g in gains]
    return np.stack(table, axis=-1).astype(np.uint8)[None]


def exposure(photo: np.ndarray, mask: np.ndarray, strength: float = 1.0) -> Pair:
    """The exposure changed by `strength` stops (light times 2**strength), highlights clipped."""
    return cv2.LUT(photo, _light_lut([2.0**strength] * 3)), mask


def white_balance(photo: np.ndarray, mask: np.ndarray, strength: float = 0.25) -> Pair:
    """A colour cast: red light times 1 + strength and blue times 1 - strength (warm when positive,
    cool when negative), green kept."""
    return cv2.LUT(photo, _light_lut([1 + strength, 1.0, 1 - strength])), mask


def shadow(photo: np.ndarray, mask: np.ndarray, strength: float = 0.5) -> Pair:
    """Light from the right: a soft shadow over the left of the frame, its light cut by `strength` at
    the left edge and fading out linearly by 60% of the width."""
    width = mask.shape[1]
    fade = np.clip(1 - (np.arange(width, dtype=np.float32) + 0.5) / (0.6 * width), 0, 1)
    gain = (1 - strength * fade)[None, :, None]
    return np.clip(np.rint(photo * gain), 0, 255).astype(np.uint8), mask


class Transform(NamedTuple):
    function: Callable[..., Pair]
    strength: float


TRANSFORMS: dict[str, Transform] = {
    "identity": Transform(identity, 0.0),
    "zoom_out": Transform(zoom_out, 0.8),
    "zoom_far": Transform(zoom_out, 0.7),
    "shift": Transform(shift, 0.05),
    "dark_band": Transform(dark_band, 0.7),
    "brighter": Transform(exposure, 0.7),
    "darker": Transform(exposure, -1.0),
    "warm": Transform(white_balance, 0.25),
    "cool": Transform(white_balance, -0.25),
    "shadow": Transform(shadow, 0.5),
}


def check_names(names: Sequence[str]) -> list[str]:
    """The transform names, checked: an InputError naming the unknown ones and listing the known."""
    names = [str(name) for name in names]
    unknown = [name for name in names if name not in TRANSFORMS]
    if unknown:
        raise InputError(f"unknown stress transform(s) {unknown}: choose from {', '.join(TRANSFORMS)}")
    if len(set(names)) != len(names):
        raise InputError(f"stress names a transform twice: {names}")
    return names


def apply(name: str, photo: np.ndarray, mask: np.ndarray) -> Pair:
    """Transform `name` at its fixed strength."""
    transform = TRANSFORMS[name]
    return transform.function(photo, mask, transform.strength)


def describe(name: str) -> dict[str, Any]:
    transform = TRANSFORMS[name]
    return {"function": transform.function.__name__, "strength": transform.strength}


class StressedPhotos(PhotoDataset):
    """Every photo of `photos` under each of `names`, photo after photo (item `index` = photo index *
    len(names) + transform index; `locate` splits it): the transformed photo at the network's input
    size (area resize, as `read_image` does) with the transformed mask at full and at input size, in
    PhotoDataset's items, so evaluate scores them exactly as it scores the originals. A photo is
    decoded once at full size for all its transforms (consecutive items share a loader worker)."""

    def __init__(self, photos: PhotoDataset, names: Sequence[str]) -> None:
        super().__init__(photos.images, photos.size, photos.masks, photos.rle_masks, photos.errors)
        self.names = check_names(names)
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images) * len(self.names)

    def locate(self, index: int) -> tuple[int, str]:
        photo, transform = divmod(int(index), len(self.names))
        return photo, self.names[transform]

    def _full(self, photo: int) -> tuple[np.ndarray, np.ndarray]:
        if self._last is None or self._last[0] != photo:
            path = self.images[photo]
            if path.name in self.errors:
                raise DataError(self.errors[path.name])
            image = read_image(path)
            mask = self._mask(photo, image.shape[:2])
            if mask is None:
                raise DataError(f"{path.name} has no mask to score a stressed copy against")
            self._last = (photo, image, mask)
        return self._last[1], self._last[2]

    def __getitem__(self, index: int) -> dict[str, Any]:
        photo, name = self.locate(index)
        item: dict[str, Any] = {"name": self.images[photo].name, "index": index, "error": ""}
        try:
            image, mask = apply(name, *self._full(photo))
        except DataError as err:
            item.update(image=torch.zeros(3, *self.size, dtype=torch.uint8), full_size=(0, 0), error=str(err))
            return item
        small = cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)
        item.update(
            image=torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1))),
            full_size=mask.shape,
            mask=torch.from_numpy(np.ascontiguousarray(mask)),
            mask_small=torch.from_numpy(resize_mask(mask, self.size)),
        )
        return item
