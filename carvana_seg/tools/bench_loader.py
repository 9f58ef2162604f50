"""The benchmark's `loader` section: images/s of the public Carvana U-Net's per-item data path
(reproduced here: PIL decode of the full photo and mask, PIL resize, a palette lookup per mask), of
ours without and with the decoded cache, our photo reader at full size against OpenCV's decode, and the
start-up time of a data set of Kaggle's size."""

from __future__ import annotations

import csv
import functools
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image

from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.dataset import CarvanaDataset, train_augmentation
from carvana_seg.data.decode import read_image
from carvana_seg.data.layout import MASK_CSV, find_samples
from carvana_seg.data.sample import Sample
from carvana_seg.tools.bench_table import median_rate, row


def public_pipeline_item(
    sample: Sample, scale: float, mask_values: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-item path of the public PyTorch U-Net's Carvana dataset, as that code does it: decode
    the full photo and mask with PIL, resize each with PIL (bicubic / nearest) to `scale`, map mask
    values to class indices one value at a time, scale the photo to 0..1."""
    photo, mask = Image.open(sample.image), Image.open(sample.mask)
    width, height = photo.size
    new_size = (int(scale * width), int(scale * height))
    image = np.asarray(photo.resize(new_size, resample=Image.Resampling.BICUBIC)).transpose(2, 0, 1) / 255.0
    mask_pixels = np.asarray(mask.resize(new_size, resample=Image.Resampling.NEAREST))
    classes = np.zeros(mask_pixels.shape, dtype=np.int64)
    for index, value in enumerate(mask_values):
        classes[mask_pixels == value] = index
    return torch.as_tensor(image.copy()).float().contiguous(), torch.as_tensor(
        classes.copy()
    ).long().contiguous()


def public_pipeline_startup(samples: list[Sample]) -> tuple[float, list[int]]:
    """Seconds the public dataset's constructor spends finding the mask values (it decodes every mask)."""
    started = time.perf_counter()
    values = sorted(set().union(*(np.unique(np.asarray(Image.open(s.mask))).tolist() for s in samples)))
    return time.perf_counter() - started, values


def startup_farm(
    samples: list[Sample], count: int, folder: Path, rle_masks: Mapping[str, str] | None = None
) -> Path:
    """A Kaggle-layout folder of `count` photo/mask pairs, made of symbolic links to `samples`, with
    train_masks.csv beside them when `rle_masks` (the samples' run-length masks by photo name) is given."""
    (folder / "train").mkdir(parents=True)
    (folder / "train_masks").mkdir()
    names = []
    for i in range(count):
        source = samples[i % len(samples)]
        name = f"{i // 16:012x}_{i % 16 + 1:02d}"
        names.append((f"{name}.jpg", source.name))
        (folder / "train" / f"{name}.jpg").symlink_to(source.image.resolve())
        (folder / "train_masks" / f"{name}_mask.gif").symlink_to(source.mask.resolve())
    if rle_masks is not None:
        with (folder / MASK_CSV).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["img", "rle_mask"])
            writer.writerows((name, rle_masks[source]) for name, source in names)
    return folder


