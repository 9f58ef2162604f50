"""The car's share of each pixel, from a mask of any kind and size, for augmentations that blend by it."""

from __future__ import annotations

import cv2
import numpy as np


def car_share(mask: np.ndarray) -> np.ndarray:
    """A binary {0, 1} mask or a soft 0..255 coverage as the car's share of each pixel, float32 in [0, 1]."""
    return mask.astype(np.float32) / (255.0 if mask.max() > 1 else 1.0)


def share_at(share: np.ndarray, height: int, width: int) -> np.ndarray:
    """`share` brought to a photo of `height` x `width` by area (a finer mask averages into each pixel)."""
    return np.clip(cv2.resize(share, (width, height), interpolation=cv2.INTER_AREA), 0, 1)
