"""Segmentation losses as small modules taking (logits, target), computed in fp32.

Under mixed precision the network's logits arrive in bf16/fp16; sums over a 160x240 (or 1280x1918)
image overflow or lose precision there, so every loss leaves autocast and works in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carvana_seg.errors import InputError


def _fp32(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return logits.float(), target.float()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (numerically stable log-sigmoid form), mean over pixels.

    Args:
        pos_weight: weight of the car pixels' term (None: 1).
        hard_fraction: average only the hardest share of each image's pixels (bootstrapped
            cross-entropy, as in OHEM-style segmentation training): most pixels of a Carvana photo are
            easy studio background, and the ones that are left wrong late in training (shadows under
            the car, dark wheel arches) then carry the whole gradient. 1.0: every pixel.
    """

    def __init__(self, pos_weight: float | None = None, hard_fraction: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < hard_fraction <= 1.0:
            raise InputError(f"loss.hard_fraction must be in (0, 1], got {hard_fraction}")
        self.pos_weight = pos_weight
        self.hard_fraction = hard_fraction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = _fp32(logits, target)
            pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
            if self.hard_fraction == 1.0:
                return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
            per_pixel = F.binary_cross_entropy_with_logits(
                logits, target, pos_weight=pos_weight, reduction="none"
            )
            per_image = per_pixel.flatten(1)
            k = max(1, round(self.hard_fraction * per_image.shape[1]))
            return per_image.topk(k, dim=1, sorted=False).values.mean()


class SoftDiceLoss(nn.Module):
    """1 - soft dice of the sigmoid probabilities, per image then averaged (like the Kaggle metric).

    soft dice = (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth); the smoothing term keeps the
    gradient finite and makes an empty prediction of an empty mask score 1.
    """

    def __init__(self, smooth: float = 1.0, per_image: bool = True) -> None:
        super().__init__()
        self.smooth = smooth
        self.per_image = per_image

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = _fp32(logits, target)
            probs = torch.sigmoid(logits)
            dims = tuple(range(1, probs.ndim)) if self.per_image else tuple(range(probs.ndim))
            intersection = (probs * target).sum(dims)
            total = probs.sum(dims) + target.sum(dims)
            dice = (2 * intersection + self.smooth) / (total + self.smooth)
            return 1 - dice.mean()


class BCEDiceLoss(nn.Module):
    """bce_weight * BCE + dice_weight * soft dice loss; `hard_fraction` is BCELoss's."""

    def __init__(
        self,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
        per_image: bool = True,
        hard_fraction: float = 1.0,
    ) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = BCELoss(hard_fraction=hard_fraction)
        self.dice = SoftDiceLoss(smooth=smooth, per_image=per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)
