"""Choices that depend on the machine a run lands on."""

from __future__ import annotations

import torch


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `accelerator` setting will run on a CUDA GPU here."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str | int | None, accelerator: str = "auto") -> str | int:
    """`precision: auto` -> bf16 mixed on CUDA GPUs that have bf16, 16 mixed on older ones, 32 on CPU.

    CPU runs stay in fp32: bf16 autocast doubles a U-Net's training speed on CPUs with AVX512-BF16 or
    AMX but slows it down on CPUs without, so CPU recipes opt in (`trainer.precision=bf16-mixed`).
    Any value other than "auto" is passed to Lightning unchanged.
    """
    if precision not in (None, "auto"):
        return precision
    if not uses_cuda(accelerator):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
