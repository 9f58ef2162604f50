"""Train a segmentation network: `python -m carvana_seg.train model=unet loss=bce_dice`.

`main` is a thin Hydra wrapper; `train(cfg)` does the work and is what tests and sweeps call.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from carvana_seg import options
from carvana_seg.config import CONF_DIR
from carvana_seg.core import distributed
from carvana_seg.core.checkpoint import check_checkpoint
from carvana_seg.core.hparams import log_hyperparameters
from carvana_seg.core.module import SegmentationModule, build_scheduler
from carvana_seg.core.precision import check_precision, resolve_precision, uses_cuda
from carvana_seg.core.resume import check_resumed_network, check_resumed_split, saved_hyperparameters
from carvana_seg.core.run_config import RunConfig
from carvana_seg.core.run_folder import check_fresh
from carvana_seg.durable import atomic_write
from carvana_seg.errors import InputError, exit_on_input_error

log = logging.getLogger(__name__)

MAX_SEED = 2**32 - 1  # Lightning's seed_everything, and numpy behind it, take 0 to 2**32 - 1
LIGHTNING_ONLY_PRECISIONS = ("transformer-engine", "transformer-engine-float16")  # training only


@rank_zero_only
def write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode())


def check_optimizer(cfg: DictConfig) -> None:
    """Build the configured optimizer over one parameter, and its schedule: torch's own checks of their
    options (a negative learning rate, betas outside [0, 1), a warm-up share above 1) then stop the run
    before the data set-up, naming the option, instead of once training has started."""
    try:
        optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise InputError(f"optimizer: {err}") from err
    if cfg.get("scheduler"):
        try:
            build_scheduler(instantiate(cfg.scheduler), optimizer, steps=100)
        except (ValueError, TypeError, ZeroDivisionError) as err:
            raise InputError(f"scheduler: {err}") from err


def check_run(cfg: DictConfig) -> None:
    """The run's own options, its Trainer's precision and device, and its network and loss (built once and
    dropped: their constructors check their options), before the data set-up: a typo stops the run in
    seconds, not after the decoded cache is built and split.json written."""
    if cfg.seed is not None:  # null: Lightning's own (PL_GLOBAL_SEED, else 0)
        options.whole(cfg, "seed", minimum=0)
    if cfg.seed is not None and cfg.seed > MAX_SEED:
        raise InputError(f"seed must be at most {MAX_SEED} (numpy's limit), got {cfg.seed}")
    if cfg.get("torch_threads") is not None:
        options.whole(cfg, "torch_threads")
    for key in ("compile", "channels_last"):
        options.flag(cfg, f"module.{key}")
    check_precision(cfg.trainer.get("precision"), "trainer.precision", LIGHTNING_ONLY_PRECISIONS)
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    gpu_here = torch.cuda.is_available() or (accelerator == "gpu" and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not gpu_here:  # Lightning's gpu is Apple's MPS on a Mac
        raise InputError(f"trainer.accelerator={accelerator} but no GPU is visible; trainer=cpu runs here")
    SegmentationModule(
        net=container(cfg.model), loss=container(cfg.loss), **OmegaConf.to_container(cfg.module, resolve=True)
    )


def check_trainer(cfg: DictConfig) -> None:
    """Build a bare Trainer of the configured options (no callbacks, loggers or checkpoints) and drop it:
    Lightning's own checks (trainer.max_epochs=-5, devices=0, max_time=abc) then stop the run before the
    data set-up, naming the option, instead of after the cache is built and split.json written. Options
    Lightning accepts but that train nothing are refused here too."""
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        value = cfg.trainer.get(key)
        if value is not None and not isinstance(value, bool) and value == 0:
            raise InputError(f"trainer.{key}=0 trains nothing: leave it out or give a positive value")
    if cfg.trainer.get("check_val_every_n_epoch") is not None:  # 0 divides by zero once fit has started
        options.whole(cfg, "trainer.check_val_every_n_epoch")
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto"))
    try:
        with _quiet_lightning():
            instantiate(
                cfg.trainer, callbacks=[], logger=False, enable_checkpointing=False, precision=precision
            )
    except InstantiationException as err:
        cause = err.__cause__
        if not isinstance(cause, MisconfigurationException | ValueError | TypeError):
            raise
        raise InputError(f"trainer: {cause}") from err


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Without Lightning's device lines ("GPU available: ..."): the real Trainer prints them once."""
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def container(config: DictConfig) -> dict[str, Any]:
    """A config group as the plain, resolved mapping a checkpoint stores."""
    return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]


