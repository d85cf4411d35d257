"""Errors a user can act on.

Jobs turn these into a one-line message on stderr and a non-zero exit code; any
other exception is a bug and keeps its traceback.
"""
import errno


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


class OutOfSpaceError(CfError):
    """The output's storage filled up (``ENOSPC``): free space and run again; nothing half-written was
    published, and a pipeline run or a training resumes where it stopped."""

    exit_code = 7


NO_SPACE = "No space left on device"


def out_of_space(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it was raised from is a full device: an ``OSError`` with ``ENOSPC``,
    or a Java (Py4J) or C++ (torch) error whose message says so, as they carry no errno."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if NO_SPACE in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def space_error(path: str) -> OutOfSpaceError:
    """The one-line error for a full device under ``path``."""
    return OutOfSpaceError(f"no space left on device writing {path}: free space there and run again "
                           "(nothing half-written was published; a pipeline run or a training resumes)")
