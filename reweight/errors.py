"""Errors the CLI reports as one line (exit code 2) instead of a traceback."""


class ReweightError(Exception):
    """Base class: a problem the user can fix (bad config, missing data, ...)."""


class ConfigError(ReweightError):
    """The experiment configuration is invalid; the message names the field path."""


class DataError(ReweightError):
    """A data set is missing or unreadable; the message names the file and how to get it."""


class NumericalError(ReweightError):
    """A loss or weight became NaN or infinite."""
