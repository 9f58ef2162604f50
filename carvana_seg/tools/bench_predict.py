"""The benchmark's `predict` section: full-size images/s and peak memory of the real `predict` command
(decode, infer, upsample, threshold, run-length encode, write masks), with an untrained network saved
the way training saves one and the predict config composed the way the command composes it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from carvana_seg.config import compose
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.run_config import RunConfig
from carvana_seg.data.layout import find_samples
from carvana_seg.predict import predict
from carvana_seg.tools.bench_table import row

KAGGLE_TEST_IMAGES = 100_064


def save_checkpoint(module: pl.LightningModule, path: Path) -> None:
    """Write `module`'s checkpoint through Lightning, as training does (hyperparameters, weights and
    the module's own `on_save_checkpoint` entries), without training it."""
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path, weights_only=True)


def bench_predict(cfg: DictConfig, root: Path, device: torch.device, rows: list[dict]) -> None:
    model_cfg = cfg.models.get("unet", next(iter(cfg.models.values())))
    size = tuple(cfg.predict.input_size[device.type])
    module = SegmentationModule(
        net=OmegaConf.to_container(model_cfg, resolve=True),
        loss={"_target_": "carvana_seg.core.losses.BCEDiceLoss"},
        channels_last=True,
        run=RunConfig(image_size=size).to_dict(),
    )
    samples = find_samples(root)
    full = np.asarray(Image.open(samples[0].mask)).shape
    with tempfile.TemporaryDirectory() as tmp:
        # The data set's photos, repeated under new names up to `predict.images`: enough photos that
        # start-up (loading the model, starting the workers) does not count in the rate.
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for i in range(cfg.predict.images):
            sample = samples[i % len(samples)]
            (photos / f"{i:06d}_{sample.image.name}").symlink_to(sample.image.resolve())
        ckpt = Path(tmp) / "bench.ckpt"
        save_checkpoint(module, ckpt)
        for masks in ("none", "gif"):
            out = Path(tmp) / f"out-{masks}"
            predict_cfg = compose(
                "predict",
                [
                    f"ckpt_path='{ckpt}'",  # quoted: a temporary folder's path may hold spaces
                    f"input='{photos}'",
                    f"output='{out}'",
                    f"masks={masks}",
                    f"data.image_size=[{size[0]},{size[1]}]",
                    f"data.batch_size={cfg.predict.batch_size}",
                    f"data.num_workers={cfg.predict.num_workers}",
                    f"writer_threads={cfg.predict.writer_threads}",
                    f"device={device.type}",
                ],
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
                    note=f"100,064 test images: {KAGGLE_TEST_IMAGES / rate / 3600:.1f} h",
                )
            )
            shutil.rmtree(out)
