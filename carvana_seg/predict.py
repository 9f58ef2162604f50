"""Predict full-size masks for a folder of photos and a Kaggle submission:
`python -m carvana_seg.predict ckpt_path=RUN/checkpoints/best.ckpt input=DIR output=DIR`.

Built for Kaggle's 100,064 test photos: photos are decoded by DataLoader workers, the network runs in
batches (on the GPU when there is one), and thresholding's products (mask files, run-length rows) are
written by a small thread pool while the next batch is computed; memory does not grow with the number
of photos. Killed at any point, the same command continues where it stopped: rows are committed in
parts (each a complete gzip member, renamed into place atomically) and `submission.csv.gz` is the
concatenation of the parts, checked row by row against the expected list of images at the end.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from carvana_seg.config import CONF_DIR
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.upsample import logit_threshold, to_full_size
from carvana_seg.data import rle
from carvana_seg.data.datamodule import resolve_num_workers
from carvana_seg.data.decode import encode_mask, image_size
from carvana_seg.errors import DataError, InputError, exit_on_input_error
from carvana_seg.inference.forward import autocast, pick_device, predict_logits
from carvana_seg.inference.photos import PhotoDataset, batches_by_size, photo_loader
from carvana_seg.inference.submission import Output, atomic_write

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
UNREADABLE = "unreadable.txt"


def list_images(input_dir: Path, sample_submission: Path | None) -> list[Path]:
    """The photos to predict, in the order of the submission: the sample's order, else by name."""
    if not input_dir.is_dir():
        raise InputError(f"input {input_dir} does not exist or is not a folder")
    found = {p.name: p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()}
    if sample_submission is None:
        if not found:
            raise InputError(f"input {input_dir} holds no .jpg or .png photos")
        return [found[name] for name in sorted(found)]
    if not sample_submission.is_file():
        raise InputError(f"sample_submission {sample_submission} does not exist")
    try:
        names = list(rle.read_csv(sample_submission))
    except ValueError as err:
        raise InputError(str(err)) from err
    missing = [name for name in names if name not in found]
    if missing:
        raise InputError(
            f"{len(missing)} photos listed in {sample_submission} are not in {input_dir}, e.g. {missing[:5]}"
        )
    return [found[name] for name in names]


def check_headers(images: list[Path]) -> list[str]:
    """Read every photo's header before the long work starts; the errors, one per unreadable photo."""
    errors = []
    for path in tqdm(images, desc="check photos", unit="img", dynamic_ncols=True, disable=len(images) < 2000):
        try:
            image_size(path)
        except DataError as err:
            errors.append(str(err))
    return errors


