"""Runs grouped over seeds (mean, std, n) and the paired difference of two groups, with intervals.

Used by ``nlora compare --group-by method --diff A B``. Two kinds of interval answer two questions:

- over seeds: runs of A and B are paired by their seeds (``seed`` and ``data_seed`` in
  ``run_info.json``); the per-seed differences get a 95 % Student-t interval (n is small: a
  bootstrap over 3 seeds has almost nothing to resample). This is the interval to quote for "is
  A better than B", since it includes training noise.
- over test samples: when every paired run wrote predictions with the same sample ids, a
  paired bootstrap resamples each (seed, task)'s test samples with the same indices for A and B
  and recomputes the seed-mean AA difference. It holds the trained models fixed: it tells whether
  the test sets are large enough to separate these particular runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, paired_difference_interval
from nlora_lightning.metrics.intervals import summarize_seeds, t_interval_95
from nlora_lightning.reporting.predictions import PREDICTIONS_FILE, aligned_scores, read_predictions, scores_by_id
from nlora_lightning.reporting.runfiles import RunFiles, format_percent, read_run

__all__ = ["METRICS", "PairedDifference", "format_difference_markdown", "format_groups_markdown", "group_runs",
           "paired_difference", "summarize_groups"]

METRICS = ("AA", "BWT", "forgetting", "own_task")
_LABELS = {"own_task": "own-task acc."}


def _group_value(run: RunFiles, key: str) -> Optional[str]:
    info = run.run_info or {}
    value = info.get(key, (info.get("hyperparameters") or {}).get(key))
    return None if value is None else str(value)


def group_runs(run_dirs: Sequence[str | Path], group_by: str = "method") -> dict[str, list[RunFiles]]:
    """Runs by the value of ``group_by`` (a ``run_info.json`` key, e.g. ``method``, or a hyperparameter, e.g. ``seed``).

    Raises:
        ConfigurationError: A run has no such value (it cannot be grouped).
    """
    groups: dict[str, list[RunFiles]] = {}
    for directory in run_dirs:
        run = read_run(directory)
        value = _group_value(run, group_by)
        if value is None:
            raise ConfigurationError(f"run {run.directory} has no {group_by!r} in run_info.json: it cannot be grouped by it")
        groups.setdefault(value, []).append(run)
    return groups


def summarize_groups(groups: dict[str, list[RunFiles]]) -> list[dict[str, Any]]:
    """Per group: ``n`` runs and, per metric, ``(mean, std, n)`` over the runs that report it (``None`` if none)."""
    rows = []
    for name, runs in groups.items():
        row: dict[str, Any] = {"group": name, "runs": len(runs)}
        for metric in METRICS:
            values = [v for v in (run.metric(metric) for run in runs) if v is not None]
            row[metric] = summarize_seeds(values) if values else None
        rows.append(row)
    return rows


def _seed_key(run: RunFiles) -> tuple:
    hp = (run.run_info or {}).get("hyperparameters") or {}
    return hp.get("seed"), hp.get("data_seed")


@dataclass
class PairedDifference:
    """``first - second`` over runs paired by seed; fractions (AA, BWT), intervals at 95 %."""

    first: str
    second: str
    seeds: list[tuple] = field(default_factory=list)
    per_seed: dict[str, list[float]] = field(default_factory=dict)
    over_seeds: dict[str, Optional[tuple[float, float]]] = field(default_factory=dict)
    over_samples_aa: Optional[tuple[float, float]] = None
    over_samples_note: str = ""
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED


def paired_difference(groups: dict[str, list[RunFiles]], first: str, second: str,
                      num_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> PairedDifference:
    """The difference ``first - second`` of AA and BWT over the seeds both groups ran.

    Raises:
        ConfigurationError: A group is unknown, a seed repeats within a group, or no seed is shared.
    """
    for name in (first, second):
        if name not in groups:
            raise ConfigurationError(f"--diff names {name!r}, but the groups are {sorted(groups)}")
    by_seed = []
    for name in (first, second):
        keyed: dict[tuple, RunFiles] = {}
        for run in groups[name]:
            key = _seed_key(run)
            if key in keyed:
                raise ConfigurationError(f"group {name!r} holds two runs with seed/data_seed {key}: "
                                         f"{keyed[key].directory} and {run.directory}; a paired difference needs one per seed")
            keyed[key] = run
        by_seed.append(keyed)
    shared = sorted(set(by_seed[0]) & set(by_seed[1]), key=str)
    if not shared:
        raise ConfigurationError(f"groups {first!r} and {second!r} share no (seed, data_seed): nothing to pair")
    result = PairedDifference(first, second, seeds=shared, resamples=num_resamples, seed=seed)
    for metric in ("AA", "BWT"):
        a = [by_seed[0][k].metric(metric) for k in shared]
        b = [by_seed[1][k].metric(metric) for k in shared]
        result.per_seed[metric] = [x - y for x, y in zip(a, b) if x is not None and y is not None]
        result.over_seeds[metric] = t_interval_95(result.per_seed[metric]) if len(result.per_seed[metric]) > 1 else None
    a_groups, b_groups = [], []
    for key in shared:
        runs = (by_seed[0][key], by_seed[1][key])
        records = [read_predictions(run.directory) for run in runs]
        lasts = [len((run.metrics or {}).get("acc_matrix") or []) - 1 for run in runs]
        if runs[0].tasks != runs[1].tasks or min(lasts) < 0:
            result.over_samples_note = f"no interval over test samples: seed {key} has different or no tasks in the two runs"
            return result
        for task in runs[0].tasks:
            pair = aligned_scores([scores_by_id(lines, last, task) for lines, last in zip(records, lasts)])
            if pair is None:
                result.over_samples_note = (f"no interval over test samples: for seed {key}, task {task}, a run's "
                                            f"{PREDICTIONS_FILE} lacks the evaluation after its last stage or the runs "
                                            "evaluated different samples")
                return result
            a_groups.append(pair[0])
            b_groups.append(pair[1])
    result.over_samples_aa = paired_difference_interval(a_groups, b_groups, num_resamples, seed)
    return result


def _mean_std(summary) -> str:
    if summary is None:
        return "n/a"
    std = "n/a" if summary.std is None else format_percent(summary.std, 2)
    return f"{format_percent(summary.mean, 2)} ± {std}"


def format_groups_markdown(rows: Sequence[dict[str, Any]], group_by: str) -> str:
    """Groups as a Markdown table: mean ± sample std (percent) and n per metric."""
    header = [group_by, "runs"] + [f"{_LABELS.get(m, m)} (%) mean ± std" for m in METRICS] + ["n (AA)"]
    lines = ["| " + " | ".join(header) + " |", "|:---|" + "---:|" * (len(header) - 1)]
    for row in rows:
        cells = [str(row["group"]).replace("|", "\\|"), str(row["runs"]), *(_mean_std(row[m]) for m in METRICS),
                 str(row["AA"].n if row["AA"] is not None else 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def format_difference_markdown(diff: PairedDifference) -> str:
    """The paired difference as Markdown: per-seed values, mean, t interval over seeds, bootstrap over samples."""
    interval = lambda b: "n/a" if b is None else f"[{format_percent(b[0], 2)}, {format_percent(b[1], 2)}]"  # noqa: E731
    lines = [f"Paired difference {diff.first} - {diff.second} over {len(diff.seeds)} shared seed(s) "
             f"(seed, data_seed) {', '.join(map(str, diff.seeds))}; percentage points.", "",
             "| metric | per seed | mean | 95 % t interval over seeds |", "|:---|:---|---:|---:|"]
    for metric in ("AA", "BWT"):
        values = diff.per_seed.get(metric) or []
        mean = format_percent(sum(values) / len(values), 2) if values else "n/a"
        lines.append(f"| {metric} | {', '.join(format_percent(v, 2) for v in values) or 'n/a'} | {mean} | "
                     f"{interval(diff.over_seeds.get(metric))} |")
    lines.append("")
    if diff.over_samples_aa is not None:
        lines.append(f"AA difference, 95 % paired bootstrap interval over test samples ({diff.resamples} resamples, seed "
                     f"{diff.seed}; same samples for both methods; models held fixed): {interval(diff.over_samples_aa)}.")
    else:
        lines.append(diff.over_samples_note or "no interval over test samples")
    return "\n".join(lines) + "\n"
