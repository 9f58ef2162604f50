"""A run's composed config as hyperparameters in every logger, and TensorBoard's HPARAMS tab with the
validation metrics beside them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.tensorboard.summary import hparams

# The columns of the HPARAMS tab; TensorBoard reads their values from the run's own val/* scalars.
METRICS = ("val/dice", "val/dice_best", "val/dice_mean_classes", "val/accuracy", "val/iou", "val/loss")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config to {"a/b/c": value}: scalars as they are, anything else (lists) as text."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        else:
            flat[name] = value if isinstance(value, int | float | str | bool) else str(value)
    return flat


@rank_zero_only
def log_hyperparameters(loggers: Iterable[Logger], config: Mapping[str, Any]) -> None:
    """Record `config` (flattened) in every logger.

    TensorBoard's HPARAMS tab needs an hparams record that names the metrics; Lightning writes one only
    together with an initial value of each metric at step 0 (`log_hyperparams(params, metrics)`), which
    would put a false first point on every validation curve. The record is written here without values.
    """
    params = flatten(config)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            experiment, session_start, session_end = hparams(params, dict.fromkeys(METRICS, 0.0))
            writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
            for summary in (experiment, session_start, session_end):
                writer.add_summary(summary)
        logger.log_hyperparams(params)  # TensorBoard: hparams.yaml beside the events
