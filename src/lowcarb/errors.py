"""The one family of errors a user can fix.

Every error that a user caused and can repair (a bad recipe field, a data file with a broken row,
an output folder that cannot be written, a device that is not there) is a `LowcarbError`. The
command line prints it as one line and exits with status 2; anything else that escapes is a bug
and keeps its traceback. Messages say what was wrong and what to do about it.

This module imports nothing, so every package (`measure` included, the ground floor) may use it.
The subclasses also derive from the built-in exception a caller would expect (`ValueError` for bad
values, `OSError` for paths), so `except ValueError` around a library call keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DataError",
    "DependencyError",
    "DeviceError",
    "LowcarbError",
    "LowcarbWarning",
    "MissingPathError",
    "ModelError",
    "PathError",
]


class LowcarbError(Exception):
    """An error the user can fix; the message says what was wrong and what to do."""


class ConfigError(LowcarbError, ValueError):
    """A setting, recipe field, flag or environment variable with a value lowcarb cannot use."""


class DataError(LowcarbError, ValueError):
    """An input data file that cannot be used as it is (names the file, the line, the field)."""


class ModelError(LowcarbError, ValueError):
    """A model folder or file that lowcarb cannot load, or a model a stage cannot work on."""


class DeviceError(LowcarbError, ValueError):
    """A device or precision that this machine does not have."""


class DependencyError(LowcarbError, ImportError):
    """An optional package a feature needs is not installed (the message says what to install)."""


class PathError(LowcarbError, OSError):
    """A file or folder that cannot be read or written (names the path and the reason)."""


class MissingPathError(PathError, FileNotFoundError):
    """A file or folder that does not exist (names the path and what to give instead)."""


class LowcarbWarning(UserWarning):
    """Something a user allowed or should know that does not stop the work (rows skipped, a
    setting adjusted); the command line prints it as one line."""
