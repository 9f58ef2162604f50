"""`python -m carvana_seg.bench` (`make bench`): the speed of every stage, printed as one table.

- loader: images/s of the public Carvana U-Net's per-item data path (reproduced below: PIL decode of
  the full photo and mask, PIL resize, a palette lookup per mask), of ours without and with the
  decoded cache, and the start-up time of a data set of Kaggle's size (5,088 files).
- train: images/s of each network at a few sizes and precisions (and torch.compile on CUDA), and one
  epoch through Lightning against the same epoch through a plain PyTorch loop.
- predict: full-size images/s of the real `predict` command (decode, infer, upsample, threshold,
  run-length encode, write masks) and peak memory.

Runs on the built-in data by default (generated at full size, 1280x1918) and on real data with
`data.root=DIR`. Each figure is the median of `repeats` timings after a warm-up.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.dataset import CarvanaDataset, train_augmentation
from carvana_seg.data.layout import MASK_CSV, Sample, find_samples
from carvana_seg.inference import autocast
from carvana_seg.losses import BCEDiceLoss
from carvana_seg.module import SegmentationModule
from carvana_seg.runtime import cpu_has_fast_bf16

log = logging.getLogger(__name__)


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Items per second of `run` (which returns how many items it handled): median of `repeats`."""
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        count = run()
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


# ---------------------------------------------------------------------------------------------- loader


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


def startup_farm(samples: list[Sample], count: int, folder: Path) -> Path:
    """A Kaggle-layout folder of `count` photo/mask pairs, made of symbolic links to `samples`."""
    (folder / "train").mkdir(parents=True)
    (folder / "train_masks").mkdir()
    for i in range(count):
        source = samples[i % len(samples)]
        name = f"{i // 16:012x}_{i % 16 + 1:02d}"
        (folder / "train" / f"{name}.jpg").symlink_to(source.image.resolve())
        (folder / "train_masks" / f"{name}_mask.gif").symlink_to(source.mask.resolve())
    return folder


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

    with tempfile.TemporaryDirectory() as tmp:
        farm = startup_farm(samples, cfg.loader.startup_files, Path(tmp) / "farm")
        for label in (
            "first start-up: list + read every header",
            "later start-ups: list + stat (checked before)",
        ):
            module = CarvanaDataModule(farm, image_size=size, num_workers=0, cache_dir=Path(tmp) / "cache")
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


# ----------------------------------------------------------------------------------------------- train


def train_rate(
    net: torch.nn.Module,
    size: tuple[int, int],
    precision: str,
    compile_net: bool,
    cfg: DictConfig,
    device: torch.device,
) -> tuple[float, float | None]:
    """Images/s of forward + backward + Adam step on random uint8 batches; and peak GPU memory (GiB)."""
    module = SegmentationModule(
        net,
        BCEDiceLoss(),
        functools.partial(torch.optim.Adam, lr=1e-3),
        channels_last=True,
        compile=compile_net,
    ).to(device)
    optimizer = module.optimizer_factory(params=module.parameters())
    images = torch.randint(0, 256, (cfg.train.batch_size, 3, *size), dtype=torch.uint8, device=device)
    masks = (torch.rand(cfg.train.batch_size, 1, *size, device=device) > 0.8).float()
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "16-mixed")

    def step() -> None:
        with autocast(device, precision):
            loss = module.loss(module(images), masks)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def run() -> int:
        for _ in range(cfg.train.steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return cfg.train.steps * cfg.train.batch_size

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(cfg.train.warmup_steps + (10 if compile_net else 0)):
        step()
    rate = median_rate(run, cfg.repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return rate, peak


class _Batches(Dataset):
    def __init__(self, count: int, size: tuple[int, int]) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (count, 3, *size), dtype=torch.uint8, generator=generator)
        self.masks = (torch.rand(count, 1, *size, generator=generator) > 0.8).to(torch.uint8)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"image": self.images[index], "mask": self.masks[index]}


class _EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._started)


