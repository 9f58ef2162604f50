"""The ceiling command: the best full-size dice a training size allows, for binary and soft targets."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from carvana_seg.errors import InputError
from carvana_seg.tools.ceiling import ceilings, run
from tests.conftest import CONF_DIR


def test_a_soft_target_puts_an_edge_between_pixels_where_a_binary_one_cannot():
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :25] = 1  # the edge lies halfway through the third of six pixels at 4x6
    scores = ceilings(mask, (4, 6))
    assert scores["soft"] == 1.0
    assert scores["binary"] < 0.95  # nearest sampling moves the edge by five full-size pixels


def compose_ceiling(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("ceiling", overrides=list(overrides))


def test_the_command_prints_a_table_per_size(carvana_dir, capsys):
    table = run(compose_ceiling(f"data.root={carvana_dir}", "sizes=[[40,60],[10,15]]"))
    assert table["40x60"] == {"binary": 1.0, "soft": 1.0}  # at full size nothing is lost
    assert 0.5 < table["10x15"]["binary"] < 1.0 and 0.5 < table["10x15"]["soft"] <= 1.0
    printed = capsys.readouterr().out
    assert "(12 masks)" in printed and "| 10x15 |" in printed


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sizes=[[40]]", "each of sizes must be"),
        ("sizes=[40,60]", "each of sizes must be"),  # one size without its brackets
        ("sizes=[]", "sizes must be a list"),
        ("every=0", "every must be"),
        ("every=abc", "every must be"),
    ],
)
def test_bad_options_are_named(carvana_dir, override, message):
    with pytest.raises(InputError, match=message):
        run(compose_ceiling(f"data.root={carvana_dir}", override))
