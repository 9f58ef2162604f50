"""An exported ONNX model (`carvana_seg.export`) in predict's place of a checkpoint:
`python -m carvana_seg.predict ckpt_path=RUN/checkpoints/best.onnx input=DIR output=DIR`.

The file takes a photo as stored and returns its full-size car probability (the resizes and the
normalisation are inside its graph), so predict hands it each photo decoded at full size, one at a
time (the graph's batch is 1), through ONNX Runtime on the CPU; a pixel is car where the probability
exceeds the threshold in the file's metadata (or `threshold=`). Its masks can differ from the
checkpoint's by a few pixels along the outline: the checkpoint path decodes JPEGs at a reduced scale
and thresholds logits, the file resizes the full photo in its graph (carvana_seg/export.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl

from carvana_seg.core.postprocess import postprocess
from carvana_seg.errors import DivergedError, InputError

# The metadata carvana_seg.export writes into every file, read back here.
THRESHOLD_KEY = "carvana_seg.threshold"
SIZE_KEY = "carvana_seg.image_size"
TTA_KEY = "carvana_seg.tta_hflip"  # absent in files exported before flip TTA could be inside: false


class ExportedModel(pl.LightningModule):
    """`predict_step` of an ONNX file written by `carvana_seg.export`, for `Trainer.predict` and
    `MaskWriter` alike. Photos come from `PhotoDataset(paths, None)` (as stored); `predict_threshold`
    (default: the file's) and `postprocess` (steps of `core.postprocess`) are set by whoever predicts."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        super().__init__()
        try:
            import onnxruntime
        except ImportError as err:
            raise InputError(f"{path}: running an ONNX file needs pip install 'carvana-seg[export]'") from err
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # 0: ONNX Runtime's choice, one per core
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime's own exception types (not a model, bad graph, ...)
            raise InputError(f"{path} is not a model ONNX Runtime can run: {err}") from err
        meta = self.session.get_modelmeta().custom_metadata_map
        if THRESHOLD_KEY not in meta or SIZE_KEY not in meta:
            raise InputError(
                f"{path} has no carvana_seg metadata (threshold, input size): export it with "
                "python -m carvana_seg.export ckpt_path=... format=onnx"
            )
        try:
            self.threshold = float(meta[THRESHOLD_KEY])
            self.image_size = tuple(int(s) for s in json.loads(meta[SIZE_KEY]))
            self.tta_hflip = json.loads(meta.get(TTA_KEY, "false"))
            if not isinstance(self.tta_hflip, bool):
                raise ValueError(f"{TTA_KEY} is {self.tta_hflip!r}")
        except (ValueError, TypeError) as err:
            raise InputError(f"{path}: unreadable carvana_seg metadata {meta}: {err}") from err
        inputs = self.session.get_inputs()
        ours = [i.name for i in inputs] == ["photo"] and inputs[0].type == "tensor(uint8)"
        if not ours or len(inputs[0].shape) != 4:
            taken = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs)
            raise InputError(
                f"{path} takes {taken}, not one uint8 photo (1, 3, H, W): not a carvana_seg export"
            )
        self.path = path
        self.predict_threshold: float | None = None
        self.postprocess: list[str] = []

    def predict_step(
        self, batch: dict[str, Any], batch_idx: int = 0, dataloader_idx: int = 0
    ) -> dict[str, Any]:
        """Full-size masks of a batch of `PhotoDataset` items (photos as stored), one photo per run."""
        cut = self.predict_threshold or self.threshold
        masks: list[Any] = [None] * len(batch["name"])
        for position, error in enumerate(batch["error"]):
            if error:
                continue
            photo = batch["image"][position : position + 1].numpy()
            probability = self.session.run(None, {"photo": photo})[0][0, 0]
            if probability.shape != photo.shape[2:]:  # a foreign graph under our metadata keys
                raise InputError(
                    f"{self.path} returns a {probability.shape} map for the {photo.shape[2:]} photo "
                    f"{batch['name'][position]}: not a carvana_seg export; no masks were written for it"
                )
            if not np.isfinite(probability).all():
                raise DivergedError(
                    f"{self.path} returns non-finite probabilities for {batch['name'][position]}: "
                    "its weights are broken; no masks were written for this batch"
                )
            masks[position] = postprocess((probability > cut).view(np.uint8), self.postprocess)
        return {"name": list(batch["name"]), "mask": masks, "error": list(batch["error"])}