def lightning_overhead(
    net_factory: Callable[[], torch.nn.Module],
    size: tuple[int, int],
    precision: str,
    cfg: DictConfig,
    device: torch.device,
) -> tuple[float, float]:
    """Seconds per epoch (after a warm-up epoch) through Lightning and through a plain loop, same data."""
    # Pinned on CUDA as in training (data.pin_memory): a copy from pageable memory waits for the GPU's
    # queue to drain, which would put every millisecond of per-step Python work on the critical path.
    loader = DataLoader(
        _Batches(cfg.train.steps * cfg.train.batch_size, size),
        batch_size=cfg.train.batch_size,
        pin_memory=device.type == "cuda",
    )
    epochs = 1 + cfg.repeats

    torch.manual_seed(0)
    module = SegmentationModule(
        net_factory(), BCEDiceLoss(), functools.partial(torch.optim.Adam, lr=1e-3), channels_last=True
    )
    timer = _EpochTimer()
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=1,
        precision=precision,
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)

    torch.manual_seed(0)
    module = (
        SegmentationModule(
            net_factory(), BCEDiceLoss(), functools.partial(torch.optim.Adam, lr=1e-3), channels_last=True
        )
        .to(device)
        .train()
    )
    optimizer = module.optimizer_factory(params=module.parameters())
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "16-mixed")
    plain = []
    for _ in range(epochs):
        started = time.perf_counter()
        for batch in loader:
            images = batch["image"].to(device, non_blocking=True)
            masks = batch["mask"].to(device, non_blocking=True).float()
            with autocast(device, precision):
                logits = module(images)
                loss = module.loss(logits, masks)
            module.train_scores.update(module.predict_mask(logits.detach()), masks)  # what training_step does
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        module.train_scores.reset()
        if device.type == "cuda":
            torch.cuda.synchronize()
        plain.append(time.perf_counter() - started)
    return statistics.median(timer.seconds[1:]), statistics.median(plain[1:])


def bench_train(cfg: DictConfig, device: torch.device, rows: list[dict]) -> None:
    sizes = [tuple(s) for s in cfg.train.sizes[device.type]]
    variants = [(str(precision), bool(compiled)) for precision, compiled in cfg.train.variants[device.type]]
    for name, model_cfg in cfg.models.items():
        for size in sizes:
            for precision, compile_net in variants:
                setting = f"{size[0]}x{size[1]}, batch {cfg.train.batch_size}, {precision}"
                if device.type == "cpu" and precision.startswith("bf16") and not cpu_has_fast_bf16():
                    # Emulated bf16 runs ~9x slower than fp32: minutes per row for a known answer.
                    rows.append(row("train", name, setting, note="skipped: this CPU has no native bf16"))
                    continue
                rate, peak = train_rate(instantiate(model_cfg), size, precision, compile_net, cfg, device)
                rows.append(
                    row(
                        "train",
                        name,
                        setting + (", compiled" if compile_net else ""),
                        rate=rate,
                        peak_gib=peak,
                    )
                )
    name = "unet" if "unet" in cfg.models else next(iter(cfg.models))
    model_cfg, size = cfg.models[name], sizes[0]
    precision = "bf16-mixed" if device.type == "cuda" else "32-true"
    lightning, plain = lightning_overhead(lambda: instantiate(model_cfg), size, precision, cfg, device)
    rows.append(
        row(
            "train",
            f"{name}: one epoch, Lightning vs plain PyTorch loop",
            f"{size[0]}x{size[1]}, {cfg.train.steps} steps, {precision}",
            seconds=lightning,
            note=f"plain loop {plain:.2f} s: Lightning {100 * (lightning / plain - 1):+.1f}%",
        )
    )


# --------------------------------------------------------------------------------------------- predict


