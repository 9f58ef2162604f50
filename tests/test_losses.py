"""Losses against hand-computed values, and fp32 under autocast."""

import math

import pytest
import torch
import torch.nn.functional as F

from carvana_seg.core.losses import BCEDiceLoss, BCELoss, SoftDiceLoss


def test_bce_matches_the_formula():
    logits = torch.tensor([[[[2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 0.0]]]])
    sig = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    expected = -(math.log(sig[0]) + math.log(1 - sig[1])) / 2
    assert BCELoss()(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_hard_fraction_averages_each_images_hardest_pixels_only():
    # image 0: per-pixel losses of logits 4, 0, -4 against car are small, ln 2, large
    logits = torch.tensor([[[[4.0, 0.0, -4.0, 4.0]]], [[[-4.0, -4.0, 4.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 1.0, 1.0, 1.0]]], [[[0.0, 0.0, 0.0, 0.0]]]])
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1)
    hardest_half = per_pixel.sort(dim=1, descending=True).values[:, :2]
    assert BCELoss(hard_fraction=0.5)(logits, target).item() == pytest.approx(hardest_half.mean().item())
    assert BCELoss(hard_fraction=1.0)(logits, target).item() == pytest.approx(per_pixel.mean().item())
    combined = BCEDiceLoss(hard_fraction=0.5)(logits, target)
    expected = BCELoss(hard_fraction=0.5)(logits, target) + SoftDiceLoss()(logits, target)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_hard_fraction_outside_0_1_is_refused_naming_the_option(fraction):
    with pytest.raises(ValueError, match=r"loss\.hard_fraction"):
        BCELoss(hard_fraction=fraction)


def test_soft_dice_matches_the_formula_per_image():
    logits = torch.tensor([[[[0.0, 0.0]]], [[[100.0, -100.0]]]])  # image 0: p = 0.5, 0.5; image 1: p = 1, 0
    target = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    smooth = 1.0
    dice0 = (2 * 0.5 + smooth) / (1.0 + 1.0 + smooth)
    dice1 = (2 * 1.0 + smooth) / (1.0 + 1.0 + smooth)
    loss = SoftDiceLoss(smooth=smooth)(logits, target)
    assert loss.item() == pytest.approx(1 - (dice0 + dice1) / 2, rel=1e-5)


def test_soft_dice_of_a_perfect_prediction_is_zero_and_of_an_empty_one_is_near_one():
    target = torch.zeros(1, 1, 8, 8)
    target[..., 2:6, 2:6] = 1
    perfect = (target * 2 - 1) * 50
    assert SoftDiceLoss(smooth=1e-6)(perfect, target).item() == pytest.approx(0.0, abs=1e-4)
    assert SoftDiceLoss(smooth=1e-6)(torch.full_like(target, -50.0), target).item() == pytest.approx(
        1.0, abs=1e-4
    )


def test_bce_dice_is_the_weighted_sum():
    logits = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    target = (torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    combined = BCEDiceLoss(bce_weight=0.3, dice_weight=2.0)(logits, target)
    expected = 0.3 * BCELoss()(logits, target) + 2.0 * SoftDiceLoss()(logits, target)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("loss", [BCELoss(), SoftDiceLoss(), BCEDiceLoss()], ids=["bce", "dice", "bce_dice"])
def test_losses_are_fp32_under_autocast(loss):
    logits = torch.randn(2, 1, 16, 16).bfloat16()
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        value = loss(logits, target)
    assert value.dtype == torch.float32
