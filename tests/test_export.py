"""python -m carvana_seg.export: a uint8 photo of any size in, its full-size probabilities out, the same
under ONNX Runtime and TorchScript as in PyTorch, on Carvana-size photos."""

import json
import subprocess
import sys

import cv2
import numpy as np
import onnx
import pytest
import torch

from carvana_seg.config import compose
from carvana_seg.core.module import SegmentationModule
from carvana_seg.errors import exit_on_input_error
from carvana_seg.export import PhotoModel, area_axis, compare, export, export_onnx, load_exported
from tests.conftest import ROOT, draw_view

FULL = (1280, 1918)


def photos(count: int = 2, size: tuple[int, int] = FULL) -> list[np.ndarray]:
    """Carvana-size photos (1, 3, H, W) of a dark ellipse 'car' on a light backdrop, with noise."""
    rng = np.random.default_rng(7)
    found = []
    for _ in range(count):
        image, _ = draw_view(size, rng)
        image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
        found.append(np.ascontiguousarray(image.transpose(2, 0, 1))[None])
    return found


def agreement(model: PhotoModel, exported, photo: np.ndarray, share: float = 1e-5) -> dict[str, float]:
    """`compare`, checked: masks differ at most in a tiny share of pixels, and only where the
    probability lies within float rounding of the threshold (an untrained network, whose probabilities
    all sit near 0.5, is given a larger `share`)."""
    found = compare(model, exported, photo)
    with torch.no_grad():
        expected = model(torch.from_numpy(photo)).numpy()
    differ = (exported(photo) > 0.5) != (expected > 0.5)
    assert found["mask_differing_share"] < share, found
    assert np.all(np.abs(expected[differ] - 0.5) <= found["max_probability_difference"]), found
    return found


@pytest.mark.parametrize(("source", "target"), [(FULL, (160, 240)), (FULL, (640, 959)), ((37, 61), (37, 61))])
def test_area_resize_is_cv2s_inter_area_before_its_rounding(source, target):
    photo = np.random.default_rng(0).integers(0, 256, (*source, 3), dtype=np.uint8)
    expected = cv2.resize(photo, (target[1], target[0]), interpolation=cv2.INTER_AREA).astype(np.float32)
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float()
    found = area_axis(area_axis(x, target[1], 3), target[0], 2)[0].permute(1, 2, 0).numpy()
    # cv2 rounds its averages to whole levels; ours hold the float rounding of the running sums.
    assert np.abs(found - expected).max() <= 0.5 + 0.01


def test_onnx_model_agrees_with_pytorch_on_full_size_photos(trained, tmp_path):
    cfg = compose("export", [f"ckpt_path={trained[0]}", f"output={tmp_path / 'car.onnx'}"])
    result = export(cfg)  # verify=true: the command's own check, on a random photo
    assert result["output"] == str(tmp_path / "car.onnx") and result["mask_differing_share"] < 1e-4
    graph = onnx.load(str(tmp_path / "car.onnx"))
    props = {p.key: p.value for p in graph.metadata_props}
    assert json.loads(props["carvana_seg.image_size"]) == [32, 48] and props["carvana_seg.threshold"] == "0.5"
    assert props["carvana_seg.tta_hflip"] == "true"  # flip TTA inside, as predict's default
    model = PhotoModel(SegmentationModule.load_from_checkpoint(trained[0]), (32, 48), tta_hflip=True).eval()
    session = load_exported(tmp_path / "car.onnx", "onnx")
    for photo in [*photos(), *photos(1, (641, 957))]:  # any size: the graph's H and W are free
        found = agreement(model, session, photo)
        assert session(photo).shape == (1, 1, *photo.shape[-2:])
        print(f"ONNX Runtime vs PyTorch at {photo.shape[-2:]}: {found}")


