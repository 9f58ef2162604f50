"""The scores: the Kaggle dice per image, the seed's mean-of-classes score, accuracy, IoU."""

import pytest
import torch

from carvana_seg.core.metrics import SegmentationScores, confusion_counts, per_image_scores


def mask(values: list[int], shape: tuple[int, int] = (10, 10)) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool).view(1, *shape)


def test_seed_worked_example_all_background_prediction():
    """100 pixels, 18 of them car, the prediction all background: 82% accuracy, 41% mean-of-classes."""
    target = mask([1] * 18 + [0] * 82)
    pred = torch.zeros_like(target)
    scores = per_image_scores(pred, target)
    assert scores["accuracy"].item() == pytest.approx(0.82)
    assert scores["dice"].item() == 0.0
    assert scores["iou"].item() == 0.0
    assert scores["dice_mean_classes"].item() == pytest.approx(0.41)


def test_scores_against_hand_counts():
    # 4x4 target with 6 car pixels; prediction hits 4 of them and adds 2 false positives.
    target = mask([1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], (4, 4))
    pred = mask([1, 1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0], (4, 4))
    tp, fp, fn, tn = (c.item() for c in confusion_counts(pred, target))
    assert (tp, fp, fn, tn) == (4, 2, 2, 8)
    scores = {k: v.item() for k, v in per_image_scores(pred, target).items()}
    assert scores["dice"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 2))
    assert scores["iou"] == pytest.approx(4 / 8)
    assert scores["accuracy"] == pytest.approx(12 / 16)
    assert scores["dice_mean_classes"] == pytest.approx((4 / 8 + 8 / 12) / 2)


def test_empty_mask_predicted_empty_is_perfect_and_kaggle_convention():
    empty = torch.zeros(1, 5, 5, dtype=torch.bool)
    scores = per_image_scores(empty, empty)
    assert all(v.item() == 1.0 for v in scores.values())
    one_pixel = empty.clone()
    one_pixel[0, 2, 2] = True
    assert per_image_scores(one_pixel, empty)["dice"].item() == 0.0


def test_dataset_score_is_the_mean_of_per_image_scores_not_pooled_pixels():
    # Image A: a big car found perfectly (dice 1). Image B: a small car missed (dice 0).
    target = torch.zeros(2, 1, 10, 10, dtype=torch.bool)
    target[0, 0, :8] = True
    target[1, 0, 0, 0] = True
    pred = target.clone()
    pred[1] = False
    metric = SegmentationScores(prefix="val/")
    metric.update(pred[:1], target[:1])
    metric.update(pred[1:], target[1:])
    result = metric.compute()
    assert result["val/dice"].item() == pytest.approx(0.5)  # pooled pixels would give 160/161
    assert set(result) == {"val/dice", "val/dice_mean_classes", "val/accuracy", "val/iou"}


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        per_image_scores(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
