"""Full-size masks from low-resolution logits, interpolating only along the car's outline.

A full-size pixel's bilinear value is a weighted mean of its four nearest low-resolution logits, so
where all four lie clearly on one side of the threshold, so does the pixel: it takes that side without
being computed. Only the cells where the four straddle the threshold (a thin band along the outline,
about 1% of a Carvana photo's pixels) are interpolated, with the arithmetic of PyTorch's CPU kernel for
`F.interpolate(mode="bilinear", align_corners=False)` on float32 (its weights, and its sums as fused
multiply-adds). The masks are therefore identical, bit for bit, to thresholding the full interpolation
(`core.upsample.to_full_size`); `matches_torch` proves it once per size on a probe against this
machine's PyTorch, and `thresholded` falls back to the full interpolation if a build computes otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch

from carvana_seg.core.upsample import to_full_size

log = logging.getLogger(__name__)

F32 = np.float32
# A cell is decided when its four logits clear the threshold by this share of the largest |logit|:
# a hundred times any rounding of the weights and sums, so deciding never differs from computing.
MARGIN = 1e-4
# Above this share of straddling cells (an untrained network's near-zero logits), interpolating them one
# by one costs more than PyTorch's full pass, which then runs instead: the same masks either way.
MAX_BAND = 0.25


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 a * b + c rounded once, as a fused multiply-add (the float64 product is exact)."""
    return (a.astype(np.float64) * b + c).astype(F32)


@lru_cache(maxsize=64)
def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each output index: the two input indices and their float32 weights, as PyTorch's CPU kernel
    computes them (ratio in float32, source index by a fused multiply-add, clamped at 0)."""
    ratio = F32(n_in) / F32(n_out)
    source = (np.float64(ratio) * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(F32)
    source = np.maximum(source, F32(0))
    index0 = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    lambda1 = np.clip(source - index0.astype(F32), F32(0), F32(1)).astype(F32)
    index1 = index0 + (index0 < n_in - 1)
    lambda0 = (F32(1) - lambda1).astype(F32)
    for shared in (index0, index1, lambda0, lambda1):  # cached: every caller sees the same arrays
        shared.setflags(write=False)
    return index0, index1, lambda0, lambda1


def _interpolate(logits: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear values of the full-size pixels (rows[i], cols[i]), PyTorch's float32 arithmetic."""
    y0, y1, wy0, wy1 = axis_weights(logits.shape[0], int(size[0]))
    x0, x1, wx0, wx1 = axis_weights(logits.shape[1], int(size[1]))
    r0, r1, c0, c1 = y0[rows], y1[rows], x0[cols], x1[cols]
    a, b = wx0[cols], wx1[cols]
    top = _fma(logits[r0, c0], a, (logits[r0, c1] * b).astype(F32))
    bottom = _fma(logits[r1, c0], a, (logits[r1, c1] * b).astype(F32))
    return _fma(top, wy0[rows], (bottom * wy1[rows]).astype(F32))


def band_mask(logits: np.ndarray, size: Sequence[int], cut: float) -> np.ndarray:
    """uint8 {0, 1} mask (H, W) of `logits` (h, w) brought to `size` bilinearly, then `> cut`."""
    logits = np.ascontiguousarray(logits, dtype=F32)
    height, width = int(size[0]), int(size[1])
    cut32 = F32(cut)  # a tensor compared with a Python number compares in its own dtype
    if logits.shape == (height, width):
        return (logits > cut32).view(np.uint8)
    margin = F32(MARGIN * (1.0 + abs(float(cut32)) + float(np.abs(logits).max(initial=0.0))))
    y0 = axis_weights(logits.shape[0], height)[0]
    x0 = axis_weights(logits.shape[1], width)[0]
    # Each cell: the low-resolution square (row, row+1) x (col, col+1) that output pixels blend from.
    rows_next = np.minimum(np.arange(logits.shape[0]) + 1, logits.shape[0] - 1)
    cols_next = np.minimum(np.arange(logits.shape[1]) + 1, logits.shape[1] - 1)
    low = np.minimum(logits, logits[rows_next])
    high = np.maximum(logits, logits[rows_next])
    low = np.minimum(low, low[:, cols_next])
    high = np.maximum(high, high[:, cols_next])
    car = low > cut32 + margin
    edge = ~(car | (high < cut32 - margin))
    if edge.mean() > MAX_BAND:
        full = to_full_size(torch.from_numpy(logits)[None, None], (height, width))[0, 0]
        return (full > cut).numpy().view(np.uint8)
    # Spread each cell over its output pixels: one take of columns, one of whole rows.
    mask = car.view(np.uint8).take(x0, axis=1).take(y0, axis=0)
    cell_rows, cell_cols = np.nonzero(edge)
    if cell_rows.size:
        rows, cols = _cell_pixels(cell_rows, cell_cols, y0, x0)
        mask[rows, cols] = _interpolate(logits, rows, cols, size) > cut32
    return mask


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The concatenation of arange(start, start + count) for each pair."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if ends.size else 0) - np.repeat(ends - counts - starts, counts)