def test_torchscript_model_is_pytorchs_to_the_bit(trained, tmp_path):
    cfg = compose("export", [f"ckpt_path={trained[0]}", "format=torchscript", "verify=false"])
    result = export(cfg)
    path = trained[0].with_suffix(".torchscript.pt")  # beside the checkpoint
    assert result["output"] == str(path)
    files = {"carvana_seg.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    assert json.loads(files["carvana_seg.json"])["carvana_seg.threshold"] == "0.5"
    model = PhotoModel(SegmentationModule.load_from_checkpoint(trained[0]), (32, 48), tta_hflip=True).eval()
    loaded = load_exported(path, "torchscript")
    for photo in [*photos(1), *photos(1, (641, 957))]:
        found = compare(model, loaded, photo)
        print(f"TorchScript vs PyTorch at {photo.shape[-2:]}: {found}")
        assert found["max_probability_difference"] < 1e-6 and found["mask_differing_share"] == 0


def test_an_smp_network_exports_to_onnx(tmp_path):
    net = {
        "_target_": "carvana_seg.models.smp.SmpNet",
        "encoder_name": "tu-mobilenetv3_small_050",
        "encoder_depth": 3,
        "arch_options": {"decoder_channels": [16, 8, 8]},
    }
    module = SegmentationModule(net=net, loss={"_target_": "carvana_seg.core.losses.BCELoss"}).eval()
    model = PhotoModel(module, (160, 240)).eval()  # 240: padded to the stride inside the network
    export_onnx(model, tmp_path / "smp.onnx", {})
    found = agreement(model, load_exported(tmp_path / "smp.onnx", "onnx"), photos(1)[0], share=1e-4)
    print(f"ONNX Runtime vs PyTorch, smp Unet: {found}")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["format=tflite"], "format must be one of onnx, torchscript, got 'tflite'"),
        (["image_size=[32]"], "image_size must be null or [H, W]"),
        (["ckpt_path=/nonexistent/best.ckpt"], "ckpt_path /nonexistent/best.ckpt does not exist"),
        # predict would read model.bin as a checkpoint and call it cut short
        (["output=model.bin"], "an ONNX file is named *.onnx, e.g."),
        (["format=torchscript", "output=model.onnx"], "predict would read a *.onnx file as ONNX"),
    ],
)
def test_bad_options_exit_2_naming_them(trained, tmp_path, caplog, overrides, message):
    cfg = compose("export", [f"ckpt_path={trained[0]}", f"output={tmp_path / 'm.onnx'}", *overrides])
    with pytest.raises(SystemExit) as raised:
        exit_on_input_error(export, cfg)
    assert raised.value.code == 2 and message in caplog.text
    assert not (tmp_path / "m.onnx").exists()


def test_an_output_that_is_the_checkpoint_is_refused_and_the_checkpoint_kept(trained, tmp_path, caplog):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(trained[0].read_bytes())
    cfg = compose("export", [f"ckpt_path={ckpt}", f"output={ckpt}", "format=torchscript"])
    with pytest.raises(SystemExit) as raised:
        exit_on_input_error(export, cfg)
    assert raised.value.code == 2 and "is the checkpoint itself" in caplog.text
    assert ckpt.read_bytes() == trained[0].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt"]


def test_an_output_named_like_a_checkpoint_is_refused_and_the_runs_other_checkpoint_kept(
    trained, tmp_path, caplog
):
    best, last = tmp_path / "best.ckpt", tmp_path / "last.ckpt"
    best.write_bytes(trained[0].read_bytes())
    last.write_bytes(b"the checkpoint a resume needs")
    cfg = compose("export", [f"ckpt_path={best}", f"output={last}", "format=torchscript"])
    with pytest.raises(SystemExit) as raised:
        exit_on_input_error(export, cfg)
    assert raised.value.code == 2 and "*.ckpt names a training checkpoint" in caplog.text
    assert last.read_bytes() == b"the checkpoint a resume needs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_the_command_exits_2_on_a_bad_format(tmp_path):
    command = [sys.executable, "-m", "carvana_seg.export", "ckpt_path=x.ckpt", "format=tflite"]
    result = subprocess.run(
        [*command, f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "format must be one of onnx, torchscript" in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["export", "evaluate", "predict"])
def test_a_command_run_without_its_checkpoint_exits_2_naming_the_option(command, tmp_path):
    # Their configs leave ckpt_path `???`: OmegaConf's error is the user's to fix, not a traceback.
    argv = [sys.executable, "-m", f"carvana_seg.{command}", f"hydra.run.dir={tmp_path}"]
    if command == "predict":
        argv += [f"input={tmp_path}", f"output={tmp_path / 'out'}"]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "ckpt_path must be given: pass ckpt_path=..." in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
