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

import csv
import gzip
import io
import json
import logging
import os
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

from carvana_seg.data import rle
from carvana_seg.data.datamodule import default_num_workers
from carvana_seg.data.decode import encode_mask, image_size
from carvana_seg.data.errors import DataError
from carvana_seg.errors import InputError, exit_on_input_error
from carvana_seg.inference import (
    PhotoDataset,
    autocast,
    batches_by_size,
    load_module,
    photo_loader,
    pick_device,
    predict_logits,
)
from carvana_seg.logits import logit_threshold, to_full_size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
MANIFEST = "predict.json"
PARTS = ".parts"
SUBMISSION = "submission.csv.gz"
UNREADABLE = "unreadable.txt"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _gzip_member(rows: list[tuple[str, str]], header: bool = False) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    if header:
        writer.writerow(["img", "rle_mask"])
    writer.writerows(rows)
    # mtime=0: the same rows always give the same bytes.
    return gzip.compress(text.getvalue().encode(), compresslevel=6, mtime=0)


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


class Output:
    """The output folder: its manifest, the committed parts, the mask files and the final submission."""

    def __init__(self, folder: Path, manifest: dict[str, Any]) -> None:
        self.folder = folder
        self.parts = folder / PARTS
        self.manifest = manifest

    def claim(self) -> None:
        """Start or continue: a folder of another run (or of other files) is refused before any work."""
        path = self.folder / MANIFEST
        if path.exists():
            previous = json.loads(path.read_text())
            different = sorted(
                k for k in set(previous) | set(self.manifest) if previous.get(k) != self.manifest.get(k)
            )
            if different:
                raise InputError(
                    f"output {self.folder} holds the results of a different prediction run "
                    f"(it differs in: {', '.join(different)}); choose another output folder or remove it"
                )
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise InputError(f"output {self.folder} is not empty and was not written by carvana_seg.predict")
        self.parts.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, (json.dumps(self.manifest, indent=2, sort_keys=True) + "\n").encode())

    def committed(self) -> set[str]:
        names: set[str] = set()
        for part in sorted(self.parts.glob("part-*.csv.gz")):
            with gzip.open(part, "rt", newline="") as handle:
                names.update(row[0] for row in csv.reader(handle))
        return names

    def commit(self, rows: list[tuple[str, str]]) -> None:
        number = len(list(self.parts.glob("part-*.csv.gz")))
        _atomic_write(self.parts / f"part-{number:06d}.csv.gz", _gzip_member(rows))

    def assemble(self, expected: list[str]) -> Path:
        """Concatenate the parts behind a header into the submission, then check it row by row."""
        final = self.folder / SUBMISSION
        tmp = self.folder / f".{SUBMISSION}.tmp"
        with tmp.open("wb") as out:
            out.write(_gzip_member([], header=True))
            for part in sorted(self.parts.glob("part-*.csv.gz")):
                out.write(part.read_bytes())
        verify_submission(tmp, expected)
        os.replace(tmp, final)
        return final


def verify_submission(path: Path, expected: list[str]) -> None:
    """One row per expected image, in order: no duplicates, no gaps, well-formed run-lengths."""
    with gzip.open(path, "rt", newline="") as handle:
        reader = csv.reader(handle)
        if next(reader, None) != ["img", "rle_mask"]:
            raise RuntimeError(f"{path}: the header is not img,rle_mask")
        count = 0
        for count, row in enumerate(reader, start=1):
            if count > len(expected) or row[0] != expected[count - 1]:
                want = expected[count - 1] if count <= len(expected) else "no more rows"
                raise RuntimeError(f"{path}: row {count} is {row[0]}, expected {want}")
            numbers = row[1].split()
            if len(numbers) % 2:
                raise RuntimeError(f"{path}: row {count} ({row[0]}) has an odd number of run-length values")
    if count != len(expected):
        raise RuntimeError(f"{path}: {count} rows for {len(expected)} images")


def _finish(
    mask: np.ndarray, name: str, folder: Path | None, mask_format: str, encode: bool
) -> tuple[str, str]:
    """Off the main thread: write the mask file (atomically) and run-length encode the mask."""
    if folder is not None:
        _atomic_write(folder / f"{Path(name).stem}_mask.{mask_format}", encode_mask(mask, mask_format))
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
    module, run_config = load_module(cfg.ckpt_path, device)
    images = list_images(input_dir, sample)
    unreadable = check_headers(images)
    if unreadable and cfg.on_error == "stop":
        raise DataError(
            f"{len(unreadable)} unreadable photos in {input_dir} "
            "(on_error=skip writes empty masks for them):\n  " + "\n  ".join(unreadable[:20])
        )
    threshold = cfg.threshold if cfg.threshold is not None else module.hparams.threshold
    size = tuple(cfg.image_size or run_config["data"]["image_size"])
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
    workers = default_num_workers() if cfg.num_workers == "auto" else int(cfg.num_workers)
    loader = photo_loader(PhotoDataset(todo, size), cfg.batch_size, workers, pin_memory=device.type == "cuda")
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
            drain(keep=2 * cfg.batch_size)  # bounded: memory does not grow with the number of photos
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(predict, cfg)


if __name__ == "__main__":
    main()
