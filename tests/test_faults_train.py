"""Training under faults: bad options and checkpoints stop the command at once with exit 2 and a plain
message; a diverging run stops before it saves NaN weights; a run killed with kill -9 at any moment
resumes from its last.ckpt. Real files, real `python -m carvana_seg.train` processes, real SIGKILL."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from carvana_seg.core.checkpoint_io import PARTIAL_SUFFIX, AtomicCheckpointIO
from carvana_seg.core.module import SegmentationModule
from carvana_seg.errors import DivergedError, InputError, exit_on_input_error
from carvana_seg.train import train
from tests.conftest import CONF_DIR, ROOT, TINY_UNET, write_carvana

# Hydra wraps a constructor's exception in its own; none of its wrapper text may reach the user.
HYDRA_WRAPPING = ("InstantiationException", "full_key:", "HYDRA_FULL_ERROR", "Error in call to target")


def train_command(data: Path, run: Path, *overrides: str, tiny_net: bool = True) -> list[str]:
    """`python -m carvana_seg.train` on a generated folder, shrunk to seconds (debug=tiny)."""
    return [
        sys.executable,
        "-m",
        "carvana_seg.train",
        "debug=tiny",
        *(TINY_UNET if tiny_net else []),
        "data=carvana",
        f"data.root={data}",
        f"paths.cache_dir={run.parent / 'cache'}",
        f"hydra.run.dir={run}",
        "callbacks.prediction_grid=null",
        *overrides,
    ]


def run_train(data: Path, run: Path, *overrides: str, tiny_net: bool = True) -> tuple[int, str]:
    """Run the command to its end; its exit code and everything it printed (Hydra logs to stdout)."""
    result = subprocess.run(
        train_command(data, run, *overrides, tiny_net=tiny_net),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return result.returncode, result.stdout + result.stderr


def assert_plain_input_error(code: int, output: str, message: str) -> None:
    assert code == 2, output[-3000:]
    assert message in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    for text in HYDRA_WRAPPING:
        assert text not in output, f"{text!r} in:\n{output[-3000:]}"


# --- 1. errors raised in constructors under hydra.utils.instantiate ------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "tiny_net", "message"),
    [
        (["data.mask_scale=0"], True, "data.mask_scale must be a whole number >= 1, got 0"),
        (["loss.hard_fraction=0"], True, "loss.hard_fraction must be in (0, 1], got 0"),
        (
            ["model=resnet_unet", "model.encoder_weights=/nonexistent/resnet34.pth"],
            False,
            "model.encoder_weights: /nonexistent/resnet34.pth does not exist",
        ),
        (["trainer.max_time=abc"], True, "trainer: `Timer(duration='abc')` is not a valid duration"),
    ],
    ids=["datamodule-check", "loss-option", "encoder-weights", "trainer-option"],
)
def test_a_bad_option_checked_in_a_constructor_exits_2_with_its_plain_message(
    tmp_path, overrides, tiny_net, message
):
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    code, output = run_train(data, run, *overrides, tiny_net=tiny_net)
    assert_plain_input_error(code, output, message)
    assert not (run / "checkpoints").exists()
    assert not (run / "split.json").exists()  # the network and loss are built before the data set-up


def test_train_keeps_hydras_exception_and_the_command_boundary_unwraps_it(make_cfg, caplog):
    cfg = make_cfg("data.mask_scale=0")
    with pytest.raises(Exception, match=r"data\.mask_scale must be") as raised:
        train(cfg)
    assert type(raised.value).__name__ == "InstantiationException"  # what train(cfg)'s callers see
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(train, cfg)
    assert exited.value.code == 2
    assert caplog.messages[-1] == "data.mask_scale must be a whole number >= 1, got 0"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.batch_size=0"], "data.batch_size must be a whole number >= 1, got 0"),
        (["data.val_batch_size=0"], "data.val_batch_size must be a whole number >= 1, got 0"),
        (["data.hflip_p=1.5"], "data.hflip_p must be a probability in [0, 1], got 1.5"),
        (["data.image_size=320"], "data.image_size must be [H, W] in whole pixels >= 1, got 320"),
        (
            ["data.image_size=[160.5,240]"],
            "data.image_size must be [H, W] in whole pixels >= 1, got [160.5, 240]",
        ),
        (["data.val_fraction=abc"], "data.val_fraction must be a share in [0, 1), got 'abc'"),
        (["data.split_seed=-1"], "data.split_seed must be a whole number >= 0, got -1"),
        (["optimizer.lr=-0.1"], "optimizer: Invalid learning rate: -0.1"),
        (
            ["scheduler=onecycle", "scheduler.pct_start=1.5"],
            "scheduler: Expected float between 0 and 1 pct_start, but got 1.5",
        ),
        (
            ["scheduler=onecycle", "scheduler.total_steps=0"],
            "scheduler: Expected positive integer total_steps, but got 0",
        ),
        # Hydra reads no/off as text, which Python takes as true: each would switch the feature on.
        (["data.soft_masks=no"], "data.soft_masks must be true or false, got 'no'"),
        (["data.cache=off"], "data.cache must be true or false, got 'off'"),
        (["module.compile=no"], "module.compile must be true or false, got 'no'"),
        (["seed=-1"], "seed must be a whole number >= 0, got -1"),
        (["seed=abc"], "seed must be a whole number >= 0, got 'abc'"),
        (["seed=4294967296"], "seed must be at most 4294967295 (numpy's limit), got 4294967296"),
        (["torch_threads=0"], "torch_threads must be a whole number >= 1, got 0"),
        (["trainer.precision=16mixed"], "trainer.precision must be one of auto, fast, 32,"),
        # The network, loss and module options, checked in their constructors, now before the data too.
        (["model.depth=0"], "model.depth must be at least 1, got 0"),
        (["loss.hard_fraction=0"], "loss.hard_fraction must be in (0, 1], got 0"),
        (["module.threshold=1.5"], "module.threshold must be in (0, 1), got 1.5"),
        # The Trainer's own checks, run on a bare Trainer before the data set-up.
        (["trainer.max_epochs=-5"], "trainer: `max_epochs` must be a non-negative integer or -1"),
        (["trainer.devices=0"], "trainer: `Trainer(devices=0)` value is not a valid input"),
        (["trainer.max_time=abc"], "trainer: `Timer(duration='abc')` is not a valid duration"),
        (
            ["trainer.check_val_every_n_epoch=0"],
            "trainer.check_val_every_n_epoch must be a whole number >= 1",
        ),
        # Options Lightning accepts that would train nothing and report a score of 0.
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
        (["trainer.limit_train_batches=0.0"], "trainer.limit_train_batches=0 trains nothing"),
        (["+trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
        (["data.cache_dir=true"], "data.cache_dir must be a folder, got True"),
        (["data.image_dir=[train]"], "data.image_dir must be a folder, got ['train']"),
        (["+data.augment.x=5"], "data.augment holds 5, which is no albumentations transform"),
    ],
)
def test_a_bad_option_exits_2_before_the_data_is_read(make_cfg, caplog, tmp_path, overrides, message):
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(train, make_cfg("data.cache=true", *overrides))
    assert exited.value.code == 2 and caplog.messages[-1].startswith(message)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "split.json").exists()


def test_compile_without_a_cpp_compiler_exits_2_before_the_data_is_read(
    make_cfg, caplog, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path / "no-compilers-here"))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(train, make_cfg("data.cache=true", "module.compile=true"))
    assert exited.value.code == 2
    assert caplog.messages[-1].startswith("module.compile=true needs a C++ compiler (g++ or c++ or clang++)")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run" / "split.json").exists()


def test_a_cache_folder_that_is_a_file_is_named_before_the_data_is_read(make_cfg, caplog, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(train, make_cfg("data.cache=true", f"paths.cache_dir={afile}"))
    assert exited.value.code == 2
    assert caplog.messages[-1].startswith(f"data.cache_dir {afile} cannot be used (it is a file)")
    assert afile.read_text() == "not a folder" and not (tmp_path / "run" / "split.json").exists()


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_and_the_run_kept(make_cfg, caplog, tmp_path):
    out = tmp_path / "run"
    train(make_cfg(output_dir=out))
    kept = {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.suffix != ".log"}
    assert out / "checkpoints" / "last.ckpt" in kept and out / "split.json" in kept
    with pytest.raises(SystemExit) as exited:  # another split: its split.json would describe the old weights
        exit_on_input_error(train, make_cfg("data.split_seed=1", output_dir=out))
    assert exited.value.code == 2
    assert caplog.messages[-1].startswith(
        f"{out} already holds a run (checkpoints/best.ckpt, checkpoints/last.ckpt"
    )
    assert f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}" in caplog.messages[-1]
    assert {path: path.read_bytes() for path in kept} == kept
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]


@pytest.mark.slow
def test_the_command_into_a_folder_holding_a_run_exits_2_before_hydra_writes_there(tmp_path):
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    assert run_train(data, run)[0] == 0
    kept = {path: path.read_bytes() for path in run.rglob("*") if path.is_file() and path.suffix != ".log"}
    code, output = run_train(data, run, "seed=5")
    assert_plain_input_error(code, output, f"{run} already holds a run (checkpoints/best.ckpt")
    assert {path: path.read_bytes() for path in kept} == kept  # .hydra/overrides.yaml too
    assert "seed=5" not in (run / ".hydra" / "overrides.yaml").read_text()


def test_a_sweep_into_a_folder_whose_jobs_hold_runs_is_refused_and_a_restarted_job_is_not(
    tmp_path, monkeypatch
):
    from omegaconf import OmegaConf

    from carvana_seg.core.run_folder import FreshRunFolder, check_fresh

    sweep = tmp_path / "sweep"
    (sweep / "1" / "checkpoints").mkdir(parents=True)
    (sweep / "1" / "checkpoints" / "best.ckpt").write_bytes(b"weights")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    with pytest.raises(SystemExit) as exited:
        FreshRunFolder().on_multirun_start(config)
    assert exited.value.code == 2
    with pytest.raises(InputError, match=r"resume it with ckpt_path=.*1/checkpoints/best\.ckpt"):
        check_fresh(sweep / "1")
    with pytest.raises(InputError, match=r"sweep into a new folder .*storage=sqlite:///.*optuna\.db"):
        check_fresh(sweep / "1", sweep)  # one ckpt_path would resume every job of a sweep from it
    FreshRunFolder().on_multirun_start(
        OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "ckpt_path": "x"})
    )
    # Requeued by SLURM: Lightning resumes the job in place from its hpc_ckpt, so it is no fresh run.
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(InputError):
        check_fresh(sweep / "1")  # under SLURM, but nothing to resume from
    (sweep / "1" / "hpc_ckpt_1.ckpt").write_bytes(b"weights")
    check_fresh(sweep / "1")


def test_augment_null_is_no_augmentation_but_the_flip(make_cfg):
    assert train(make_cfg("data.augment=null"))["steps"] > 0


def test_a_run_without_validation_cars_says_so_instead_of_a_score_of_0(make_cfg, caplog, tmp_path):
    caplog.set_level("INFO", logger="carvana_seg.train")
    metrics = train(make_cfg("data.val_fraction=0"))
    assert metrics.get("val/dice") is None and Path(metrics["last_checkpoint"]).is_file()
    assert any(m.startswith("no validation ran (no validation cars") for m in caplog.messages)


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="a GPU is here")
def test_a_gpu_trainer_without_a_gpu_exits_2_before_the_data_is_read(make_cfg, caplog, tmp_path):
    with pytest.raises(SystemExit) as exited:
        exit_on_input_error(train, make_cfg("trainer.accelerator=gpu"))
    assert exited.value.code == 2 and "trainer.accelerator=gpu but no GPU is visible" in caplog.messages[-1]
    assert not (tmp_path / "run" / "split.json").exists()


def test_a_bug_under_instantiate_keeps_its_traceback(make_cfg):
    # Not every wrapped exception is the user's to fix: only an InputError in the chain exits 2.
    cfg = make_cfg("+data.no_such_argument=1")
    with pytest.raises(Exception, match="no_such_argument") as raised:
        exit_on_input_error(train, cfg)
    assert not isinstance(raised.value, SystemExit)


# --- 2. a bad resume checkpoint is found before the data set-up ----------------------------------------


def bad_checkpoint(kind: str, trained_ckpt: Path, folder: Path) -> Path:
    path = folder / f"{kind}.ckpt"
    if kind == "truncated":  # a copy cut short, or a write killed half-way by an older writer
        whole = trained_ckpt.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "foreign":  # another project's Lightning checkpoint
        torch.save({"state_dict": {"layer.weight": torch.zeros(2, 2)}, "epoch": 3}, path)
    elif kind == "nan":  # written by a run that diverged before this project checked for it
        checkpoint = torch.load(trained_ckpt, map_location="cpu", weights_only=True)
        name = next(k for k in checkpoint["state_dict"] if k.startswith("net."))
        weights = checkpoint["state_dict"][name]
        weights[(0,) * weights.ndim] = float("nan")
        torch.save(checkpoint, path)
    return path


BAD_CHECKPOINTS = {
    "missing": "does not exist",
    "truncated": "is not a readable PyTorch checkpoint",
    "foreign": "is not a carvana_seg checkpoint",
    "nan": "the weights hold NaN/inf",
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_a_bad_resume_checkpoint_exits_2_naming_it_before_the_data_set_up(trained, tmp_path, kind):
    ckpt = bad_checkpoint(kind, trained[0], tmp_path)
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    code, output = run_train(data, run, f"ckpt_path={ckpt}", "trainer.max_epochs=2")
    assert_plain_input_error(code, output, f"ckpt_path {ckpt}")
    assert BAD_CHECKPOINTS[kind] in output
    assert not (run / "split.json").exists()  # written right after the data set-up
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("kind", list(BAD_CHECKPOINTS))
def test_train_checks_ckpt_path_first(trained, make_cfg, tmp_path, kind):
    ckpt = bad_checkpoint(kind, trained[0], tmp_path)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=BAD_CHECKPOINTS[kind]):
        train(make_cfg(f"ckpt_path={ckpt}", output_dir=out))
    assert not out.exists()


# A resume continues the run of its checkpoint: the overrides of the `trained` fixture, one more epoch.
RESUME = ["trainer.max_epochs=4", "scheduler=none", "data.val_fraction=0.5"]


def resume_cfg(trained: tuple[Path, Path], out: Path, *overrides: str):
    ckpt, data = trained
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *["data=carvana", "debug=tiny", "callbacks.prediction_grid=null", *RESUME],
                *[f"data.root={data}", f"paths.output_dir={out}", f"ckpt_path={ckpt}", *overrides],
            ],
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.base_channels=8", "model.depth=2"],
            "holds another network (model.base_channels 4 in the checkpoint, 8 now)",
        ),
        (
            [*TINY_UNET, "data.folds=4", "data.fold=0"],
            "was validated on other cars (2 in the checkpoint, 1 now",
        ),
    ],
    ids=["another-network", "another-fold"],
)
def test_a_resume_with_another_network_or_other_validation_cars_stops_before_any_step(
    trained, tmp_path, overrides, message
):
    out = tmp_path / "run"
    with pytest.raises(InputError, match=re.escape(message)) as raised:
        train(resume_cfg(trained, out, *overrides))
    assert "start a new run without ckpt_path" in str(raised.value)
    assert not (out / "split.json").exists() and not (out / "checkpoints").exists()


def test_a_resume_with_the_same_network_and_cars_but_another_loss_is_only_logged(trained, tmp_path, caplog):
    metrics = train(resume_cfg(trained, tmp_path / "run", *TINY_UNET, "loss=dice"))
    assert metrics["epochs"] == 4  # resumed after epoch 3 and trained the one more
    assert any("with another loss (loss._target_" in message for message in caplog.messages)


@pytest.mark.slow
def test_a_resume_with_another_network_exits_2_naming_the_option_not_a_size_mismatch(trained, tmp_path):
    ckpt, data = trained
    run = tmp_path / "run"
    code, output = run_train(
        data, run, f"ckpt_path={ckpt}", *RESUME, "model.base_channels=8", "model.depth=2", tiny_net=False
    )
    assert_plain_input_error(
        code, output, "holds another network (model.base_channels 4 in the checkpoint, 8 now)"
    )
    assert "size mismatch" not in output
    assert not (run / "split.json").exists()  # refused before the data set-up


# --- 3. NaN: a diverging run stops before saving, and NaN weights are never loaded ---------------------


def checkpoints(run: Path) -> list[Path]:
    return sorted(run.rglob("*.ckpt"))


@pytest.mark.slow
def test_a_run_whose_loss_is_nan_from_the_start_stops_and_saves_nothing(tmp_path):
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    code, output = run_train(data, run, "optimizer.lr=1e30", "trainer.max_epochs=3")
    assert_plain_input_error(code, output, "training diverged in epoch 0")
    assert "became NaN/inf" in output and "Lower optimizer.lr" in output
    assert checkpoints(run) == []  # before: best.ckpt of NaN weights, "best" with a dice of 0
    assert not (run / "metrics.json").exists()


@pytest.mark.slow
def test_a_run_that_diverges_later_keeps_only_its_good_checkpoints(tmp_path):
    # The learning rate grows 100x every step: the first epoch trains, a later one overflows.
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    schedule = [
        "scheduler=none",  # an empty group, filled in here
        "+scheduler._target_=torch.optim.lr_scheduler.ExponentialLR",
        "+scheduler._partial_=true",
        "+scheduler.gamma=100",
    ]
    code, output = run_train(data, run, *schedule, "trainer.max_epochs=8")
    assert_plain_input_error(code, output, "training diverged in epoch")
    assert f"the last good one is {run / 'checkpoints' / 'last.ckpt'}" in output
    assert [p.name for p in checkpoints(run)] == ["best.ckpt", "last.ckpt"]
    for path in checkpoints(run):
        module = SegmentationModule.load_from_checkpoint(path)  # refuses NaN weights
        assert all(torch.isfinite(p).all() for p in module.parameters())


def test_train_raises_diverged_in_process(make_cfg, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DivergedError, match=r"the training loss.* became NaN/inf"):
        train(make_cfg("optimizer.lr=1e30", "trainer.max_epochs=2", output_dir=out))
    assert checkpoints(out) == []


def test_a_checkpoint_of_nan_weights_is_refused_by_name(trained, tmp_path):
    ckpt = bad_checkpoint("nan", trained[0], tmp_path)
    with pytest.raises(InputError) as refused:
        SegmentationModule.load_from_checkpoint(ckpt)
    assert str(refused.value).startswith(f"ckpt_path {ckpt}: the weights hold NaN/inf (net.")
    assert str(refused.value).endswith("the run diverged; use an earlier checkpoint")


# --- 4. checkpoints are written whole, last.ckpt is the last epoch, kill -9 resumes ------------------------


def test_every_trainer_option_writes_checkpoints_atomically():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for option in sorted(p.stem for p in (CONF_DIR / "trainer").glob("*.yaml")):
            cfg = compose("train", overrides=[f"trainer={option}"])
            plugins = [instantiate(p) for p in cfg.trainer.plugins]
            assert [type(p) for p in plugins] == [AtomicCheckpointIO], option
    for strategy in ("ddp", "ddp_spawn"):  # DDP (trainer=ddp) takes the plugin as its checkpoint writer
        trainer = pl.Trainer(
            accelerator="cpu", devices=2, strategy=strategy, plugins=[AtomicCheckpointIO()], logger=False
        )
        assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_last_ckpt_is_the_last_epoch_even_when_the_score_did_not_improve(make_cfg, tmp_path):
    # val/dice_best never goes down, so with mode=min only the first epoch is "best".
    out = tmp_path / "run"
    train(
        make_cfg(
            "trainer.max_epochs=3",
            "callbacks.model_checkpoint.monitor=val/dice_best",
            "callbacks.model_checkpoint.mode=min",
            output_dir=out,
        )
    )
    best = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == 0
    assert last["epoch"] == 2 and last["global_step"] == 6  # Lightning 2.6 alone: a copy of best.ckpt


WRITER = """
import sys, torch
from carvana_seg.core.checkpoint_io import AtomicCheckpointIO
io, path, version = AtomicCheckpointIO(), sys.argv[1], int(sys.argv[2])
while True:
    version += 1
    io.save_checkpoint({"version": version, "weights": torch.full((8_000_000,), float(version))}, path)
    print(version, flush=True)
