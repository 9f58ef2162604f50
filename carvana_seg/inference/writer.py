"""What happens after the network, for both ways of predicting: each batch's full-size masks become
mask files, overlay pictures and run-length rows, written by a few threads while the next batch is
computed, and committed in parts of the predict output folder (`inference.submission.Output`).

`MaskWriter` is a Lightning `BasePredictionWriter`: `Trainer.predict(module, loader, callbacks=[writer])`
drives it through its hooks, which call `open`, `write` and `close` (a hand-written loop may call those
three itself).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from tqdm import tqdm

from carvana_seg.data import rle
from carvana_seg.data.decode import encode_mask, read_image
from carvana_seg.durable import atomic_write
from carvana_seg.errors import DataError
from carvana_seg.inference.overlay import outline_overlay
from carvana_seg.inference.submission import UNREADABLE, Output

log = logging.getLogger(__name__)


class MaskWriter(BasePredictionWriter):
    """Writes `SegmentationModule.predict_step`'s results into `output`.

    Args:
        output: the claimed output folder.
        photos: every photo's path by name (for overlays, which redraw the photo at full size).
        masks: "gif", "png" or "none": the mask files.
        submission: run-length encode every mask for the submission.
        overlays: also write OUTPUT/overlays/<photo>.jpg, the photo with the mask's outline.
        on_error: "stop" raises on a photo that could not be read; "skip" gives it an empty row.
        threads: writer threads; chunk_size: rows per committed part.
        done: photos already committed by an earlier run (where the progress bar starts).
    """

    def __init__(
        self,
        output: Output,
        photos: Mapping[str, Path],
        masks: str = "gif",
        submission: bool = True,
        overlays: bool = False,
        on_error: str = "stop",
        threads: int = 4,
        chunk_size: int = 256,
        done: int = 0,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output = output
        self.photos = photos
        self.mask_format = masks
        self.mask_folder = None if masks == "none" else output.masks
        self.overlay_folder = output.overlays if overlays else None
        self.submission = submission
        self.on_error = on_error
        self.threads = threads
        self.chunk_size = chunk_size
        self.done = done
        self.skipped: list[str] = []  # this run's unreadable photos, as their errors
        self._unreadable: dict[str, str] = {}  # name -> error, until the part holding its row is committed
        self._rows: list[tuple[str, str]] = []
        self._pending: deque[Future] = deque()
        self._pool: ThreadPoolExecutor | None = None
        self._progress: tqdm | None = None
        # The rate once started: photos after the first batch over the time from its arrival to the end.
        self._first: tuple[float, int] | None = None
        self.written = 0  # rows of this run
        self.running_rate: float | None = None

    def open(self) -> None:
        for folder in (self.mask_folder, self.overlay_folder):
            if folder is not None:
                folder.mkdir(exist_ok=True)
        self._pool = ThreadPoolExecutor(max_workers=self.threads)
        total = len(self.photos)
        self._progress = tqdm(total=total, initial=self.done, desc="predict", unit="img", dynamic_ncols=True)

    def write(self, prediction: Mapping[str, Any]) -> None:
        """Hand one batch's masks to the threads; keep at most two batches in flight (bounded memory)."""
        assert self._pool is not None, "open() the writer first"
        if self._first is None:
            self._first = (time.perf_counter(), len(prediction["name"]))
        for name, mask, error in zip(
            prediction["name"], prediction["mask"], prediction["error"], strict=True
        ):
            if error:
                if self.on_error == "stop":
                    raise DataError(f"{error} (on_error=skip gives it an empty mask)")
                self.skipped.append(error)
                self._unreadable[name] = error
                self._forget_files(name)
                empty: Future = Future()
                empty.set_result((name, ""))
                self._pending.append(empty)
                continue
            self._pending.append(self._pool.submit(self._finish, name, mask))
        self._drain(keep=2 * len(prediction["name"]))

    def close(self) -> None:
        """Commit every remaining row and list the photos that were skipped."""
        self._drain(keep=0)
        if self._rows:
            self._commit()
        if self._first is not None:
            started, first = self._first
            after = self.written - first
            elapsed = time.perf_counter() - started
            self.running_rate = round(after / elapsed, 2) if after > 0 and elapsed > 0 else None
        self.abort()
        if self.skipped:
            path = self.output.folder / UNREADABLE
            log.warning("%d unreadable photos got empty masks; listed in %s", len(self.skipped), path)

    def abort(self) -> None:
        """Stop the threads; rows not yet committed are predicted again by the next run."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            self._rows.append(self._pending.popleft().result())
            self.written += 1
            if self._progress is not None:
                self._progress.update(1)
            if len(self._rows) >= self.chunk_size:
                self._commit()

    def _commit(self) -> None:
        """Commit the rows as one part; the unreadable photos among them are listed first, so that a run
        killed after this part still names them (a resumed run predicts only what follows)."""
        errors = [self._unreadable.pop(name) for name, _ in self._rows if name in self._unreadable]
        if errors:
            path = self.output.folder / UNREADABLE
            known = path.read_text().splitlines() if path.exists() else []  # earlier parts and runs
            atomic_write(path, ("\n".join(dict.fromkeys([*known, *errors])) + "\n").encode())
        self.output.commit(self._rows)
        self._rows = []

    def _files(self, name: str) -> tuple[Path | None, Path | None]:
        """Where the photo's mask file and overlay go (None: not written)."""
        stem = Path(name).stem
        mask = self.mask_folder / f"{stem}_mask.{self.mask_format}" if self.mask_folder else None
        return mask, self.overlay_folder / f"{stem}.jpg" if self.overlay_folder else None

    def _forget_files(self, name: str) -> None:
        """A skipped photo has no mask file or overlay: those of its earlier content (a rerun after it was
        changed into an unreadable copy) would outlive its empty row."""
        for path in self._files(name):
            if path is not None:
                path.unlink(missing_ok=True)

    def _finish(self, name: str, mask: np.ndarray) -> tuple[str, str]:
        """Off the main thread: the mask file and the overlay (each written atomically; their folders
        are flushed before the part that holds the row is committed), and the run-length row."""
        mask_path, overlay_path = self._files(name)
        if mask_path is not None:
            atomic_write(mask_path, encode_mask(mask, self.mask_format), sync_folder=False)
        if overlay_path is not None:
            picture = outline_overlay(read_image(self.photos[name]), mask)
            ok, jpeg = cv2.imencode(
                ".jpg", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]
            )
            if not ok:
                raise RuntimeError(f"JPEG encoding of the overlay of {name} failed")
            atomic_write(overlay_path, jpeg.tobytes(), sync_folder=False)
        return name, rle.encode(mask) if self.submission else ""

    # Lightning's hooks: Trainer.predict drives the same three steps.
    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.open()

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.write(prediction)

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.abort()
