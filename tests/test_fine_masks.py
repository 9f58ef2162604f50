"""Masks finer than the photos (`data.mask_scale`): the loss scores logits brought to the masks' size
the way evaluation brings them to full size, so training rewards edges placed between pixels."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.upsample import to_full_size
from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import read_mask, resize_mask
from carvana_seg.errors import DataError
from carvana_seg.train import train
from tests.conftest import write_carvana


def datamodule(root, tmp_path, **kwargs) -> CarvanaDataModule:
    module = CarvanaDataModule(
        root, image_size=(24, 36), num_workers=0, cache_dir=tmp_path / "cache", mask_scale=2, **kwargs
    )
    module.setup("fit")
    return module


@pytest.mark.parametrize("mask_source", ["files", "csv"])
def test_items_carry_photos_at_the_image_size_and_masks_at_its_multiple(tmp_path, mask_source):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(96, 144), masks_csv=mask_source == "csv")
    plain = datamodule(root, tmp_path, mask_source=mask_source)
    cached = datamodule(root, tmp_path, mask_source=mask_source, cache=True)
    masks_csv = rle.read_csv(root / "train_masks.csv") if mask_source == "csv" else {}
    for index, sample in enumerate(plain.val_set.samples):
        a, b = plain.val_set[index], cached.val_set[index]
        assert a["image"].shape == (3, 24, 36) and a["mask"].shape == (1, 48, 72)
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
        full = read_mask(sample.mask) if sample.mask else rle.decode(masks_csv[sample.name], (96, 144))
        assert a["mask"][0].numpy().tolist() == resize_mask(full, (48, 72)).tolist()


def test_caches_of_different_mask_sizes_live_side_by_side(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(96, 144))
    folders = []
    for scale in (1, 2, 1):
        module = CarvanaDataModule(
            root, (24, 36), num_workers=0, cache=True, cache_dir=tmp_path / "cache", mask_scale=scale
        )
        module.setup("fit")
        folders.append(module.train_set.cache.folder)
        assert np.load(folders[-1] / "masks.npy").shape[1:] == (24 * scale, 36 * scale)
    assert folders[0] != folders[1] and folders[0] == folders[2] and folders[1].exists()


def test_a_flip_moves_the_photo_and_its_finer_mask_together(tmp_path):
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(96, 144))
    module = datamodule(root, tmp_path, hflip_p=1.0, augment=[A.RandomBrightnessContrast(p=0.0)])
    image, mask = module.train_set.load(0)
    item = module.train_set[0]
    assert item["image"].numpy().tolist() == image[:, ::-1].transpose(2, 0, 1).tolist()
    assert item["mask"][0].numpy().tolist() == mask[:, ::-1].tolist()


@pytest.mark.parametrize("scale", [0, -1, 1.5, True, "2"])
def test_a_mask_scale_that_is_not_a_whole_number_from_one_is_refused(tmp_path, scale):
    with pytest.raises(DataError, match=rf"data\.mask_scale must be a whole number >= 1, got {scale!r}"):
        CarvanaDataModule(tmp_path, mask_scale=scale)


def test_geometric_augmentation_is_refused_with_finer_masks_and_pixel_level_accepted(tmp_path):
    moving = [A.Affine(scale=(0.9, 1.1), p=1.0), A.RandomBrightnessContrast(p=1.0)]
    with pytest.raises(DataError, match=r"data\.mask_scale=2 .* data\.augment also has Affine$"):
        CarvanaDataModule(tmp_path, mask_scale=2, augment=moving)
    CarvanaDataModule(tmp_path, mask_scale=2, augment=moving[1:])
    CarvanaDataModule(tmp_path, mask_scale=1, augment=moving)


class RecordingLoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.logits, self.target = logits, target
        return (logits - target).abs().mean()


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_the_loss_and_metrics_score_logits_brought_bilinearly_to_the_masks_size():
    loss = RecordingLoss()
    net = nn.Conv2d(3, 1, 1)
    module = SegmentationModule(net, loss, optimizer=None)
    images = torch.randint(0, 256, (2, 3, 4, 6), dtype=torch.uint8)
    masks = torch.zeros(2, 1, 8, 12, dtype=torch.uint8)
    module._step({"image": images, "mask": masks}, module.val_scores)
    assert loss.logits.shape == (2, 1, 8, 12)
    assert torch.allclose(loss.logits, to_full_size(module(images), (8, 12)))
    # Coarse logits [-1, 1] across one row: bilinearly at twice the size they cross 0 between the
    # two coarse pixels, so a mask whose edge lies there is matched exactly.
    images = torch.zeros(1, 3, 1, 2, dtype=torch.uint8)
    module.net = FixedLogits(torch.tensor([[[[-1.0, 1.0]]]]))
    module.val_scores.reset()
    module._step({"image": images, "mask": torch.tensor([[[[0, 0, 1, 1], [0, 0, 1, 1]]]])}, module.val_scores)
    assert loss.logits[0, 0, 0].tolist() == [-1.0, -0.5, 0.5, 1.0]
    assert module.val_scores.compute()["val/dice"] == 1.0


def test_a_run_trains_against_finer_masks_and_logs_its_prediction_grid(make_cfg, tmp_path):
    metrics = train(make_cfg("data.mask_scale=2", "data.cache=true"))
    assert metrics["steps"] == 2 and 0.0 <= metrics["val/dice"] <= 1.0 and metrics["val/loss"] > 0
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    (grid,) = events.Images("val/predictions")  # photo | mask | prediction, all at the masks' size
    assert (grid.height, grid.width) == (2 + 4 * (64 + 2), 2 + 3 * (96 + 2))


def test_a_bad_mask_scale_stops_the_run_before_anything_is_written(make_cfg, tmp_path):
    out = tmp_path / "bad"
    with pytest.raises(InstantiationException, match=r"data\.mask_scale must be a whole number >= 1, got 0"):
        train(make_cfg("data.mask_scale=0", output_dir=out))
    assert not (out / "checkpoints").exists() and not (out / "metrics.json").exists()
