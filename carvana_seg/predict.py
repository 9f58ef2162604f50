"""Predict full-size masks for a folder of photos and a Kaggle submission:
`python -m carvana_seg.predict ckpt_path=RUN/checkpoints/best.ckpt input=DIR output=DIR`.

Built for Kaggle's 100,064 test photos: photos are decoded by DataLoader workers, the network runs in
batches (on the GPU when there is one), and thresholding's products (mask files, run-length rows) are
written by a small thread pool while the next batch is computed; memory does not grow with the number
of photos. Killed at any point, the same command continues where it stopped: rows are committed in
parts (each a complete gzip member, renamed into place atomically) and `submission.csv.gz` is the
concatenation of the parts, checked row by row against the expected list of images at the end.

Bad input stops the command (exit code 2, the message naming the option, file or row) before the
output folder is created: the options, the checkpoint, the photo list (a sample submission's
duplicates, two photos that would write one mask file) and every photo's header and end (a truncated
photo). The output folder is then held by this predict alone (`inference.submission.Output`) and
remembers its photo list, so a rerun on changed photos is refused. A network that returns NaN or inf
for a batch stops the run before a mask of that batch is written.

`ckpt_path` may also name a model exported to ONNX (`carvana_seg.export`): `inference.exported` runs it
with ONNX Runtime on photos decoded as stored, into the same writer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.postprocess import check_steps
from carvana_seg.core.precision import check_precision, resolve_precision
from carvana_seg.data.datamodule import resolve_num_workers
from carvana_seg.data.photos import PhotoDataset, photo_loader
from carvana_seg.errors import DataError, DivergedError, InputError, exit_on_input_error
from carvana_seg.inference.exported import ExportedModel
from carvana_seg.inference.forward import autocast, pick_device
from carvana_seg.inference.photo_list import check_headers, list_images
from carvana_seg.inference.submission import Output
from carvana_seg.inference.writer import MaskWriter

log = logging.getLogger(__name__)


def check_options(cfg: DictConfig) -> None:
    """Every option that can be checked without the checkpoint or the photos, before anything else."""
    if cfg.masks not in ("gif", "png", "none"):
        raise InputError(f"masks must be gif, png or none, got {cfg.masks!r}")
    if cfg.on_error not in ("stop", "skip"):
        raise InputError(f"on_error must be stop or skip, got {cfg.on_error!r}")
    if cfg.tta_hflip is not None:  # null: a checkpoint flips, an exported file runs as it was exported
        options.flag(cfg, "tta_hflip")
    for key in ("submission", "overlays", "edge_band"):
        options.flag(cfg, key)
    if cfg.masks == "none" and not cfg.submission:
        raise InputError("masks=none and submission=false: there would be nothing to write")
    if cfg.threshold is not None:
        options.probability(cfg.threshold, "threshold")
    for key in ("data.batch_size", "writer_threads", "chunk_size"):
        options.whole(cfg, key)
    resolve_num_workers(cfg.data.num_workers)
    options.image_size(cfg.data.image_size, "data.image_size")
    wait = cfg.lock_wait
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait >= 0:
        raise InputError(f"lock_wait must be a number of seconds >= 0, got {wait!r}")
    check_precision(cfg.precision, "precision")
    check_steps(cfg.postprocess)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every photo of `cfg.input` into `cfg.output`, resuming an interrupted run.

    Everything that can be wrong with the options, the checkpoint and the photos is checked before the
    output folder is created or claimed; the folder is then held by this predict alone until it ends.
    """
    started = time.perf_counter()
    check_options(cfg)
    input_text = (
        str(Path(cfg.input).expanduser().resolve())
        if not any(c in str(cfg.input) for c in "*?[")
        else str(cfg.input)
    )
    output_dir = Path(cfg.output).expanduser().resolve()
    sample = Path(cfg.sample_submission).expanduser().resolve() if cfg.sample_submission else None
    device = pick_device(cfg.device)
    autocast(device, cfg.precision)  # a precision this device cannot run is named here, before any work
    ckpt_path = Path(cfg.ckpt_path).expanduser().resolve()
    identity = _identity(ckpt_path)
    module, stored_threshold = _load(cfg, ckpt_path, device)
    # The file's content goes into the folder's manifest, so that a checkpoint replaced in place (training
    # went on) never finishes a submission its predecessor began; it must be the content just loaded.
    model_sha256 = _sha256(ckpt_path)
    if _identity(ckpt_path) != identity:
        raise InputError(f"ckpt_path {ckpt_path} was replaced while it was read (is a run still writing it?)")
    if cfg.threshold is None:
        threshold = options.probability(stored_threshold, f"the threshold stored in {ckpt_path}")
    else:
        threshold = float(cfg.threshold)
    module.predict_threshold = threshold
    module.postprocess = check_steps(cfg.postprocess)
    images = list_images(cfg.input, sample, cfg.masks, bool(cfg.overlays))
    exported = isinstance(module, ExportedModel)
    device = torch.device("cpu") if exported else device
    size = tuple(module.image_size if exported else cfg.data.image_size or module.run_config.image_size)
    output = Output(
        output_dir,
        {
            "ckpt_path": str(ckpt_path),
            "model_sha256": model_sha256,
            "input": input_text,
            "sample_submission": str(sample) if sample else None,
            "input_size": list(size),
            "threshold": threshold,
            "tta_hflip": bool(module.tta_hflip),
            # Only when used: a folder an earlier version started (no such key) still resumes.
            **({"postprocess": module.postprocess} if module.postprocess else {}),
            "masks": cfg.masks,
            "submission": bool(cfg.submission),
        },
        images,
    )
    output.check()  # a folder of another run is refused before the photos are read
    problems, output.sizes = check_headers(images)
    if problems and cfg.on_error == "stop":
        raise DataError(
            f"{len(problems)} unreadable photos in {cfg.input} "
            "(on_error=skip writes empty masks for them):\n  " + "\n  ".join(list(problems.values())[:20])
        )
    output.claim(wait=float(cfg.lock_wait))
    with output:
        try:
            result = _run(cfg, module, device, output, images, problems, None if exported else size)
        except DivergedError as err:
            raise DivergedError(f"{ckpt_path}: {err}") from err
    result["seconds"] = round(time.perf_counter() - started, 2)
    result["images_per_second"] = (
        round(result["predicted_now"] / result["seconds"], 2) if result["predicted_now"] else None
    )
    print(json.dumps(result, indent=2))
    return result


