"""model=smp and pretrained encoders: any input size gives logits of that size; ImageNet weights come
through the libraries' own download code (here from caches the tests lay out, as if downloaded) or from
local files; a download that cannot happen is a plain InputError saying how to give the file."""

import urllib.error

import huggingface_hub.constants
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.models import resnet18

from carvana_seg.core.module import SegmentationModule
from carvana_seg.errors import InputError
from carvana_seg.models.resnet_unet import ResNetUNet
from carvana_seg.models.smp import SmpNet
from carvana_seg.train import train

TINY = {"encoder_depth": 3, "arch_options": {"decoder_channels": [16, 8, 8]}}
TIMM_TINY = "mobilenetv3_small_050"  # 0.3M weights at depth 3


@pytest.mark.parametrize(
    ("arch", "encoder", "options"),
    [
        ("Unet", "resnet18", TINY),
        ("Unet", "mobilenet_v2", TINY),
        ("Unet", "efficientnet-b0", TINY),
        ("Unet", f"tu-{TIMM_TINY}", TINY),
        ("FPN", "resnet18", {}),
        ("Linknet", f"tu-{TIMM_TINY}", {}),
        ("DeepLabV3Plus", "resnet18", {}),
        ("UnetPlusPlus", f"tu-{TIMM_TINY}", TINY),
    ],
)
def test_logits_have_the_input_size_whatever_the_stride(arch, encoder, options):
    net = SmpNet(arch, encoder, **options).eval()
    with torch.no_grad():
        for size in [(32, 48), (37, 61)]:
            logits = net(torch.randn(2, 3, *size))
            assert logits.shape == (2, 1, *size)
            assert torch.isfinite(logits).all()


def test_the_input_is_padded_by_its_edge_pixels_to_the_stride_and_cropped_back():
    net = SmpNet("Unet", f"tu-{TIMM_TINY}").eval()  # depth 5: stride 32
    assert net.stride == 32
    x = torch.randn(1, 3, 160, 240)  # 240 = 7.5 x 32
    with torch.no_grad():
        logits = net(x)
        padded = net.model(F.pad(x, [8, 8, 0, 0], mode="replicate"))[..., 8:-8]
    assert logits.shape == (1, 1, 160, 240)
    assert torch.equal(logits, padded)


def test_a_full_size_photo_gives_full_size_logits():
    net = SmpNet("Unet", f"tu-{TIMM_TINY}", pad_mode="zeros", **TINY).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 1280, 1918)).shape == (1, 1, 1280, 1918)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"arch": "SegNet"}, "model.arch must be one of"),
        ({"encoder_name": "resnet9000"}, "model.encoder_name: 'resnet9000' is not an smp encoder"),
        ({"encoder_name": "tu-nonexistent_net"}, "model.encoder_name: 'nonexistent_net' is not a timm model"),
        ({"encoder_weights": "instagram"}, "model.encoder_weights: resnet18 has the weight sets"),
        ({"encoder_name": f"tu-{TIMM_TINY}", "encoder_weights": "ssl"}, "a timm encoder takes imagenet"),
        ({"pad_mode": "reflect"}, "model.pad_mode must be one of"),
        ({"arch_options": {"nonsense": 1}}, "model.arch_options: Unet has no option ['nonsense']"),
        ({"arch_options": {"decoder_channels": [8, 8]}}, "decoder_channels"),
    ],
)
def test_a_bad_option_is_an_input_error_naming_it(options, message):
    with pytest.raises(InputError) as raised:
        SmpNet(**{"encoder_name": "resnet18", "encoder_depth": 3, **options})
    assert message in str(raised.value)


def test_local_files_of_torchvision_timm_and_smp_load_into_the_encoder(tmp_path):
    reference = resnet18()  # torchvision's layout, with the classifier the encoder has not
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    net = SmpNet("Unet", "resnet18", encoder_weights=str(tmp_path / "resnet18.pth"), **TINY)
    assert torch.equal(net.model.encoder.conv1.weight, reference.conv1.weight)

    classifier = timm.create_model(TIMM_TINY)  # timm's layout: no `model.` prefix, a classifier
    save_file(classifier.state_dict(), str(tmp_path / "timm.safetensors"))
    net = SmpNet("Unet", f"tu-{TIMM_TINY}", encoder_weights=str(tmp_path / "timm.safetensors"), **TINY)
    assert torch.equal(net.model.encoder.model.conv_stem.weight, classifier.conv_stem.weight)

    torch.save(net.state_dict(), tmp_path / "whole.pth")  # a whole model's: `model.encoder.` keys
    again = SmpNet("Unet", f"tu-{TIMM_TINY}", encoder_weights=str(tmp_path / "whole.pth"), **TINY)
    assert torch.equal(again.model.encoder.model.conv_stem.weight, classifier.conv_stem.weight)


