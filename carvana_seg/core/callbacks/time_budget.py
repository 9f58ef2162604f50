"""TimeBudget: train for a wall-clock budget, with a one-cycle learning rate spread over that time.

A recipe that promises "20 minutes on a laptop CPU" cannot fix its number of epochs: the same 2-core
machine type trains a U-Net 2.7x faster on one CPU generation than on the previous one (and bf16 is
native on one, emulated on the other). Lightning's `max_time` stops on time, but a schedule counted in
steps is then cut off at a high learning rate. This callback sets the learning rate from the share of
the budget already spent (warm-up, then cosine annealing, the shape of torch's OneCycleLR) and stops
training when the budget, less the time the final validation pass will take, is spent; every machine
ends its run annealed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl


def parse_duration(budget: str | float) -> float:
    """Seconds in `budget`: a number of seconds, or "HH:MM:SS" / "DD:HH:MM:SS" as Lightning's max_time."""
    if isinstance(budget, int | float):
        seconds = float(budget)
    else:
        try:
            parts = [float(part) for part in str(budget).split(":")]
        except ValueError:
            parts = []
        if not 1 <= len(parts) <= 4 or "-" in str(budget):
            raise ValueError(f"time budget {budget!r}: expected seconds or DD:HH:MM:SS")
        seconds = sum(part * unit for part, unit in zip(reversed(parts), (1, 60, 3600, 86400), strict=False))
    if seconds <= 0:
        raise ValueError(f"time budget {budget!r}: must be positive")
    return seconds


def one_cycle(progress: float, warmup: float, div_factor: float, final_div_factor: float) -> float:
    """Learning-rate multiplier at `progress` (0..1) of a one-cycle schedule peaking at 1.0.

    Cosine warm-up from 1/div_factor to 1 over the first `warmup` share, then cosine annealing down to
    1/(div_factor * final_div_factor), as torch.optim.lr_scheduler.OneCycleLR does over steps.
    """
    progress = min(max(progress, 0.0), 1.0)
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    if progress < warmup:
        low, high, share = start, 1.0, progress / warmup
    else:
        low, high, share = 1.0, end, (progress - warmup) / (1.0 - warmup)
    return high + (low - high) * (1 + math.cos(math.pi * share)) / 2


class TimeBudget(pl.Callback):
    """Spend `budget` of wall-clock time (counted from this callback's creation) on training.

    Args:
        budget: seconds, or "HH:MM:SS"; the run's own start-up before this callback is built (imports,
            data checks, cache building) is not counted, so leave a minute of a hard limit for it.
        warmup: share of the training time spent warming the learning rate up.
        div_factor: the learning rate starts at the optimiser's lr / div_factor ...
        final_div_factor: ... and ends at lr / (div_factor * final_div_factor).
        clock: seconds from an arbitrary origin (tests pass a fake one).

    The optimiser's configured `lr` is the peak; use it with `scheduler=none`. A resumed run (ckpt_path)
    continues the schedule with the budget it had left.
    """

    def __init__(
        self,
        budget: str | float,
        warmup: float = 0.2,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0.0 < warmup < 1.0:
            raise ValueError(f"time budget warmup must be in (0, 1), got {warmup}")
        self.budget = parse_duration(budget)
        self.warmup = warmup
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.clock = clock
        self.created = clock()
        self.spent_before = 0.0  # training seconds of the run this one resumes
        self.training_started: float | None = None
        self.validation_seconds = 0.0
        self._validation_started = 0.0
        self.peak_lrs: list[float] = []

    def _deadline(self) -> float:
        return self.created + self.budget - self.spent_before

    def progress(self) -> float:
        """Share of the training time spent: 0 when training starts, 1 at the deadline."""
        assert self.training_started is not None
        total = self._deadline() - self.training_started + self.spent_before
        return (self.clock() - self.training_started + self.spent_before) / total

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            raise ValueError(
                "callbacks.time_budget sets the learning rate itself: use it with scheduler=none"
            )
        if trainer.check_val_every_n_epoch not in (None, 1):
            # A stop between two validation epochs would leave the final weights unscored and unsaved.
            raise ValueError(
                "callbacks.time_budget stops mid-epoch: set trainer.check_val_every_n_epoch=1 "
                "(and a time-based trainer.val_check_interval, e.g. '00:00:04:00', to validate less often)"
            )
        self.training_started = self.clock()
        if not self.peak_lrs:  # a resumed run's optimiser holds a scheduled rate, its checkpoint the peak
            self.peak_lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
        self._set_lr(trainer)  # before the first epoch starts, so that the LR monitor logs the start value

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._set_lr(trainer)

    def _set_lr(self, trainer: pl.Trainer) -> None:
        scale = one_cycle(self.progress(), self.warmup, self.div_factor, self.final_div_factor)
        for group, peak in zip(trainer.optimizers[0].param_groups, self.peak_lrs, strict=True):
            group["lr"] = peak * scale

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        # Stop early enough for the validation pass that follows a stop (the last one measured).
        if self.clock() + self.validation_seconds >= self._deadline():
            trainer.should_stop = True

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_started = self.clock()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validation_seconds = self.clock() - self._validation_started

    def state_dict(self) -> dict[str, Any]:
        spent = 0.0 if self.training_started is None else self.clock() - self.training_started
        return {"spent": self.spent_before + spent, "peak_lrs": list(self.peak_lrs)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spent_before = float(state_dict["spent"])
        self.peak_lrs = list(state_dict.get("peak_lrs", []))
