"""Per-image segmentation scores, and a torchmetrics Metric that averages them over a data set.

All scores are computed per image from its confusion counts and then averaged over images, the way
Kaggle scored Carvana:

- `dice`: foreground dice 2TP / (2TP + FP + FN); 1 when both masks are empty (Kaggle's convention).
- `iou`: foreground intersection over union TP / (TP + FP + FN); 1 when both are empty.
- `accuracy`: share of pixels right, (TP + TN) / all.
- `dice_mean_classes`: the seed's mean-of-classes score, the average over background and car of
  each class's overlap |pred ∩ true| / |pred ∪ true|. The seed called it "dice"; on its worked example
  (100 pixels, 18 car, all predicted background) it gives background 0.82, car 0, mean 0.41. It is
  what the literature calls mean IoU; it is kept under the seed's name so the study can be compared.

Averaging sums of per-image scores (not of pixels) makes every image count the same, and the sums
and counts are synchronised across DDP processes by torchmetrics, so the figure on N GPUs equals the
figure computed on the whole validation set in one process.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

SCORES = ("dice", "dice_mean_classes", "accuracy", "iou")


def _ratio(numerator: Tensor, denominator: Tensor) -> Tensor:
    """numerator / denominator, with 0 / 0 = 1: nothing to find and nothing found is a perfect score."""
    return torch.where(denominator > 0, numerator / denominator.clamp(min=1), torch.ones_like(numerator))


def confusion_counts(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-image (TP, FP, FN, TN) pixel counts of binary `pred` against binary `target`, shape (B,)."""
    if pred.shape != target.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}"
        )
    # Three sums over uint8 views of the masks (one AND), accumulated in int32 (twice as fast as int64
    # on CPUs; exact below 2**31 pixels per image): the cheapest way through 2.4M-pixel masks.
    pred = pred.bool().flatten(1).view(torch.uint8)
    target = target.bool().flatten(1).view(torch.uint8)
    tp = (pred & target).sum(1, dtype=torch.int32).double()
    predicted = pred.sum(1, dtype=torch.int32).double()
    actual = target.sum(1, dtype=torch.int32).double()
    return tp, predicted - tp, actual - tp, pred.shape[1] - predicted - actual + tp


def per_image_scores(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Each score of `SCORES` for every image of a batch of binary masks (B, ...) -> {name: (B,)}."""
    tp, fp, fn, tn = confusion_counts(pred, target)
    iou_car = _ratio(tp, tp + fp + fn)
    iou_background = _ratio(tn, tn + fn + fp)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "dice_mean_classes": (iou_car + iou_background) / 2,
        "accuracy": (tp + tn) / (tp + fp + fn + tn),
        "iou": iou_car,
    }


class SegmentationScores(Metric):
    """Mean over images of each per-image score; `compute()` returns {prefix + name: value}."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, prefix: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.prefix = prefix
        for name in SCORES:
            self.add_state(name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("images", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor) -> None:
        for name, values in per_image_scores(pred, target).items():
            setattr(self, name, getattr(self, name) + values.sum())
        self.images += pred.shape[0]

    def compute(self) -> dict[str, Tensor]:
        count = self.images.clamp(min=1)
        return {f"{self.prefix}{name}": (getattr(self, name) / count).float() for name in SCORES}
