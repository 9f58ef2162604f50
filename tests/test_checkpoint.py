"""The checkpoint has one owner: Lightning's `SegmentationModule.load_from_checkpoint` rebuilds the trained
module from the file alone, builds only the project's own classes, and refuses anything else by name."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, resnet50

from carvana_seg.core.losses import BCEDiceLoss
from carvana_seg.core.module import SegmentationModule
from carvana_seg.errors import InputError
from carvana_seg.models.resnet_unet import ResNetUNet
from carvana_seg.models.unet import UNet
from tests.conftest import ROOT


def forged(tmp_path: Path, trained_ckpt: Path, net: dict, name: str = "forged.ckpt") -> Path:
    """The trained checkpoint with its network config replaced, as an attacker would ship it."""
    checkpoint = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["net"] = net
    path = tmp_path / name
    torch.save(checkpoint, path)
    return path


def test_load_from_checkpoint_rebuilds_the_trained_module_and_its_run(trained):
    ckpt, data = trained
    module = SegmentationModule.load_from_checkpoint(ckpt)
    assert isinstance(module.net, UNet) and isinstance(module.loss, BCEDiceLoss)
    assert not module.training
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    for name, tensor in module.net.state_dict().items():
        assert torch.equal(tensor, stored[f"net.{name}"]), name
    run = module.run_config
    split = json.loads((ckpt.parents[1] / "split.json").read_text())
    assert run.image_size == (32, 48) and run.data_root == str(data.resolve())
    assert list(run.val_cars) == split["val"]
    photos = torch.zeros(2, 3, 32, 48, dtype=torch.uint8)
    assert module(photos).shape == (2, 1, 32, 48)


def compiled(module: SegmentationModule) -> bool:
    """Whether nn.Module.compile() was called on the module's network and loss (torch keeps it private)."""
    return module.net._compiled_call_impl is not None and module.loss._compiled_call_impl is not None


def test_a_compiled_run_stores_each_weight_once_and_inference_loads_it_eager(trained, tmp_path):
    """module.compile=true compiles the network and the loss in place: a checkpoint holds the weight names
    of an eager run (a torch.compile wrapper would store each weight twice, under a second name). Loading
    builds eager modules, as inference meets one photo size after another; compile=True asks for it."""
    ckpt, _ = trained
    net = {"_target_": "carvana_seg.models.unet.UNet", "base_channels": 4, "depth": 2}
    loss = {"_target_": "carvana_seg.core.losses.BCEDiceLoss"}
    module = SegmentationModule(net, loss, compile=True)
    assert compiled(module)
    assert module.state_dict().keys() == SegmentationModule(net, loss).state_dict().keys()
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["compile"] = True  # as a run with module.compile=true saves it
    torch.save(checkpoint, tmp_path / "compiled.ckpt")
    assert not compiled(SegmentationModule.load_from_checkpoint(tmp_path / "compiled.ckpt"))
    assert compiled(SegmentationModule.load_from_checkpoint(tmp_path / "compiled.ckpt", compile=True))
    # A compiled run's checkpoint of the earlier layout: every network weight stored twice, the second
    # time under the wrapper's name. It loads, eager or compiled, with one copy.
    state = checkpoint["state_dict"]
    state.update({f"net_forward._orig_mod.{k[4:]}": v for k, v in state.items() if k.startswith("net.")})
    torch.save(checkpoint, tmp_path / "twice.ckpt")
    for compile_it in (False, True):
        module = SegmentationModule.load_from_checkpoint(tmp_path / "twice.ckpt", compile=compile_it)
        assert module.state_dict().keys() == SegmentationModule(net, loss).state_dict().keys()


@pytest.mark.parametrize(
    "net",
    [
        {"_target_": "os.makedirs", "name": "MARKER"},  # any importable callable
        {"_target_": "carvana_seg.tools.figures.make_all", "sweep_dir": "MARKER", "out_dir": "MARKER"},
        {
            "_target_": "carvana_seg.models.unet.UNet",
            "base_channels": {"_target_": "os.makedirs", "name": "MARKER"},
        },
        {"_target_": "carvana_seg.models.unet.UNet", "_args_": ["MARKER"]},
        {"_target_": "carvana_seg.models.unet.os.makedirs", "name": "MARKER"},
    ],
    ids=["outside-the-project", "project-function", "nested-target", "positional-args", "reached-through"],
)
def test_a_checkpoint_naming_code_outside_the_models_is_refused_without_running_it(trained, tmp_path, net):
    marker = tmp_path / "ran"
    net = json.loads(json.dumps(net).replace("MARKER", str(marker)))
    path = forged(tmp_path, trained[0], net)
    with pytest.raises(InputError, match="model"):
        SegmentationModule.load_from_checkpoint(path)
    assert not marker.exists()


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def test_a_pickled_payload_is_never_unpickled(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "carvana_seg_format": 2, "payload": _Payload(marker)}, path)
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        SegmentationModule.load_from_checkpoint(path)
    raw = tmp_path / "raw.ckpt"
    raw.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(InputError, match="not a readable PyTorch checkpoint"):
        SegmentationModule.load_from_checkpoint(raw)
    assert not marker.exists()


