"""Side-by-side comparison of runs; ``nlora compare RUN_DIR... [--out FILE] [--group-by KEY] [--diff A B]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.io import write_text_atomic
from nlora_lightning.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from nlora_lightning.reporting.aggregate import (
    format_difference_markdown,
    format_groups_markdown,
    group_runs,
    paired_difference,
    summarize_groups,
)
from nlora_lightning.reporting.cost import cost_figures, format_bytes
from nlora_lightning.reporting.metric_names import metric_of_run
from nlora_lightning.reporting.retention import retention_mean
from nlora_lightning.reporting.runfiles import format_number, format_percent, read_run

__all__ = ["COLUMNS", "compare_runs", "format_markdown", "main"]

# (row key, table header, formatter): accuracies and collision in percent, overlap as a fraction.
COLUMNS: list[tuple[str, str, Any]] = [
    ("run", "run", str),
    ("method", "method", lambda v: "n/a" if v is None else str(v)),
    ("AA", "AA (%)", lambda v: format_percent(v, 2)),
    ("BWT", "BWT (%)", lambda v: format_percent(v, 2)),
    ("forgetting", "forgetting (%)", lambda v: format_percent(v, 2)),
    ("collision_mean", "collision (%)", lambda v: format_percent(v, 2)),
    ("overlap_mean", "overlap", lambda v: format_number(v, 4)),
    ("train_time_s", "train time (s)", lambda v: format_number(v, 0)),
    ("peak_memory_bytes", "peak memory", format_bytes),  # cost columns: run_info.json's cost (CostMonitor)
    ("state_bytes", "stored state", format_bytes),
    ("train_tokens_per_s", "train tokens/s", lambda v: format_number(v, 0)),
    ("eval_tokens_per_s", "eval tokens/s", lambda v: format_number(v, 0)),
    ("retention", "retention (%)", lambda v: format_percent(v, 2)),  # mean change on held-out tasks
    ("metric", "metric", str),  # what AA/BWT/forgetting average: exact_match, accuracy, rougeL or mixed
]


def compare_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per run directory with the headline figures (``None`` where a file or value is missing).

    Keys: ``run`` (directory name), ``method``, ``AA``, ``BWT``, ``forgetting`` (fractions),
    ``collision_mean`` and ``overlap_mean`` (means over task pairs i < j), ``train_time_s``, ``peak_memory_bytes``, ``state_bytes`` (after the last task),
    ``train_tokens_per_s``, ``eval_tokens_per_s`` (CostMonitor), ``retention`` (mean change on held-out tasks), ``metric``.
    """
    rows = []
    for directory in run_dirs:
        run = read_run(directory)
        rows.append({
            "run": run.directory.name or str(run.directory),
            "method": run.method,
            "AA": run.metric("AA"),
            "BWT": run.metric("BWT"),
            "forgetting": run.metric("forgetting"),
            "collision_mean": run.collision.pair_mean() if run.collision is not None else None,
            "overlap_mean": run.orthogonality.pair_mean() if run.orthogonality is not None else None,
            "train_time_s": run.train_time_s,
            **{k: v for k, v in cost_figures(run.run_info).items() if k != "eval_time_s"},
            "retention": retention_mean(run.metrics),
            "metric": metric_of_run(run.metrics),
        })
    return rows


def format_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`compare_runs` as a Markdown table; missing values read ``n/a``."""
    lines = ["| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|:---|:---|" + "---:|" * (len(COLUMNS) - 2)]
    for row in rows:
        cells = [formatter(row.get(key)).replace("|", "\\|") for key, _, formatter in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> int:
    """``nlora compare RUN_DIR... [--out FILE] [--group-by KEY [--diff A B]]``: a table of the runs' headline
    figures; with ``--group-by``, each group's mean, std and n over its runs (seeds); with ``--diff A B``, the
    paired difference A - B over shared seeds (t interval) and over shared test samples (paired bootstrap)."""
    parser = argparse.ArgumentParser(prog="nlora compare", description=main.__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run log dirs")
    parser.add_argument("--out", type=Path, default=Path("comparison.md"), help="Markdown file to write (default: %(default)s)")
    parser.add_argument("--group-by", default=None, help="run_info.json key or hyperparameter to group runs by, e.g. method")
    parser.add_argument("--diff", nargs=2, metavar=("A", "B"), default=None, help="paired difference A - B of two groups")
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (default: %(default)s)")
    parser.add_argument("--bootstrap-seed", type=int, default=DEFAULT_SEED, help="bootstrap seed (default: %(default)s)")
    args = parser.parse_args(list(argv))
    missing = [str(d) for d in args.run_dirs if not d.is_dir()]
    if missing:
        print(f"nlora compare: not a directory: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.diff and not args.group_by:
        args.group_by = "method"
    table = format_markdown(compare_runs(args.run_dirs))
    if args.group_by:
        try:
            groups = group_runs(args.run_dirs, args.group_by)
            table += "\n" + format_groups_markdown(summarize_groups(groups), args.group_by)
            if args.diff:
                diff = paired_difference(groups, *args.diff, num_resamples=args.resamples, seed=args.bootstrap_seed)
                table += "\n" + format_difference_markdown(diff)
        except (ConfigurationError, ValueError) as error:
            print(f"nlora compare: {error}", file=sys.stderr)
            return 2
    print(table, end="")
    write_text_atomic(args.out, table)
    print(f"written to {args.out}")
    return 0
