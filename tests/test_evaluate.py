"""evaluate: scores at the photo's full size, per-image CSV, summary, worst-K pictures, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from carvana_seg.core.metrics import per_image_scores
from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.postprocess import largest
from carvana_seg.core.upsample import to_full_size
from carvana_seg.data.decode import read_image, read_mask
from carvana_seg.errors import InputError
from carvana_seg.evaluate import evaluate
from carvana_seg.inference.error_panel import FALSE_NEGATIVE, FALSE_POSITIVE, error_panel, largest_error_box
from carvana_seg.train import train
from tests.conftest import CONF_DIR, write_carvana


def eval_cfg(tmp_path: Path, ckpt: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "evaluate",
            overrides=[
                f"ckpt_path={ckpt}",
                f"paths.output_dir={tmp_path / 'eval'}",
                "data.num_workers=0",
                "data.batch_size=3",
                *overrides,
            ],
        )


def test_scores_are_computed_at_the_photos_full_size(trained, tmp_path):
    ckpt, data = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "worst_k=2"))
    assert summary["split"] == "val" and summary["images"] == 8  # 2 of 4 cars, 4 views each
    rows = list(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))
    assert len(rows) == 8
    # Recompute one image by hand: logits at 32x48 (of the photo and its mirror image: flip TTA, the
    # default) -> bilinear to 64x96 -> threshold -> the largest piece (the default clean-up) -> dice.
    assert summary["tta_hflip"] is True
    module = SegmentationModule.load_from_checkpoint(ckpt)
    row = rows[0]
    photo = torch.from_numpy(read_image(data / "train" / row["img"], (32, 48)).transpose(2, 0, 1).copy())[
        None
    ]
    logits = to_full_size(module.predict_logits(photo, tta_hflip=True), (64, 96))
    target = torch.from_numpy(read_mask(data / "train_masks" / row["img"].replace(".jpg", "_mask.gif")))[
        None, None
    ]
    mask = torch.from_numpy(largest((logits > 0)[0, 0].numpy().astype(np.uint8)))[None, None].bool()
    expected = per_image_scores(mask, target.bool())["dice"].item()
    assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
    assert summary["full_size"]["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-6)
    assert set(summary["train_size"]) >= {"dice", "dice_mean_classes", "accuracy", "iou"}
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["full_size"]["dice"] == pytest.approx(summary["full_size"]["dice"])


def test_a_range_of_thresholds_and_flip_tta(trained, tmp_path):
    ckpt, _ = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "thresholds=[0.3,0.7]", "tta_hflip=true", "worst_k=0"))
    assert list(summary["dice_by_threshold"]) == ["0.3", "0.5", "0.7"]
    assert summary["dice_by_threshold"]["0.5"] == pytest.approx(summary["full_size"]["dice"])
    header = (tmp_path / "eval" / "per_image.csv").read_text().splitlines()[0]
    assert "dice@0.3" in header and "dice@0.7" in header


def test_nearest_upsampling_scores_the_upscaled_binary_mask(trained, tmp_path):
    ckpt, data = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "upsample=nearest", "postprocess=[]", "worst_k=0"))
    assert summary["upsample"] == "nearest"
    module = SegmentationModule.load_from_checkpoint(ckpt)
    row = next(csv.DictReader((tmp_path / "eval" / "per_image.csv").open()))
    photo = torch.from_numpy(read_image(data / "train" / row["img"], (32, 48)).transpose(2, 0, 1).copy())
    small_mask = (module.predict_logits(photo[None], tta_hflip=True) > 0).float()
    upscaled = torch.nn.functional.interpolate(small_mask, size=(64, 96), mode="nearest-exact").bool()
    target = read_mask(data / "train_masks" / row["img"].replace(".jpg", "_mask.gif"))
    expected = per_image_scores(upscaled, torch.from_numpy(target)[None, None].bool())["dice"].item()
    assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(InputError, match="upsample"):
        evaluate(eval_cfg(tmp_path, ckpt, "upsample=bicubic"))


def test_worst_k_are_rendered_worst_first_and_logged_to_tensorboard(trained, tmp_path):
    ckpt, _ = trained
    summary = evaluate(eval_cfg(tmp_path, ckpt, "worst_k=3"))
    pictures = sorted((tmp_path / "eval" / "worst").glob("*.png"))
    assert [p.name[:3] for p in pictures] == ["01_", "02_", "03_"]
    dice = [w["dice"] for w in summary["worst"]]
    assert dice == sorted(dice) and dice[0] == pytest.approx(summary["full_size"]["dice_min"])
    events = EventAccumulator(str(tmp_path / "eval" / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"worst/01", "worst/02", "worst/03"} <= set(events.Tags()["images"])

    # Evaluated again into the same folder: only this evaluation's pictures are left there.
    (tmp_path / "eval" / "worst" / "01_an_earlier_worst_photo.png").write_bytes(b"an earlier picture")
    summary = evaluate(eval_cfg(tmp_path, ckpt, "worst_k=1"))
    left = [p.name for p in (tmp_path / "eval" / "worst").glob("*.png")]
    assert left == [f"01_{Path(summary['worst'][0]['img']).stem}.png"]
    evaluate(eval_cfg(tmp_path, ckpt, "worst_k=0"))  # no pictures asked for: none left from before
    assert not list((tmp_path / "eval" / "worst").glob("*.png"))


def test_error_panel_paints_false_positives_and_negatives_and_zooms_on_the_largest():
    photo = np.full((100, 150, 3), 200, np.uint8)
    target = np.zeros((100, 150), bool)
    target[30:70, 40:110] = True
    pred = target.copy()
    pred[30:70, 100:110] = False  # a missed strip: false negatives
    pred[75:78, 60:64] = True  # a speck below: false positives
    assert largest_error_box(pred, target, margin=5, min_side=10) == (25, 75, 95, 115)
    panel = error_panel(photo, pred, target, "test", height=100)
    colours = {tuple(c) for c in panel.reshape(-1, 3)}
    blend = lambda colour: tuple(round(0.2 * 200 + 0.8 * c) for c in colour)  # noqa: E731
    assert blend(FALSE_POSITIVE) in colours and blend(FALSE_NEGATIVE) in colours
    assert panel.shape[1] > 150  # the whole view plus the zoomed crop


def test_another_folder_with_masks_is_scored_whole(trained, tmp_path):
    ckpt, _ = trained
    other = write_carvana(tmp_path / "other", cars=2, views=3, size=(64, 96), seed=5)
    summary = evaluate(eval_cfg(tmp_path, ckpt, f"data.root={other}", "worst_k=0"))
    assert summary["split"] == "all" and summary["images"] == 6


def test_a_cache_folder_that_is_a_file_is_named_before_any_photo_is_read(trained, tmp_path, monkeypatch):
    ckpt, _ = trained
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    read = []
    monkeypatch.setattr("carvana_seg.data.layout.check_photo", lambda path: read.append(path))
    with pytest.raises(InputError, match=rf"data.cache_dir {afile} cannot be used \(it is a file\)"):
        evaluate(eval_cfg(tmp_path, ckpt, f"paths.cache_dir={afile}"))
    assert read == [] and afile.read_text() == "not a folder"


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path):
    bogus = tmp_path / "model.ckpt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        evaluate(eval_cfg(tmp_path, bogus))
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(InputError, match="not a carvana_seg checkpoint"):
        evaluate(eval_cfg(tmp_path, bogus))
    with pytest.raises(InputError, match="does not exist"):
        evaluate(eval_cfg(tmp_path, tmp_path / "missing.ckpt"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.batch_size=0", "data.batch_size must be a whole number >= 1, got 0"),
        ("worst_k=-1", "worst_k must be a whole number >= 0, got -1"),
        ("data.image_size=[0,48]", "data.image_size must be null or [H, W] in whole pixels >= 1"),
        ("threshold=half", "threshold must be a probability strictly between 0 and 1, got 'half'"),
        ("thresholds=[0.5,1.5]", "each of thresholds must be a probability strictly between 0 and 1"),
        ("tta_hflip=yes", "tta_hflip must be true or false, got 'yes'"),
        ("precision=fp32", "precision must be one of auto, fast, 32,"),  # was fp16 autocast on a GPU
        ("precision=16mixed", "got '16mixed'"),
        ("device=0", "device must be auto, cpu, cuda or cuda:N, got 0"),  # a number from Hydra
    ],
)
def test_a_bad_option_is_refused_before_the_checkpoint_is_read(tmp_path, override, message):
    with pytest.raises(InputError) as raised:
        evaluate(eval_cfg(tmp_path, tmp_path / "never_read.ckpt", override))
    assert message in str(raised.value)
    assert not (tmp_path / "eval").exists()


def test_the_runs_validation_cars_gone_from_its_folder_are_named(make_cfg, carvana_dir, tmp_path):
    ckpt = train(make_cfg("callbacks.prediction_grid=null"))["last_checkpoint"]
    car = json.loads((tmp_path / "run" / "split.json").read_text())["val"][0]
    for photo in (carvana_dir / "train").glob(f"{car}_*.jpg"):
        photo.unlink()
        (carvana_dir / "train_masks" / photo.name.replace(".jpg", "_mask.gif")).unlink()
    with pytest.raises(InputError, match=rf"no longer holds 1 of the run's \d+ validation cars \({car}\)"):
        evaluate(eval_cfg(tmp_path, Path(ckpt)))
    assert evaluate(eval_cfg(tmp_path, Path(ckpt), "split=all", "worst_k=0"))["split"] == "all"


def test_the_edge_band_gives_the_scores_of_the_full_interpolation(trained, tmp_path):
    ckpt, _ = trained
    band = evaluate(eval_cfg(tmp_path / "band", ckpt, "worst_k=0", "thresholds=[0.3,0.7]"))
    full = evaluate(eval_cfg(tmp_path / "full", ckpt, "worst_k=0", "thresholds=[0.3,0.7]", "edge_band=false"))
    assert band["full_size"] == full["full_size"] and band["dice_by_threshold"] == full["dice_by_threshold"]
    rows = [(tmp_path / run / "eval" / "per_image.csv").read_text() for run in ("band", "full")]
    assert rows[0] == rows[1]
