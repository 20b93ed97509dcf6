"""RunLock: one writer per run directory.

Two jobs writing into one run directory interleave ``metrics.csv`` rows and leave a checkpoint of
one job beside the config of the other. The first job creates the lock file (``O_EXCL``: of two
jobs started together exactly one succeeds) holding its pid, host and start time, before it writes
anything; a second job is refused, naming the holder. A lock left by a process that died without
releasing it (SIGKILL, out of memory) is taken over when its holder ran on this host and is gone;
on another host nothing can tell, so the message says which file to remove. Under DDP only rank 0
locks: the other ranks are its children and write nothing of their own.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from nlora_lightning.errors import RunDirectoryError
from nlora_lightning.run_layout import LOCK_FILE

__all__ = ["RunLock", "pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host (``kill(pid, 0)``: no signal is sent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


class RunLock:
    """The lock on a run directory: ``acquire()`` before writing, ``release()`` when done.

    Args:
        directory: The run directory (created if missing).
        command: What the holder runs, recorded for whoever finds the lock.

    Raises:
        RunDirectoryError: From ``acquire``, when another live job holds the directory.

    Example:
        >>> lock = RunLock("runs/demo")  # doctest: +SKIP
        >>> lock.acquire(); ...; lock.release()  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, command: Optional[str] = None) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command if command is not None else " ".join(["nlora", *sys.argv[1:]])
        self.held = False

    def holder(self) -> Optional[dict[str, Any]]:
        """The lock file's content, ``{}`` when unreadable (being written, or damaged), None when there is none."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            info = json.loads(text)
        except json.JSONDecodeError:
            return {}
        return info if isinstance(info, dict) else {}

    def _record(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": self.command}

    def _create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as file:
            file.write(json.dumps(self._record()) + "\n")
        return True

    def acquire(self) -> None:
        """Take the lock, or take over a stale one (with a line on stderr), or refuse."""
        if self.held:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._create():
            self._held()
            return
        holder = self.holder()
        if holder is None and self._create():  # released between the two calls
            self._held()
            return
        holder = holder or {}
        pid, host = holder.get("pid"), holder.get("host")
        described = describe_holder(holder)
        if host == socket.gethostname() and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
            print(f"nlora: taking over the lock of {self.directory}: its holder ({described}) is no longer running",
                  file=sys.stderr)
            # Rename, not unlink: of two jobs taking over together, one rename fails and that job is refused.
            stale = self.path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
            try:
                os.rename(self.path, stale)
            except FileNotFoundError:
                pass
            else:
                stale.unlink(missing_ok=True)
            if self._create():
                self._held()
                return
            described = describe_holder(self.holder() or {})
        elif host is not None and host != socket.gethostname():
            raise RunDirectoryError(
                f"run directory {self.directory} is in use by another job ({described}); wait for it to end, or, "
                f"if that job is gone, remove {self.path}"
            )
        raise RunDirectoryError(f"run directory {self.directory} is in use by another job ({described}); "
                                "wait for it to end or write elsewhere (--trainer.default_root_dir DIR)")

    def _held(self) -> None:
        self.held = True
        atexit.register(self.release)  # also when the command ends by an uncaught exception or SystemExit

    def release(self) -> None:
        """Remove the lock file if this process holds it (idempotent)."""
        if not self.held:
            return
        holder = self.holder()
        if holder is not None and holder.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def describe_holder(holder: dict[str, Any]) -> str:
    """``pid 123 on host gpu01 since 2026-01-01T10:00:00+00:00: nlora fit ...`` (what is known of it)."""
    if not holder:
        return "holder unknown: the lock file is being written or damaged"
    parts = [f"pid {holder.get('pid')} on host {holder.get('host')}"]
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    text = " ".join(parts)
    return f"{text}: {holder['command']}" if holder.get("command") else text