"""


@pytest.mark.slow
def test_a_checkpoint_write_killed_at_random_moments_leaves_a_whole_checkpoint(tmp_path):
    # 32 MB checkpoints written back to back: a kill at a random moment mostly lands inside a write. The
    # system temporary folder is put on another file system, where fsspec's move is a copy into place.
    path = tmp_path / "checkpoints" / "last.ckpt"
    env = {**os.environ, "TMPDIR": "/dev/shm" if Path("/dev/shm").is_dir() else str(tmp_path)}
    rng = random.Random(4)
    version = 0
    for _ in range(3):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(version)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None
        written = int(writer.stdout.readline())  # one checkpoint is complete
        time.sleep(rng.uniform(0.0, 1.0))
        writer.send_signal(signal.SIGKILL)
        rest = writer.communicate()[0].split()
        written = int(rest[-1]) if rest else written
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        # The last one reported complete, or the one after it if the kill came between rename and print.
        assert checkpoint["version"] in (written, written + 1)
        assert torch.equal(checkpoint["weights"], torch.full((8_000_000,), float(checkpoint["version"])))
        version = checkpoint["version"]
    AtomicCheckpointIO().save_checkpoint({"version": -1}, path)  # removes what killed writers left
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("phase", "seed"), [("start-up", 0), ("training", 1), ("training", 2)], ids=lambda v: str(v)
)
def test_a_run_killed_at_a_random_moment_resumes_from_last_ckpt(tmp_path, phase, seed):
    epochs = 25  # a few seconds of training after the first checkpoint, even on a fast machine
    data = write_carvana(tmp_path / "data")
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    rng = random.Random(seed)
    log = (tmp_path / "killed.log").open("w")
    process = subprocess.Popen(
        train_command(data, run, f"trainer.max_epochs={epochs}", "data.cache=true"),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        if phase == "training":  # after the first checkpoint: a kill between, or during, checkpoint writes
            deadline = time.monotonic() + 300
            while not last.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 1.5))
        else:  # imports, data checks, building the decoded cache
            time.sleep(rng.uniform(0.5, 6.0))
        assert process.poll() is None, "the run ended before it was killed: give it more epochs"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()

    resume = [f"ckpt_path={last}"] if last.exists() else []
    assert resume or phase == "start-up", "no last.ckpt after the first one was written"
    code, output = run_train(data, run, f"trainer.max_epochs={epochs}", "data.cache=true", *resume)

    assert code == 0, output[-3000:]
    if resume:
        assert "Restored all states from the checkpoint" in output
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == epochs and metrics["steps"] == 2 * epochs
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.endswith(PARTIAL_SUFFIX)]
    SegmentationModule.load_from_checkpoint(last)
