"""The Python API: a trained network applied to photos of any size, giving full-size masks and
probabilities computed the way the predict and evaluate commands compute them.

    predictor = Predictor.from_checkpoint("runs/.../checkpoints/best.ckpt")
    result = predictor.predict("car.jpg")          # a path, an RGB numpy array or a PIL image
    result.mask, result.probability                # (H, W) bool and float32 at the photo's own size
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.postprocess import DEFAULT_STEPS, check_steps, postprocess
from carvana_seg.core.precision import check_precision
from carvana_seg.core.upsample import logit_threshold, to_full_size
from carvana_seg.data.decode import read_photo
from carvana_seg.data.photos import batches_by_size
from carvana_seg.errors import InputError
from carvana_seg.inference.forward import autocast, pick_device

PhotoLike = str | Path | np.ndarray | Image.Image


@dataclass(frozen=True)
class Prediction:
    """One photo's result at its own full size: `mask` (H, W) bool, `probability` (H, W) float32."""

    mask: np.ndarray
    probability: np.ndarray


class Predictor:
    """A trained SegmentationModule with what running it needs: device, input size, threshold.

    Args:
        module: the trained module (e.g. from `SegmentationModule.load_from_checkpoint`).
        device: "auto" (CUDA when there is one), "cpu", "cuda", "cuda:1", ...
        image_size: (H, W) the network runs at; None: the size it was trained at.
        threshold: probability above which a pixel is car; None: the module's own.
        tta_hflip: average the probabilities of the photo and of its mirror image.
        postprocess: full-size mask clean-ups (`core.postprocess`), as the commands' `postprocess`
            option: the largest piece by default, () for none.
        precision: as in the commands: "auto" (bf16/16 mixed on CUDA, fp32 on the CPU), "32-true", ...
    """

    def __init__(
        self,
        module: SegmentationModule,
        device: str = "auto",
        image_size: Sequence[int] | None = None,
        threshold: float | None = None,
        tta_hflip: bool = True,
        postprocess: Sequence[str] = DEFAULT_STEPS,
        precision: str = "auto",
    ) -> None:
        if image_size is None and module.run_config is None:
            raise InputError("this module does not say its input size: pass image_size=(H, W)")
        size = image_size or module.run_config.image_size
        self.size = (int(size[0]), int(size[1]))
        self.threshold = float(module.hparams.threshold if threshold is None else threshold)
        if not 0.0 < self.threshold < 1.0:
            raise InputError(f"threshold must lie in (0, 1), got {self.threshold}")
        self.device = pick_device(device)
        check_precision(precision, "precision")
        autocast(self.device, precision)  # named before the module moves
        self.module = module.to(self.device).eval()
        self.tta_hflip = tta_hflip
        self.postprocess = check_steps(postprocess)
        self.precision = precision

    @classmethod
    def from_checkpoint(cls, ckpt_path: str | Path, **options: object) -> Predictor:
        """Load a checkpoint written by training (see `SegmentationModule.load_from_checkpoint`)."""
        return cls(SegmentationModule.load_from_checkpoint(ckpt_path), **options)

    def predict(self, photo: PhotoLike) -> Prediction:
        """The full-size mask and probabilities of one photo."""
        return next(iter(self.predict_many([photo], batch_size=1)))

    def predict_paths(self, paths: Iterable[str | Path], batch_size: int = 8) -> Iterator[Prediction]:
        """The results of many photo files, in order, computed `batch_size` at a time."""
        return self.predict_many(paths, batch_size)

    def predict_many(self, photos: Iterable[PhotoLike], batch_size: int = 8) -> Iterator[Prediction]:
        """The results of paths, arrays or PIL images, in order, `batch_size` at a time."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        batch: list[tuple[np.ndarray, tuple[int, int]]] = []
        for photo in photos:
            batch.append(self._prepare(photo))
            if len(batch) == batch_size:
                yield from self._run(batch)
                batch = []
        if batch:
            yield from self._run(batch)

    def _prepare(self, photo: PhotoLike) -> tuple[np.ndarray, tuple[int, int]]:
        """The photo at the network's size (uint8 RGB) and its own (H, W)."""
        if isinstance(photo, str | Path):
            # The commands' decode: reduced JPEG decoding, then area interpolation to the exact size.
            return read_photo(photo, self.size)
        if isinstance(photo, Image.Image):
            photo = np.asarray(photo.convert("RGB"))
        if not isinstance(photo, np.ndarray) or photo.ndim != 3 or photo.shape[2] != 3:
            raise InputError(
                f"expected a path, a PIL image or an (H, W, 3) RGB array, got {type(photo).__name__}"
            )
        if photo.dtype != np.uint8:
            raise InputError(f"expected a uint8 RGB array (0..255), got {photo.dtype}")
        full = (int(photo.shape[0]), int(photo.shape[1]))
        small = cv2.resize(photo, (self.size[1], self.size[0]), interpolation=cv2.INTER_AREA)
        return (small if full != self.size else photo), full

    @torch.no_grad()
    def _run(self, batch: list[tuple[np.ndarray, tuple[int, int]]]) -> Iterator[Prediction]:
        images = torch.from_numpy(np.stack([np.ascontiguousarray(p.transpose(2, 0, 1)) for p, _ in batch]))
        with autocast(self.device, self.precision):
            logits = self.module.predict_logits(images.to(self.device), self.tta_hflip)
        cut = logit_threshold(self.threshold)
        results: list[Prediction | None] = [None] * len(batch)
        for full, positions in batches_by_size([full for _, full in batch]):  # one resize per size
            big = to_full_size(logits[positions], full)[:, 0]
            masks, probabilities = (big > cut).cpu().numpy(), torch.sigmoid(big).cpu().numpy()
            for row, position in enumerate(positions):
                mask = postprocess(masks[row].view(np.uint8), self.postprocess).view(bool)  # {0, 1}: no copy
                results[position] = Prediction(mask=mask, probability=probabilities[row].astype(np.float32))
        yield from results
