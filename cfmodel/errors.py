"""Errors a user can act on.

Jobs turn these into a one-line message on stderr and a non-zero exit code; any
other exception is a bug and keeps its traceback.
"""


class CfError(Exception):
    """Base class: a problem with the user's input, config or environment."""

    exit_code = 2


class ConfigError(CfError):
    """The configuration is invalid: unknown key, wrong type, out-of-range value."""


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` (the config sections' checks)."""
    if not condition:
        raise ConfigError(message)


class InputError(CfError):
    """The input data is missing, empty or lacks a required column."""


class OutputExistsError(CfError):
    """The output path exists and ``--overwrite`` was not given."""


class QualityGateError(CfError):
    """The data or the model failed a configured quality gate."""

    exit_code = 3
