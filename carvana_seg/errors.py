"""Errors for bad input: entry points print their message (which names the file or option) and exit 2."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from omegaconf.errors import MissingMandatoryValue

T = TypeVar("T")


class InputError(ValueError):
    """The input (a folder, a file, a checkpoint, an option) is not usable; the message says how to fix it."""


class DataError(InputError):
    """The data on disk is not what the loader needs; the message names the file(s) and the fix."""


def shown(names: list[str], most: int = 5) -> str:
    """Names for a one-line message: the first `most`, then how many more."""
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class DivergedError(InputError):
    """Training diverged (the loss, logits or weights became NaN/inf): the options (learning rate, schedule,
    precision) are the user's to change; the message says which checkpoint is still good."""


def input_error_in(error: BaseException) -> InputError | None:
    """The InputError that `error` is or was raised from, following the chain Python prints (`__cause__`,
    else `__context__`): Hydra's `instantiate` wraps a constructor's InputError in its own exception."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, InputError):
            return current
        if isinstance(current, MissingMandatoryValue):  # a `???` of the config left unset
            key = current.full_key or current.key
            return InputError(f"{key} must be given: pass {key}=..." if key else str(current))
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def exit_on_input_error(function: Callable[..., T], *args: object) -> T:
    """Run an entry point's work; bad input is the user's to fix, not a bug: say what is wrong and
    exit with status 2, without a traceback (and without the wrapper text of Hydra's `instantiate`)."""
    try:
        return function(*args)
    except Exception as err:
        found = input_error_in(err)
        if found is None:
            raise  # a bug: keep the traceback
        logging.getLogger(function.__module__).error("%s", found)
        raise SystemExit(2) from None
