"""TallCar: the car stretched upwards from where it stands, as a training augmentation.

The backdrop of the Carvana studio carries large dark grey CARVANA letters at the height of a tall
car's roof. Most cars of the sample stay below them, so a network learns "those letters are
background" and, on a tall dark car (a black pickup's cab), cuts the car where it stands in front of
them. TallCar makes any car as tall as such a cab: the car's own pixels, stretched upwards about its
lowest row, are laid over the photo, so its roof and pillars now cover the letters; the mask becomes
the stretched car and the original together (every pixel shown is still car or the original photo).
Its wheels and the floor under it stay where they were.

Like `Reframe`, the stretch is drawn as a share and each array gets a matrix from its own size, so a
mask finer than the photo (`data.mask_scale > 1`) stays aligned to a fraction of a photo pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from carvana_seg.data.car_share import car_share, share_at
from carvana_seg.data.option_range import option_range


def stretch_matrix(bottom: float, stretch: float) -> np.ndarray:
    """The 2x3 matrix of cv2.warpAffine (source -> destination pixel centres) that stretches rows by
    `stretch` about the horizontal line `bottom` (in the array's rows, pixel edges at integers)."""
    # A pixel centre y + 0.5 moves to bottom + stretch * (y + 0.5 - bottom).
    return np.array([[1.0, 0.0, 0.0], [0.0, stretch, (1 - stretch) * (bottom - 0.5)]], dtype=np.float64)


class TallCar(A.DualTransform):
    """With probability `p`, the car stretched upwards by a factor drawn from `stretch` about its lowest
    row and laid over the photo; the mask is the union of the stretched car and the original."""

    any_resolution = True  # each array's matrix comes from its own size

    def __init__(self, stretch: Sequence[float] = (1.1, 1.4), p: float = 0.3) -> None:
        super().__init__(p=p)
        self.stretch = option_range("TallCar", "stretch", stretch, low=1.0)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data["mask"]
        rows = np.flatnonzero(mask.any(axis=1))
        if not len(rows):
            return {"bottom": None, "stretch": 1.0, "grown": None}
        # The car's lowest row as a share of the frame's height, and the stretched car's share of each
        # pixel of the mask's grid (float32 in [0, 1]), from which the photo's alpha is drawn too.
        bottom, stretch = (rows[-1] + 1) / mask.shape[0], self.py_random.uniform(*self.stretch)
        share = car_share(mask)
        matrix = stretch_matrix(bottom * mask.shape[0], stretch)
        grown = cv2.warpAffine(share, matrix, share.shape[::-1], flags=cv2.INTER_LINEAR, borderValue=0.0)
        return {"bottom": bottom, "stretch": stretch, "grown": grown}

    def apply(
        self,
        img: np.ndarray,
        bottom: float | None = None,
        stretch: float = 1.0,
        grown: np.ndarray | None = None,
        **_: Any,
    ) -> np.ndarray:
        if bottom is None or grown is None:
            return img
        height, width = img.shape[:2]
        matrix = stretch_matrix(bottom * height, stretch)
        car = cv2.warpAffine(
            img, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = share_at(grown, height, width)
        alpha = alpha[..., None] if img.ndim == 3 else alpha
        return np.clip(np.rint(img * (1 - alpha) + car * alpha), 0, 255).astype(img.dtype)

    def apply_to_mask(self, mask: np.ndarray, grown: np.ndarray | None = None, **_: Any) -> np.ndarray:
        if grown is None:
            return mask
        if mask.max() > 1:  # soft coverage, 0..255
            return np.maximum(mask, np.rint(grown * 255).astype(mask.dtype))
        return np.maximum(mask, (grown >= 0.5).astype(mask.dtype))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("stretch",)
