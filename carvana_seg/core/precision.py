"""Choices that depend on the machine a run lands on."""

from __future__ import annotations

import torch

from carvana_seg.errors import InputError

# Lightning's precision names, and the project's two (resolved below). The numbers arrive from Hydra as ints.
PRECISIONS = ("auto", "fast", "32", "32-true", "64", "64-true", "16", "16-mixed", "16-true", "bf16")
PRECISIONS += ("bf16-mixed", "bf16-true")


def uses_cuda(accelerator: str) -> bool:
    """Whether a Trainer with this `accelerator` setting will run on a CUDA GPU here."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def resolve_precision(precision: str | int | None, accelerator: str = "auto") -> str | int:
    """`precision: auto` -> bf16 mixed on CUDA GPUs that have bf16, 16 mixed on older ones, 32 on CPU.

    CPU runs stay in fp32: bf16 autocast doubles a U-Net's training speed on CPUs with AVX512-BF16 or
    AMX but slows it down on CPUs without, so CPU recipes opt in.
    `precision: fast` is the same on CUDA and picks bf16 mixed on CPUs where oneDNN has native bf16
    kernels (AVX512 or AMX): a CPU recipe that is 2x faster there and not 10x slower elsewhere.
    Any other value is passed to Lightning unchanged.
    """
    if precision not in (None, "auto", "fast"):
        return precision
    if not uses_cuda(accelerator):
        return "bf16-mixed" if precision == "fast" and cpu_has_fast_bf16() else "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def check_precision(precision: str | int | None, what: str, more: tuple[str, ...] = ()) -> None:
    """Refuse a precision Lightning does not know (`16mixed`, `fp32`), naming the option, before any work."""
    if precision is not None and str(precision) not in PRECISIONS + more:
        raise InputError(f"{what} must be one of {', '.join(PRECISIONS + more)}, got {precision!r}")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (else PyTorch emulates them, many times slower)."""
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
