"""Rebuilding a network or a loss from the config stored in a checkpoint, without running code that
the file names.

A checkpoint is a file someone may hand you. Its config is therefore not passed to Hydra as it is:
the `_target_` must be a class of this project's own package for that kind of object (a network of
`carvana_seg.models`, a loss of `carvana_seg.core.losses`), and the arguments plain values (numbers,
strings, lists, mappings): no nested `_target_`, no partials.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from torch import nn

from carvana_seg.errors import InputError

MODELS = "carvana_seg.models"
LOSSES = "carvana_seg.core.losses"
_PLAIN = (str, int, float, bool, type(None))


def build(spec: Mapping[str, Any], package: str, what: str) -> nn.Module:
    """The nn.Module that `spec` ({"_target_": "package.module.Class", **arguments}) describes.

    Raises InputError, naming `what` (e.g. "model"), when the target is not an nn.Module class defined
    in `package` or when an argument is not a plain value.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("_target_"), str):
        raise InputError(f"{what}: expected a mapping with a _target_, got {spec!r}")
    target = spec["_target_"]
    module_name, _, class_name = target.rpartition(".")
    inside = module_name == package or module_name.startswith(package + ".")
    if not inside or not class_name.isidentifier() or class_name.startswith("_"):
        raise InputError(f"{what}: _target_ {target} is not a class of {package}; refusing to build it")
    try:
        cls = getattr(importlib.import_module(module_name), class_name, None)
    except ImportError as err:
        raise InputError(f"{what}: _target_ {target} cannot be imported ({err})") from err
    if not (isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module_name):
        raise InputError(f"{what}: _target_ {target} is not an nn.Module class of {package}")
    arguments = {key: value for key, value in spec.items() if key != "_target_"}
    _check_plain(arguments, what)
    return instantiate({"_target_": target, **arguments}, _convert_="all")


def _check_plain(value: Any, where: str) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("_"):
                raise InputError(f"{where}: key {key!r} is not allowed in a stored config")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, _PLAIN):
        raise InputError(f"{where}: {type(value).__name__} is not a plain config value")