def _finish(
    mask: np.ndarray, name: str, folder: Path | None, mask_format: str, encode: bool
) -> tuple[str, str]:
    """Off the main thread: write the mask file (atomically) and run-length encode the mask."""
    if folder is not None:
        atomic_write(folder / f"{Path(name).stem}_mask.{mask_format}", encode_mask(mask, mask_format))
    return name, rle.encode(mask) if encode else ""


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict every photo of `cfg.input` into `cfg.output`, resuming an interrupted run."""
    started = time.perf_counter()
    if cfg.masks not in ("gif", "png", "none"):
        raise InputError(f"masks must be gif, png or none, got {cfg.masks!r}")
    if cfg.on_error not in ("stop", "skip"):
        raise InputError(f"on_error must be stop or skip, got {cfg.on_error!r}")
    if cfg.masks == "none" and not cfg.submission:
        raise InputError("masks=none and submission=false: there would be nothing to write")
    input_dir = Path(cfg.input).expanduser().resolve()
    output_dir = Path(cfg.output).expanduser().resolve()
    sample = Path(cfg.sample_submission).expanduser().resolve() if cfg.sample_submission else None
    device = pick_device(cfg.device)
    module = SegmentationModule.load_from_checkpoint(cfg.ckpt_path).to(device)
    if cfg.data.image_size is None and module.run_config is None:
        raise InputError(f"{cfg.ckpt_path} does not say its input size: pass data.image_size=[H,W]")
    images = list_images(input_dir, sample)
    unreadable = check_headers(images)
    if unreadable and cfg.on_error == "stop":
        raise DataError(
            f"{len(unreadable)} unreadable photos in {input_dir} "
            "(on_error=skip writes empty masks for them):\n  " + "\n  ".join(unreadable[:20])
        )
    threshold = cfg.threshold if cfg.threshold is not None else module.hparams.threshold
    size = tuple(cfg.data.image_size or module.run_config.image_size)
    output = Output(
        output_dir,
        {
            "ckpt_path": str(Path(cfg.ckpt_path).expanduser().resolve()),
            "input": str(input_dir),
            "sample_submission": str(sample) if sample else None,
            "images": len(images),
            "input_size": list(size),
            "threshold": float(threshold),
            "tta_hflip": bool(cfg.tta_hflip),
            "masks": cfg.masks,
            "submission": bool(cfg.submission),
        },
    )
    output.claim()
    mask_folder = None if cfg.masks == "none" else output_dir / "masks"
    if mask_folder is not None:
        mask_folder.mkdir(exist_ok=True)

    done = output.committed()
    todo = [path for path in images if path.name not in done]
    log.info(
        "predicting %d photos of %s (%d already done) into %s", len(todo), input_dir, len(done), output_dir
    )
    workers = resolve_num_workers(cfg.data.num_workers)
    loader = photo_loader(
        PhotoDataset(todo, size), cfg.data.batch_size, workers, pin_memory=device.type == "cuda"
    )
    cut = logit_threshold(threshold)
    skipped: list[str] = []
    rows: list[tuple[str, str]] = []
    pending: deque[Future] = deque()
    progress = tqdm(total=len(images), initial=len(done), desc="predict", unit="img", dynamic_ncols=True)
    with ThreadPoolExecutor(max_workers=cfg.writer_threads) as pool:

        def drain(keep: int) -> None:
            while len(pending) > keep:
                rows.append(pending.popleft().result())
                progress.update(1)
                if len(rows) >= cfg.chunk_size:
                    output.commit(rows)
                    rows.clear()

        for batch in loader:
            images_on_device = batch["image"].to(device, non_blocking=True)
            with autocast(device, cfg.precision):
                logits = predict_logits(module, images_on_device, cfg.tta_hflip)
            masks: dict[int, np.ndarray] = {}
            readable = [
                (p, s)
                for p, (s, e) in enumerate(zip(batch["full_size"], batch["error"], strict=True))
                if not e
            ]
            for full_size, group in batches_by_size([s for _, s in readable]):
                positions = [readable[g][0] for g in group]
                binary = (to_full_size(logits[positions], full_size) > cut).to(torch.uint8).cpu().numpy()
                masks.update({p: binary[i, 0] for i, p in enumerate(positions)})
            for position, name in enumerate(batch["name"]):
                if batch["error"][position]:
                    if cfg.on_error == "stop":
                        raise DataError(f"cannot read {input_dir / name}: {batch['error'][position]}")
                    skipped.append(batch["error"][position])
                    empty = Future()
                    empty.set_result((name, ""))
                    pending.append(empty)
                    continue
                pending.append(
                    pool.submit(_finish, masks[position], name, mask_folder, cfg.masks, cfg.submission)
                )
            drain(keep=2 * cfg.data.batch_size)  # bounded: memory does not grow with the number of photos
        drain(keep=0)
        if rows:
            output.commit(rows)
    progress.close()
    if skipped:
        (output_dir / UNREADABLE).write_text("\n".join(skipped) + "\n")
        log.warning(
            "%d unreadable photos got empty masks; listed in %s", len(skipped), output_dir / UNREADABLE
        )

    expected = [path.name for path in images]
    submission = output.assemble(expected) if cfg.submission else None
    seconds = time.perf_counter() - started
    result = {
        "images": len(images),
        "predicted_now": len(todo),
        "skipped_unreadable": len(skipped),
        "submission": str(submission) if submission else None,
        "masks": str(mask_folder) if mask_folder else None,
        "seconds": round(seconds, 2),
        "images_per_second": round(len(todo) / seconds, 2) if todo else None,
    }
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(predict, cfg)


if __name__ == "__main__":
    main()