def _number(value: Any) -> float | None:
    value = float(value.item() if isinstance(value, torch.Tensor) else value)
    return value if math.isfinite(value) else None


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit the configured network on the configured data; return (and save) the final metrics."""
    started = time.perf_counter()
    output_dir = Path(cfg.paths.output_dir)
    # A checkpoint to resume from is checked first: a missing, cut-short, foreign or diverged file, or one of
    # another network, stops the run here, not after the data set-up when training has started.
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path:
        ckpt_path = str(check_checkpoint(ckpt_path))
        saved = saved_hyperparameters(ckpt_path)
        check_resumed_network(ckpt_path, saved, container(cfg.model), container(cfg.loss))
    else:
        check_fresh(output_dir)  # as FreshRunFolder did under Hydra, for callers of train(cfg)
    check_optimizer(cfg)
    check_run(cfg)
    check_trainer(cfg)
    pl.seed_everything(cfg.seed, workers=True)
    distributed.share_machine(cfg.get("torch_threads"))  # sweep jobs side by side: each to its share
    if uses_cuda(cfg.trainer.get("accelerator", "auto")):
        torch.backends.cudnn.benchmark = bool(cfg.get("cudnn_benchmark", True))
        torch.set_float32_matmul_precision("high")

    # Data first: a bad folder stops the run here, before a network or a Trainer exists.
    datamodule: pl.LightningDataModule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    run = RunConfig.of(datamodule).to_dict()
    if ckpt_path:
        check_resumed_split(ckpt_path, saved, run)  # before split.json: a resume into its own folder keeps it
    write_json(output_dir / "split.json", datamodule.split)

    # The network and loss go in as configs: they are the module's hyperparameters, so the checkpoint
    # alone rebuilds them (SegmentationModule.load_from_checkpoint).
    module = SegmentationModule(
        net=container(cfg.model),
        loss=container(cfg.loss),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        run=run,
        **OmegaConf.to_container(cfg.module, resolve=True),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator", "auto"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, precision=precision
    )
    distributed.check_launch(trainer, bool(cfg.trainer.get("sync_batchnorm")))
    distributed.describe(trainer, cfg.data.batch_size)
    log_hyperparameters(trainer.loggers, OmegaConf.to_container(cfg, resolve=True))

    log.info(
        "training %s with %s, precision %s, into %s",
        cfg.model._target_,
        cfg.loss._target_,
        precision,
        output_dir,
    )
    # NaN/inf in the loss, the validation logits or the weights stops fit with DivergedError (an InputError:
    # exit 2) before a checkpoint of them is written (SegmentationModule.check_finite).
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path or None)

    metrics: dict[str, Any] = {k: _number(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    metrics.update(
        epochs=trainer.current_epoch,
        steps=trainer.global_step,
        precision=str(precision),
        best_checkpoint=getattr(checkpoint, "best_model_path", None) or None,
        last_checkpoint=getattr(checkpoint, "last_model_path", None) or None,
        wall_time_s=round(time.perf_counter() - started, 2),
    )
    write_json(output_dir / "metrics.json", metrics)
    if metrics.get("val/dice") is None:
        log.info(
            "no validation ran (no validation cars, or validation off or not reached): last checkpoint %s, "
            "wall time %.1f s",
            metrics["last_checkpoint"],
            metrics["wall_time_s"],
        )
    else:
        log.info(
            "val/dice %.4f (best %.4f), wall time %.1f s",
            metrics["val/dice"],
            metrics.get("val/dice_best") or metrics["val/dice"],
            metrics["wall_time_s"],
        )
    return metrics


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Entry point; returns the value of `optimized_metric` for Hydra sweepers. In a sweep, a job's bad
    input fails that job (Hydra records it, the sweep summary lists it with its message) instead of
    exiting the whole sweep with the jobs before it left out of the summary."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    metrics = train(cfg) if in_sweep else exit_on_input_error(train, cfg)
    metric = cfg.get("optimized_metric")
    return metrics.get(metric) if metric else None


if __name__ == "__main__":
    # Run the copy of `main` imported from `carvana_seg.train`, not this `__main__` one: parallel
    # launchers (joblib) pickle the task for their workers, and functions of `__main__` are pickled by
    # value with everything they reach (torch's cudnn module cannot be); importable ones by reference.
    from carvana_seg.train import main as importable_main

    importable_main()
