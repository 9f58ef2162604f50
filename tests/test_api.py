"""The Python API: a checkpoint loaded in one line, full-size masks and probabilities for a path, an
array or a PIL image of any size, identical to what the predict command writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import carvana_seg
from carvana_seg import Prediction, Predictor, SegmentationModule
from carvana_seg.config import compose
from carvana_seg.core.postprocess import largest
from carvana_seg.data.decode import read_image, read_mask
from carvana_seg.errors import InputError
from carvana_seg.predict import predict


def test_the_package_exports_the_api():
    assert carvana_seg.Predictor is Predictor and carvana_seg.SegmentationModule is SegmentationModule
    assert set(carvana_seg.__all__) >= {"Predictor", "Prediction", "SegmentationModule"}


def test_one_photo_gives_a_full_size_mask_and_probabilities(trained):
    ckpt, data = trained
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    path = sorted((data / "train").glob("*.jpg"))[0]
    result = predictor.predict(path)
    assert isinstance(result, Prediction)
    assert result.mask.shape == (64, 96) and result.mask.dtype == bool
    assert result.probability.shape == (64, 96) and result.probability.dtype == np.float32
    assert result.probability.min() >= 0.0 and result.probability.max() <= 1.0
    # The threshold, then the largest piece (the default clean-up, as in the commands).
    assert np.array_equal(result.mask, largest((result.probability > 0.5).view(np.uint8)).astype(bool))


def test_arrays_and_pil_images_of_any_size(trained):
    predictor = Predictor.from_checkpoint(trained[0], device="cpu")
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(100, 150, 3), dtype=np.uint8)
    from_array = predictor.predict(array)
    from_pil = predictor.predict(Image.fromarray(array))
    assert from_array.mask.shape == (100, 150)
    assert np.array_equal(from_array.mask, from_pil.mask)
    assert np.array_equal(from_array.probability, from_pil.probability)
    with pytest.raises(InputError, match="RGB array"):
        predictor.predict(array[:, :, 0])
    with pytest.raises(InputError, match="uint8"):
        predictor.predict(array.astype(np.float32))


def test_a_list_of_paths_in_batches_equals_the_predict_command(trained, tmp_path):
    ckpt, data = trained
    paths = sorted((data / "train").glob("*.jpg"))
    predictor = Predictor.from_checkpoint(ckpt, device="cpu")
    batched = list(predictor.predict_paths(paths, batch_size=3))
    assert len(batched) == len(paths)
    for path, result in zip(paths[:3], batched[:3], strict=True):
        assert np.array_equal(predictor.predict(path).mask, result.mask)
    out = tmp_path / "out"
    predict(
        compose(
            "predict",
            [
                f"ckpt_path={ckpt}",
                f"input={data / 'train'}",
                f"output={out}",
                "data.num_workers=0",
                "device=cpu",
            ],
        )
    )
    for path, result in zip(paths, batched, strict=True):
        written = read_mask(out / "masks" / f"{path.stem}_mask.gif")
        assert np.array_equal(written.astype(bool), result.mask), path.name


def test_the_input_size_and_threshold_can_be_chosen(trained):
    ckpt, data = trained
    path = sorted((data / "train").glob("*.jpg"))[0]
    options = {"device": "cpu", "threshold": 0.9, "image_size": (64, 96), "postprocess": ()}
    strict = Predictor.from_checkpoint(ckpt, **options).predict(path)
    assert strict.mask.shape == (64, 96)
    assert np.array_equal(strict.mask, strict.probability > 0.9)
    assert read_image(path).shape[:2] == strict.mask.shape
    with pytest.raises(InputError, match="threshold"):
        Predictor.from_checkpoint(ckpt, threshold=1.0)


def test_the_mask_keeps_the_largest_piece_by_default_as_the_commands_do(trained):
    ckpt, data = trained
    paths = sorted((data / "train").glob("*.jpg"))
    # Without flip TTA: the tiny network's single pass leaves stray pieces for the clean-up to remove.
    raw = list(
        Predictor.from_checkpoint(ckpt, device="cpu", postprocess=(), tta_hflip=False).predict_paths(paths)
    )
    cleaned = list(Predictor.from_checkpoint(ckpt, device="cpu", tta_hflip=False).predict_paths(paths))
    assert any(not np.array_equal(a.mask, b.mask) for a, b in zip(raw, cleaned, strict=True))
    for before, after in zip(raw, cleaned, strict=True):
        assert np.array_equal(after.mask, largest(before.mask.view(np.uint8)).astype(bool))
        assert np.array_equal(after.probability, before.probability)
    with pytest.raises(InputError, match="unknown postprocess"):
        Predictor.from_checkpoint(ckpt, postprocess=["biggest"])
