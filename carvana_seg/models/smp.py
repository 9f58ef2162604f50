"""Any architecture of segmentation_models_pytorch (smp) over any smp or timm encoder, as one nn.Module.

An optional extra: `pip install 'carvana-seg[smp]'`. `encoder_weights=imagenet` goes through the
libraries' own download (the Hugging Face hub, cached after the first time); on a machine without
internet the same weights load from a local file, `encoder_weights=/path/to/file`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from carvana_seg.errors import InputError

_PAD_MODES = {"replicate": "replicate", "zeros": "constant"}


def _smp() -> ModuleType:
    try:
        import segmentation_models_pytorch
    except ImportError as err:
        raise InputError(
            "model=smp needs segmentation_models_pytorch: pip install 'carvana-seg[smp]'"
        ) from err
    return segmentation_models_pytorch


def is_weights_file(value: str) -> bool:
    """A local file rather than the name of a weight set ("imagenet", "ssl", ...)."""
    return "/" in value or "\\" in value or value.startswith("~") or Path(value).suffix != ""


class SmpNet(nn.Module):
    """An smp model from normalised photos to logits, any input size.

    Args:
        arch: smp's architecture by name: Unet, UnetPlusPlus, FPN, Linknet, DeepLabV3Plus, MAnet, ...
        encoder_name: an smp encoder (resnet18, mobilenet_v2, efficientnet-b0, ...) or a timm model as
            `tu-NAME` (`tu-NAME.TAG` picks timm's pretrained tag).
        encoder_weights: None (random), a weight set the libraries download ("imagenet"; smp also has
            "ssl", "swsl", ... for some encoders), or a local file: the encoder's state dict (.pth or
            .safetensors; torchvision's, timm's or smp's ImageNet files load as they are).
        encoder_depth: encoder stages (3..5); the input is padded to a multiple of their stride.
        in_channels, out_channels: image channels in, logits per pixel out.
        pad_mode: "replicate" (the photo's edge pixels) or "zeros" (the mean colour, after
            normalisation) for the padding to the stride, cropped off the logits.
        arch_options: more keyword arguments of the architecture, e.g. {"decoder_channels": [...]}.
    """

    # Only the starting point of the weights: a checkpoint's weights replace them when it is loaded.
    init_only_arguments = ("encoder_weights",)

    def __init__(
        self,
        arch: str = "Unet",
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        in_channels: int = 3,
        out_channels: int = 1,
        pad_mode: str = "replicate",
        arch_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        smp = _smp()
        architectures = smp.MODEL_ARCHITECTURES_MAPPING
        if not isinstance(arch, str) or arch.lower() not in architectures:
            names = sorted(a.__name__ for a in architectures.values())
            raise InputError(f"model.arch must be one of {names}, got {arch!r}")
        if pad_mode not in _PAD_MODES:
            raise InputError(f"model.pad_mode must be one of {sorted(_PAD_MODES)}, got {pad_mode!r}")
        _check_encoder(smp, encoder_name)
        options = dict(arch_options or {})
        _check_options(architectures[arch.lower()], encoder_name, options)
        local, named = None, None
        if encoder_weights and is_weights_file(encoder_weights):
            local = encoder_weights
        elif encoder_weights:
            named = _check_weight_set(smp, encoder_name, encoder_weights)
        try:
            self.model = smp.create_model(
                arch,
                encoder_name=encoder_name,
                encoder_weights=named,
                encoder_depth=encoder_depth,
                in_channels=in_channels,
                classes=out_channels,
                **options,
            )
        except _download_errors() as err:
            if named is None:
                raise
            raise InputError(
                f"model.encoder_weights={encoder_weights}: the weights of {encoder_name} could not be "
                f"downloaded ({type(err).__name__}: {str(err)[:200]}). Without internet, fetch the file "
                f"on another machine ({_source(smp, encoder_name, encoder_weights)}) and pass it: "
                "model.encoder_weights=/path/to/file.pth (or .safetensors), or set "
                "model.encoder_weights=null to start from random weights"
            ) from err
        except (TypeError, ValueError, AssertionError, KeyError) as err:
            # smp's and timm's own checks of the options (decoder widths against the depth, ...).
            raise InputError(f"model={arch} with encoder {encoder_name}: {err}") from err
        if local:
            load_encoder_weights(self.model.encoder, local)
        self.padding = _PAD_MODES[pad_mode]
        # Unet alone accepts any size, through uneven resizes of its skips: padding keeps every
        # architecture on the stride grid its encoder was trained on.
        self.stride = int(self.model.encoder.output_stride)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2], x.shape[-1]
        pad_h, pad_w = (-height) % self.stride, (-width) % self.stride
        if pad_h == 0 and pad_w == 0:
            return self.model(x)
        top, left = pad_h // 2, pad_w // 2
        x = F.pad(x, [left, pad_w - left, top, pad_h - top], mode=self.padding)
        return self.model(x)[..., top : top + height, left : left + width]


def _check_encoder(smp: ModuleType, name: str) -> None:
    if isinstance(name, str) and name.startswith("tu-"):
        import timm

        if timm.is_model(name[3:]):
            return
        raise InputError(
            f"model.encoder_name: {name[3:]!r} is not a timm model (timm.list_models() lists them)"
        )
    if name not in smp.encoders.encoders:
        known = ", ".join(sorted(smp.encoders.encoders)[:12])
        raise InputError(
            f"model.encoder_name: {name!r} is not an smp encoder (e.g. {known}, ...: "
            "segmentation_models_pytorch.encoders.get_encoder_names()) nor a timm model written tu-NAME"
        )


def _check_options(architecture: type, encoder_name: str, options: dict[str, Any]) -> None:
    """Unknown options are refused: smp hands what its architecture does not take to the encoder,
    which uses them for timm's (`tu-`) encoders only and otherwise drops them silently."""
    own = {"self", "encoder_name", "encoder_weights", "encoder_depth", "in_channels", "classes"}
    taken = {
        name
        for name, p in inspect.signature(architecture.__init__).parameters.items()
        if p.kind is not p.VAR_KEYWORD and name not in own
    }
    unknown = sorted(set(options) - taken)
    if unknown and not encoder_name.startswith("tu-"):
        raise InputError(
            f"model.arch_options: {architecture.__name__} has no option {unknown} (it has {sorted(taken)})"
        )


def _check_weight_set(smp: ModuleType, encoder_name: str, weights: str) -> str | bool:
    """smp's name of the weight set, or True for timm's pretrained weights (`tu-` encoders)."""
    if encoder_name.startswith("tu-"):
        import timm

        if weights != "imagenet":
            raise InputError(
                f"model.encoder_weights: a timm encoder takes imagenet (timm's pretrained weights; pick "
                f"a variant in the name, tu-NAME.TAG), null or a file, got {weights!r}"
            )
        if not timm.is_model_pretrained(encoder_name[3:]):
            raise InputError(f"model.encoder_weights: timm has no pretrained weights for {encoder_name[3:]}")
        return True
    sets = sorted(smp.encoders.encoders[encoder_name]["pretrained_settings"])
    if weights not in sets:
        raise InputError(
            f"model.encoder_weights: {encoder_name} has the weight sets {sets}, got {weights!r} "
            "(or null, or a local file)"
        )
    return weights


def _source(smp: ModuleType, encoder_name: str, weights: str) -> str:
    """Where the libraries download the weights from, for the message of a failed download."""
    if encoder_name.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder_name[3:])
        hub = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return f"timm's weights: huggingface.co/{hub}" if hub else "timm's weights"
    repo = smp.encoders.encoders[encoder_name]["pretrained_settings"][weights]["repo_id"]
    return f"model.safetensors of huggingface.co/{repo}"


