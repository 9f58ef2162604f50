"""TimeBudget: a run ends when its wall-clock budget is spent, its learning rate annealed by then."""

import itertools

import pytest
import torch

from carvana_seg.core.callbacks.time_budget import TimeBudget, one_cycle, parse_duration
from carvana_seg.core.precision import cpu_has_fast_bf16, resolve_precision
from carvana_seg.train import train

# A time budget sets the learning rate itself: no scheduler beside it (the default config has one).
BUDGET = [
    "+callbacks.time_budget._target_=carvana_seg.core.callbacks.time_budget.TimeBudget",
    "scheduler=none",
]


def test_durations_read_as_lightning_max_time_does():
    assert parse_duration(90) == 90.0
    assert parse_duration("00:00:18:45") == 18 * 60 + 45
    assert parse_duration("01:00:00") == 3600
    for bad in ("soon", "1:2:3:4:5", 0, "-00:01"):
        with pytest.raises(ValueError, match="time budget"):
            parse_duration(bad)


def test_one_cycle_warms_up_peaks_then_anneals_to_almost_nothing():
    shape = [one_cycle(i / 100, warmup=0.2, div_factor=25, final_div_factor=1e4) for i in range(101)]
    assert shape[0] == pytest.approx(1 / 25)
    assert shape[20] == pytest.approx(1.0) and max(shape) == pytest.approx(1.0)
    assert shape[100] == pytest.approx(1 / 25e4)
    assert all(a <= b for a, b in itertools.pairwise(shape[:21]))  # rising
    assert all(a >= b for a, b in itertools.pairwise(shape[20:]))  # falling
    assert one_cycle(1.7, 0.2, 25, 1e4) == shape[100]  # past the deadline: stays at the floor


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_progress_counts_from_training_start_to_the_deadline_and_survives_a_resume():
    clock = FakeClock()
    budget = TimeBudget(100, clock=clock)
    clock.now += 20  # start-up after the callback was built: counted in the budget, not in the schedule
    budget.training_started = clock.now
    clock.now += 40
    assert budget.progress() == pytest.approx(0.5)
    saved = budget.state_dict()
    assert saved == {"spent": 40.0, "peak_lrs": []}

    clock.now = 5000.0
    resumed = TimeBudget(100, clock=clock)
    resumed.load_state_dict(saved)
    clock.now += 20
    resumed.training_started = clock.now
    assert resumed.progress() == pytest.approx(40 / 80)  # 40 s spent, 40 s left after its start-up


def test_a_budgeted_run_stops_on_time_validates_and_saves_its_final_weights(make_cfg, tmp_path):
    out = tmp_path / "run"
    cfg = make_cfg(
        *BUDGET,
        "+callbacks.time_budget.budget=3",
        "scheduler=none",
        "trainer.max_epochs=100000",
        "trainer.limit_train_batches=1.0",
        "callbacks.prediction_grid=null",
        output_dir=out,
    )
    metrics = train(cfg)
    assert 1 <= metrics["epochs"] < 100000
    assert metrics["wall_time_s"] < 60
    assert 0.0 <= metrics["val/dice"] <= 1.0
    checkpoint = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    (state,) = [v for k, v in checkpoint["callbacks"].items() if "TimeBudget" in k]
    # What a resumed run needs: the time already spent and the peak rate (its optimiser holds a lower one).
    assert 0 < state["spent"] < 60 and state["peak_lrs"] == [cfg.optimizer.lr]


@pytest.mark.parametrize(
    ("override", "complaint"),
    [
        ("scheduler=onecycle", "scheduler=none"),
        ("trainer.check_val_every_n_epoch=2", "check_val_every_n_epoch"),
    ],
)
def test_a_budget_refuses_a_second_schedule_and_sparse_validation(make_cfg, override, complaint):
    cfg = make_cfg(*BUDGET, "+callbacks.time_budget.budget=60", override)
    with pytest.raises(ValueError, match=complaint):
        train(cfg)


def test_precision_fast_takes_bf16_only_where_the_cpu_runs_it_natively():
    expected = "bf16-mixed" if cpu_has_fast_bf16() else "32-true"
    assert resolve_precision("fast", "cpu") == expected
    assert resolve_precision("auto", "cpu") == "32-true"