def _opencv_rgb(path: Path) -> np.ndarray:
    """A photo as the reader decoded it before 864a7b1: OpenCV, then BGR to RGB."""
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def bench_loader(cfg: DictConfig, root: Path, cache_dir: Path, rows: list[dict]) -> None:
    samples = [s for s in find_samples(root) if s.mask is not None]
    size = tuple(cfg.loader.size)
    full_h, full_w = np.asarray(Image.open(samples[0].mask)).shape
    scale = size[0] / full_h
    items = min(cfg.loader.count, len(samples))

    seconds, values = public_pipeline_startup(samples)
    rows.append(
        row("loader", "public U-Net: start-up (decodes every mask)", f"{len(samples)} files", seconds=seconds)
    )

    def run(get: Callable[[int], Any]) -> int:
        for i in range(items):
            get(i % len(samples))
        return items

    def public(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return public_pipeline_item(samples[i], scale, values)

    public(0)
    rate = median_rate(lambda: run(public), cfg.repeats)
    rows.append(
        row(
            "loader",
            "public U-Net: per item (PIL decode + resize)",
            f"{int(scale * full_h)}x{int(scale * full_w)}, 1 process",
            rate=rate,
        )
    )
    baseline = rate

    augmentation = train_augmentation(0.5, seed=0)
    sources = [("files", None)]
    if (root / MASK_CSV).is_file():  # Kaggle's run-length masks: what data.mask_source=auto then reads
        sources.append(("auto", rle.read_csv(root / MASK_CSV)))
    for source, rle_masks in sources:
        plain = CarvanaDataset(samples, size, augmentation, rle_masks)
        plain[0]
        rate = median_rate(functools.partial(run, plain.__getitem__), cfg.repeats)
        masks = "GIF masks" if rle_masks is None else "masks from train_masks.csv"
        rows.append(
            row(
                "loader",
                f"ours, uncached, {masks} (data.mask_source={source})",
                f"{size[0]}x{size[1]}, 1 process",
                rate=rate,
                note=f"{rate / baseline:.1f}x the public path",
            )
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as fresh:  # the build is part of what is measured
        module = CarvanaDataModule(
            root, image_size=size, num_workers=0, cache=True, cache_dir=fresh, hflip_p=0.5
        )
        started = time.perf_counter()
        module.setup("fit")
        build = time.perf_counter() - started
        cached = CarvanaDataset(samples, size, augmentation, cache=module.train_set.cache)
        cached[0]
        rate = median_rate(lambda: run(cached.__getitem__), cfg.repeats)
    rows.append(
        row(
            "loader",
            "ours, cached (memory-mapped uint8, flip on the fly)",
            f"{size[0]}x{size[1]}, 1 process",
            rate=rate,
            note=f"{rate / baseline:.0f}x; cache built in {build:.1f} s",
        )
    )

    # The photo reader at full size (evaluate, predict's overlays) against the OpenCV decode it replaced
    # in 864a7b1 (same libjpeg-turbo; simplejpeg's strict mode names a damaged JPEG): same pixels?
    photos = [samples[i % len(samples)].image for i in range(items)]
    before = median_rate(lambda: run(lambda i: _opencv_rgb(photos[i % items])), cfg.repeats)
    ours = median_rate(lambda: run(lambda i: read_image(photos[i % items])), cfg.repeats)
    same = all(np.array_equal(_opencv_rgb(path), read_image(path)) for path in photos)
    rows.append(
        row(
            "loader",
            "photo at full size: OpenCV decode + BGR-to-RGB (before 864a7b1)",
            "1 process",
            rate=before,
        )
    )
    rows.append(
        row(
            "loader",
            "photo at full size: ours (read_image, simplejpeg strict)",
            "1 process",
            rate=ours,
            note=f"{ours / before:.2f}x; pixels {'identical' if same else 'DIFFER'}",
        )
    )

    # The first start-up decodes every photo (a JPEG at 1/8 scale) and the mask files training will
    # read: with train_masks.csv beside them (Kaggle's layout, data.mask_source=auto) the GIFs are not.
    startups = [("files", "first start-up, GIF masks: list + decode every photo and mask")]
    if len(sources) > 1:
        startups.append(("auto", "first start-up, train_masks.csv: list + decode every photo, check rows"))
    startups.append(("files", "later start-ups: list + stat (checked before)"))
    with tempfile.TemporaryDirectory() as tmp:
        farm = startup_farm(samples, cfg.loader.startup_files, Path(tmp) / "farm", sources[-1][1])
        for source, label in startups:
            module = CarvanaDataModule(
                farm, image_size=size, num_workers=0, cache_dir=Path(tmp) / "cache", mask_source=source
            )
            started = time.perf_counter()
            module.setup("fit")
            rows.append(
                row(
                    "loader",
                    f"ours, {label}",
                    f"{cfg.loader.startup_files} files",
                    seconds=time.perf_counter() - started,
                )
            )
