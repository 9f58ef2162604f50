"""Soft masks: training on the share of car per pixel, for edges that land between pixels at full size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from carvana_seg.core.module import SegmentationModule
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import mask_coverage
from carvana_seg.train import train
from tests.conftest import write_carvana


def test_coverage_is_the_share_of_car_in_each_pixel():
    mask = np.zeros((4, 6), np.uint8)
    mask[:, :4] = 1  # the left pixel of a 2x2 grid is all car, the right one a third car
    assert mask_coverage(mask, (2, 2)).tolist() == [[255, 85], [255, 85]]
    assert mask_coverage(mask, (4, 6)).tolist() == (mask * 255).tolist()  # at full size: 0 or 255


def items(root, tmp_path, **kwargs) -> list[dict]:
    module = CarvanaDataModule(
        root, image_size=(24, 36), num_workers=0, cache_dir=tmp_path / "cache", soft_masks=True, **kwargs
    )
    module.setup("fit")
    return [module.val_set[i] for i in range(len(module.val_set))]


@pytest.mark.parametrize("mask_source", ["files", "csv"])
def test_soft_items_carry_coverage_and_its_half_threshold_as_mask(tmp_path, mask_source):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72), masks_csv=mask_source == "csv")
    plain = items(root, tmp_path, mask_source=mask_source)
    cached = items(root, tmp_path, mask_source=mask_source, cache=True)
    for a, b in zip(plain, cached, strict=True):
        assert a.keys() == b.keys() >= {"image", "mask", "coverage"}
        assert all(torch.equal(a[key], b[key]) for key in ("image", "mask", "coverage"))
        assert torch.equal(a["mask"], (a["coverage"] >= 128).to(torch.uint8))
    coverage = torch.cat([item["coverage"].flatten() for item in plain])
    assert ((coverage > 0) & (coverage < 255)).any()  # edges fall between pixels


def test_files_and_csv_give_the_same_coverage(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72), masks_csv=True)
    from_files = items(root, tmp_path, mask_source="files")
    from_csv = items(root, tmp_path, mask_source="csv")
    assert all(torch.equal(a["coverage"], b["coverage"]) for a, b in zip(from_files, from_csv, strict=True))


def test_soft_and_binary_caches_of_one_size_live_side_by_side(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(48, 72))
    folders = []
    for soft in (False, True, False):
        module = CarvanaDataModule(
            root,
            image_size=(24, 36),
            num_workers=0,
            cache=True,
            cache_dir=tmp_path / "cache",
            soft_masks=soft,
        )
        module.setup("fit")
        folders.append(module.train_set.cache.folder)
        stored = np.load(folders[-1] / "masks.npy")
        assert stored.max() == (255 if soft else 1)
    assert folders[0] != folders[1] and folders[0] == folders[2] and folders[1].exists()


class RecordingLoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.target = target
        return (logits - target).abs().mean()


def test_the_loss_learns_coverage_and_the_metrics_score_the_mask():
    loss = RecordingLoss()
    module = SegmentationModule(nn.Conv2d(3, 1, 1), loss, optimizer=None)
    coverage = torch.tensor([[[[0, 100], [200, 255]]]], dtype=torch.uint8)
    mask = (coverage >= 128).to(torch.uint8)
    batch = {"image": torch.zeros(1, 3, 2, 2, dtype=torch.uint8), "mask": mask, "coverage": coverage}
    module._step(batch, module.val_scores)
    assert torch.allclose(loss.target, coverage.float() / 255)
    # The network predicts no car anywhere: the dice of the binary mask {0, 0, 1, 1} is 0.
    module.net.bias.data.fill_(-10.0)
    module.net.weight.data.zero_()
    module.val_scores.reset()
    module._step(batch, module.val_scores)
    assert module.val_scores.compute()["val/dice"] == 0.0
    del batch["coverage"]
    module._step(batch, module.val_scores)
    assert torch.equal(loss.target, mask.float())  # binary masks: the mask is the target


def test_a_run_trains_on_soft_masks(make_cfg):
    metrics = train(make_cfg("data.soft_masks=true", "data.cache=true", "callbacks.prediction_grid=null"))
    assert metrics["steps"] == 2 and 0.0 <= metrics["val/dice"] <= 1.0 and metrics["val/loss"] > 0
