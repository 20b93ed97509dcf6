"""Protecting run directories: a new fit never silently overwrites a finished or unfinished run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from nlora_lightning.errors import OutputDirectoryError, RunDirectoryError
from nlora_lightning.run_layout import RUN_FILES  # every name a run owns: --overwrite removes these

__all__ = ["RUN_FILES", "run_state", "guard_run_directory", "check_writable"]

def run_state(directory: Path) -> str:
    """``empty``, ``finished`` or ``unfinished`` (a run started there and did not end cleanly)."""
    if not directory.is_dir() or not any((directory / name).exists() for name in RUN_FILES):
        return "empty"
    info = directory / "run_info.json"
    if info.is_file():
        try:
            if json.loads(info.read_text()).get("status") == "finished":
                return "finished"
        except (json.JSONDecodeError, OSError):
            pass
        return "unfinished"
    return "finished" if (directory / "cl_metrics.json").is_file() and not (directory / "checkpoints").is_dir() else "unfinished"


def guard_run_directory(directory: Path, resuming: bool, overwrite: bool, resume_requested: bool = False) -> None:
    """Refuse to start a fresh fit over an existing run unless asked; clear it when asked.

    Args:
        directory: The run directory.
        resuming: A checkpoint was found and the fit resumes from it.
        overwrite: ``--overwrite`` was given.
        resume_requested: ``--ckpt_path last`` was given (whether or not a checkpoint was found).

    Raises:
        RunDirectoryError: The directory holds a finished run (pass ``--overwrite``) or an
            unfinished one (resume with ``--ckpt_path last``, or pass ``--overwrite``), or
            ``--ckpt_path last`` was asked for an unfinished run that saved no checkpoint.
    """
    state = run_state(directory)
    if state == "empty" or resuming:
        return
    if not overwrite:
        if state == "unfinished" and resume_requested:
            raise RunDirectoryError(
                f"--ckpt_path last: the unfinished run in {directory} saved no checkpoint before it stopped "
                f"(nothing in {directory / 'checkpoints'}), so there is nothing to resume; "
                "pass --overwrite to start it again from scratch"
            )
        if state == "finished":
            raise RunDirectoryError(
                f"run directory {directory} already holds a finished run; pass --overwrite to replace it, "
                "or write elsewhere (--trainer.logger.init_args.name / --trainer.default_root_dir)"
            )
        raise RunDirectoryError(
            f"run directory {directory} holds an unfinished run; resume it with --ckpt_path last, "
            "or pass --overwrite to start again from scratch"
        )
    # Move the old run's files aside in one rename each, then delete them: never half a run on disk.
    trash = Path(tempfile.mkdtemp(prefix=".replaced-", dir=directory))
    for name in RUN_FILES:
        if (directory / name).exists():
            (directory / name).rename(trash / name)
    shutil.rmtree(trash)


def check_writable(directory: Path) -> None:
    """Create ``directory`` if needed and check that a file can be written in it.

    Raises:
        OutputDirectoryError: Naming the path and the cause (a parent is a file, no permission,
            read-only file system, ...).
    """
    directory = Path(directory)
    blocking = next((p for p in [directory, *directory.parents] if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise OutputDirectoryError(
            f"cannot create the run directory {directory}: {blocking} is a file, not a directory; "
            "choose another run directory (--trainer.default_root_dir DIR)"
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=directory)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        where = error.filename or directory
        raise OutputDirectoryError(
            f"cannot write in the run directory {directory}: {error.strerror or error} ({where}); "
            "make it writable or choose another run directory (--trainer.default_root_dir DIR)"
        ) from None
