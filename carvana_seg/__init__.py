"""Car segmentation on Kaggle's Carvana data with PyTorch Lightning and Hydra."""

__version__ = "0.1.0"
