"""A run resumed from a checkpoint (`train ckpt_path=...`) continues the run that wrote it.

Resumed with other overrides, it would either stop in Lightning's weight loading with a size-mismatch
traceback (another network) or, worse, train on with no error at all while its validation dice counts
cars the checkpoint learnt from (another fold, split seed or validation share): the score reads too high
and the checkpoint it writes carries the wrong validation cars on to evaluate. Both are refused: the
network before the data set-up, the cars once the split is known and before split.json is written.
Another loss or input size is a choice a user may make on purpose (fine-tuning), so it is only logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from carvana_seg.errors import InputError

log = logging.getLogger(__name__)

ADVICE = (
    "resume with the overrides the run was trained with (its .hydra/overrides.yaml), "
    "or start a new run without ckpt_path"
)


def check_resumed_network(
    checkpoint_path: str | Path, saved: Mapping[str, Any], model: Mapping[str, Any], loss: Mapping[str, Any]
) -> None:
    """Refuse to resume `checkpoint_path`, whose `saved_hyperparameters` are `saved`, into the network of
    the `model` config when the two differ; log another `loss`."""
    network = differences(saved.get("net"), model, "model")
    if network:
        raise InputError(f"ckpt_path {checkpoint_path} holds another network ({network}): {ADVICE}")
    other_loss = differences(saved.get("loss"), loss, "loss")
    if other_loss:
        log.warning("resuming %s with another loss (%s)", checkpoint_path, other_loss)


def check_resumed_split(
    checkpoint_path: str | Path, saved: Mapping[str, Any], run: Mapping[str, Any]
) -> None:
    """Refuse to resume `checkpoint_path`, whose `saved_hyperparameters` are `saved`, into a run (a
    `RunConfig.to_dict()`) that validates other cars; log another input size."""
    saved = saved.get("run") or {}
    if "val_cars" in saved:
        old, new = set(saved["val_cars"]), set(run.get("val_cars") or ())
        if old != new:
            raise InputError(
                f"ckpt_path {checkpoint_path} was validated on other cars ({len(old)} in the checkpoint, "
                f"{len(new)} now, {len(old & new)} in both): data.folds, data.fold, data.split_seed or "
                f"data.val_fraction differ, and the validation dice would count cars it trained on; {ADVICE}"
            )
    old_size, new_size = list(saved.get("image_size") or ()), list(run.get("image_size") or ())
    if old_size and old_size != new_size:
        log.warning(
            "resuming %s at data.image_size %s (it was trained at %s)", checkpoint_path, new_size, old_size
        )


def saved_hyperparameters(checkpoint_path: str | Path) -> Mapping[str, Any]:
    """The hyperparameters a checkpoint (already checked by `check_checkpoint`) was written with."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    return checkpoint.get("hyper_parameters") or {}


def differences(saved: Any, now: Mapping[str, Any], group: str, shown: int = 3) -> str:
    """The options of one config group (`model`, `loss`) that differ, as `model.depth 5 in the
    checkpoint, 4 now`; empty when they agree or the checkpoint holds no config of it. An option the
    checkpoint stores as null (one that only initialises weights, such as a pretrained file) or lacks
    (added to the project after it was written) is not compared: its weights replace it."""
    if not isinstance(saved, Mapping):
        return ""
    keys = [key for key in sorted(saved) if saved[key] is not None and saved[key] != now.get(key)]
    text = ", ".join(
        f"{group}.{key} {saved[key]!r} in the checkpoint, {now.get(key)!r} now" for key in keys[:shown]
    )
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")
