"""Shared fixtures: tiny Kaggle-layout folders made on the fly, and the real config, shrunk.

No real Carvana file is ever copied here (competition licence): fixtures are drawn with numpy.
"""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from carvana_seg.data import rle
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import encode_mask, read_mask
from carvana_seg.train import train

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
SHARED_SAMPLE = ROOT.parent / "shared" / "carvana_sample"


def car_id(index: int) -> str:
    return f"{index:012x}"


def draw_view(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A light backdrop with one dark ellipse 'car'; returns (RGB uint8 image, {0,1} mask)."""
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    cy, cx = height * rng.uniform(0.45, 0.6), width * rng.uniform(0.4, 0.6)
    ry, rx = height * rng.uniform(0.15, 0.25), width * rng.uniform(0.25, 0.35)
    mask = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1).astype(np.uint8)
    image = np.full((height, width, 3), 225, np.uint8)
    image[mask == 1] = rng.integers(20, 120, size=3)
    return image, mask


def write_carvana(
    root: Path,
    cars: int = 3,
    views: int = 4,
    size: tuple[int, int] = (40, 60),
    mask_format: str = "gif",
    mask_max: int = 1,
    seed: int = 0,
    masks_csv: bool = False,
) -> Path:
    """A folder in Kaggle's layout: train/<car>_<NN>.jpg and train_masks/<car>_<NN>_mask.<fmt>, and
    with `masks_csv` the same masks run-length encoded in train_masks.csv."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    (root / "train_masks").mkdir(parents=True, exist_ok=True)
    for car in range(cars):
        for view in range(1, views + 1):
            image, mask = draw_view(size, rng)
            name = f"{car_id(car)}_{view:02d}"
            Image.fromarray(image).save(root / "train" / f"{name}.jpg", quality=95)
            path = root / "train_masks" / f"{name}_mask.{mask_format}"
            if mask_format == "gif" and mask_max == 1:
                path.write_bytes(encode_mask(mask, "gif"))  # Kaggle's: palette indices {0, 1}
            else:
                Image.fromarray(mask * mask_max).save(path)
    if masks_csv:
        write_masks_csv(root)
    return root


def write_photos(
    tmp_path: Path, cars: int = 3, views: int = 4, name: str = "test", size: tuple[int, int] = (64, 96)
) -> Path:
    """A folder of unlabelled photos (64x96 unless `size`) like Kaggle's test/, at tmp_path/name."""
    data = write_carvana(tmp_path / f"{name}_data", cars=cars, views=views, size=size, seed=9)
    shutil.rmtree(data / "train_masks")
    return (data / "train").rename(tmp_path / name)


STUDIO_CAR = (180, 30, 30)


def studio(scale: int = 1, backdrop: tuple[int, int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A light grey 60x90 photo with a car in rows 20..39, columns 25..64, and its mask at `scale` x the
    photo's size; `backdrop` paints the rows above the car (the studio's wall)."""
    photo = np.full((60, 90, 3), 200, np.uint8)
    if backdrop is not None:
        photo[:20] = backdrop
    photo[20:40, 25:65] = STUDIO_CAR
    mask = np.zeros((60 * scale, 90 * scale), np.uint8)
    mask[20 * scale : 40 * scale, 25 * scale : 65 * scale] = 1
    return photo, mask


def augmented(transform: A.BasicTransform, photo: np.ndarray, mask: np.ndarray, seed: int = 0) -> dict:
    """`transform` applied once to photo and mask (their sizes may differ), drawn from `seed`."""
    return A.Compose([transform], seed=seed, is_check_shapes=False)(image=photo, mask=mask)


def fine_mask_module(tmp_path: Path, augment: dict) -> CarvanaDataModule:
    """A data module, set up for fit, over 3 written cars at 96x144: photos at 24x36, masks at twice
    that (`mask_scale=2`), no flip, and `augment` (name -> transform)."""
    root = write_carvana(tmp_path / "data", cars=3, views=2, size=(96, 144))
    cache = tmp_path / "cache"
    module = CarvanaDataModule(
        root, (24, 36), num_workers=0, cache_dir=cache, mask_scale=2, hflip_p=0.0, augment=augment
    )
    module.setup("fit")
    return module


def write_masks_csv(root: Path) -> None:
    """train_masks.csv beside the GIF masks of `root`, in the competition's run-length format."""
    with (root / "train_masks.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["img", "rle_mask"])
        for gif in sorted((root / "train_masks").glob("*_mask.gif")):
            writer.writerow([gif.name.replace("_mask.gif", ".jpg"), rle.encode(read_mask(gif))])


@pytest.fixture
def carvana_dir(tmp_path: Path) -> Path:
    """Three cars of four views at 40x60, Kaggle-style palette GIF masks {0, 1}."""
    return write_carvana(tmp_path / "carvana")


# The real config shrunk to a few seconds on a CPU (conf/debug/tiny.yaml), and tiny networks.
TINY_UNET = ["model.base_channels=4", "model.depth=2"]
TINY_CNN = ["model.hidden_channels=4"]


@pytest.fixture
def make_cfg(tmp_path: Path, carvana_dir: Path) -> Callable[..., DictConfig]:
    """Compose conf/train.yaml on the fixture folder with debug=tiny, a tiny network and the test's own."""

    def make(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        tiny_model = TINY_CNN if "model=cnn" in overrides else TINY_UNET
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(
                "train",
                overrides=[
                    "data=carvana",
                    f"data.root={carvana_dir}",
                    f"paths.output_dir={output_dir or tmp_path / 'run'}",
                    f"paths.cache_dir={tmp_path / 'cache'}",
                    "debug=tiny",
                    *tiny_model,
                    *overrides,
                ],
            )

    return make


requires_sample = pytest.mark.skipif(
    not (SHARED_SAMPLE / "train").is_dir(), reason="../shared/carvana_sample (real Carvana files) is absent"
)


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint trained a little on 4 cars of 64x96 photos (input 32x48), and its data folder:
    shared by the evaluate and predict tests."""
    base = tmp_path_factory.mktemp("trained")
    data = write_carvana(base / "data", cars=4, views=4, size=(64, 96))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "data=carvana",
                f"data.root={data}",
                f"paths.output_dir={base / 'run'}",
                "debug=tiny",
                *TINY_UNET,
                "trainer.max_epochs=3",
                "scheduler=none",  # a constant rate learns most in these few steps
                "callbacks.prediction_grid=null",
                "data.val_fraction=0.5",
            ],
        )
    train(cfg)
    return base / "run" / "checkpoints" / "last.ckpt", data
