"""Errors the CLI reports as one line (exit code 2) instead of a traceback."""


class ReweightError(Exception):
    """Base class: a problem the user can fix (bad config, missing data, ...).

    The message is kept to one line, whatever it quotes (a library's multi-line error, a key
    with a line break in it): line breaks become spaces."""

    def __init__(self, *args: object) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            args = (" ".join(args[0].splitlines()),)
        super().__init__(*args)


class ConfigError(ReweightError):
    """The experiment configuration is invalid; the message names the field path."""


class DataError(ReweightError):
    """A data set is missing or unreadable; the message names the file and how to get it."""


class ContractError(ReweightError):
    """A plugin's object broke a rule of its contract (``component``: which kind of plugin,
    ``strategy``, ``hypergradient``, ...; the experiment layer adds the plugin's name)."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(message)
        self.component = component


class NumericalError(ReweightError):
    """A loss or weight became NaN or infinite."""


def validation_message(details: dict) -> str:
    """The text of one pydantic error, in the user's terms: "unknown field" for a field the
    model does not have, and a validator's own words without pydantic's "Value error, "."""
    if details["type"] == "extra_forbidden":
        return "unknown field"
    if details["type"] == "value_error":
        return str(details["ctx"]["error"])
    return details["msg"]
