"""U-Net whose encoder is a torchvision ResNet (He et al., 2016), as in the strong Carvana solutions.

The ResNet stem halves the resolution twice before its first block, so the expensive full-resolution
convolutions of the plain U-Net are replaced by a decoder that brings the skip features (1/2, 1/4,
... 1/32 of the input) back up. The encoder starts from random weights unless `encoder_weights` is
`imagenet` (torchvision's weights, downloaded once into torch's hub cache) or a local file of them
(e.g. torchvision's resnet34-b627a593.pth).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum, resnet

from carvana_seg.errors import InputError
from carvana_seg.models.unet import DoubleConv, Up

_ENCODERS = {
    "resnet18": (resnet.resnet18, resnet.ResNet18_Weights, (64, 64, 128, 256, 512)),
    "resnet34": (resnet.resnet34, resnet.ResNet34_Weights, (64, 64, 128, 256, 512)),
    "resnet50": (resnet.resnet50, resnet.ResNet50_Weights, (64, 256, 512, 1024, 2048)),
}


def torchvision_weights(encoder: str, name: str) -> WeightsEnum | None:
    """torchvision's weights that `name` means ("imagenet": its best ImageNet set; or an exact name
    such as IMAGENET1K_V1), or None when `name` is a file path."""
    weights = _ENCODERS[encoder][1]
    if name == "imagenet":
        return weights.DEFAULT
    return weights[name] if name in weights.__members__ else None


def pretrained_backbone(build: Callable[..., resnet.ResNet], weights: WeightsEnum) -> resnet.ResNet:
    """torchvision's ResNet with `weights`, downloaded into torch's hub cache the first time."""
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    try:
        return build(weights=weights, progress=True)
    except Exception as err:  # no network (URLError), a refused or cut download, a bad cached file
        raise InputError(
            f"model.encoder_weights: torchvision's {weights} could not be loaded "
            f"({type(err).__name__}: {str(err)[:200]}). Without internet, fetch {weights.url} on another "
            f"machine and either put it at {file} or pass it: model.encoder_weights=/path/to/file.pth"
        ) from err


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local ResNet state dict (torchvision's ImageNet file, or one saved from it)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(
            f"model.encoder_weights: {path} does not exist: save the ImageNet weights there first (e.g. "
            "torchvision's resnet34-b627a593.pth), set model.encoder_weights=imagenet to download them, "
            "or null to start from random weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a file that is not a state dict
        raise InputError(f"model.encoder_weights: {path} is not a readable PyTorch state dict") from err
    if not isinstance(state, dict):
        raise InputError(f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not str(k).startswith("fc.")}  # the classifier is not used
    own = encoder.state_dict()
    # torchvision's older ImageNet files predate BatchNorm's num_batches_tracked: not needed to fit.
    missing = [
        k for k in own if k not in state and not k.startswith("fc.") and "num_batches_tracked" not in k
    ]
    unexpected = [k for k in state if k not in own]
    # Another depth's file (resnet50's into resnet34) shares names with other shapes: named, not a traceback.
    misshapen = [
        f"{k} {tuple(getattr(v, 'shape', ()))} for {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and not (isinstance(v, torch.Tensor) and v.shape == own[k].shape)
    ]
    if missing or unexpected or misshapen:
        raise InputError(
            f"model.encoder_weights: {path} does not fit this encoder "
            f"(missing {missing[:3]}..., unexpected {unexpected[:3]}..., other shapes {misshapen[:2]}...)"
        )
    encoder.load_state_dict(state, strict=False)


class ResNetUNet(nn.Module):
    """ResNet encoder, U-Net decoder (up-sample, pad to the skip's size, concatenate, double conv).

    Args:
        encoder: "resnet18", "resnet34" or "resnet50".
        decoder_channels: widths of the five decoder stages, from 1/16 up to full resolution.
        encoder_weights: None (random), "imagenet" (torchvision's best ImageNet weights, downloaded
            into torch's hub cache the first time), a torchvision name such as "IMAGENET1K_V1", or a
            local file of the encoder's weights.
        in_channels, out_channels: image channels in, logits per pixel out.
    """

    # Only the starting point of the weights: a checkpoint's weights replace them when it is loaded.
    init_only_arguments = ("encoder_weights",)

    def __init__(
        self,
        encoder: str = "resnet34",
        decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
        encoder_weights: str | None = None,
        in_channels: int = 3,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if encoder not in _ENCODERS:
            raise InputError(f"model.encoder must be one of {sorted(_ENCODERS)}, got {encoder!r}")
        if len(decoder_channels) != 5:
            raise InputError(f"model.decoder_channels needs 5 widths, got {list(decoder_channels)}")
        build, _, widths = _ENCODERS[encoder]
        named = torchvision_weights(encoder, encoder_weights) if encoder_weights else None
        backbone = build(weights=None) if named is None else pretrained_backbone(build, named)
        if encoder_weights and named is None:
            load_encoder_weights(backbone, encoder_weights)
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu)  # 1/2
        self.pool = backbone.maxpool  # 1/4
        self.stages = nn.ModuleList([backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4])
        skips = [widths[3], widths[2], widths[1], widths[0], 0]  # 1/16, 1/8, 1/4, 1/2, full size
        incoming = [widths[4], *decoder_channels[:-1]]
        self.ups = nn.ModuleList(
            Up(inp, skip, out) if skip else _UpNoSkip(inp, out)
            for inp, skip, out in zip(incoming, skips, decoder_channels, strict=True)
        )
        self.head = nn.Conv2d(decoder_channels[-1], out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        half = self.stem(x)
        features = [half]
        y = self.pool(half)
        for stage in self.stages:
            y = stage(y)
            features.append(y)
        # features: 1/2 (stem), 1/4, 1/8, 1/16, 1/32
        y = features.pop()
        for up in self.ups[:-1]:
            y = up(y, features.pop())
        return self.head(self.ups[-1](y, size))


class _UpNoSkip(nn.Module):
    """The last decoder stage: up to the input's exact size, then a double conv (no skip there)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConv(in_channels, out_channels)

    def forward(self, x: Tensor, size: torch.Size) -> Tensor:
        x = nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.conv(x)
