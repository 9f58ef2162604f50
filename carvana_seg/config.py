"""Where the project's Hydra configs live, and composing one of them in Python (tests, notebooks, tools).

Every command composes from this folder only: a config is never read from a file a user hands in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

# carvana_seg/conf is the repository's conf/ (a link in a checkout, a copy inside a wheel). Absolute,
# so that `hydra.main` finds the configs whatever module or working folder it starts from.
CONF_DIR = str((Path(__file__).parent / "conf").resolve())


def compose(config_name: str, overrides: Sequence[str] = ()) -> DictConfig:
    """The entry config `config_name` (train, evaluate, predict, ...) with command-line style overrides.

    Works inside a running Hydra app too (a command composing another's config): the app's Hydra is
    set aside for the call and put back afterwards.
    """
    running = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(config_name, overrides=list(overrides))
    finally:
        if running is not None:
            GlobalHydra.instance().clear()
            GlobalHydra.instance().initialize(running)
