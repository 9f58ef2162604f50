"""Score a checkpoint at full resolution and show its worst errors:
`python -m carvana_seg.evaluate ckpt_path=RUN/checkpoints/best.ckpt`.

By default the data is the run's own and the images are its validation cars (the same by-car split);
`data.root=DIR` scores any folder with masks instead (all of its images). Writes per_image.csv,
summary.json and worst/*.png into the evaluation's directory, and the worst images to TensorBoard.
`stress=[zoom_out,dark_band,warm]` also scores the same photos under those studio shifts
(`inference.stress`), the same way: stress.csv and the summary's `stress` block.
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core.edge_band import thresholded
from carvana_seg.core.metrics import SCORES, per_image_scores
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.postprocess import check_steps, postprocess
from carvana_seg.core.precision import check_precision
from carvana_seg.core.run_config import RunConfig
from carvana_seg.core.upsample import logit_threshold, to_full_size
from carvana_seg.data.cache import usable_cache_dir
from carvana_seg.data.datamodule import resolve_num_workers
from carvana_seg.data.decode import read_image
from carvana_seg.data.labelled import labelled_samples
from carvana_seg.data.photos import PhotoDataset, batches_by_size, photo_loader
from carvana_seg.data.sample import Sample
from carvana_seg.durable import atomic_file, atomic_write
from carvana_seg.errors import DataError, InputError, exit_on_input_error, shown
from carvana_seg.inference.error_panel import error_panel
from carvana_seg.inference.forward import autocast, pick_device
from carvana_seg.inference.stress import StressedPhotos, check_names, describe

log = logging.getLogger(__name__)


def _samples(cfg: DictConfig, run: RunConfig | None) -> tuple[list[Sample], dict[str, str] | None, str, str]:
    """The labelled samples to score, their CSV masks (if used), the data folder and the split."""
    data = cfg.data
    if data.root is None and (run is None or run.data_root is None):
        raise InputError(f"{cfg.ckpt_path} names no data folder: pass data.root=DIR (Kaggle's layout)")
    root = Path(data.root or run.data_root).expanduser().resolve()
    own_data = run is not None and run.data_root is not None and root == Path(run.data_root)
    split = cfg.split if cfg.split != "auto" else ("val" if own_data else "all")
    if split not in ("val", "all"):
        raise InputError(f"split must be val, all or auto, got {cfg.split!r}")
    if split == "val" and not own_data:
        raise InputError(
            f"split=val needs the run's own data ({run.data_root if run else 'unknown'}), not {root}"
        )
    samples, rle_masks = labelled_samples(
        root,
        data.image_dir or (run.image_dir if run else None),
        data.mask_source or (run.mask_source if run else "auto"),
        check_files=True,
        cache_dir=usable_cache_dir(Path(cfg.paths.cache_dir).expanduser().resolve()),
    )
    if split == "val":
        val_cars = set(run.val_cars)
        missing = sorted(val_cars - {s.car_id for s in samples})
        if missing:
            raise InputError(
                f"{root} no longer holds {len(missing)} of the run's {len(val_cars)} validation cars "
                f"({shown(missing)}): restore them, or score every photo there with split=all"
            )
        samples = [s for s in samples if s.car_id in val_cars]
    return samples, rle_masks, str(root), split


def _summary(values: dict[str, list[float]]) -> dict[str, float]:
    summary = {name: float(np.mean(values[name])) for name in SCORES}
    summary.update(dice_median=float(np.median(values["dice"])), dice_min=float(np.min(values["dice"])))
    return summary


def _scored(
    module: SegmentationModule,
    loader: DataLoader,
    device: torch.device,
    cfg: DictConfig,
    threshold: float,
    thresholds: list[float],
    desc: str,
) -> Iterator[dict[str, Any]]:
    """Each image of `loader` scored: the net at the input size, its logits brought to the photo's full
    size (`cfg.upsample`) and thresholded, against the full-size mask; also at the input size. Yields
    the item's `index`, its `full` and `small` scores, full-size `dice_at` each of `thresholds`, the
    false positive and negative counts and the full-size `pred` and `target` (bool tensors)."""
    for batch in tqdm(loader, desc=desc, unit="batch", dynamic_ncols=True):
        bad = [error for error in batch["error"] if error]
        if bad:
            raise DataError("cannot evaluate unreadable files:\n  " + "\n  ".join(bad))
        images = batch["image"].to(device, non_blocking=True)
        with autocast(device, cfg.precision):
            logits = module.predict_logits(images, cfg.tta_hflip, batch["name"])
        targets_small = torch.stack(batch["mask_small"]).to(device)[:, None].bool()
        scores_small = per_image_scores(logits > logit_threshold(threshold), targets_small)
        for full_size, positions in batches_by_size(batch["full_size"]):
            target = torch.stack([batch["mask"][p] for p in positions]).to(device)[:, None].bool()
            cuts = [logit_threshold(t) for t in thresholds]
            if cfg.upsample == "bilinear":  # predict's path (the edge band on a CPU)
                found = thresholded(logits[positions], full_size, cuts, cfg.edge_band)
            else:
                big = to_full_size(logits[positions], full_size, cfg.upsample)
                found = [big > cut for cut in cuts]
            masks = dict(zip(thresholds, found, strict=True))
            if cfg.postprocess:
                masks = {t: _postprocessed(m, cfg.postprocess) for t, m in masks.items()}
            per_threshold = {t: per_image_scores(mask, target) for t, mask in masks.items()}
            pred = masks[threshold]
            false_pos = (pred & ~target).flatten(1).sum(1)
            false_neg = (~pred & target).flatten(1).sum(1)
            scores = per_threshold[threshold]
            for row, p in enumerate(positions):
                yield {
                    "index": batch["index"][p],
                    "full": {name: scores[name][row].item() for name in SCORES},
                    "small": {name: scores_small[name][p].item() for name in SCORES},
                    "dice_at": {t: per_threshold[t]["dice"][row].item() for t in thresholds},
                    "false_pos": int(false_pos[row]),
                    "false_neg": int(false_neg[row]),
                    "pred": pred[row, 0],
                    "target": target[row, 0],
                }


def _postprocessed(masks: torch.Tensor, steps: list[str]) -> torch.Tensor:
    """Bool masks (B, 1, H, W) through `core.postprocess` steps, one photo at a time, on their device."""
    arrays = masks.cpu().view(torch.uint8).numpy()
    done = np.stack([postprocess(arrays[row, 0], steps) for row in range(arrays.shape[0])])
    return torch.from_numpy(done.view(bool))[:, None].to(masks.device)


def check_options(cfg: DictConfig) -> list[str]:
    """Every option that can be checked before the checkpoint is loaded; the stress transforms' names."""
    if cfg.upsample not in ("bilinear", "nearest"):
        raise InputError(f"upsample must be bilinear or nearest, got {cfg.upsample!r}")
    check_steps(cfg.postprocess)
    for key in ("edge_band", "tta_hflip"):
        options.flag(cfg, key)
    if cfg.threshold is not None:
        options.probability(cfg.threshold, "threshold")
    if not OmegaConf.is_list(cfg.thresholds):
        raise InputError(f"thresholds must be a list, e.g. [0.4,0.5,0.6], got {cfg.thresholds!r}")
    for value in cfg.thresholds:
        options.probability(value, "each of thresholds")
    options.whole(cfg, "data.batch_size")
    options.whole(cfg, "worst_k", minimum=0)
    options.image_size(cfg.data.image_size, "data.image_size")
    resolve_num_workers(cfg.data.num_workers)
    check_precision(cfg.precision, "precision")
    return check_names(cfg.get("stress") or [])


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score `cfg.ckpt_path` at full and at training size; write the CSV, the summary and the pictures;
    with `cfg.stress`, score the same photos under each studio shift too (stress.csv, `stress`)."""
    started = time.perf_counter()
    stress_names = check_options(cfg)
    output_dir = Path(cfg.paths.output_dir)
    device = pick_device(cfg.device)
    autocast(device, cfg.precision)  # a precision this device cannot run is named here, before any work
    module = SegmentationModule.load_from_checkpoint(cfg.ckpt_path).to(device)
    run = module.run_config
    samples, rle_masks, data_root, split = _samples(cfg, run)
    if cfg.data.image_size is None and run is None:
        raise InputError(f"{cfg.ckpt_path} does not say its input size: pass data.image_size=[H,W]")
    size = tuple(cfg.data.image_size or run.image_size)
    threshold = cfg.threshold if cfg.threshold is not None else module.hparams.threshold
    thresholds = sorted({float(threshold), *(float(t) for t in cfg.thresholds)})

    dataset = PhotoDataset([s.image for s in samples], size, [s.mask for s in samples], rle_masks)
    workers = resolve_num_workers(cfg.data.num_workers)
    loader = photo_loader(dataset, cfg.data.batch_size, workers, pin_memory=device.type == "cuda")
    log.info(
        "evaluating %s on %d images of %s (%s), input %dx%d",
        cfg.ckpt_path,
        len(dataset),
        data_root,
        split,
        *size,
    )

    output_dir.mkdir(parents=True, exist_ok=True)
    full: dict[str, list[float]] = {name: [] for name in SCORES}
    small: dict[str, list[float]] = {name: [] for name in SCORES}
    by_threshold: dict[float, list[float]] = {t: [] for t in thresholds}
    worst: list[tuple[float, int, dict[str, Any]]] = []  # a heap of the K lowest dice, keyed by -dice
    unstressed: dict[int, float] = {}  # full-size dice by sample index, for the stress drops
    with atomic_file(output_dir / "per_image.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        extra = [f"dice@{t:g}" for t in thresholds if t != threshold]
        writer.writerow(
            ["img", "car_id", "view", *SCORES, "false_pos", "false_neg", "dice_train_size", *extra]
        )
        for r in _scored(module, loader, device, cfg, threshold, thresholds, "evaluate"):
            sample = samples[r["index"]]
            for name in SCORES:
                full[name].append(r["full"][name])
                small[name].append(r["small"][name])
            for t in thresholds:
                by_threshold[t].append(r["dice_at"][t])
            dice = r["full"]["dice"]
            unstressed[r["index"]] = dice
            writer.writerow(
                [
                    sample.name,
                    sample.car_id,
                    sample.view,
                    *(f"{r['full'][name]:.6f}" for name in SCORES),
                    r["false_pos"],
                    r["false_neg"],
                    f"{r['small']['dice']:.6f}",
                    *(f"{r['dice_at'][t]:.6f}" for t in thresholds if t != threshold),
                ]
            )
            if cfg.worst_k > 0 and (len(worst) < cfg.worst_k or -dice > worst[0][0]):
                entry = {
                    "sample": sample,
                    "dice": dice,
                    "pred": r["pred"].cpu().numpy(),
                    "target": r["target"].cpu().numpy(),
                }
                item = (-dice, len(full["dice"]), entry)
                heapq.heappush(worst, item) if len(worst) < cfg.worst_k else heapq.heappushpop(worst, item)

    if not full["dice"]:
        raise DataError(f"no images to evaluate in {data_root}")
    ranked = [entry for _, _, entry in sorted(worst, key=lambda item: -item[0])]
    summary = {
        "ckpt_path": str(Path(cfg.ckpt_path).resolve()),
        "data_root": data_root,
        "split": split,
        "images": len(full["dice"]),
        "input_size": list(size),
        "threshold": threshold,
        "tta_hflip": bool(cfg.tta_hflip),
        "upsample": cfg.upsample,
        "postprocess": list(cfg.postprocess),
        "full_size": _summary(full),
        "train_size": _summary(small),
        "dice_by_threshold": {f"{t:g}": float(np.mean(v)) for t, v in by_threshold.items()},
        "worst": [{"img": e["sample"].name, "dice": e["dice"]} for e in ranked],
    }
    if stress_names:
        stressed = StressedPhotos(dataset, stress_names)
        loader = photo_loader(stressed, cfg.data.batch_size, workers, pin_memory=device.type == "cuda")
        summary["stress"] = _stress(module, loader, stressed, samples, unstressed, device, cfg, threshold)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    _render_worst(ranked, output_dir)
    atomic_write(output_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    _print_summary(summary, output_dir)
    return summary


def _stress(
    module: SegmentationModule,
    loader: DataLoader,
    stressed: StressedPhotos,
    samples: list[Sample],
    unstressed: dict[int, float],
    device: torch.device,
    cfg: DictConfig,
    threshold: float,
) -> dict[str, Any]:
    """Score every photo under each transform of `stressed`; write stress.csv; the `stress` block."""
    started = time.perf_counter()
    dice: dict[str, dict[int, float]] = {name: {} for name in stressed.names}
    with atomic_file(Path(cfg.paths.output_dir) / "stress.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["img", "car_id", "view", "transform", *SCORES, "false_pos", "false_neg", "dice_unstressed"]
        )
        for r in _scored(module, loader, device, cfg, threshold, [threshold], "stress"):
            index, name = stressed.locate(r["index"])
            sample, dice[name][index] = samples[index], r["full"]["dice"]
            writer.writerow(
                [
                    sample.name,
                    sample.car_id,
                    sample.view,
                    name,
                    *(f"{r['full'][score]:.6f}" for score in SCORES),
                    r["false_pos"],
                    r["false_neg"],
                    f"{unstressed[index]:.6f}",
                ]
            )
    transforms = {}
    for name, by_index in dice.items():
        values = np.array([by_index[i] for i in sorted(by_index)])
        drops = np.array([unstressed[i] for i in sorted(by_index)]) - values
        transforms[name] = {
            **describe(name),
            "dice": float(values.mean()),
            "dice_median": float(np.median(values)),
            "dice_min": float(values.min()),
            "drop": float(drops.mean()),
            "drop_max": float(drops.max()),
            "drop_max_img": samples[sorted(by_index)[int(drops.argmax())]].name,
        }
    return {
        "transforms": transforms,
        "score": float(np.mean([t["dice"] for t in transforms.values()])),
        "drop": float(np.mean([t["drop"] for t in transforms.values()])),
        "images": len(unstressed),
        "seconds": round(time.perf_counter() - started, 2),
    }


def _render_worst(ranked: list[dict[str, Any]], output_dir: Path) -> None:
    folder = output_dir / "worst"
    written = _draw_worst(ranked, folder, output_dir / "tensorboard") if ranked else set()
    # An earlier evaluation into this folder ranked other photos: its pictures would pass for this one's.
    if folder.is_dir():
        for stale in folder.iterdir():
            if re.fullmatch(r"\d{2,}_.+\.png", stale.name) and stale.name not in written:
                stale.unlink()


def _draw_worst(ranked: list[dict[str, Any]], folder: Path, tensorboard_dir: Path) -> set[str]:
    """Each ranked photo's error picture into `folder` and TensorBoard; the names of the files written."""
    folder.mkdir(exist_ok=True)
    written = set()
    with SummaryWriter(str(tensorboard_dir)) as tensorboard:
        for rank, entry in enumerate(ranked, start=1):
            sample = entry["sample"]
            photo = read_image(sample.image)
            title = f"#{rank}  {sample.name}  dice {entry['dice']:.4f}"
            panel = error_panel(photo, entry["pred"], entry["target"], title)
            path = folder / f"{rank:02d}_{sample.image.stem}.png"
            ok, png = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError(f"PNG encoding of the picture of {sample.name} failed")
            atomic_write(path, png.tobytes())
            written.add(path.name)
            tensorboard.add_image(f"worst/{rank:02d}", panel, global_step=0, dataformats="HWC")
    return written