def _download_errors() -> tuple[type[BaseException], ...]:
    """What a failed download raises: OSError for URLs and most hub errors (no network, offline mode,
    a missing repository), and the hub's EntryNotFoundError, which is not one."""
    try:
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:
        return (OSError,)
    return (OSError, EntryNotFoundError)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a .safetensors or a PyTorch file (tensors only: nothing in the file runs)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise many types for a file that is not theirs
        raise InputError(f"model.encoder_weights: {path} is not a readable state dict") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # a training checkpoint around the weights
    if not isinstance(state, dict):
        raise InputError(f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict")
    return state


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load an encoder's ImageNet weights from a local file, in the layouts they come in: the encoder's
    own state dict, a classifier's (its head is left out), timm's model (under the encoder's `model.`),
    or a whole segmentation network's (its encoder's part)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(
            f"model.encoder_weights: {path} does not exist: save the encoder's weights there first, "
            "use model.encoder_weights=imagenet to download them, or null for random weights"
        )
    state = read_state_dict(path)
    own = encoder.state_dict()
    if not own.keys() & state.keys():
        timm_model = {"model." + k: v for k, v in state.items()}
        # A whole network's (smp's `encoder.`, this project's `model.encoder.`, a checkpoint's `net.`...).
        smp_model = {k.split("encoder.", 1)[1]: v for k, v in state.items() if "encoder." in k}
        state = next((s for s in (timm_model, smp_model) if own.keys() & s.keys()), state)
    state = {k: _first_conv(v, own[k]) for k, v in state.items() if k in own}  # not: heads, unused stages
    missing = sorted(own.keys() - state.keys())
    wrong = sorted(k for k in state if own[k].shape != state[k].shape)
    if missing or wrong:
        raise InputError(
            f"model.encoder_weights: {path} does not fit this encoder ({len(missing)} weights missing, "
            f"e.g. {missing[:3]}; of another shape: {wrong[:3]})"
        )
    encoder.load_state_dict(state)


def _first_conv(weight: Tensor, own: Tensor) -> Tensor:
    """An RGB convolution's weights for another number of input channels, as smp adapts its own: summed
    for one channel, else repeated and scaled so that the response to a grey image is kept."""
    rgb = weight.ndim == 4 and weight.shape[1] == 3 and own.ndim == 4
    if not rgb or own.shape[1] == 3 or own.shape[0] != weight.shape[0]:
        return weight
    channels = own.shape[1]
    if channels == 1:
        return weight.sum(1, keepdim=True)
    return weight.repeat(1, -(-channels // 3), 1, 1)[:, :channels] * (3 / channels)
