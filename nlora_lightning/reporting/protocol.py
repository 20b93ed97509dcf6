"""What makes runs comparable: the protocol (tasks and order, data sizes, epochs, metric, schedule, model).

A mean over runs is a mean over seeds of one experiment; runs over other task lists, sizes or
metrics are other experiments. :func:`split_by_protocol` keeps each group to one protocol and says
which setting separated the runs; :func:`is_unfinished` marks runs that stopped before the last stage.
"""

from __future__ import annotations

from typing import Any, Optional

from nlora_lightning.reporting.runfiles import RunFiles

__all__ = ["PROTOCOL_SETTINGS", "protocol", "protocol_differences", "is_unfinished", "unfinished_note", "split_by_protocol"]

# (setting, where it is read) -- run_info.json top level, its hyperparameters, or cl_metrics.json.
PROTOCOL_SETTINGS: tuple[tuple[str, str], ...] = (
    ("tasks", "info"), ("held_out_tasks", "info"), ("model", "info"),
    ("epochs_per_task", "hyperparameters"), ("max_train_samples", "hyperparameters"),
    ("max_eval_samples", "hyperparameters"), ("evaluation", "hyperparameters"), ("eval_schedule", "metrics"),
)


def protocol(run: RunFiles) -> dict[str, Any]:
    """The run's protocol settings (``None`` where its files do not record one)."""
    info = run.run_info or {}
    sources = {"info": info, "hyperparameters": info.get("hyperparameters") or {}, "metrics": run.metrics or {}}
    values = {name: sources[where].get(name) for name, where in PROTOCOL_SETTINGS}
    if values["tasks"] is None:
        values["tasks"] = run.tasks or None
    if values["eval_schedule"] is None and run.metrics is not None:
        values["eval_schedule"] = "full"  # runs written before the schedule was recorded evaluated every task
    return values


def protocol_differences(first: RunFiles, second: RunFiles) -> list[str]:
    """``setting: A vs B`` for each protocol setting the two runs differ in."""
    a, b = protocol(first), protocol(second)
    return [f"{name}: {a[name]!r} vs {b[name]!r}" for name, _ in PROTOCOL_SETTINGS if a[name] != b[name]]


def _stages(run: RunFiles) -> tuple[Optional[int], Optional[int]]:
    details = run.details or {}
    done, total = details.get("completed_stages"), details.get("num_stages")
    return (int(done) if done is not None else None), (int(total) if total is not None else None)


def is_unfinished(run: RunFiles) -> bool:
    """The run stopped before its last stage (status other than finished, or fewer stages evaluated)."""
    status = (run.run_info or {}).get("status")
    if status is not None and status != "finished":
        return True
    done, total = _stages(run)
    return done is not None and total is not None and done < total


def unfinished_note(run: RunFiles) -> str:
    """``unfinished: interrupted, 1 of 2 stages`` (what is known)."""
    status = (run.run_info or {}).get("status") or "no run_info.json"
    done, total = _stages(run)
    return f"unfinished: {status}" + (f", {done} of {total} stages" if done is not None and total is not None else "")


def split_by_protocol(groups: dict[str, list[RunFiles]]) -> tuple[dict[str, list[RunFiles]], list[str]]:
    """Each group split into one group per protocol, with a line per split naming what differs.

    A group whose runs share one protocol keeps its name; otherwise its parts are named
    ``NAME [protocol 1]``, ``NAME [protocol 2]`` in order of first appearance.
    """
    result: dict[str, list[RunFiles]] = {}
    notes: list[str] = []
    for name, runs in groups.items():
        parts: list[list[RunFiles]] = []
        for run in runs:
            same = next((part for part in parts if not protocol_differences(part[0], run)), None)
            if same is None:
                parts.append([run])
            else:
                same.append(run)
        if len(parts) == 1:
            result[name] = runs
            continue
        for k, part in enumerate(parts, start=1):
            result[f"{name} [protocol {k}]"] = part
        differences = "; ".join(protocol_differences(parts[0][0], parts[1][0]))
        notes.append(f"group {name!r} was split into {len(parts)} groups: its runs differ in protocol ({differences})")
    return result, notes
