"""The benchmark's `train` section: images/s of each network at a few sizes and precisions (and
torch.compile on CUDA), and one epoch through Lightning against the same epoch through a plain
PyTorch loop."""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from carvana_seg.core.losses import BCEDiceLoss
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.precision import cpu_has_fast_bf16
from carvana_seg.inference.forward import autocast
from carvana_seg.tools.bench_table import median_rate, row


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
