"""The error type for bad input data."""

from carvana_seg.errors import InputError


class DataError(InputError):
    """The data on disk is not what the loader needs; the message names the file(s) and the fix."""
