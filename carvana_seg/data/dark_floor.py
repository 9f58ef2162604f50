"""DarkFloor: the studio floor around the car darkened, as a training augmentation.

Every car of the Carvana sample stands on the same light turntable, so a network can learn "dark means
car". In a studio framed from farther back, the turntable's front edge and a dark band of floor come
into view below the car, and a car's shadow can be darker than any in the sample: a model trained on
the sample marks both as car. DarkFloor darkens floor pixels only (never the car's, whatever the mask's
resolution), so the mask is unchanged and it works with `data.mask_scale > 1`:

- a band across the frame below the car: a random gap under the car's lowest pixel, height, darkness
  and soft edges, sometimes running to the bottom of the frame;
- a shadow under the car: a soft ellipse as wide as the car's lowest part, centred on its lowest row;
- the car itself darkened (drawn apart, off by default): a dark floor alone teaches "dark below the
  car is floor", which cuts the dark lower body of a black car; dark cars beside dark floors teach the
  network to find the car's outline instead;
- a band across the car (off by default): the band starts at a random height of the car and darkens
  the car's pixels in it as well as the floor's, so that a dark horizontal stripe is no longer a sign
  of floor by itself: where it is car or floor, only the outline tells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np

from carvana_seg.data.car_share import car_share, share_at
from carvana_seg.data.option_range import option_range
from carvana_seg.errors import DataError


class DarkFloor(A.DualTransform):
    """With probability `p`: a dark floor band with probability `band_p` and a shadow under the car with
    probability `shadow_p`, each cutting the floor's light by a share drawn from `darkness`, and the car's
    own light cut by a share drawn from `car_darkness` with probability `car_p` (all drawn independently).
    Given a band, with probability `band_car_p` it starts at a random height of the car instead of below
    it and darkens car and floor alike. Sizes are shares of the frame's height (`band_gap`, `band_height`,
    `shadow_height`)."""

    any_resolution = True  # the mask is not moved, so it may be finer than the photo

    def __init__(
        self,
        band_p: float = 0.5,
        shadow_p: float = 0.5,
        darkness: Sequence[float] = (0.1, 0.4),
        band_gap: Sequence[float] = (0.0, 0.08),
        band_height: Sequence[float] = (0.04, 0.2),
        shadow_height: Sequence[float] = (0.01, 0.04),
        car_p: float = 0.0,
        car_darkness: Sequence[float] = (0.3, 0.8),
        band_car_p: float = 0.0,
        p: float = 0.5,
    ) -> None:
        super().__init__(p=p)
        self.band_p = _share("band_p", band_p)
        self.shadow_p = _share("shadow_p", shadow_p)
        self.darkness = option_range("DarkFloor", "darkness", darkness, low=0.0, high=1.0)
        self.band_gap = option_range("DarkFloor", "band_gap", band_gap, low=0.0, high=1.0)
        self.band_height = option_range("DarkFloor", "band_height", band_height, low=0.0, high=1.0)
        self.shadow_height = option_range("DarkFloor", "shadow_height", shadow_height, low=0.0, high=1.0)
        self.car_p = _share("car_p", car_p)
        self.car_darkness = option_range("DarkFloor", "car_darkness", car_darkness, low=0.0, high=1.0)
        self.band_car_p = _share("band_car_p", band_car_p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data["mask"]
        rows = np.flatnonzero(mask.any(axis=1))
        height, width = mask.shape[:2]
        draw = self.py_random.uniform
        # The car's top and lowest rows and the span of its lowest fifth, as shares of the frame.
        if len(rows):
            car_top, bottom = rows[0] / height, (rows[-1] + 1) / height
            base = mask[max(rows[0], rows[-1] - (rows[-1] - rows[0]) // 5) : rows[-1] + 1]
            low_cols = np.flatnonzero(base.any(axis=0))
            left, right = low_cols[0] / width, (low_cols[-1] + 1) / width
        else:
            car_top, bottom, left, right = 0.5, 0.8, 0.3, 0.7
        band = None
        if self.py_random.random() < self.band_p:
            across = self.py_random.random() < self.band_car_p
            top = draw(car_top, bottom) if across else bottom + draw(*self.band_gap)
            end = 1.0 if self.py_random.random() < 0.3 else top + draw(*self.band_height)
            band = (top, end, draw(*self.darkness), draw(0.005, 0.03), across)
        shadow = None
        if self.py_random.random() < self.shadow_p:
            half_width = (right - left) / 2 * draw(0.8, 1.15)
            shadow = ((left + right) / 2, bottom, half_width, draw(*self.shadow_height), draw(*self.darkness))
        car_cut = draw(*self.car_darkness) if self.py_random.random() < self.car_p else 0.0
        return {"band": band, "shadow": shadow, "car_cut": car_cut, "car": mask}

    def apply(
        self,
        img: np.ndarray,
        band: tuple[float, ...] | None = None,
        shadow: tuple[float, ...] | None = None,
        car_cut: float = 0.0,
        car: np.ndarray | None = None,
        **_: Any,
    ) -> np.ndarray:
        if band is None and shadow is None and not car_cut:
            return img
        height, width = img.shape[:2]
        cut = np.zeros((height, width), np.float32)  # the share of light taken from each pixel
        band_cut: np.ndarray | float = 0.0  # a band across the car: it darkens car and floor alike
        y = (np.arange(height, dtype=np.float32) + 0.5) / height
        x = (np.arange(width, dtype=np.float32) + 0.5) / width
        if band is not None:
            top, end, darkness, soft, across = band
            inside = np.minimum(y - top, end - y) if end < 1.0 else y - top
            rows = (darkness * np.clip(inside / soft, 0, 1))[:, None]
            if across:
                band_cut = rows
            else:
                cut = np.maximum(cut, rows)
        if shadow is not None:
            cx, cy, half_width, half_height, darkness = shadow
            r2 = ((x[None, :] - cx) / half_width) ** 2 + ((y[:, None] - cy) / half_height) ** 2
            cut = np.maximum(cut, darkness * np.clip(1 - r2, 0, 1) ** 2)
        if car is not None and car.any():
            # The floor's cut spares the car, the car's own cut spares the floor: the car's share of each
            # photo pixel, from a mask at any size ({0, 1} or a soft 0..255 coverage).
            coverage = share_at(car_share(car), height, width)
            cut = cut * (1 - coverage) + car_cut * coverage
        cut = np.maximum(cut, band_cut)
        gain = (1 - cut)[..., None] if img.ndim == 3 else 1 - cut
        return np.clip(np.rint(img * gain), 0, 255).astype(img.dtype)

    def apply_to_mask(self, mask: np.ndarray, **_: Any) -> np.ndarray:
        return mask

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return (
            "band_p",
            "shadow_p",
            "darkness",
            "band_gap",
            "band_height",
            "shadow_height",
            "car_p",
            "car_darkness",
            "band_car_p",
        )


def _share(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise DataError(f"DarkFloor {name} must be a probability in [0, 1], got {value!r}")
    return float(value)
