"""Reading a run directory's result files (written by the callbacks) for reports and comparisons.

Every file is optional: a missing or unreadable file leaves its field ``None`` and adds a note
saying why, so a report of a partial run still shows what there is.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

__all__ = [
    "AdapterStat",
    "RunFiles",
    "SquareTable",
    "format_number",
    "format_percent",
    "read_run",
]

RUN_INFO, CL_METRICS, CL_DETAILS = "run_info.json", "cl_metrics.json", "cl_details.json"
COLLISION, ORTHOGONALITY, ADAPTER_STATS = "collision.csv", "orthogonality.csv", "adapter_stats.csv"
_WRITERS = {
    RUN_INFO: "the RunReport callback",
    CL_METRICS: "the ForgettingMetrics callback",
    CL_DETAILS: "the ForgettingMetrics callback",
    COLLISION: "the CollisionMonitor callback",
    ORTHOGONALITY: "the CollisionMonitor callback",
    ADAPTER_STATS: "the CollisionMonitor callback",
}


def _number(value: Any) -> Optional[float]:
    """A finite float, or ``None`` for null, NaN, blanks and non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def format_percent(value: Any, digits: int = 1) -> str:
    """``0.8123 -> "81.2"``; ``"n/a"`` for null or NaN; a value that rounds to zero prints unsigned."""
    number = _number(value)
    if number is None:
        return "n/a"
    text = f"{100 * number:.{digits}f}"
    return text.lstrip("-") if float(text) == 0 else text  # equal runs differ by -1e-17, not by "-0.00"


def format_number(value: Any, digits: int = 3) -> str:
    number = _number(value)
    return "n/a" if number is None else f"{number:.{digits}f}"


@dataclass
class SquareTable:
    """A task x task table (``collision.csv``, ``orthogonality.csv``); missing values are NaN."""

    names: list[str]
    values: list[list[float]]

    def pair_mean(self) -> Optional[float]:
        """Mean over pairs i < j (the headline figure); ``None`` with fewer than two tasks."""
        n = len(self.names)
        pairs = [self.values[i][j] for i in range(n) for j in range(i + 1, n) if not math.isnan(self.values[i][j])]
        return sum(pairs) / len(pairs) if pairs else None


@dataclass
class AdapterStat:
    """One row of ``adapter_stats.csv``."""

    task: str
    layer: str
    sparsity: float
    nuclear_norm: float
    fro_norm: float


@dataclass
class RunFiles:
    """The result files of one run directory, each ``None`` when missing (see ``notes``)."""

    directory: Path
    run_info: Optional[dict[str, Any]] = None
    metrics: Optional[dict[str, Any]] = None
    details: Optional[dict[str, Any]] = None
    collision: Optional[SquareTable] = None
    orthogonality: Optional[SquareTable] = None
    adapter_stats: Optional[list[AdapterStat]] = None
    notes: list[str] = field(default_factory=list)

    def metric(self, key: str) -> Optional[float]:
        """``AA``, ``BWT``, ``forgetting`` or ``FWT`` from ``cl_metrics.json`` (``None`` for null);
        ``own_task`` is derived from its accuracy matrix (:meth:`own_task`)."""
        if key == "own_task":
            return self.own_task()
        return _number((self.metrics or {}).get(key))

    def own_task(self) -> Optional[float]:
        """Own-task accuracy (mean of the accuracy matrix's diagonal, see
        :func:`~nlora_lightning.metrics.functional.own_task_accuracy`); ``None`` where it is undefined."""
        import torch

        from nlora_lightning.metrics.functional import own_task_accuracy

        matrix = (self.metrics or {}).get("acc_matrix") or []
        if not matrix:
            return None
        values = [[_number(v) if _number(v) is not None else math.nan for v in row] for row in matrix]
        if len({len(row) for row in values}) != 1:
            return None
        return _number(own_task_accuracy(torch.tensor(values, dtype=torch.float64)).item())

    @property
    def tasks(self) -> list[str]:
        return list((self.metrics or {}).get("tasks") or (self.run_info or {}).get("tasks") or [])

    @property
    def stage_names(self) -> list[str]:
        """Row labels of the accuracy matrix: stage names from the history, else the task names."""
        rows = len((self.metrics or {}).get("acc_matrix") or [])
        named = {int(h["stage"]): str(h["stage_name"]) for h in (self.details or {}).get("history") or []
                 if isinstance(h, dict) and "stage" in h and "stage_name" in h}
        tasks = self.tasks
        fallback = tasks if rows == len(tasks) else [f"stage {i}" for i in range(rows)]
        return [named.get(i, fallback[i]) for i in range(rows)]

    @property
    def nuclear_norm_mean(self) -> Optional[float]:
        values = [s.nuclear_norm for s in self.adapter_stats or [] if not math.isnan(s.nuclear_norm)]
        return sum(values) / len(values) if values else None

    @property
    def train_time_s(self) -> Optional[float]:
        return _number((self.run_info or {}).get("train_time_s"))

    @property
    def method(self) -> Optional[str]:
        return (self.run_info or {}).get("method")


def _read_json(path: Path) -> dict[str, Any]:
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict):
        raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
    return payload


def _float_or_nan(text: str) -> float:
    return float(text) if text.strip() else float("nan")


def _read_square_table(path: Path) -> SquareTable:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.reader(handle) if row]
    if not rows or rows[0][0] != "task":
        raise ValueError("the first row must be the header 'task,<task names>'")
    names = rows[0][1:]
    if [row[0] for row in rows[1:]] != names or any(len(row) != len(names) + 1 for row in rows[1:]):
        raise ValueError(f"expected a {len(names)} x {len(names)} table with the tasks {names} as rows and columns")
    return SquareTable(names, [[_float_or_nan(v) for v in row[1:]] for row in rows[1:]])


def _read_adapter_stats(path: Path) -> list[AdapterStat]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            AdapterStat(row["task"], row["layer"], _float_or_nan(row["sparsity"]), _float_or_nan(row["nuclear_norm"]),
                        _float_or_nan(row["fro_norm"]))
            for row in csv.DictReader(handle)
        ]


def read_run(directory: str | Path) -> RunFiles:
    """Read every result file of ``directory``; missing or unreadable ones become notes."""
    run = RunFiles(Path(directory))
    readers: list[tuple[str, str, Callable[[Path], Any]]] = [
        ("run_info", RUN_INFO, _read_json),
        ("metrics", CL_METRICS, _read_json),
        ("details", CL_DETAILS, _read_json),
        ("collision", COLLISION, _read_square_table),
        ("orthogonality", ORTHOGONALITY, _read_square_table),
        ("adapter_stats", ADAPTER_STATS, _read_adapter_stats),
    ]
    for attribute, name, reader in readers:
        path = run.directory / name
        if not path.is_file():
            run.notes.append(f"`{name}` not found (written by {_WRITERS[name]}); its section is skipped.")
            continue
        try:
            setattr(run, attribute, reader(path))
        except (OSError, ValueError, KeyError, TypeError) as error:  # JSONDecodeError is a ValueError
            run.notes.append(f"`{name}` could not be read ({type(error).__name__}: {error}); its section is skipped.")
    return run
