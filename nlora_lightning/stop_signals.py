"""Stopping a run by a signal: SIGTERM (schedulers, ``kill``) and SIGINT (Ctrl+C) end ``nlora`` with a status.

Lightning turns SIGTERM into ``SIGTERMException``, a ``SystemExit`` without a code, so a stopped fit
would exit 0 and ``nlora fit ... && nlora export ...`` would carry on with half a run. The command
records which signal arrived (:class:`StopSignals`, composed with Lightning's own SIGTERM handler)
and ends with the shell's status for it (128 + the signal number: 143 for SIGTERM, 130 for SIGINT)
and one line: the run stopped, where its checkpoint is, the command that resumes it.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path
from typing import Any, Optional, Sequence

__all__ = ["StopSignals", "exit_status", "resume_command", "stop_message"]

_HANDLED = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The status a shell reports for a process ended by ``signum`` (128 + n)."""
    return 128 + int(signum)


class StopSignals:
    """Records SIGTERM and SIGINT while installed; ``received`` is the first signal's number.

    Outside a Lightning run the handler stops the command at once (``KeyboardInterrupt``). Inside
    one, Lightning installs its own SIGTERM handler and calls this one after it: it only records,
    and Lightning stops at the end of the current step (so the stop can be checkpointed).
    SIGINT always raises ``KeyboardInterrupt``, as Python's default handler does.

    Example:
        >>> signals = StopSignals().install()  # doctest: +SKIP
        >>> signals.received  # doctest: +SKIP
        15
    """

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def install(self) -> "StopSignals":
        for signum in _HANDLED:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: signals cannot be handled here
                pass
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
        if signum == signal.SIGINT or signal.getsignal(signum) == self._handle:
            raise KeyboardInterrupt  # no Lightning loop to stop at a step boundary: stop now


def resume_command(words: Sequence[str]) -> str:
    """The ``nlora`` command that resumes a stopped run: the same words, ``--ckpt_path last``, no ``--overwrite``."""
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        if word == "--ckpt_path":
            skip = True
            continue
        if word.startswith("--ckpt_path=") or word == "--overwrite" or word.startswith("--overwrite="):
            continue
        kept.append(word)
    return shlex.join(["nlora", *kept, "--ckpt_path", "last"])


def stop_message(signum: int, checkpoint: Optional[Path], words: Sequence[str], step: Optional[int] = None) -> str:
    """The one line printed when a fit was stopped by ``signum``."""
    name = signal.Signals(signum).name
    if checkpoint is None:
        return (f"nlora: stopped by {name} before any checkpoint was saved; the run is marked interrupted. "
                f"Start it again with: {resume_command(words)} --overwrite")
    at = f" (step {step})" if step is not None else ""
    return f"nlora: stopped by {name}; checkpoint: {checkpoint}{at}; resume with: {resume_command(words)}"
