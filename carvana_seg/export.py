"""Export a trained network as one self-contained model file:
`python -m carvana_seg.export ckpt_path=RUN/checkpoints/best.ckpt format=onnx` (or `format=torchscript`).

The exported model takes a uint8 RGB photo (1, 3, H, W) of any size and returns the car probability
(1, 1, H, W) at that size: the area resize to the run's input size, the normalisation, the network and
the bilinear resize of its logits back to the photo's size are all inside the graph, so a deployment
needs no Python preprocessing; with `tta_hflip` (the default, as in predict and evaluate) the network
also runs on the mirrored photo and the two probabilities are averaged, as `predict` does. Pixels with
probability > the run's threshold (in the file's metadata, 0.5 unless trained otherwise) are car.

The area resize is cv2's INTER_AREA (the Python path's) computed from cumulative sums, exported as
ordinary tensor operations (ONNX has no area resize; torch's area mode exports fixed to the example's
size): it averages the same fractional pixel boxes, but keeps the averages as floats where cv2 rounds
them to uint8 (within half a level, about 1/100 of one more from float sums). Photos read from files by
`predict` are decoded at a reduced JPEG scale first, which this model (given the full photo) does not
do. Photos smaller than the input size are enlarged as boxes (nearest-like), where cv2's are bilinear.
TorchScript is deprecated in recent torch (it warns); ONNX is the format to deploy.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core.module import SegmentationModule, flip_mean
from carvana_seg.errors import InputError, exit_on_input_error
from carvana_seg.inference.exported import SIZE_KEY, THRESHOLD_KEY, TTA_KEY

log = logging.getLogger(__name__)

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
# The photo the exporters trace with and `verify` compares on: Carvana's size, so nothing about it is
# special-cased (torch.export specialises sizes 0 and 1, tracing records this size's padding).
EXAMPLE_SIZE = (1280, 1918)


def area_axis(x: Tensor, size: int, dim: int) -> Tensor:
    """`x` (float, 4-d) averaged along `dim` into `size` equal boxes of length/size pixels each, the
    boxes' fractional edge pixels weighted by their overlap, as cv2's INTER_AREA does."""
    length = x.shape[dim]
    total = torch.cumsum(x, dim=dim)  # total[k] = x[0] + ... + x[k]: exact for photos (integers)
    edges = torch.arange(size + 1, dtype=torch.float32, device=x.device) * length / size
    low = edges.floor().clamp(max=length - 1)
    frac = edges - low
    low = low.long()
    before = total.index_select(dim, (low - 1).clamp(min=0))  # the sum of the pixels before `low`
    here = total.index_select(dim, low)
    shape = [1, 1, 1, 1]
    shape[dim] = size + 1
    before = before * (low > 0).to(x.dtype).view(shape)
    cumulative = before + (here - before) * frac.view(shape)  # the integral up to each edge
    return (cumulative.narrow(dim, 1, size) - cumulative.narrow(dim, 0, size)) * (size / length)


class PhotoModel(nn.Module):
    """uint8 photos (1, 3, H, W) of any size to car probabilities (1, 1, H, W): the exported graph."""

    def __init__(
        self, module: SegmentationModule, image_size: tuple[int, int], tta_hflip: bool = False
    ) -> None:
        super().__init__()
        self.net = module.net
        self.height, self.width = int(image_size[0]), int(image_size[1])
        self.tta_hflip = tta_hflip
        self.register_buffer("mean", module.mean.detach().clone())
        self.register_buffer("std", module.std.detach().clone())

    def forward(self, photo: Tensor) -> Tensor:
        height, width = photo.shape[-2], photo.shape[-1]
        # Width first: the long side shrinks before the second pass reads it.
        small = area_axis(area_axis(photo.float(), self.width, 3), self.height, 2)
        normalised = (small - self.mean) / self.std
        logits = self.net(normalised)
        if self.tta_hflip:
            logits = flip_mean(logits, self.net(normalised.flip(-1)).flip(-1))
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)


def export_onnx(model: PhotoModel, path: Path, metadata: dict[str, str]) -> None:
    try:
        import onnx
        import onnxscript  # noqa: F401  (torch's exporter needs it; fail here with the install line)
    except ImportError as err:
        raise InputError(
            f"format=onnx needs onnx and onnxscript: pip install 'carvana-seg[export]' ({err})"
        ) from err
    from torch.export import Dim

    for name in ("onnx_ir", "onnxscript"):  # their optimiser logs every rewrite it tries at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    example = torch.zeros(1, 3, *EXAMPLE_SIZE, dtype=torch.uint8)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["photo"],
        output_names=["probability"],
        dynamic_shapes=({2: Dim.DYNAMIC, 3: Dim.DYNAMIC},),
        external_data=False,  # one file (models under 2 GB)
        dynamo=True,
        verbose=False,
    )
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, metadata)
    onnx.save(graph, str(path))


def export_torchscript(model: PhotoModel, path: Path, metadata: dict[str, str]) -> None:
    # The network always sees the one input size, so it is traced at it (any network traces; not every
    # one scripts); the size-dependent parts around it are scripted, so H and W stay free.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks fixed at the input size
        model.net = torch.jit.trace(model.net, torch.zeros(1, 3, model.height, model.width))
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(path), _extra_files={"carvana_seg.json": json.dumps(metadata)})


def load_exported(path: Path, kind: str) -> Any:
    """A callable from a uint8 numpy photo (1, 3, H, W) to the numpy probabilities of the file."""
    if kind == "onnx":
        try:
            import onnxruntime
        except ImportError as err:
            raise InputError("verify needs onnxruntime: pip install 'carvana-seg[export]'") from err
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda photo: session.run(None, {"photo": photo})[0]
    loaded = torch.jit.load(str(path), map_location="cpu")
    return lambda photo: loaded(torch.from_numpy(photo)).numpy()


@torch.no_grad()
def compare(model: PhotoModel, exported: Any, photo: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The exported model against the PyTorch one on `photo`: the largest probability difference and
    the share of pixels whose masks differ (only where a probability lies that close to the threshold)."""
    expected = model(torch.from_numpy(photo)).numpy()
    found = exported(photo)
    if found.shape != expected.shape:
        raise AssertionError(f"the exported model returns {found.shape}, PyTorch {expected.shape}")
    return {
        "max_probability_difference": float(np.abs(found - expected).max()),
        "mask_differing_share": float(((found > threshold) != (expected > threshold)).mean()),
    }


