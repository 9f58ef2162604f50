"""Logits at another size, and the logit a probability threshold becomes.

Evaluation and prediction bring the network's logits to each photo's full size this way, and training
with finer masks than its input (`data.mask_scale`) scores the logits brought to the masks' size the
same way, so what the loss rewards is what the full-size score measures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def to_full_size(logits: Tensor, size: Sequence[int], mode: str = "bilinear") -> Tensor:
    """Resize logits (B, 1, h, w) to (B, 1, H, W), pixel centres aligned like cv2/PIL.

    `bilinear` interpolates the logits, so the threshold then draws a smooth edge at full size;
    `nearest` repeats pixels, which is the same as upscaling the thresholded low-resolution mask (the
    blocky edges of many public pipelines; kept to measure what it costs).
    """
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    size = tuple(int(s) for s in size)
    if mode == "nearest":
        return F.interpolate(logits, size=size, mode="nearest-exact")
    if mode != "bilinear":
        raise ValueError(f"upsample must be bilinear or nearest, got {mode!r}")
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def logit_threshold(threshold: float) -> float:
    """The logit of probability `threshold`: p > t exactly when logit > log(t / (1 - t))."""
    return math.log(threshold / (1 - threshold))
