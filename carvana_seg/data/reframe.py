"""Reframe: the camera moved back or aside, as a training augmentation that any mask resolution follows.

Albumentations' own geometric transforms compute their pixel matrix from the photo's size and apply it
unchanged to the mask, so a mask at a multiple of the photo's size (`data.mask_scale`) would drift off
the photo. `Reframe` draws its zoom and shift as shares of the frame and builds each array's matrix
from that array's own size, about the frame's centre, so photo and finer mask stay aligned to a
fraction of a photo pixel (tested in tests/test_reframe.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from carvana_seg.data.option_range import option_range


def reframe_matrix(shape: Sequence[int], zoom: float, dx: float, dy: float) -> np.ndarray:
    """The 2x3 matrix of cv2.warpAffine (source -> destination pixel centres) for an array of `shape`:
    scale by `zoom` about the frame's centre, then move by `dx`, `dy` shares of the width and height."""
    height, width = shape[0], shape[1]
    # Pixel centres sit at integers, so the frame's centre is ((width - 1) / 2, (height - 1) / 2).
    tx = (1 - zoom) * (width - 1) / 2 + dx * width
    ty = (1 - zoom) * (height - 1) / 2 + dy * height
    return np.array([[zoom, 0.0, tx], [0.0, zoom, ty]], dtype=np.float64)


def warp(array: np.ndarray, zoom: float, dx: float, dy: float) -> np.ndarray:
    """`array` (a photo, a {0, 1} mask or a 0..255 coverage) reframed, its edges continued (the studio's
    backdrop and floor go on). A {0, 1} mask is interpolated as a share of car and thresholded at one
    half, so its edge moves smoothly with the photo's instead of snapping to the nearest pixel."""
    height, width = array.shape[:2]
    matrix = reframe_matrix(array.shape, zoom, dx, dy)
    binary = array.dtype == np.uint8 and array.ndim == 2 and int(array.max(initial=0)) <= 1
    source = array * np.uint8(255) if binary else array
    out = cv2.warpAffine(
        source, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if out.ndim < array.ndim:  # cv2 drops a trailing channel of 1
        out = out[..., None]
    return (out >= 128).view(np.uint8) if binary else out


class Reframe(A.DualTransform):
    """Zoom by a factor drawn from `zoom` (below 1: the camera farther back, more floor and backdrop in
    view) and shift by shares of the frame drawn from `shift`, with probability `p`. `shift_y`, when
    given, is the vertical range instead (`[0, 0]`: sideways only, the car's floor line kept).

    `any_resolution` tells the data module that the mask may be at a multiple of the photo's size.
    """

    any_resolution = True

    def __init__(
        self,
        zoom: Sequence[float] = (0.75, 1.0),
        shift: Sequence[float] = (-0.04, 0.04),
        shift_y: Sequence[float] | None = None,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.zoom = option_range("Reframe", "zoom", zoom, low=0.1)
        self.shift = option_range("Reframe", "shift", shift, low=-0.5)
        self.shift_y = self.shift
        if shift_y is not None:
            self.shift_y = option_range("Reframe", "shift_y", shift_y, low=-0.5)

    def get_params(self) -> dict[str, float]:
        return {
            "zoom": self.py_random.uniform(*self.zoom),
            "dx": self.py_random.uniform(*self.shift),
            "dy": self.py_random.uniform(*self.shift_y),
        }

    def apply(
        self, img: np.ndarray, zoom: float = 1.0, dx: float = 0.0, dy: float = 0.0, **_: Any
    ) -> np.ndarray:
        return warp(img, zoom, dx, dy)

    def apply_to_mask(
        self, mask: np.ndarray, zoom: float = 1.0, dx: float = 0.0, dy: float = 0.0, **_: Any
    ) -> np.ndarray:
        return warp(mask, zoom, dx, dy)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("zoom", "shift", "shift_y")