def test_local_weights_are_adapted_to_more_input_channels(tmp_path):
    reference = resnet18()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    net = SmpNet("Unet", "resnet18", encoder_weights=str(tmp_path / "resnet18.pth"), in_channels=4, **TINY)
    rgb = reference.conv1.weight
    assert torch.allclose(net.model.encoder.conv1.weight, torch.cat([rgb, rgb[:, :1]], 1) * 0.75)
    assert net(torch.randn(1, 4, 32, 48)).shape == (1, 1, 32, 48)


def test_a_local_file_that_is_missing_or_of_another_encoder_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        SmpNet("Unet", "resnet18", encoder_weights=str(tmp_path / "none.pth"), **TINY)
    torch.save(timm.create_model(TIMM_TINY).state_dict(), tmp_path / "other.pth")
    with pytest.raises(InputError, match="does not fit this encoder"):
        SmpNet("Unet", "resnet18", encoder_weights=str(tmp_path / "other.pth"), **TINY)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and no network: what a download finds is what the test put there."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def test_imagenet_weights_come_through_smps_download_from_its_cache(hub_cache):
    settings = smp.encoders.encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
    snapshot = hub_cache / f"models--{settings['repo_id'].replace('/', '--')}" / "snapshots"
    snapshot = snapshot / settings["revision"]
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    downloaded = smp.encoders.get_encoder("mobilenet_v2")  # what smp's hub file holds: its encoder
    save_file(downloaded.state_dict(), str(snapshot / "model.safetensors"))
    net = SmpNet("Unet", "mobilenet_v2", encoder_weights="imagenet", **TINY)
    first = net.model.encoder.features[0][0].weight
    assert torch.equal(first, downloaded.features[0][0].weight)


@pytest.mark.parametrize("encoder", ["resnet18", f"tu-{TIMM_TINY}"])
def test_no_network_is_an_input_error_saying_how_to_give_the_file(hub_cache, encoder):
    with pytest.raises(InputError) as raised:
        SmpNet("Unet", encoder, encoder_weights="imagenet", **TINY)
    message = str(raised.value)
    assert "could not be downloaded" in message and "model.encoder_weights=/path/to/file.pth" in message
    assert "huggingface.co/" in message


def test_resnet_unet_imagenet_weights_come_from_torchvisions_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = resnet18()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    for name in ("imagenet", "IMAGENET1K_V1"):
        net = ResNetUNet("resnet18", decoder_channels=(16, 8, 8, 8, 8), encoder_weights=name)
        assert torch.equal(net.stem[0].weight, reference.conv1.weight)
        assert torch.equal(net.stages[-1][-1].conv2.weight, reference.layer4[-1].conv2.weight)


def test_resnet_unet_without_network_is_an_input_error_saying_how_to_give_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(InputError) as raised:
        ResNetUNet("resnet18", encoder_weights="imagenet")
    message = str(raised.value)
    assert "model.encoder_weights=/path/to/file.pth" in message
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message


def test_model_smp_trains_and_its_checkpoint_rebuilds_without_the_weights_file(
    make_cfg, tmp_path, monkeypatch
):
    # conftest shrinks every network but the CNN with the U-Net's options, which SmpNet has not.
    monkeypatch.setitem(make_cfg.__globals__, "TINY_UNET", [])
    weights = tmp_path / "encoder.pth"
    torch.save(timm.create_model(TIMM_TINY).state_dict(), weights)
    cfg = make_cfg(
        "model=smp",
        f"model.encoder_name=tu-{TIMM_TINY}",
        "model.encoder_depth=3",
        "+model.arch_options.decoder_channels=[16,8,8]",
        f"model.encoder_weights={weights}",
        "callbacks.prediction_grid=null",
    )
    metrics = train(cfg)
    assert 0.0 <= metrics["val/dice"] <= 1.0
    weights.unlink()  # the checkpoint alone must rebuild the network
    path = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = SegmentationModule.load_from_checkpoint(path)
    assert isinstance(module.net, SmpNet) and module.hparams["net"]["encoder_weights"] is None
    saved = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(value, saved[name]) for name, value in module.state_dict().items())
    with torch.no_grad():
        logits = module(torch.randint(0, 256, (1, 3, 37, 61), dtype=torch.uint8))
    assert logits.shape == (1, 1, 37, 61)
