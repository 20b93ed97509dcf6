"""ContinualCSVLogger: a ``CSVLogger`` whose ``metrics.csv`` survives a resume, each step once."""

from __future__ import annotations

import csv
from typing import Any, Optional, Union

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from nlora_lightning.io import atomic_open

__all__ = ["ContinualCSVLogger"]


class _ResumingExperimentWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and drops its replayed rows.

    The old rows are read when the writer is created. At the first save, the rows the new fit logs
    start at the step it resumed from; old rows at that step or later belong to the part the new fit
    replays, so they are dropped and the file is rewritten (atomically) as old rows + new rows.
    """

    def _check_log_dir_exists(self) -> None:
        self._previous: Optional[tuple[list[str], list[dict[str, str]]]] = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                reader = csv.DictReader(file)
                rows = list(reader)
                self._previous = (list(reader.fieldnames or []), rows)

    def save(self) -> None:
        if self._previous is None or not self.metrics:
            super().save()
            return
        header, rows = self._previous
        resumed_at = min(int(row["step"]) for row in self.metrics)
        kept = [row for row in rows if _step(row) is None or _step(row) < resumed_at]
        self.metrics_keys = sorted(set(header).union(*self.metrics))
        with atomic_open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            writer.writerows(self.metrics)
        self._previous = None
        self.metrics = []


def _step(row: dict[str, str]) -> Optional[int]:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None


class ContinualCSVLogger(CSVLogger):
    """``CSVLogger`` for runs that may be killed and resumed with ``--ckpt_path last``.

    Lightning's ``CSVLogger`` deletes ``metrics.csv`` when its directory is not empty, so a resumed
    run would keep only the rows logged after the resume. This logger keeps the old rows up to the
    step the fit resumes from (rows from there on are logged again by the resumed fit) and writes
    every row to disk as it is logged (``flush_logs_every_n_steps=1``), so a kill loses none of the
    rows that the last checkpoint covers. The result holds every step of the run once.

    Args:
        Those of ``CSVLogger``; only the default of ``flush_logs_every_n_steps`` differs.

    Example:
        >>> logger = ContinualCSVLogger("runs", name="demo", version="")
    """

    def __init__(
        self,
        save_dir: _PATH,
        name: Optional[str] = "lightning_logs",
        version: Optional[Union[int, str]] = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 1,
    ) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix, flush_logs_every_n_steps=flush_logs_every_n_steps)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