def bench_predict(cfg: DictConfig, root: Path, device: torch.device, rows: list[dict]) -> None:
    from carvana_seg.predict import predict

    model_cfg = cfg.models.get("unet", next(iter(cfg.models.values())))
    size = list(cfg.predict.input_size[device.type])
    module = SegmentationModule(instantiate(model_cfg), BCEDiceLoss(), None, channels_last=True)
    config = {
        "model": OmegaConf.to_container(model_cfg),
        "loss": {"_target_": "carvana_seg.losses.BCEDiceLoss"},
        "module": {"threshold": 0.5, "channels_last": True},
        "data": {"image_size": size},
    }
    samples = find_samples(root)
    with tempfile.TemporaryDirectory() as tmp:
        # The data set's photos, repeated under new names up to `predict.images`: enough photos that
        # start-up (loading the model, starting the workers) does not count in the rate.
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i in range(cfg.predict.images):
            sample = samples[i % len(samples)]
            (photos / f"{i:06d}_{sample.image.name}").symlink_to(sample.image.resolve())
        ckpt = Path(tmp) / "bench.ckpt"
        torch.save({"state_dict": module.state_dict(), "carvana_seg": {"config": config}}, ckpt)
        full = np.asarray(Image.open(samples[0].mask)).shape
        for masks in ("none", "gif"):
            out = Path(tmp) / f"out-{masks}"
            predict_cfg = OmegaConf.create(
                {
                    "ckpt_path": str(ckpt),
                    "input": str(photos),
                    "output": str(out),
                    "masks": masks,
                    "submission": True,
                    "sample_submission": None,
                    "threshold": None,
                    "tta_hflip": False,
                    "image_size": size,
                    "batch_size": cfg.predict.batch_size,
                    "num_workers": cfg.predict.num_workers,
                    "writer_threads": cfg.predict.writer_threads,
                    "chunk_size": 256,
                    "on_error": "stop",
                    "device": device.type,
                    "precision": "auto",
                }
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            result = predict(predict_cfg)
            peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
            rate = result["images_per_second"]
            what = "submission.csv.gz" + (" + GIF masks" if masks == "gif" else "")
            rows.append(
                row(
                    "predict",
                    f"full size {full[0]}x{full[1]} -> {what}",
                    f"input {size[0]}x{size[1]}, batch {cfg.predict.batch_size}",
                    rate=rate,
                    peak_gib=peak,
                    note=f"100,064 test images: {100_064 / rate / 3600:.1f} h",
                )
            )
            shutil.rmtree(out)


# ---------------------------------------------------------------------------------------------- report


def row(
    section: str,
    what: str,
    setting: str,
    rate: float | None = None,
    seconds: float | None = None,
    peak_gib: float | None = None,
    note: str = "",
) -> dict[str, Any]:
    entry = {
        "section": section,
        "what": what,
        "setting": setting,
        "images_per_s": rate,
        "seconds": seconds,
        "peak_gpu_gib": peak_gib,
        "note": note,
    }
    log.info("%s", entry)
    return entry


class Rows(list):
    """The measured rows; each is also appended to `path` (JSON lines) as soon as it exists, so a
    benchmark that is stopped early still leaves what it measured."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def append(self, entry: dict[str, Any]) -> None:
        super().append(entry)
        if self.path is not None:
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"Machine: {machine}",
        "",
        "| stage | what | setting | images/s | seconds | peak GPU GiB | note |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in rows:
        rate = f"{r['images_per_s']:.1f}" if r["images_per_s"] is not None else ""
        seconds = f"{r['seconds']:.3f}" if r["seconds"] is not None else ""
        peak = f"{r['peak_gpu_gib']:.2f}" if r["peak_gpu_gib"] is not None else ""
        lines.append(
            f"| {r['section']} | {r['what']} | {r['setting']} | {rate} | {seconds} | {peak} | {r['note']} |"
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    lines += ["", f"Peak resident memory of the benchmark process: {peak_rss:.2f} GiB."]
    return "\n".join(lines)


def machine_name(device: torch.device) -> str:
    processor = platform.processor() or platform.machine()
    cpu = f"{os.cpu_count()} CPU cores ({processor}), torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} + {cpu}"
    return f"CPU only: {cpu}, {torch.get_num_threads()} torch threads"


def bench(cfg: DictConfig) -> list[dict]:
    device = torch.device("cuda" if torch.cuda.is_available() and cfg.device != "cpu" else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # the built-in set is generated on first use
    root = datamodule.root
    output = Path(cfg.output) if cfg.output else None
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.with_suffix(".jsonl").unlink(missing_ok=True)
    rows = Rows(output.with_suffix(".jsonl") if output is not None else None)
    if "loader" in cfg.sections:
        bench_loader(cfg, root, Path(cfg.paths.cache_dir), rows)
    if "train" in cfg.sections:
        bench_train(cfg, device, rows)
    if "predict" in cfg.sections:
        bench_predict(cfg, root, device, rows)
    table = markdown(rows, machine_name(device))
    print(table)
    if output is not None:
        output.write_text(table + "\n")
    return rows


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    bench(cfg)


if __name__ == "__main__":
    main()
