"""train(cfg) on the real config, shrunk: every model x loss trains, and a run leaves what it promises."""

import json
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException, MissingConfigException
from hydra.utils import instantiate

from carvana_seg.core.module import SegmentationModule
from carvana_seg.core.precision import resolve_precision
from carvana_seg.train import train
from tests.conftest import CONF_DIR


@pytest.mark.parametrize("loss", ["bce", "dice", "bce_dice"])
@pytest.mark.parametrize("model", ["cnn", "unet"])
def test_every_model_and_loss_trains_a_few_steps(make_cfg, tmp_path, model, loss):
    cfg = make_cfg(f"model={model}", f"loss={loss}", "callbacks.prediction_grid=null")
    metrics = train(cfg)
    assert metrics["steps"] == 2
    for key in (
        "val/dice",
        "val/dice_best",
        "val/accuracy",
        "val/dice_mean_classes",
        "val/iou",
        "train/dice",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert metrics["val/loss"] > 0


def test_hard_pixel_bce_trains_and_a_bad_fraction_stops_before_training(make_cfg, tmp_path):
    cfg = make_cfg("loss.hard_fraction=0.25", "callbacks.prediction_grid=null", output_dir=tmp_path / "a")
    metrics = train(cfg)
    assert metrics["steps"] == 2 and metrics["val/loss"] > 0
    bad = tmp_path / "b"
    with pytest.raises(InstantiationException, match=r"loss\.hard_fraction must be in \(0, 1\], got 0"):
        train(make_cfg("loss.hard_fraction=0", output_dir=bad))
    assert not (bad / "checkpoints").exists() and not (bad / "metrics.json").exists()


def test_a_run_directory_holds_split_metrics_and_checkpoints(make_cfg, tmp_path):
    out = tmp_path / "run"
    metrics = train(make_cfg("trainer.max_epochs=2", output_dir=out))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["val/dice"] == pytest.approx(metrics["val/dice"])
    assert saved["val/dice_best"] >= saved["val/dice"] - 1e-9
    assert saved["epochs"] == 2 and saved["precision"] == "32-true"
    split = json.loads((out / "split.json").read_text())
    assert split["train"] and split["val"] and not set(split["train"]) & set(split["val"])
    assert (out / "checkpoints" / "best.ckpt").is_file() and (out / "checkpoints" / "last.ckpt").is_file()
    checkpoint = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["hyper_parameters"]["net"]["_target_"] == "carvana_seg.models.unet.UNet"


def test_ema_checkpoints_the_average_and_keeps_the_raw_weights_beside_it(make_cfg, tmp_path):
    out = tmp_path / "run"
    train(
        make_cfg("callbacks=[default,ema]", "callbacks.ema.decay=0.5", "trainer.max_epochs=2", output_dir=out)
    )
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert average.keys() == raw.keys()
    assert any(not torch.equal(average[k], raw[k]) for k in average if k.startswith("net."))
    module = SegmentationModule.load_from_checkpoint(out / "checkpoints" / "last.ckpt")  # what evaluate loads
    name = next(k for k in average if k.startswith("net.") and average[k].is_floating_point())
    assert torch.equal(module.state_dict()[name], average[name])


def test_ckpt_path_resumes_where_the_run_stopped(make_cfg, tmp_path):
    first = tmp_path / "first"
    train(make_cfg("trainer.max_epochs=1", output_dir=first))
    resumed = train(
        make_cfg(
            "trainer.max_epochs=2",
            f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}",
            output_dir=tmp_path / "second",
        )
    )
    assert resumed["epochs"] == 2 and resumed["steps"] == 4  # 2 steps from the checkpoint, 2 new ones


def test_same_seed_same_result(make_cfg, tmp_path):
    one = train(make_cfg(output_dir=tmp_path / "a"))
    two = train(make_cfg(output_dir=tmp_path / "b"))
    assert one["train/loss_epoch"] == pytest.approx(two["train/loss_epoch"], rel=1e-5)


def test_unknown_group_option_is_hydras_own_error():
    with (
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"),
        pytest.raises(MissingConfigException, match="model"),
    ):
        compose("train", overrides=["model=resnet9000"])


def test_every_group_option_composes():
    groups = {p.name: sorted(f.stem for f in p.glob("*.yaml")) for p in CONF_DIR.iterdir() if p.is_dir()}
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for group in ("data", "model", "loss", "optimizer", "scheduler", "trainer"):
            for option in groups[group]:
                compose("train", overrides=[f"{group}={option}"])