def test_a_checkpoint_of_the_earlier_format_says_to_retrain(tmp_path):
    old = tmp_path / "old.ckpt"
    config = {"model": {"_target_": "carvana_seg.models.unet.UNet"}, "data": {"image_size": [32, 48]}}
    torch.save({"state_dict": {"net.w": torch.zeros(1)}, "carvana_seg": {"config": config}}, old)
    with pytest.raises(InputError, match=r"earlier carvana_seg.*retrain"):
        SegmentationModule.load_from_checkpoint(old)
    with pytest.raises(InputError, match="does not exist"):
        SegmentationModule.load_from_checkpoint(tmp_path / "missing.ckpt")


def test_predict_with_a_malicious_checkpoint_exits_2_naming_it(trained, tmp_path):
    marker = tmp_path / "ran"
    path = forged(tmp_path, trained[0], {"_target_": "os.makedirs", "name": str(marker)})
    photos = tmp_path / "photos"
    photos.mkdir()
    command = [
        sys.executable,
        "-m",
        "carvana_seg.predict",
        f"ckpt_path={path}",
        f"input={photos}",
        f"output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'logs'}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "os.makedirs is not a class of carvana_seg.models" in result.stdout + result.stderr
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_pretrained_encoder_files_are_not_needed_to_load(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save(resnet18().state_dict(), weights)
    net = {
        "_target_": "carvana_seg.models.resnet_unet.ResNetUNet",
        "encoder": "resnet18",
        "decoder_channels": [32, 16, 8, 8, 8],
        "encoder_weights": str(weights),
    }
    module = SegmentationModule(net=net, loss={"_target_": "carvana_seg.core.losses.BCELoss"})
    assert module.hparams["net"]["encoder_weights"] is None
    assert module.hparams["net"]["encoder"] == "resnet18"


def test_an_encoder_weights_file_that_is_not_a_state_dict_is_refused_naming_it(tmp_path):
    weights = tmp_path / "resnet18.pth"
    torch.save([torch.zeros(1)], weights)
    with pytest.raises(InputError, match=r"model.encoder_weights: .*resnet18.pth holds a list, not a state"):
        ResNetUNet("resnet18", decoder_channels=[32, 16, 8, 8, 8], encoder_weights=str(weights))


def test_encoder_weights_saved_before_batchnorm_counted_its_batches_load(tmp_path):
    weights = tmp_path / "resnet18-old.pth"
    state = {k: v for k, v in resnet18().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, weights)  # as torchvision's older ImageNet files are
    net = ResNetUNet("resnet18", decoder_channels=[32, 16, 8, 8, 8], encoder_weights=str(weights))
    assert any(torch.equal(p, state["conv1.weight"]) for p in net.parameters())


def test_another_depths_encoder_weights_are_refused_naming_the_shapes_that_differ(tmp_path):
    weights = tmp_path / "resnet34.pth"
    torch.save(resnet18(num_classes=10).state_dict(), weights)  # resnet18's into a resnet34 layout
    deeper = tmp_path / "resnet50.pth"
    torch.save(resnet50().state_dict(), deeper)  # the same names, bottleneck shapes
    with pytest.raises(InputError, match=r"resnet34.pth does not fit this encoder \(missing \['layer1.2"):
        ResNetUNet("resnet34", decoder_channels=[32, 16, 8, 8, 8], encoder_weights=str(weights))
    with pytest.raises(
        InputError, match=r"resnet50.pth does not fit .*other shapes \['layer1.0.conv1.weight"
    ):
        ResNetUNet("resnet18", decoder_channels=[32, 16, 8, 8, 8], encoder_weights=str(deeper))


@pytest.mark.parametrize(
    ("key", "value"),
    [("threshold", "half"), ("threshold", 2.0), ("mean", ["a", "b", "c"]), ("run", {"image_size": "big"})],
)
def test_forged_hyperparameters_are_refused_by_name(trained, tmp_path, key, value):
    checkpoint = torch.load(trained[0], map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"][key] = value
    path = tmp_path / "forged.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match=f"ckpt_path {path}"):
        SegmentationModule.load_from_checkpoint(path)