def check_options(cfg: DictConfig) -> tuple[str, Path, tuple[int, int] | None]:
    if cfg.format not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {cfg.format!r}")
    size = options.image_size(cfg.image_size, "image_size")
    options.flag(cfg, "verify")
    options.flag(cfg, "tta_hflip")
    return cfg.format, Path(cfg.ckpt_path).expanduser().resolve(), size


def export(cfg: DictConfig) -> dict[str, Any]:
    """Write the model file of `cfg.ckpt_path` in `cfg.format`; with `cfg.verify`, run it once on a
    random Carvana-size photo against PyTorch."""
    started = time.perf_counter()
    kind, ckpt, size = check_options(cfg)
    output = Path(cfg.output).expanduser().resolve() if cfg.output else ckpt.with_suffix(FORMATS[kind])
    if output.is_dir():
        raise InputError(f"output {output} is a folder: name the model file, e.g. {output / 'model'}")
    if output == ckpt:
        raise InputError(f"output {output} is the checkpoint itself: name another file")
    # A run's other checkpoint (last.ckpt, which a resume needs) would be replaced by a model file.
    if output.suffix.lower() == ".ckpt":
        raise InputError(
            f"output {output}: *.ckpt names a training checkpoint; name the {kind} file otherwise, "
            f"e.g. {output.with_suffix(FORMATS[kind])}"
        )
    # predict tells an exported ONNX file from a checkpoint by this suffix alone.
    onnx_name = output.suffix.lower() == ".onnx"
    if kind == "onnx" and not onnx_name:
        raise InputError(f"output {output}: an ONNX file is named *.onnx, e.g. {output.with_suffix('.onnx')}")
    if kind != "onnx" and onnx_name:
        raise InputError(
            f"output {output}: predict would read a *.onnx file as ONNX; name the {kind} file otherwise, "
            f"e.g. {output.with_suffix(FORMATS[kind])}"
        )
    module = SegmentationModule.load_from_checkpoint(ckpt)
    if size is None and module.run_config is None:
        raise InputError(f"{ckpt} does not say its input size: pass image_size=[H,W]")
    size = size or tuple(module.run_config.image_size)
    output.parent.mkdir(parents=True, exist_ok=True)
    threshold = float(module.hparams.threshold)
    metadata = {
        "carvana_seg.checkpoint": str(ckpt),
        SIZE_KEY: json.dumps(list(size)),
        THRESHOLD_KEY: str(threshold),
        TTA_KEY: json.dumps(bool(cfg.tta_hflip)),
        "carvana_seg.input": "uint8 RGB photo (1, 3, H, W), any H and W",
        "carvana_seg.output": "car probability (1, 1, H, W)",
    }
    model = PhotoModel(module, size, cfg.tta_hflip).eval()
    partial = output.with_name(output.name + ".partial")  # a file cut short never takes the name
    try:
        (export_onnx if kind == "onnx" else export_torchscript)(model, partial, metadata)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)  # an export that failed leaves nothing behind
    result: dict[str, Any] = {"output": str(output), "format": kind, "image_size": list(size)}
    result["threshold"] = threshold
    result["tta_hflip"] = bool(cfg.tta_hflip)
    if cfg.verify:
        photo = np.random.default_rng(0).integers(0, 256, (1, 3, *EXAMPLE_SIZE), dtype=np.uint8)
        reference = PhotoModel(module, size, cfg.tta_hflip).eval()  # export_torchscript replaced `model.net`
        result.update(compare(reference, load_exported(output, kind), photo, threshold))
    result["seconds"] = round(time.perf_counter() - started, 2)
    log.info("exported %s to %s", ckpt, output)
    print(json.dumps(result, indent=2))
    return result


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(export, cfg)


if __name__ == "__main__":
    main()
