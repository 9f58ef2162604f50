"""The `[low, high]` options of the project's augmentations, checked once with an error naming them."""

from __future__ import annotations

from collections.abc import Sequence

from carvana_seg.errors import DataError


def option_range(
    owner: str, name: str, values: Sequence[float], low: float, high: float | None = None
) -> tuple[float, float]:
    """`values` as a (lo, hi) pair with low <= lo <= hi (<= high when given), or a DataError naming
    `owner`'s option `name`."""
    try:
        lo, hi = (float(v) for v in values)
    except (TypeError, ValueError):
        raise DataError(f"{owner} {name} must be [low, high], got {values!r}") from None
    if not low <= lo <= hi or (high is not None and hi > high):
        rule = f"{low} <= low <= high" + ("" if high is None else f" <= {high}")
        raise DataError(f"{owner} {name} must be [low, high] with {rule}, got {[lo, hi]}")
    return lo, hi
