"""What a training size gives away at full size: the Kaggle dice of the best prediction a network at
that size could make, brought to full size the way evaluate and predict do (bilinear on the logits,
threshold at one half).

Two best predictions per size: the nearest-neighbour binary mask (what a network trained on binary
masks at best learns) and the area-averaged share of car per pixel (`data.soft_masks=true`).

    python -m carvana_seg.tools.ceiling data.root=/path/to/carvana 'sizes=[[160,240],[128,192]]'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core.metrics import per_image_scores
from carvana_seg.core.upsample import to_full_size
from carvana_seg.data import rle
from carvana_seg.data.decode import image_size, mask_coverage, read_mask, resize_mask
from carvana_seg.data.labelled import labelled_samples
from carvana_seg.errors import DataError, InputError, exit_on_input_error

log = logging.getLogger(__name__)


def full_size_dice(probability: np.ndarray, mask: np.ndarray) -> float:
    """Dice at the size of `mask` of a probability map at a smaller size (bilinear logits, then 0.5)."""
    logits = torch.logit(torch.from_numpy(probability.astype(np.float32)), eps=1e-4)[None, None]
    predicted = to_full_size(logits, mask.shape) > 0
    return float(per_image_scores(predicted, torch.from_numpy(mask)[None, None])["dice"])


def ceilings(mask: np.ndarray, size: Sequence[int]) -> dict[str, float]:
    """Full-size dice of the best binary and the best soft prediction at `size` for one full mask."""
    size = (int(size[0]), int(size[1]))
    return {
        "binary": full_size_dice(resize_mask(mask, size), mask),
        "soft": full_size_dice(mask_coverage(mask, size) / 255.0, mask),
    }


def ceiling(cfg: DictConfig) -> tuple[dict[str, dict[str, float]], int]:
    """Mean full-size dice of the best binary and soft predictions at each of `cfg.sizes` ("HxW"),
    and the number of masks they were averaged over."""
    if not OmegaConf.is_list(cfg.sizes) or not cfg.sizes:
        raise InputError(f"sizes must be a list of [height, width], e.g. [[160,240]], got {cfg.sizes!r}")
    sizes = [options.pixel_size(size, "each of sizes") for size in cfg.sizes]
    options.whole(cfg, "every")
    if cfg.data.root in (None, "", "???"):
        raise DataError("data.root is not set: pass data.root=/path/to/carvana (Kaggle's layout)")
    root = Path(cfg.data.root).expanduser().resolve()
    samples, rle_masks = labelled_samples(root, mask_source=cfg.data.mask_source, check_files=False)
    samples = samples[:: cfg.every]
    if not samples:
        raise DataError(f"no labelled photos in {root}")
    scores: dict[str, dict[str, list[float]]] = {f"{h}x{w}": {"binary": [], "soft": []} for h, w in sizes}
    for sample in tqdm(samples, desc="masks", unit="mask"):
        if rle_masks is not None:
            mask = rle.decode(rle_masks[sample.name], image_size(sample.image))
        else:
            mask = read_mask(sample.mask)
        for (h, w), row in zip(sizes, scores.values(), strict=True):
            for kind, dice in ceilings(mask, (h, w)).items():
                row[kind].append(dice)
    means = {size: {kind: float(np.mean(v)) for kind, v in row.items()} for size, row in scores.items()}
    return means, len(samples)


def format_table(table: dict[str, dict[str, float]], masks: int) -> str:
    lines = [
        f"best possible full-size dice ({masks} masks)",
        "| training size | binary (nearest) mask | soft (area) mask |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {size} | {row['binary']:.4f} | {row['soft']:.4f} |" for size, row in table.items()]
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict[str, dict[str, float]]:
    table, masks = ceiling(cfg)
    print(format_table(table, masks))
    return table


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="ceiling")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(run, cfg)


if __name__ == "__main__":
    main()
