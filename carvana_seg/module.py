"""SegmentationModule: one LightningModule for every network and loss of the study.

`model=unet loss=bce_dice` means what it says: the network and the loss arrive as arguments, built by
Hydra from their own config groups; this class adds normalisation, metrics and the optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric

from carvana_seg.logits import logit_threshold, to_full_size
from carvana_seg.metrics import SegmentationScores

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationModule(pl.LightningModule):
    """A network that maps uint8 photos (B, 3, H, W) to car logits (B, 1, H, W), with its training.

    Args:
        net: the bare network (normalised float images in, logits out).
        loss: a module taking (logits, target) and returning a scalar.
        optimizer: a partial optimiser (Hydra `_partial_: true`), completed with the parameters;
            None for a module used only for inference.
        scheduler: a partial LR scheduler, completed with the optimiser and stepped after every
            optimiser step; an argument `total_steps` or `T_max` left as None is filled in with the
            run's number of optimiser steps (OneCycleLR, CosineAnnealingLR).
        threshold: probability above which a pixel is called car, for the metrics.
        mean, std: per-channel normalisation of the 0..1 image (on the device, inside the module,
            so checkpoints carry the statistics they were trained with).
        channels_last: run the network in channels-last memory format (faster convolutions on GPUs).
        compile: torch.compile the network's forward.
        run_config: the composed run configuration, stored in every checkpoint so that evaluation
            and prediction can rebuild the network from the checkpoint alone.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., Optimizer] | None,
        scheduler: Callable[..., Any] | None = None,
        threshold: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channels_last: bool = False,
        compile: bool = False,
        run_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"module.threshold must be in (0, 1), got {threshold}")
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "run_config"])
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = run_config
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net_forward: Callable[[Tensor], Tensor] = torch.compile(net) if compile else net
        self.logit_threshold = logit_threshold(threshold)  # the metrics threshold logits, no sigmoid
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)
        self.train_scores = SegmentationScores(prefix="train/")
        self.val_scores = SegmentationScores(prefix="val/")
        # A torchmetrics mean, not self.log(sync_dist=True): Lightning 2.6 averages the batch counts
        # of DDP processes as integers (bug #21859), which is off when they hold different numbers.
        self.val_loss = MeanMetric()
        self.val_dice_best = MaxMetric()
        self.val_dice_best.persistent(True)  # saved in checkpoints, so a resumed run keeps its best
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (or 0..255 float) images to the network's normalised float input."""
        return ((images.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def forward(self, images: Tensor) -> Tensor:
        """Car logits (B, 1, H, W) for uint8 images (B, 3, H, W)."""
        return self.net_forward(self.normalize(images))

    def predict_mask(self, logits: Tensor) -> Tensor:
        """Binary car mask from logits at this module's threshold."""
        return logits > self.logit_threshold

    def _step(self, batch: dict[str, Tensor], scores: SegmentationScores) -> tuple[Tensor, Tensor]:
        logits = self(batch["image"])
        # The loss learns the share of car per pixel when the data module gives it (soft masks).
        target = batch["coverage"].float() / 255 if "coverage" in batch else batch["mask"].float()
        # Masks finer than the photos (data.mask_scale): score the logits brought to the masks' size
        # the way evaluation brings them to full size, so the loss rewards edges placed between pixels.
        logits = to_full_size(logits, target.shape[-2:])
        loss = self.loss(logits, target)
        scores.update(self.predict_mask(logits.detach()), batch["mask"])
        return loss, logits

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._step(batch, self.train_scores)
        # Not on the progress bar: Lightning turns progress-bar values into Python numbers after every
        # step, a GPU-to-host sync that starves the GPU's queue (measured: +18% epoch time on an H100).
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_scores.compute())
        self.train_scores.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, _ = self._step(batch, self.val_scores)
        self.val_loss.update(loss.detach(), weight=len(batch["image"]))
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        # compute() already gathers the per-image sums of every DDP process: the result is global.
        scores = self.val_scores.compute()
        self.val_scores.reset()
        dice = scores.pop("val/dice")
        self.log("val/dice", dice, prog_bar=True)
        self.log_dict(scores)
        if self.trainer.sanity_checking:
            return
        self.val_dice_best.update(dice)
        self.log("val/dice_best", self.val_dice_best.compute())

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError("this SegmentationModule was built for inference only: it has no optimizer")
        optimizer = self.optimizer_factory(params=self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        keywords = getattr(self.scheduler_factory, "keywords", {})
        steps = int(self.trainer.estimated_stepping_batches)
        filled = {
            name: steps for name in ("total_steps", "T_max") if name in keywords and keywords[name] is None
        }
        scheduler = self.scheduler_factory(optimizer=optimizer, **filled)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.run_config is not None:
            checkpoint["carvana_seg"] = {"config": self.run_config}
