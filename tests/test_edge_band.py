"""Full-size masks through the edge band: identical, bit for bit, to thresholding the full bilinear
interpolation of the same logits, for any sizes and thresholds, with far fewer pixels interpolated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from carvana_seg.core import edge_band
from carvana_seg.core.edge_band import band_mask, full_size_masks, matches_torch
from carvana_seg.core.upsample import logit_threshold, to_full_size


def car_logits(shape: tuple[int, int], seed: int = 0, noise: float = 1.5) -> np.ndarray:
    """Logits like a network's: a blob of car with a soft edge, `noise` and a few holes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    radius = np.hypot((y - shape[0] / 2) / (0.35 * shape[0]), (x - shape[1] / 2) / (0.4 * shape[1]))
    logits = 12 * (1 - radius) + rng.normal(0, noise, shape)
    logits[rng.random(shape) < 0.01] = -4
    return logits.astype(np.float32)


def reference(logits: np.ndarray, size: tuple[int, int], threshold: float) -> np.ndarray:
    full = to_full_size(torch.from_numpy(logits)[None, None], size)[0, 0]
    return (full > logit_threshold(threshold)).numpy()


@pytest.mark.parametrize(
    ("low", "size"),
    [((160, 240), (1280, 1918)), ((128, 192), (1280, 1918)), ((37, 53), (100, 151)), ((20, 30), (20, 31))],
)
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.77])
def test_masks_are_identical_to_the_full_bilinear_path(low, size, threshold):
    for seed in range(2):
        logits = car_logits(low, seed)
        assert np.array_equal(
            band_mask(logits, size, logit_threshold(threshold)).view(bool), reference(logits, size, threshold)
        )


def test_random_logits_and_values_at_the_threshold_too(monkeypatch):
    monkeypatch.setattr(edge_band, "MAX_BAND", 1.0)  # never the full pass: every cell through the band
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (40, 60)).astype(np.float32)
    logits[::3] = 0.0  # exactly at the threshold of 0.5
    logits[5] = np.float32(1e-30)  # tiny, where rounding could decide
    for size in [(320, 479), (81, 121)]:
        assert np.array_equal(band_mask(logits, size, 0.0).view(bool), reference(logits, size, 0.5))


def test_only_the_outline_is_interpolated(monkeypatch):
    counted = []
    real = edge_band._interpolate
    monkeypatch.setattr(
        edge_band, "_interpolate", lambda x, r, c, s: counted.append(r.size) or real(x, r, c, s)
    )
    band_mask(car_logits((160, 240), noise=0.1), (1280, 1918), 0.0)
    assert 0 < counted[0] < 0.05 * 1280 * 1918


def test_logits_that_straddle_the_threshold_everywhere_take_the_full_pass(monkeypatch):
    logits = np.random.default_rng(2).normal(0, 0.01, (40, 60)).astype(np.float32)  # untrained-like
    monkeypatch.setattr(edge_band, "_interpolate", lambda *args: pytest.fail("interpolated pixel by pixel"))
    assert np.array_equal(band_mask(logits, (320, 480), 0.0).view(bool), reference(logits, (320, 480), 0.5))


def test_the_same_size_is_thresholded_and_a_batch_keeps_its_shape_and_device():
    logits = torch.from_numpy(np.stack([car_logits((16, 24), s) for s in range(3)]))[:, None]
    same = full_size_masks(logits, (16, 24), 0.0)
    assert torch.equal(same, logits > 0)
    big = full_size_masks(logits, (64, 97), 0.0)
    assert big.shape == (3, 1, 64, 97) and big.dtype == torch.bool
    assert torch.equal(big, to_full_size(logits, (64, 97)) > 0)
    assert torch.equal(full_size_masks(logits, (64, 97), 0.0, edge_band=False), big)


def test_this_pytorch_is_checked_once_per_size_and_a_mismatch_takes_the_full_path(monkeypatch):
    assert matches_torch((160, 240), (1280, 1918))
    matches_torch.cache_clear()
    monkeypatch.setattr(edge_band, "_fma", lambda a, b, c: (a * b + c + np.float32(1e-3)).astype(np.float32))
    logits = torch.from_numpy(car_logits((16, 24)))[None, None]
    used = []
    monkeypatch.setattr(edge_band, "band_mask", lambda *args: used.append(1))
    assert torch.equal(full_size_masks(logits, (64, 97), 0.0), to_full_size(logits, (64, 97)) > 0)
    assert not used  # the probe failed, so the band was never used
    matches_torch.cache_clear()
