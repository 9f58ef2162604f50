"""Errors for bad input: entry points print their message (which names the file or option) and exit 2."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class InputError(ValueError):
    """The input (a folder, a file, a checkpoint, an option) is not usable; the message says how to fix it."""


class DataError(InputError):
    """The data on disk is not what the loader needs; the message names the file(s) and the fix."""


def exit_on_input_error(function: Callable[..., T], *args: object) -> T:
    """Run an entry point's work; bad input is the user's to fix, not a bug: say what is wrong and
    exit with status 2, without a traceback."""
    try:
        return function(*args)
    except InputError as err:
        logging.getLogger(function.__module__).error("%s", err)
        raise SystemExit(2) from None
