"""Segmentation losses as small modules taking (logits, target), computed in fp32.

Under mixed precision the network's logits arrive in bf16/fp16; sums over a 160x240 (or 1280x1918)
image overflow or lose precision there, so every loss leaves autocast and works in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _fp32(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    return logits.float(), target.float()


class BCELoss(nn.Module):
    """Binary cross-entropy on logits (numerically stable log-sigmoid form), mean over pixels."""

    def __init__(self, pos_weight: float | None = None) -> None:
        super().__init__()
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        with torch.autocast(device_type=logits.device.type, enabled=False):
            logits, target = _fp32(logits, target)
            pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
            return F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)


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
    """bce_weight * BCE + dice_weight * soft dice loss."""

    def __init__(
        self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0, per_image: bool = True
    ) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = BCELoss()
        self.dice = SoftDiceLoss(smooth=smooth, per_image=per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)
