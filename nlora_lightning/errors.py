"""Exceptions the project raises for bad input; each message names the cause and, where one exists, the fix."""

from __future__ import annotations

__all__ = [
    "NLoRAError",
    "DataError",
    "ConfigurationError",
    "CheckpointMismatchError",
    "RunDirectoryError",
    "OutputDirectoryError",
    "CheckpointError",
    "CommandLineError",
    "NonFiniteLossError",
    "ExportError",
    "UnfinishedRunError",
]


class NLoRAError(Exception):
    """Base class of the project's own errors."""


class DataError(NLoRAError, ValueError):
    """A benchmark file exists but its content is unusable (malformed JSON, bad records, empty split)."""


class ConfigurationError(NLoRAError, ValueError):
    """Settings that cannot work together or name things that do not exist."""


class CheckpointMismatchError(NLoRAError, ValueError):
    """A checkpoint was written for another task list, model or method than the one resuming it."""


class RunDirectoryError(NLoRAError, FileExistsError):
    """The run directory already holds a run that this command would overwrite."""


class OutputDirectoryError(NLoRAError, OSError):
    """The run directory cannot be created or written (read-only, or a parent is a file)."""


class CheckpointError(NLoRAError, ValueError):
    """A file given as ``--ckpt_path`` is not a checkpoint that can be read."""


class CommandLineError(NLoRAError, ValueError):
    """An option on the command line or in a ``--config`` file has the wrong type or does not exist."""


class NonFiniteLossError(NLoRAError, FloatingPointError):
    """The loss became NaN or infinite; training stops and the last good checkpoint is kept."""


class ExportError(NLoRAError, ValueError):
    """A run cannot be exported (unreadable checkpoint, nothing to export)."""


class UnfinishedRunError(ExportError):
    """A run that stopped before its last task would be exported as if it were final."""
