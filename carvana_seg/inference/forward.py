"""Running a trained network: the device and the autocast context of the chosen precision.

Full size is where Kaggle scored: the network runs at its training size, its logits are resized
bilinearly to the photo's own size (1280x1918 for Carvana) and only then thresholded
(`carvana_seg.core.upsample`), so edges come out smooth instead of as the staircase of an up-scaled
binary mask.
"""

from __future__ import annotations

import contextlib

import torch

from carvana_seg.core.precision import resolve_precision
from carvana_seg.errors import InputError


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` as a torch device that exists here; anything else names `device`."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):  # device=0 arrives from Hydra as a number
        raise InputError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={device} but no CUDA GPU is visible")
    try:
        picked = torch.device(device)
    except RuntimeError as err:  # torch's own words for a device string it does not know
        raise InputError(f"device={device}: {err}") from err
    if picked.type == "cuda" and picked.index is not None and picked.index >= torch.cuda.device_count():
        raise InputError(f"device={device} but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return picked


def autocast(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """The autocast context of `precision` on `device`: "auto" is bf16/16 mixed on CUDA and fp32 on the
    CPU, as in training; an explicit bf16-mixed autocasts on the CPU too (fast where it has AVX512-BF16)."""
    resolved = str(resolve_precision(precision, "cuda" if device.type == "cuda" else "cpu"))
    if resolved.startswith("32") or resolved.startswith("64"):
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if resolved.startswith("bf16") else torch.float16
    if device.type != "cuda" and dtype != torch.bfloat16:
        raise InputError(f"precision {precision} needs CUDA; on the CPU use 32-true or bf16-mixed")
    return torch.autocast(device.type, dtype=dtype)
