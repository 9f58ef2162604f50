"""One training run per folder: a fresh run (no `ckpt_path`) into a folder that already holds a run is
refused before anything is written there.

Without it a reused `hydra.run.dir` (or a sweep run again into its `hydra.sweep.dir`) replaces the old
run's `.hydra/overrides.yaml` and `split.json` while its checkpoints stay, and the new checkpoints sit
beside them as `best-v1.ckpt`: the folder then describes neither run. Hydra writes `.hydra/` before the
task starts, so the check runs as a Hydra callback (`FreshRunFolder`, in conf/hydra/default.yaml) at the
start of the run or sweep; `train(cfg)` checks again for callers without Hydra.

A run requeued by SLURM is not fresh: Lightning resumes it in place from its `hpc_ckpt_*.ckpt`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig

from carvana_seg.errors import InputError

# What a finished or interrupted run leaves in its folder.
RUN_OUTPUTS = ("checkpoints/*.ckpt", "metrics.json")


def check_fresh(folder: Path, sweep: Path | None = None) -> None:
    """An InputError naming what `folder` holds, and how to go on, when it holds a run (`sweep`: the
    sweep folder `folder` is a job of)."""
    if SLURMEnvironment.detect() and any(folder.glob("hpc_ckpt_*.ckpt")):
        return  # requeued by SLURM: Lightning resumes it from its hpc_ckpt in place
    found = sorted(str(path.relative_to(folder)) for pattern in RUN_OUTPUTS for path in folder.glob(pattern))
    if not found:
        return
    held = f"{folder} already holds a run ({', '.join(found[:4])})"
    if sweep is not None:  # one ckpt_path would resume every job from the same checkpoint
        raise InputError(
            f"{held}: sweep into a new folder (hydra.sweep.dir=...; an Optuna study goes on from its "
            f"database with hydra.sweeper.storage=sqlite:///{sweep.resolve() / 'optuna.db'})"
        )
    checkpoints = [name for name in found if name.endswith(".ckpt")]
    if "checkpoints/last.ckpt" in checkpoints:
        checkpoints.insert(0, "checkpoints/last.ckpt")  # the one a resume continues from
    resume = f"resume it with ckpt_path={folder / checkpoints[0]}, or " if checkpoints else ""
    raise InputError(f"{held}: {resume}train into another folder (hydra.run.dir=...)")


class FreshRunFolder(Callback):
    """Hydra callback: `check_fresh` on the run's folder, or on every job folder of the sweep's, before
    Hydra writes into it; a folder holding a run ends the command with exit 2 and the message."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not config.get("ckpt_path"):
            self._check([Path(config.hydra.run.dir)])

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        if not config.get("ckpt_path") and sweep.is_dir():
            self._check(sorted(path for path in sweep.iterdir() if path.is_dir()), sweep)

    @staticmethod
    def _check(folders: list[Path], sweep: Path | None = None) -> None:
        try:
            for folder in folders:
                check_fresh(folder, sweep)
        except InputError as err:
            # Hydra turns an exception in a callback into a warning and goes on; SystemExit it lets pass.
            # Logging is not configured yet at this point: the message goes to stderr as it is.
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from err
