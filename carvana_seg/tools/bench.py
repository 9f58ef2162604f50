"""`python -m carvana_seg.tools.bench` (`make bench`): the speed of every stage, printed as one table.

- loader (`bench_loader`): images/s of the public Carvana U-Net's per-item data path, of ours without
  and with the decoded cache, and the start-up time of a data set of Kaggle's size (5,088 files).
- train (`bench_train`): images/s of each network at a few sizes and precisions (and torch.compile on
  CUDA), and one epoch through Lightning against the same epoch through a plain PyTorch loop.
- predict (`bench_predict`): full-size images/s of the real `predict` command (decode, infer,
  upsample, threshold, run-length encode, write masks) and peak memory.

Runs on the built-in data by default (generated at full size, 1280x1918) and on real data with
`data.root=DIR`. Each figure is the median of `repeats` timings after a warm-up (`bench_table`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core.checkpoint import check_checkpoint
from carvana_seg.core.precision import check_precision
from carvana_seg.durable import atomic_write
from carvana_seg.errors import InputError, exit_on_input_error
from carvana_seg.tools.bench_loader import bench_loader
from carvana_seg.tools.bench_predict import bench_predict
from carvana_seg.tools.bench_table import Rows, markdown
from carvana_seg.tools.bench_train import bench_train


def machine_name(device: torch.device) -> str:
    processor = platform.processor() or platform.machine()
    cpu = f"{os.cpu_count()} CPU cores ({processor}), torch {torch.__version__}"
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()} + {cpu}"
    return f"CPU only: {cpu}, {torch.get_num_threads()} torch threads"


SECTIONS = ("loader", "train", "predict")


def check_options(cfg: DictConfig) -> torch.device:
    """The benchmark's own options, and the checkpoint it predicts with, before the minutes of the first
    section; the device to run on."""
    sections = cfg.sections
    if not OmegaConf.is_list(sections) or not sections or any(s not in SECTIONS for s in sections):
        raise InputError(f"sections must be a list of {', '.join(SECTIONS)}, got {sections!r}")
    options.whole(cfg, "repeats")
    device = str(cfg.device)
    if isinstance(cfg.device, bool) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise InputError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device={cfg.device} but no CUDA GPU is visible")
    chosen = torch.device("cuda" if torch.cuda.is_available() and device != "cpu" else "cpu")
    if "predict" in sections:
        _check_predict(cfg, chosen)
    if cfg.output is not None:  # the table; its rows go beside it (.jsonl, .jsonl.partial while running)
        options.report_file(Path(str(cfg.output)), f"output={cfg.output}", (".jsonl", ".partial"))
    return chosen


def _check_predict(cfg: DictConfig, device: torch.device) -> None:
    """The predict section's options, named as the benchmark's, before the sections that run first."""
    for key in ("predict.images", "predict.batch_size", "predict.writer_threads"):
        options.whole(cfg, key)
    if cfg.predict.num_workers != "auto":
        options.whole(cfg, "predict.num_workers", minimum=0)
    options.flag(cfg, "predict.onnx")
    key = f"predict.input_size.{device.type}"
    options.pixel_size(OmegaConf.select(cfg, key), key)
    check_precision(cfg.predict.precision, "predict.precision")
    if cfg.predict.ckpt_path:
        check_checkpoint(cfg.predict.ckpt_path)


def bench(cfg: DictConfig) -> list[dict]:
    device = check_options(cfg)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()  # the built-in set is generated on first use
    root = datamodule.root
    output = Path(cfg.output) if cfg.output else None
    # Rows go to a .jsonl.partial as they are measured (a stopped benchmark leaves them there); the
    # results of an earlier run are replaced only when this one ends.
    running = output.with_suffix(".jsonl.partial") if output is not None else None
    if running is not None:
        running.parent.mkdir(parents=True, exist_ok=True)
        running.unlink(missing_ok=True)
    rows = Rows(running)
    if "loader" in cfg.sections:
        bench_loader(cfg, root, Path(cfg.paths.cache_dir), rows)
    if "train" in cfg.sections:
        bench_train(cfg, device, rows)
    if "predict" in cfg.sections:
        bench_predict(cfg, root, device, rows)
    table = markdown(rows, machine_name(device))
    print(table)
    if output is not None and running is not None:
        atomic_write(output, (table + "\n").encode())
        if running.exists():
            os.replace(running, output.with_suffix(".jsonl"))
    return rows


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="bench")
def main(cfg: DictConfig) -> None:
    exit_on_input_error(bench, cfg)


if __name__ == "__main__":
    main()
