"""Lightning's ModelCheckpoint, with `last.ckpt` written after every validation again.

Lightning 2.6 writes `last.ckpt` only when a top-k checkpoint is written: a copy of the best, from which
a resumed run would repeat every epoch since, and which evaluating "the last checkpoint" would mistake
for the last epoch's weights.
"""

from __future__ import annotations

import pytorch_lightning as pl
from typing_extensions import override


class ModelCheckpoint(pl.callbacks.ModelCheckpoint):
    """Lightning's ModelCheckpoint, with `save_last=True` writing last.ckpt whenever a checkpoint is due
    (after each validation, or each training epoch without one), whether or not the monitored score
    improved. Same class name as Lightning's, so checkpoints of either resume into the other."""

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = self._last_due(trainer) and not self._should_save_on_train_epoch_end(trainer)
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        due = self._last_due(trainer) and self._should_save_on_train_epoch_end(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    def _last_due(self, trainer: pl.Trainer) -> bool:
        return self.save_last is True and not self._should_skip_saving_checkpoint(trainer)

    def _save_last_if_missed(self, trainer: pl.Trainer, due: bool) -> None:
        if due and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
