"""The benchmark's `predict` section: full-size images/s and peak memory of the real `predict` command
(decode, infer, upsample, threshold, run-length encode, write masks), the predict config composed the
way the command composes it, with `predict.ckpt_path` (a trained network: its logits have a car's
outline, as the edge band expects) or an untrained network saved the way training saves one.

Each output is timed through both ways to full size, side by side: `edge_band=false` interpolates every
pixel (the path before the edge band), `edge_band=true` only the outline; a parity row then says
whether their submissions (and mask files) are identical, photo for photo. Every row runs predict's
default flip TTA (the network on the photo and on its mirror image) but one, the submission through the
edge band with `tta_hflip=false`: what the second pass costs."""

from __future__ import annotations

import csv
import gzip
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
from carvana_seg.errors import InputError
from carvana_seg.export import export
from carvana_seg.predict import predict
from carvana_seg.tools.bench_table import PeakMemory, row

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
    size = tuple(cfg.predict.input_size[device.type])
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
        if cfg.predict.ckpt_path:
            ckpt, network = Path(cfg.predict.ckpt_path).expanduser().resolve(), "trained network"
        else:
            ckpt, network = Path(tmp) / "bench.ckpt", "untrained network"
            save_checkpoint(_untrained(cfg, size), ckpt)
        for masks in ("none", "gif"):
            outputs = {}
            for edge_band in (False, True):
                out = outputs[edge_band] = Path(tmp) / f"out-{masks}-{edge_band}"
                _bench_one(cfg, ckpt, photos, out, masks, edge_band, size, device, full, network, rows)
            rows.append(_parity(outputs[False], outputs[True], masks, network))
            for out in outputs.values():
                shutil.rmtree(out)
        # predict's default runs the network twice a photo (flip TTA): what it costs, beside the rows above.
        out = Path(tmp) / "out-no-tta"
        _bench_one(cfg, ckpt, photos, out, "none", True, size, device, full, network, rows, tta=False)
        if cfg.predict.onnx and device.type == "cpu":
            # The same network exported (carvana_seg.export) at the same input size and run by ONNX
            # Runtime: photos as stored, one at a time, the resizes inside its graph.
            model = Path(tmp) / "bench.onnx"
            options = [f"ckpt_path='{ckpt}'", f"output='{model}'", "verify=false"]
            try:
                export(compose("export", [*options, f"image_size=[{size[0]},{size[1]}]"]))
            except InputError as err:  # the optional export extra is missing
                rows.append(row("predict", "ONNX Runtime (exported file)", "", note=f"skipped: {err}"))
                return
            out = Path(tmp) / "out-onnx"
            _bench_one(cfg, model, photos, out, "none", None, size, device, full, network, rows)


def _untrained(cfg: DictConfig, size: tuple[int, ...]) -> SegmentationModule:
    model_cfg = cfg.models.get("unet", next(iter(cfg.models.values())))
    return SegmentationModule(
        net=OmegaConf.to_container(model_cfg, resolve=True),
        loss={"_target_": "carvana_seg.core.losses.BCEDiceLoss"},
        channels_last=True,
        run=RunConfig(image_size=size).to_dict(),
    )


def _bench_one(
    cfg: DictConfig,
    ckpt: Path,
    photos: Path,
    out: Path,
    masks: str,
    edge_band: bool | None,
    size: tuple[int, ...],
    device: torch.device,
    full: tuple[int, ...],
    network: str,
    rows: list[dict],
    tta: bool = True,
) -> None:
    # edge_band None: an exported ONNX file, whose input size, precision and flip TTA are fixed in it.
    options = [f"edge_band={str(edge_band).lower()}", f"data.image_size=[{size[0]},{size[1]}]"]
    options.append(f"tta_hflip={str(tta).lower()}")
    options.append(f"precision={cfg.predict.precision}")
    predict_cfg = compose(
        "predict",
        [
            f"ckpt_path='{ckpt}'",  # quoted: a temporary folder's path may hold spaces
            f"input='{photos}'",
            f"output='{out}'",
            f"masks={masks}",
            *(options if edge_band is not None else []),
            f"data.batch_size={cfg.predict.batch_size}",
            f"data.num_workers={cfg.predict.num_workers}",
            f"writer_threads={cfg.predict.writer_threads}",
            f"device={device.type}",
        ],
    )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakMemory() as memory:
        result = predict(predict_cfg)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    rate = result["images_per_second_running"] or result["images_per_second"]
    what = "submission.csv.gz" + (" + GIF masks" if masks == "gif" else "")
    batch = cfg.predict.batch_size if edge_band is not None else 1  # an exported graph takes one photo
    way = {None: "ONNX Runtime (exported file)", True: "edge band", False: "full interpolation"}[edge_band]
    way += "" if tta else ", without flip TTA (tta_hflip=false)"
    rows.append(
        row(
            "predict",
            f"full size {full[0]}x{full[1]} -> {what}, {way}",
            f"input {size[0]}x{size[1]}, batch {batch}, {network}",
            rate=rate,
            seconds=result["seconds"],
            peak_gib=peak,
            peak_rss_gib=memory.gib,
            note=f"after start-up; whole command {result['images_per_second']:.1f}/s; "
            f"100,064 test images: {KAGGLE_TEST_IMAGES / rate / 60:.0f} min",
        )
    )


def _parity(full: Path, band: Path, masks: str, network: str) -> dict:
    """A row saying whether the two ways wrote the same submission rows (and mask files). With an
    untrained network the band falls back to the full pass (its logits straddle the threshold
    everywhere), so only a trained one tests the band."""
    a, b = _rows(full / "submission.csv.gz"), _rows(band / "submission.csv.gz")
    differ = sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))
    if masks != "none":
        for mask in sorted((full / "masks").iterdir()):
            twin = band / "masks" / mask.name
            if not twin.exists() or twin.read_bytes() != mask.read_bytes():
                differ.append(mask.name)
    verdict = "identical" if not differ else f"DIFFER in {len(differ)}: {', '.join(differ[:5])}"
    return row(
        "predict",
        f"parity: edge band vs full interpolation ({masks} masks)",
        f"{len(a)} photos, {network}"
        + (" (the band falls back to the full pass)" if "untrained" in network else ""),
        note=verdict,
    )


def _rows(path: Path) -> dict[str, str]:
    with gzip.open(path, "rt", newline="") as handle:
        return {name: encoded for name, encoded in list(csv.reader(handle))[1:]}
