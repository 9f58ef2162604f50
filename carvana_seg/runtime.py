"""Choices that depend on the machine a run lands on."""

from __future__ import annotations

import torch


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `accelerator` setting will run on a CUDA GPU here."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str | int | None, accelerator: str = "auto") -> str | int:
    """`precision: auto` -> bf16 mixed on CUDA GPUs that have bf16, 16 mixed on older ones, 32 on CPU.

    Mixed precision on a CPU is slower than fp32 for convolutions, so CPU runs stay in fp32; any value
    other than "auto" is passed to Lightning unchanged.
    """
    if precision not in (None, "auto"):
        return precision
    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
