"""SegmentationModule: one LightningModule for every network and loss of the study, and the owner of
the checkpoint format.

`model=unet loss=bce_dice` means what it says: the network and the loss arrive as arguments (their
configs, from their own config groups); this class adds normalisation, metrics and the optimiser.
Their configs are its hyperparameters, so Lightning's `SegmentationModule.load_from_checkpoint(path)`
rebuilds the trained module from the checkpoint alone, through `carvana_seg.core.builder`, which
builds only the project's own classes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric

from carvana_seg.core.builder import LOSSES, MODELS, build
from carvana_seg.core.checkpoint import CHECKPOINT_FORMAT, check_checkpoint, nonfinite_weights
from carvana_seg.core.edge_band import full_size_masks
from carvana_seg.core.metrics import SegmentationScores
from carvana_seg.core.postprocess import postprocess
from carvana_seg.core.run_config import RunConfig
from carvana_seg.core.upsample import logit_threshold, to_full_size
from carvana_seg.data.photos import batches_by_size
from carvana_seg.errors import DivergedError, InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def flip_mean(logits: Tensor, mirrored: Tensor) -> Tensor:
    """Flip TTA: the logit of the mean probability of a photo's logits and of its mirror image's (flipped
    back). The exported graph computes the same, so that its masks are predict's."""
    return torch.logit((torch.sigmoid(logits) + torch.sigmoid(mirrored)) / 2, eps=1e-7)


_COMPILED_COPY = "net_forward._orig_mod."


