"""Lightning callbacks of this project (checkpointing and LR monitoring are Lightning's own)."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torchvision.utils import make_grid

from carvana_seg.core.upsample import to_full_size


def mask_to_rgb(mask: Tensor) -> Tensor:
    """A (B, 1, H, W) {0, 1} mask as a white-on-black uint8 (B, 3, H, W) image."""
    return (mask.to(torch.uint8) * 255).expand(-1, 3, -1, -1)


class PredictionGrid(pl.Callback):
    """Every validation epoch, log a grid of fixed validation samples: photo | true mask | predicted mask.

    The samples are spread evenly over the validation set (so over its cars) and never change during
    a run, so the TensorBoard image slider shows the same cars getting better epoch by epoch.
    """

    def __init__(self, num_samples: int = 4, tag: str = "val/predictions") -> None:
        self.num_samples = num_samples
        self.tag = tag

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.num_samples < 1:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        dataset = getattr(trainer.datamodule, "val_set", None)
        if not loggers or dataset is None or len(dataset) == 0:
            return
        indices = np.linspace(0, len(dataset) - 1, min(self.num_samples, len(dataset))).round().astype(int)
        items = [dataset[int(i)] for i in indices]
        images = torch.stack([item["image"] for item in items]).to(pl_module.device)
        masks = torch.stack([item["mask"] for item in items]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            predicted = pl_module.predict_mask(to_full_size(pl_module(images), masks.shape[-2:]))
        pl_module.train(was_training)
        # With masks finer than the photos (data.mask_scale) every tile is drawn at the masks' size.
        images = to_full_size(images.float(), masks.shape[-2:]).to(torch.uint8)
        # One row per sample: the photo, the true mask, the predicted mask.
        tiles = torch.stack([images, mask_to_rgb(masks), mask_to_rgb(predicted)], dim=1).flatten(0, 1)
        grid = make_grid(tiles.cpu(), nrow=3, padding=2, pad_value=128)
        for logger in loggers:
            logger.experiment.add_image(self.tag, grid, global_step=trainer.global_step)