def test_precision_auto_is_fp32_on_cpu_and_passes_explicit_values():
    assert resolve_precision("auto", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "auto") == "32-true"


@pytest.mark.parametrize("recipe", ["carvana_cpu", "carvana_gpu"])
def test_real_data_recipes_validate_their_last_epoch(recipe):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={recipe}", "data.root=/data", "paths.output_dir=x"])
    # Validation runs every n epochs only: the final weights are scored (and saved) only if n divides it.
    assert cfg.trainer.max_epochs % cfg.trainer.check_val_every_n_epoch == 0
    assert cfg.data.cache and cfg.callbacks.model_checkpoint.save_last


def test_the_cpu_recipe_stretches_and_darkens_cars_and_augment_dark_floor_or_none_give_light_bands_or_flip():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        recipe = compose("train", overrides=["experiment=carvana_cpu", "data.root=/data"])
        dark_cars = compose(
            "train", overrides=["experiment=carvana_cpu", "augment=dark_floor_cars", "data.root=/data"]
        )
        light_bands = compose(
            "train", overrides=["experiment=carvana_cpu", "augment=dark_floor", "data.root=/data"]
        )
        flip_alone = compose("train", overrides=["experiment=carvana_cpu", "augment=none", "data.root=/data"])
    assert dark_cars.data.hflip_p == light_bands.data.hflip_p == flip_alone.data.hflip_p == 0.5
    dark, light = dark_cars.data.augment.dark_floor, light_bands.data.augment.dark_floor
    assert list(dark_cars.data.augment) == ["dark_floor"] == list(light_bands.data.augment)
    assert (list(dark.darkness), dark.car_p) == ([0.25, 0.6], 0.5)
    assert (list(light.darkness), light.car_p) == ([0.1, 0.4], 0.0)
    # Only those two differ: the rest of DarkFloor's settings are the light bands' own.
    assert {k: v for k, v in dark.items() if k not in ("darkness", "car_p")} == {
        k: v for k, v in light.items() if k not in ("darkness", "car_p")
    }
    assert not flip_alone.data.augment
    assert list(recipe.data.augment) == ["tall_car", "dark_floor"] and recipe.data.augment.dark_floor == dark


@pytest.mark.parametrize("recipe", ["carvana_cpu", "carvana_cpu_augment", "carvana_cpu augment=none"])
@pytest.mark.parametrize("model", ["cnn", "unet", "unet_transposed", "unet_cpu", "resnet_unet"])
def test_real_data_recipes_take_any_network(recipe, model):
    overrides = [f"experiment={recipe.split()[0]}", *recipe.split()[1:], f"model={model}", "data.root=/data"]
    overrides.append("paths.output_dir=x")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    net = instantiate(cfg.model)
    assert net(torch.zeros(1, 3, 64, 96)).shape == (1, 1, 64, 96)
    for transform in cfg.data.augment.values():  # name -> transform (conf/augment/)
        instantiate(transform)
    instantiate(cfg.data)  # its options agree (finer masks only with transforms that keep them aligned)


def test_bf16_autocast_trains_on_the_cpu(make_cfg, tmp_path):
    metrics = train(make_cfg("trainer.precision=bf16-mixed"))
    assert metrics["precision"] == "bf16-mixed"
    assert 0.0 <= metrics["val/dice"] <= 1.0 and metrics["train/loss"] == metrics["train/loss"]  # not NaN


@pytest.mark.skipif(shutil.which("g++") is None, reason="torch.compile on a CPU needs a C++ compiler")
def test_a_compiled_run_trains_as_an_eager_one_and_its_checkpoint_loads_eager(make_cfg, tmp_path):
    """module.compile=true compiles the network and the loss in place (C++ kernels on a CPU): the same
    steps reach the same weights and scores within float rounding, and the checkpoint loads eager."""
    eager = train(make_cfg("callbacks.prediction_grid=null", output_dir=tmp_path / "eager"))
    compiled = train(
        make_cfg("callbacks.prediction_grid=null", "module.compile=true", output_dir=tmp_path / "on")
    )
    assert compiled["steps"] == eager["steps"] == 2
    assert compiled["val/loss"] == pytest.approx(eager["val/loss"], rel=1e-4)
    weights = [
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for run in (tmp_path / "eager", tmp_path / "on")
    ]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.allclose(tensor.float(), weights[1][name].float(), atol=1e-5), name
    module = SegmentationModule.load_from_checkpoint(tmp_path / "on" / "checkpoints" / "last.ckpt")
    assert module.net._compiled_call_impl is None  # inference runs eager
