"""Prediction the Lightning way: `predict_step` on the module and `Trainer.predict` over a DataModule
(the predict command runs the same loop); the command takes one photo or a glob and draws overlay
pictures."""

from __future__ import annotations

import cv2
import numpy as np
import pytorch_lightning as pl
from PIL import Image

from carvana_seg import Predictor, SegmentationModule
from carvana_seg.config import compose
from carvana_seg.data.datamodule import CarvanaDataModule
from carvana_seg.data.decode import read_image, read_mask
from carvana_seg.predict import predict


def predict_cfg(ckpt, input_path, output, *overrides):
    base = [
        f"ckpt_path={ckpt}",
        f"input={input_path}",
        f"output={output}",
        "data.num_workers=0",
        "device=cpu",
    ]
    return compose("predict", [*base, "data.batch_size=3", *overrides])


def test_trainer_predict_over_the_datamodule_gives_full_size_masks(trained):
    ckpt, data = trained
    module = SegmentationModule.load_from_checkpoint(ckpt)
    run = module.run_config
    datamodule = CarvanaDataModule(data, image_size=run.image_size, val_fraction=0.5, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batches = trainer.predict(module, datamodule=datamodule)
    names = [name for batch in batches for name in batch["name"]]
    masks = [mask for batch in batches for mask in batch["mask"]]
    assert {name.split("_")[0] for name in names} == set(run.val_cars)  # the run's own validation cars
    # predict_step cleans up and flips only as module.postprocess and module.tta_hflip say (the predict
    # command sets them from its options; a module loaded by hand does neither).
    predictor = Predictor(module, device="cpu", postprocess=module.postprocess, tta_hflip=module.tta_hflip)
    for name, mask in zip(names, masks, strict=True):
        assert mask.shape == (64, 96) and mask.dtype == np.uint8
        assert np.array_equal(mask.astype(bool), predictor.predict(data / "train" / name).mask)


def test_one_photo_or_a_glob_and_overlay_pictures(trained, tmp_path):
    ckpt, data = trained
    photos = sorted((data / "train").glob("*.jpg"))
    # One pass (tta_hflip=false): the tiny network's probabilities sit near 0.5, and its single pass is
    # the one whose masks have both car and background.
    predictor = Predictor.from_checkpoint(ckpt, device="cpu", tta_hflip=False)
    # A photo whose predicted mask has both car and background, so that there is an outline to see.
    chosen = next(p for p in photos if 0.01 < predictor.predict(p).mask.mean() < 0.99)
    one = predict(predict_cfg(ckpt, chosen, tmp_path / "one", "overlays=true", "tta_hflip=false"))
    assert one["images"] == 1
    overlay = np.asarray(Image.open(tmp_path / "one" / "overlays" / f"{chosen.stem}.jpg"))
    photo, mask = read_image(chosen), read_mask(tmp_path / "one" / "masks" / f"{chosen.stem}_mask.gif")
    assert overlay.shape == photo.shape
    kernel = np.ones((5, 5), np.uint8)
    edge = cv2.dilate(mask, kernel) != cv2.erode(mask, kernel)  # where the outline is drawn
    background = (mask == 0) & ~edge
    close = np.abs(overlay.astype(int) - photo.astype(int)).max(axis=2) < 40  # JPEG's error only
    assert edge.any() and close[background].mean() > 0.95  # the background is the photo's
    green = overlay[..., 1].astype(int) - overlay[..., [0, 2]].max(axis=-1)
    assert (green[edge] > 40).mean() > 0.5  # the outline is drawn along the mask's edges

    car = chosen.name.split("_")[0]
    quoted = f"'{data / 'train' / f'{car}_0[12].jpg'}'"  # quoted for Hydra, as on a command line
    two = predict(predict_cfg(ckpt, quoted, tmp_path / "two"))
    assert two["images"] == 2
    assert sorted(p.name for p in (tmp_path / "two" / "masks").iterdir()) == [
        f"{car}_01_mask.gif",
        f"{car}_02_mask.gif",
    ]
