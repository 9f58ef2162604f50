"""Car segmentation on Kaggle's Carvana data with PyTorch Lightning and Hydra.

from carvana_seg import Predictor
predictor = Predictor.from_checkpoint("runs/<date>/<time>/checkpoints/best.ckpt")
result = predictor.predict("car.jpg")       # result.mask, result.probability at the photo's size
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Prediction", "Predictor", "SegmentationModule", "__version__"]

if TYPE_CHECKING:
    from carvana_seg.core.module import SegmentationModule
    from carvana_seg.inference.predictor import Prediction, Predictor

# Imported on first use, so that light commands (the Kaggle download, --help) do not load torch.
_LAZY = {
    "SegmentationModule": "carvana_seg.core.module",
    "Predictor": "carvana_seg.inference.predictor",
    "Prediction": "carvana_seg.inference.predictor",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'carvana_seg' has no attribute {name!r}")
