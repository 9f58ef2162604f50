"""What makes a file a usable checkpoint, checked before anything is built from it: readable with
`weights_only` (nothing in it runs), of this project's format, and of finite weights."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from carvana_seg.errors import InputError

# Written into every checkpoint; checkpoints without it predate the hyperparameters that rebuild the net.
CHECKPOINT_FORMAT = 2


def check_checkpoint(checkpoint_path: str | Path) -> Path:
    """The checkpoint's path, once it is known to be a whole carvana_seg checkpoint of finite weights;
    otherwise InputError naming it and what to do. Reads with `weights_only` (nothing in the file runs)
    and builds nothing: `load_from_checkpoint` starts with it, and train calls it first thing for ckpt_path.
    """
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise InputError(f"ckpt_path {path} does not exist")
    try:
        # mmap: the tensors are read only where looked at (the finite check reads the weights).
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise InputError(
            f"ckpt_path {path} is not a readable PyTorch checkpoint ({type(err).__name__}): a file cut short "
            "(a copy or a run stopped while writing it) or not a checkpoint at all; use another one"
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
    state = checkpoint["state_dict"]
    bad = nonfinite_weights(state) if isinstance(state, Mapping) else []
    if bad:
        raise InputError(
            f"ckpt_path {path}: the weights hold NaN/inf ({', '.join(bad[:3])}): the run diverged; "
            "use an earlier checkpoint"
        )
    return path


def nonfinite_weights(state_dict: Mapping[str, Any]) -> list[str]:
    """The names of the network's floating-point tensors (`net.*`) that hold NaN or inf (one
    device-to-host copy for all of them, not one per tensor)."""
    names = [
        name
        for name, value in state_dict.items()
        if name.startswith("net.") and isinstance(value, Tensor) and value.is_floating_point()
    ]
    if not names:
        return []
    device = state_dict[names[0]].device
    finite = torch.stack([torch.isfinite(state_dict[name]).all().to(device) for name in names]).tolist()
    return [name for name, ok in zip(names, finite, strict=True) if not ok]
