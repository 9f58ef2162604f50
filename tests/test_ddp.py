"""Two CPU processes of Lightning's DDP (gloo), started the way a user starts them: the logged validation
scores must be the whole-validation-set scores of one process, and only rank 0 writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from carvana_seg.core.metrics import per_image_scores
from carvana_seg.core.module import SegmentationModule
from carvana_seg.data.decode import encode_mask
from tests.conftest import write_carvana
from tests.test_cli import run_cli

pytestmark = pytest.mark.slow


def shrink_cars(root: Path, views: tuple[int, ...]) -> None:
    """Redraw the given views of every car with a small car: hard images, with a lower dice than the rest."""
    for path in (root / "train").glob("*.jpg"):
        if int(path.stem.rsplit("_", 1)[1]) not in views:
            continue
        image = np.asarray(Image.open(path)).copy()
        height, width = image.shape[:2]
        yy, xx = np.mgrid[:height, :width]
        mask = ((yy - height / 2) / (height / 12)) ** 2 + ((xx - width / 2) / (width / 10)) ** 2 <= 1
        image[:] = 225
        image[mask] = (60, 60, 60)
        Image.fromarray(image).save(path, quality=95)
        mask_path = root / "train_masks" / f"{path.stem}_mask.gif"
        mask_path.write_bytes(encode_mask(mask.astype(np.uint8), "gif"))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    """`python -m carvana_seg.train trainer=ddp` on 2 CPU processes (gloo), one epoch, tiny U-Net."""
    base = tmp_path_factory.mktemp("ddp")
    # 4 cars x 5 views, one car held out: 5 validation images, an odd number for 2 processes.
    data = write_carvana(base / "data", cars=4, views=5, size=(64, 96))
    # Views 1 and 3 are hard: rank 0 validates views 1, 3, 5 and rank 1 views 2, 4, so the two
    # processes' own scores differ a lot.
    shrink_cars(data, views=(1, 3))
    run_dir = base / "run"
    result = run_cli(
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",  # torch's SyncBatchNorm is for CUDA only
        "data=carvana",
        f"data.root={data}",
        "data.val_fraction=0.25",
        "data.val_batch_size=2",
        "model=unet",
        "model.base_channels=4",
        "model.depth=2",
        "debug=tiny",
        "trainer.limit_train_batches=1.0",  # every batch of both processes' shares
        "trainer.limit_val_batches=1.0",
        "torch_threads=1",
        f"paths.cache_dir={base / 'cache'}",
        f"hydra.run.dir={run_dir}",
        timeout=150,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def one_process(ddp_run: Path) -> dict[str, np.ndarray]:
    """Per-image dice and loss of every validation image, in one process, with the final weights (those
    the last validation ran with)."""
    cfg = OmegaConf.load(ddp_run / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    val_set = datamodule.val_set
    assert len(val_set) == 5
    module = SegmentationModule.load_from_checkpoint(ddp_run / "checkpoints" / "last.ckpt")
    dice, losses = [], []
    with torch.no_grad():
        for i in range(len(val_set)):
            item = val_set[i]
            images, masks = item["image"][None], item["mask"][None].float()
            logits = module(images)
            dice.append(per_image_scores(module.predict_mask(logits), masks)["dice"].item())
            losses.append(module.loss(logits, masks).item())
    return {"dice": np.array(dice), "loss": np.array(losses)}


def test_ddp_writes_the_run_files_once_from_rank_zero(ddp_run: Path):
    log = (ddp_run / "train.log").read_text()
    assert "DDPStrategy: 2 processes (2 devices x 1 nodes), batch 4 per process, effective batch 8" in log
    # Rank 1 only has its own log: Lightning re-runs the command for it with
    # hydra.job.name=train_ddp_process_1 and hydra.output_subdir=null, into the same run folder.
    assert (ddp_run / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in ddp_run.glob("**/.hydra")) == [".hydra"]
    assert len(list((ddp_run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (ddp_run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert len(json.loads((ddp_run / "split.json").read_text())["val"]) == 1
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["best_checkpoint"].endswith("best.ckpt")


def test_ddp_validation_dice_is_the_one_process_dice_of_the_whole_set(ddp_run, one_process):
    dice = one_process["dice"]
    whole_set = dice.mean()
    # The two processes' own figures really differ, so a wrong reduction would show: the mean of the
    # two processes' means, and the mean over Lightning's default padded shares (image 0 twice).
    mean_of_means = (dice[0::2].mean() + dice[1::2].mean()) / 2
    padded = np.concatenate([dice, dice[:1]]).mean()
    assert abs(mean_of_means - whole_set) > 5e-3, (dice, mean_of_means, whole_set)
    assert abs(padded - whole_set) > 5e-3, (dice, padded, whole_set)

    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics["val/dice"] == pytest.approx(whole_set, abs=1e-4)
    assert metrics["val/dice_best"] == pytest.approx(whole_set, abs=1e-4)


def test_ddp_validation_loss_is_the_one_process_loss_of_the_whole_set(ddp_run, one_process):
    # Shares of 3 and 2 images: Lightning's own sync_dist mean would be off by 5/4 here (bug #21859).
    metrics = json.loads((ddp_run / "metrics.json").read_text())
    assert metrics["val/loss"] == pytest.approx(one_process["loss"].mean(), abs=1e-4)