def _identity(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is replaced or rewritten (inode, size, modification time)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _load(cfg: DictConfig, path: Path, device: torch.device) -> tuple[pl.LightningModule, float]:
    """The model to predict with and its stored threshold: a checkpoint, or an exported ONNX file
    (`inference.exported`), whose size, precision and device are fixed in it."""
    if path.suffix.lower() != ".onnx":
        module = SegmentationModule.load_from_checkpoint(path).to(device)
        if cfg.data.image_size is None and module.run_config is None:
            raise InputError(f"{path} does not say its input size: pass data.image_size=[H,W]")
        module.tta_hflip = cfg.tta_hflip is None or bool(cfg.tta_hflip)
        module.edge_band = bool(cfg.edge_band)
        return module, module.hparams.threshold
    # ONNX Runtime runs the file on the CPU: device=auto takes the CPU, an explicit GPU is refused.
    fixed = {
        "data.image_size": cfg.data.image_size,
        "device": str(cfg.device).startswith("cuda"),
        "precision": str(cfg.precision) not in ("auto", "32", "32-true"),
    }
    for option, value in fixed.items():
        if value:
            raise InputError(
                f"{option} cannot change an exported model ({path}): predict from the checkpoint"
            )
    if not path.is_file():
        raise InputError(f"ckpt_path {path} does not exist")
    module = ExportedModel(path, threads=0)
    if cfg.tta_hflip is not None and bool(cfg.tta_hflip) != module.tta_hflip:  # inside its graph, or not
        asked, done = str(bool(cfg.tta_hflip)).lower(), str(module.tta_hflip).lower()
        raise InputError(
            f"tta_hflip={asked}, but {path} was exported with tta_hflip={done}: pass tta_hflip={done}, "
            f"or export it again with tta_hflip={asked}"
        )
    return module, module.threshold


def _run(
    cfg: DictConfig,
    module: pl.LightningModule,
    device: torch.device,
    output: Output,
    images: list[Path],
    problems: dict[str, str],
    size: tuple[int, ...] | None,
) -> dict[str, Any]:
    """The prediction proper, in a folder this process holds: the photos not yet committed, through
    the module's `predict_step` in `Trainer.predict`, into a `MaskWriter`. `size` None: photos as
    stored, one per batch (an exported model resizes them itself)."""
    done = output.committed()
    todo = images[done:]
    log.info(
        "predicting %d photos of %s (%d already done) into %s", len(todo), cfg.input, done, output.folder
    )
    workers = resolve_num_workers(cfg.data.num_workers)
    dataset = PhotoDataset(todo, size, errors=problems)
    batch_size = cfg.data.batch_size if size is not None else 1
    loader = photo_loader(dataset, batch_size, workers, pin_memory=device.type == "cuda")
    writer = MaskWriter(
        output,
        {path.name: path for path in images},
        masks=cfg.masks,
        submission=cfg.submission,
        overlays=cfg.overlays,
        on_error=cfg.on_error,
        threads=cfg.writer_threads,
        chunk_size=cfg.chunk_size,
        done=done,
    )
    # Lightning's predict loop: measured as fast as a hand-written one on the CPU (docs/PERFORMANCE.md),
    # and it brings its devices and precision plugins.
    trainer = pl.Trainer(
        accelerator=device.type,
        devices=[device.index or 0] if device.type == "cuda" else 1,
        precision=resolve_precision(cfg.precision, device.type) if size is not None else "32-true",
        callbacks=[writer],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.predict(module, dataloaders=loader, return_predictions=False)
    submission = output.assemble([path.name for path in images]) if cfg.submission else None
    return {
        "images": len(images),
        "predicted_now": len(todo),
        "skipped_unreadable": len(writer.skipped),
        "images_per_second_running": writer.running_rate,  # after the first batch: start-up excluded
        "submission": str(submission) if submission else None,
        "masks": str(writer.mask_folder) if writer.mask_folder else None,
        "overlays": str(writer.overlay_folder) if writer.overlay_folder else None,
    }


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(predict, cfg)


if __name__ == "__main__":
    main()