def _cell_pixels(
    cell_rows: np.ndarray, cell_cols: np.ndarray, y0: np.ndarray, x0: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The full-size (row, col) of every pixel of the given cells (`y0`, `x0`: each output index's
    first input index, ascending), without visiting the pixels of other cells."""
    row_count = np.bincount(y0, minlength=int(cell_rows.max()) + 1)
    col_count = np.bincount(x0, minlength=int(cell_cols.max()) + 1)
    row_start = np.cumsum(row_count) - row_count
    col_start = np.cumsum(col_count) - col_count
    per_cell = row_count[cell_rows]
    rows = _ranges(row_start[cell_rows], per_cell)  # each cell's rows, cell after cell
    segment_cols = np.repeat(cell_cols, per_cell)
    per_row = col_count[segment_cols]
    return np.repeat(rows, per_row), _ranges(col_start[segment_cols], per_row)


@lru_cache(maxsize=64)
def matches_torch(low: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether `_interpolate` reproduces this machine's `F.interpolate` bit for bit at these sizes, on a
    seeded random probe of the whole frame (checked once per size pair)."""
    probe = np.random.default_rng(0).normal(0.0, 8.0, size=low).astype(F32)
    expected = to_full_size(torch.from_numpy(probe)[None, None], size)[0, 0].numpy()
    rows, cols = np.divmod(np.arange(size[0] * size[1]), size[1])
    same = np.array_equal(_interpolate(probe, rows, cols, size).reshape(size), expected)
    if not same:
        log.warning(
            "this PyTorch interpolates %s -> %s with other rounding: full-size masks take the full path",
            low,
            size,
        )
    return same


def thresholded(
    logits: torch.Tensor, size: Sequence[int], cuts: Sequence[float], edge_band: bool = True
) -> list[torch.Tensor]:
    """For each logit threshold of `cuts`, bool masks (B, 1, H, W) of logits (B, 1, h, w) brought to
    `size` bilinearly, on the logits' device: `to_full_size(logits, size) > cut`. On the CPU, where the
    band is proven equal, through the edge band (once per threshold); otherwise (`edge_band=False`, a
    GPU, another rounding) one full interpolation serves every threshold."""
    size = (int(size[0]), int(size[1]))
    if not edge_band or logits.device.type != "cpu" or not matches_torch(tuple(logits.shape[-2:]), size):
        full = to_full_size(logits, size)
        return [full > cut for cut in cuts]
    low = logits.detach().float().numpy()
    return [
        torch.from_numpy(
            np.stack([band_mask(low[row, 0], size, cut) for row in range(low.shape[0])]).view(bool)
        )[:, None]
        for cut in cuts
    ]


def full_size_masks(
    logits: torch.Tensor, size: Sequence[int], cut: float, edge_band: bool = True
) -> torch.Tensor:
    """`thresholded` at one threshold: bool masks (B, 1, H, W), `(to_full_size(logits, size) > cut)`."""
    return thresholded(logits, size, [cut], edge_band)[0]