def _check_compiler() -> None:
    """torch.compile writes C++ (CPU) or Triton (CUDA) kernels that a C/C++ compiler builds: without one
    a run would fail at its first step, after the data set-up, with a long traceback (train's early
    check of the options builds the module, so it stops there)."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else ["g++", "c++", "clang++"]
    if not any(shutil.which(name) for name in names):
        raise InputError(
            f"module.compile=true needs a C++ compiler ({' or '.join(names)}) and none is on PATH: "
            "install one (e.g. apt install g++) or set module.compile=false"
        )


def build_scheduler(factory: Callable[..., Any], optimizer: Optimizer, steps: int) -> Any:
    """The configured schedule over `optimizer`, its length left null in the config (OneCycleLR's
    `total_steps`, CosineAnnealingLR's `T_max`) filled in with the run's `steps` optimiser steps."""
    keywords = getattr(factory, "keywords", {})
    filled = {name: steps for name in ("total_steps", "T_max") if name in keywords and keywords[name] is None}
    return factory(optimizer=optimizer, **filled)


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
        compile: torch.compile the network and the loss in place (their weights keep their names, so a
            checkpoint loads either way); `load_from_checkpoint` builds eager modules unless asked.
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
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 < threshold < 1.0:
            raise InputError(f"module.threshold must be in (0, 1), got {threshold}")
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
        if compile:  # in place: a torch.compile wrapper would store every weight a second time
            _check_compiler()
            self.net.compile()
            self.loss.compile()
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
        # Device-side "became NaN/inf" flags of the training loss and the validation logits since the last
        # check: set without a GPU-to-host sync per step, read once per validation and per epoch.
        self.nonfinite: dict[str, Tensor] = {}
        # How predict_step predicts; set by whoever predicts (the predict command, a user's script).
        self.tta_hflip = False
        self.predict_threshold: float | None = None
        self.edge_band = True  # False: interpolate every pixel (the same masks, slower; for comparison)
        self.postprocess: list[str] = []  # inference.postprocess steps applied to each full-size mask

    def normalize(self, images: Tensor) -> Tensor:
        """uint8 (or 0..255 float) images to the network's normalised float input."""
        return ((images.float() - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def forward(self, images: Tensor) -> Tensor:
        """Car logits (B, 1, H, W) for uint8 images (B, 3, H, W)."""
        return self.net(self.normalize(images))

    def predict_mask(self, logits: Tensor) -> Tensor:
        """Binary car mask from logits at this module's threshold."""
        return logits > self.logit_threshold

    @torch.no_grad()
    def predict_logits(
        self, images: Tensor, tta_hflip: bool = False, names: Sequence[str] | None = None
    ) -> Tensor:
        """fp32 logits (B, 1, h, w) at the input size; with `tta_hflip`, of the mean of the probabilities
        of the photo and of its mirror image. Logits that are NaN/inf (broken weights) raise
        DivergedError, naming the photos when `names` are given: one reduction per batch."""
        logits = self(images).float()
        if tta_hflip:
            logits = flip_mean(logits, self(images.flip(-1)).float().flip(-1))
        if not bool(torch.isfinite(logits).all()):
            which = f" for {', '.join(names)}" if names else ""
            raise DivergedError(
                f"the network returns non-finite logits (NaN or inf){which}: its weights are broken; "
                "no masks were written for these photos"
            )
        return logits

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Full-size masks of a batch of photos (`carvana_seg.data.photos.PhotoDataset` items): the
        logits at the input size, brought to each photo's own size bilinearly, then thresholded (on a CPU
        through `core.edge_band`, which interpolates only along the outline: identical masks).

        Returns {"name": [...], "mask": [uint8 (H, W) array, or None for a photo that could not be
        read], "error": [...]}. `self.tta_hflip` and `self.predict_threshold` (default: the module's
        threshold) set how; a network that returns NaN/inf raises DivergedError naming the photos.
        """
        logits = self.predict_logits(batch["image"], self.tta_hflip, batch["name"])
        cut = logit_threshold(self.predict_threshold or self.hparams.threshold)
        masks: list[Any] = [None] * len(batch["name"])
        readable = [p for p, error in enumerate(batch["error"]) if not error]
        for full_size, group in batches_by_size([batch["full_size"][p] for p in readable]):
            positions = [readable[g] for g in group]
            binary = full_size_masks(logits[positions], full_size, cut, self.edge_band).cpu()
            binary = binary.view(torch.uint8).numpy()
            for row, position in enumerate(positions):
                masks[position] = postprocess(binary[row, 0], self.postprocess)
        return {"name": list(batch["name"]), "mask": masks, "error": list(batch["error"])}

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
        self._flag_nonfinite("the training loss", loss)
        # Not on the progress bar: Lightning turns progress-bar values into Python numbers after every
        # step, a GPU-to-host sync that starves the GPU's queue (measured: +18% epoch time on an H100).
        self.log("train/loss", loss, on_step=True, on_epoch=True, batch_size=len(batch["image"]))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_scores.compute())
        self.train_scores.reset()
        # Before ModelCheckpoint's on_train_epoch_end (Lightning calls monitoring callbacks after the module),
        # where it saves when no validation ran this epoch.
        self.check_finite()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, logits = self._step(batch, self.val_scores)
        self._flag_nonfinite("the validation logits", logits)
        self.val_loss.update(loss.detach(), weight=len(batch["image"]))
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        # Before ModelCheckpoint's on_validation_end, where best.ckpt and last.ckpt are written: NaN logits
        # score a dice of 0, a finite number that would otherwise be saved as the best so far.
        self.check_finite()
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
        scheduler = build_scheduler(
            self.scheduler_factory, optimizer, int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _flag_nonfinite(self, what: str, value: Tensor) -> None:
        bad = ~torch.isfinite(value.detach()).all()
        held = self.nonfinite.get(what)
        self.nonfinite[what] = bad if held is None else held | bad

    def check_finite(self) -> None:
        """Raise DivergedError if the training loss or the validation logits were NaN/inf since the last
        check, or the weights are now: one GPU-to-host sync, agreed by every DDP process."""
        flags, self.nonfinite = self.nonfinite, {}
        trainer = self._trainer
        if trainer is not None and getattr(trainer.precision_plugin, "scaler", None) is not None:
            # 16-mixed: the gradient scaler skips the steps whose loss overflowed, by design.
            flags.pop("the training loss", None)
        weights = [p.detach() for p in self.net.parameters() if p.is_floating_point()]
        if weights:
            flags["the weights"] = ~torch.stack([torch.isfinite(w).all() for w in weights]).all()
        if not flags:
            return
        names = list(flags)
        found = torch.stack([flags[name].to(weights[0].device if weights else "cpu") for name in names])
        if trainer is not None:
            found = trainer.strategy.reduce(found.float(), reduce_op="max")
        bad = [name for name, flag in zip(names, found.tolist(), strict=True) if flag]
        if bad:
            raise DivergedError(self._divergence_message(bad))

    def _divergence_message(self, bad: list[str]) -> str:
        trainer = self._trainer
        where, good, rate = "", "", ""
        if trainer is not None:
            where = f" in epoch {trainer.current_epoch} (step {trainer.global_step})"
            callback = trainer.checkpoint_callback
            saved = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "")
            good = f"; the last good one is {saved}" if saved else ""
            if trainer.optimizers:
                rate = f" (now {trainer.optimizers[0].param_groups[0]['lr']:g})"
        listed = " and ".join([", ".join(bad[:-1]), bad[-1]] if len(bad) > 1 else bad)
        return (
            f"training diverged{where}: {listed} became NaN/inf. No checkpoint of these weights "
            f"was written{good}. Lower optimizer.lr{rate}, choose a gentler scheduler, or train in full "
            "precision (trainer.precision=32-true)"
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The last line of defence, whatever saves (a mid-epoch ModelCheckpoint, an exception handler): a
        # checkpoint of NaN weights is never written.
        bad = nonfinite_weights(checkpoint.get("state_dict", {}))
        if bad:
            raise DivergedError(
                f"not saving a checkpoint in epoch {checkpoint.get('epoch')}: the weights hold NaN/inf "
                f"({', '.join(bad[:3])}): the run diverged; lower optimizer.lr"
            )
        checkpoint["carvana_seg_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Runs with module.compile=true up to 4a8971d stored the network a second time, under the
        # torch.compile wrapper's name: one copy is enough, whether this module compiles or not.
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k.startswith(_COMPILED_COPY)]:
            del state[key]

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | Path, map_location: Any = "cpu", **kwargs: Any
    ) -> SegmentationModule:
        """The trained module of a checkpoint written by training, in eval mode.

        Lightning's own loader, restricted to tensors and plain values (`weights_only`); the network
        and loss are rebuilt from the saved hyperparameters (only the project's classes) unless given
        in `kwargs`. A file that is missing, unreadable, of an older format or of NaN/inf weights raises
        InputError.
        """
        path = check_checkpoint(checkpoint_path)
        # Eager unless asked: inference meets one input shape after another, and each new shape would
        # cost a compilation that outlasts the few hundred photos it speeds up.
        kwargs.setdefault("compile", False)
        try:
            module = super().load_from_checkpoint(
                path, map_location=map_location, weights_only=True, **kwargs
            )
        except InputError as err:  # a stored option the constructor refuses, named there
            raise InputError(f"ckpt_path {path}: {err}") from err
        except RuntimeError as err:  # load_state_dict: the weights do not fit the rebuilt network
            raise InputError(f"ckpt_path {path}: its weights do not fit its own model config: {err}") from err
        except (TypeError, ValueError) as err:  # hyperparameters this class does not take (a forged file)
            raise InputError(
                f"ckpt_path {path}: its hyperparameters do not fit SegmentationModule: {err}"
            ) from err
        return module.eval()