def _print_summary(summary: dict[str, Any], output_dir: Path) -> None:
    lines = [
        f"{summary['images']} images of {summary['data_root']} ({summary['split']}), "
        f"threshold {summary['threshold']:g}"
        + (", flip TTA" if summary["tta_hflip"] else "")
        + f", {summary['upsample']} up-sampling",
        f"{'':<22}{'dice':>9}{'mean-cls':>10}{'accuracy':>10}{'iou':>9}",
    ]
    for label, key in (("full size", "full_size"), (f"input {summary['input_size']}", "train_size")):
        s = summary[key]
        lines.append(
            f"{label:<22}{s['dice']:9.4f}{s['dice_mean_classes']:10.4f}{s['accuracy']:10.4f}{s['iou']:9.4f}"
        )
    lines.append(
        f"full-size dice: median {summary['full_size']['dice_median']:.4f}, "
        f"worst {summary['full_size']['dice_min']:.4f}"
    )
    if len(summary["dice_by_threshold"]) > 1:
        lines.append(
            "dice by threshold: "
            + ", ".join(f"{t}: {d:.4f}" for t, d in summary["dice_by_threshold"].items())
        )
    stress = summary.get("stress")
    if stress:
        lines.append(
            f"stress ({len(stress['transforms'])} studio shifts): score {stress['score']:.4f}, "
            f"drop {stress['drop']:+.4f} against the unstressed photos"
        )
        lines.append(f"  {'transform':<12}{'dice':>9}{'median':>9}{'min':>9}{'drop':>9}{'max drop':>10}")
        for name, t in stress["transforms"].items():
            lines.append(
                f"  {name:<12}{t['dice']:9.4f}{t['dice_median']:9.4f}{t['dice_min']:9.4f}"
                f"{t['drop']:+9.4f}{t['drop_max']:+10.4f}  {t['drop_max_img']}"
            )
    lines.append(f"written to {output_dir}")
    print("\n".join(lines))


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="evaluate")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(evaluate, cfg)


if __name__ == "__main__":
    main()
