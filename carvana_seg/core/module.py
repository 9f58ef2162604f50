"""SegmentationModule: one LightningModule for every network and loss of the study, and the owner of
the checkpoint format.

`model=unet loss=bce_dice` means what it says: the network and the loss arrive as arguments (their
configs, from their own config groups); this class adds normalisation, metrics and the optimiser.
Their configs are its hyperparameters, so Lightning's `SegmentationModule.load_from_checkpoint(path)`
rebuilds the trained module from the checkpoint alone, through `carvana_seg.core.builder`, which
builds only the project's own classes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric

from carvana_seg.core.builder import LOSSES, MODELS, build
from carvana_seg.core.metrics import SegmentationScores
from carvana_seg.core.run_config import RunConfig
from carvana_seg.core.upsample import logit_threshold, to_full_size
from carvana_seg.errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Written into every checkpoint; checkpoints without it predate the hyperparameters that rebuild the net.
CHECKPOINT_FORMAT = 2


class SegmentationModule(pl.LightningModule):
    """A network that maps uint8 photos (B, 3, H, W) to car logits (B, 1, H, W), with its training.

    Args:
        net: the bare network (normalised float images in, logits out): its config (a mapping with the
            `_target_` of a class in `carvana_seg.models`), saved as a hyperparameter; or a built
            nn.Module, which is not saved (pass it again to `load_from_checkpoint`).
        loss: a module taking (logits, target) and returning a scalar: its config (a class in
            `carvana_seg.core.losses`) or a built nn.Module, as for `net`.
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
        run: the training run's `RunConfig` (as its `to_dict()`), stored in every checkpoint so that
            evaluation and prediction know the input size and the validation cars.
    """

    def __init__(
        self,
        net: Mapping[str, Any] | nn.Module,
        loss: Mapping[str, Any] | nn.Module,
        optimizer: Callable[..., Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        threshold: float = 0.5,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        channels_last: bool = False,
        compile: bool = False,
        run: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"module.threshold must be in (0, 1), got {threshold}")
        built = [name for name, value in (("net", net), ("loss", loss)) if isinstance(value, nn.Module)]
        self.save_hyperparameters(ignore=["optimizer", "scheduler", *built])
        self.net = net if isinstance(net, nn.Module) else build(net, MODELS, "model")
        self.loss = loss if isinstance(loss, nn.Module) else build(loss, LOSSES, "loss")
        if "net" not in built:
            # Arguments that only initialise weights (a pretrained file) are not needed again: the
            # checkpoint's weights replace them, and the file may not exist where the checkpoint goes.
            skip = getattr(type(self.net), "init_only_arguments", ())
            self.hparams["net"] = {k: None if k in skip else v for k, v in self.hparams["net"].items()}
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.run_config = RunConfig.from_dict(run) if run is not None else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net_forward: Callable[[Tensor], Tensor] = torch.compile(self.net) if compile else self.net
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
        checkpoint["carvana_seg_format"] = CHECKPOINT_FORMAT

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = "cpu", **kwargs: Any
    ) -> SegmentationModule:
        """The trained module of a checkpoint written by training, in eval mode.

        Lightning's own loader, restricted to tensors and plain values (`weights_only`); the network
        and loss are rebuilt from the saved hyperparameters (only the project's classes) unless given
        in `kwargs`. A file that is missing, unreadable or of an older format raises InputError.
        """
        path = Path(checkpoint_path).expanduser()
        _check_format(path)
        try:
            module = super().load_from_checkpoint(
                path, map_location=map_location, weights_only=True, **kwargs
            )
        except RuntimeError as err:  # load_state_dict: the weights do not fit the rebuilt network
            raise InputError(f"ckpt_path {path}: its weights do not fit its own model config: {err}") from err
        return module.eval()


def _check_format(path: Path) -> None:
    """Refuse, with what to do, a file that is not a checkpoint of this format (before building anything)."""
    if not path.is_file():
        raise InputError(f"ckpt_path {path} does not exist")
    try:
        # mmap: the tensors are not read here, only the small dictionaries around them.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise InputError(
            f"ckpt_path {path} is not a readable PyTorch checkpoint ({type(err).__name__})"
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise InputError(f"ckpt_path {path} is not a Lightning checkpoint (it has no state_dict)")
    if "carvana_seg" in checkpoint and "carvana_seg_format" not in checkpoint:
        raise InputError(
            f"ckpt_path {path} was written by an earlier carvana_seg, whose checkpoints cannot rebuild their "
            "network: retrain it with `python -m carvana_seg.train` (same overrides)"
        )
    if checkpoint.get("carvana_seg_format") != CHECKPOINT_FORMAT:
        raise InputError(
            f"ckpt_path {path} is not a carvana_seg checkpoint of format {CHECKPOINT_FORMAT} "
            "(checkpoints written by `python -m carvana_seg.train` are)"
        )
