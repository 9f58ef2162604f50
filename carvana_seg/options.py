"""Checks of the options the commands and tools share (evaluate, predict, export, the benchmark, the
cross-validation report): each refuses a bad value with an InputError that names the option, before
the command loads a checkpoint or reads a photo."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from carvana_seg.errors import InputError


def whole(cfg: DictConfig, key: str, minimum: int = 1) -> int:
    """The whole number at `key` (dotted), at least `minimum`."""
    return whole_number(OmegaConf.select(cfg, key), key, minimum)


def whole_number(value: Any, what: str, minimum: int = 1) -> int:
    """`value`, a whole number at least `minimum` (True is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be a whole number >= {minimum}, got {value!r}")
    return value


def flag(cfg: DictConfig, key: str) -> bool:
    """The true or false at `key` (dotted); "yes" or 1 are refused, not guessed."""
    return boolean(OmegaConf.select(cfg, key), key)


def boolean(value: Any, what: str) -> bool:
    """`value`, true or false: Hydra reads `no` or `off` as text, which Python would take as true."""
    if not isinstance(value, bool):
        raise InputError(f"{what} must be true or false, got {value!r}")
    return value


def probability(value: Any, what: str) -> float:
    """A threshold: strictly between 0 and 1 (at 0 or 1 every pixel would be car, or none)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise InputError(f"{what} must be a probability strictly between 0 and 1, got {value!r}")
    return float(value)


def image_size(value: Any, key: str) -> tuple[int, int] | None:
    """null (the checkpoint's own size), or [H, W] in whole pixels >= 1."""
    return None if value is None else pixel_size(value, key, "null or [H, W]")


def pixel_size(value: Any, key: str, wanted: str = "[H, W]") -> tuple[int, int]:
    """[H, W] in whole pixels >= 1 (160.5 is refused, not truncated)."""
    if (
        not (OmegaConf.is_list(value) or isinstance(value, list | tuple))
        or len(value) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in value)
    ):
        raise InputError(f"{key} must be {wanted} in whole pixels >= 1, got {value!r}")
    return int(value[0]), int(value[1])


def report_file(path: Path, named: str, beside: Sequence[str]) -> Path:
    """`path`, a report's markdown file whose companions are written beside it under the same name with
    the suffixes `beside` (.csv, .jsonl): a folder, or a name one of them would take, is refused."""
    if path.is_dir():
        raise InputError(f"{named} is a folder: give the report's file, e.g. {path / 'report.md'}")
    if path.suffix.lower() in beside:
        raise InputError(
            f"{named}: the markdown report's file (.md); its {path.suffix} companion is written beside it"
        )
    return path
