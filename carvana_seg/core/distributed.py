"""What running on several processes needs beyond Lightning's and Hydra's defaults: sweep jobs side
by side on one machine (the joblib launcher), and one training spread over processes (Lightning's DDP).

- `share_machine`: a job keeps to its share of the cores (`torch_threads`), and DataLoader workers can
  start inside a joblib (loky) worker, whose default start method, loky's own, cannot start them.
- Validation sees every image exactly once. For evaluation loaders Lightning inserts a
  `DistributedSampler`, which pads the data set to a multiple of the number of processes by repeating
  its first images: with 5 validation images on 2 processes, image 0 would be scored twice and the
  per-image mean would differ from the one-process figure. `unrepeated` (the data module's validation
  loader) gives every process a disjoint share instead (Lightning's `UnrepeatedDistributedSampler`;
  Lightning keeps a loader's own `DistributedSampler`). Shares then differ by at most one image, which
  validation allows: DDP synchronises buffers on the first batch only (every process has one) and the
  metrics once per epoch. The per-image sums of `SegmentationScores` and the weighted mean of val/loss
  are summed over the processes, so every validation figure is the whole-set one.
- `check_launch` refuses, with what to do instead, DDP set-ups that cannot work.
"""

from __future__ import annotations

import logging
import multiprocessing
import os

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from torch.utils.data import DataLoader, DistributedSampler

from carvana_seg.errors import InputError

log = logging.getLogger(__name__)


def share_machine(torch_threads: int | None) -> None:
    """Fit this process to a machine it shares with other jobs (see the module's docstring)."""
    if torch_threads:
        torch.set_num_threads(int(torch_threads))
        # Inherited by DDP processes and loader workers started later (Lightning's DDP keeps it too).
        os.environ["OMP_NUM_THREADS"] = str(int(torch_threads))
    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method(None, force=True)  # back to the platform's default


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def unrepeated(loader: DataLoader) -> DataLoader:
    """`loader` over a disjoint share of its data set per process, nothing repeated (as is on one process)."""
    if _world_size() < 2 or isinstance(loader.sampler, DistributedSampler):
        return loader
    if len(loader.dataset) < _world_size():  # type: ignore[arg-type]
        raise InputError(
            f"{len(loader.dataset)} validation images cannot be shared by {_world_size()} processes: "  # type: ignore[arg-type]
            "use fewer devices or a larger data.val_fraction"
        )
    workers = loader.num_workers
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=UnrepeatedDistributedSampler(loader.dataset, shuffle=False),
        num_workers=workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor if workers > 0 else None,
        persistent_workers=loader.persistent_workers,
    )


def check_launch(trainer: pl.Trainer, sync_batchnorm: bool = False) -> None:
    """Refuse, with a message that says what to do, the DDP set-ups that cannot work:

    - torch's SyncBatchNorm on anything but CUDA GPUs;
    - Lightning's DDP starting ranks 1.. by re-running the command line inside a Hydra multirun, where
      every extra process would start the whole sweep again.
    """
    processes = trainer.num_devices * trainer.num_nodes
    if sync_batchnorm and processes > 1 and not isinstance(trainer.accelerator, CUDAAccelerator):
        raise InputError(
            "trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm); for DDP on CPU processes "
            "pass trainer.sync_batchnorm=false"
        )
    if not isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher) or processes < 2:
        return
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise InputError(
            "trainer.strategy=ddp on several devices cannot run inside a local multirun (-m): it starts its "
            "other processes by re-running the command, i.e. the whole sweep. Use hydra/launcher=slurm "
            "(SLURM starts the processes), trainer.strategy=ddp_spawn, or run the DDP jobs one by one"
        )


def describe(trainer: pl.Trainer, batch_size: int) -> None:
    """Log how the work is shared: torch threads per process and, on several processes, the effective
    batch (per-process batch x processes)."""
    log.info("torch threads per process: %d", torch.get_num_threads())
    processes = trainer.num_devices * trainer.num_nodes
    if processes > 1:
        log.info(
            "%s: %d processes (%d devices x %d nodes), batch %d per process, effective batch %d",
            type(trainer.strategy).__name__,
            processes,
            trainer.num_devices,
            trainer.num_nodes,
            batch_size,
            batch_size * processes,
        )
