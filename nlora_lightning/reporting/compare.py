"""Side-by-side comparison of runs; ``nlora compare RUN_DIR... [--out FILE] [--group-by KEY] [--diff A B]``.

Group means only ever pool runs of one protocol (:mod:`nlora_lightning.reporting.protocol`): a
group whose runs differ is split, and the output says which setting differs; ``--diff`` of groups
of different protocols is refused. Unfinished runs are marked in the table and left out of the
means unless ``--include-unfinished``.
"""

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
from nlora_lightning.reporting.protocol import is_unfinished, protocol_differences, split_by_protocol, unfinished_note
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
    ("AA_majority", "majority AA (%)", lambda v: format_percent(v, 2)),
    ("never_learned", "never learned", lambda v: "n/a" if v is None else str(v)),
    ("own_task", "own-task acc. (%)", lambda v: format_percent(v, 2)),  # mean of R's diagonal: plasticity
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

    Keys: ``run`` (directory name), ``unfinished``, ``method``, ``AA``, ``AA_majority`` (always the majority
    training answer), ``never_learned`` (how many tasks), ``own_task`` (mean of the matrix's diagonal), ``BWT``, ``forgetting`` (fractions),
    ``collision_mean`` and ``overlap_mean`` (means over task pairs i < j), ``train_time_s``,
    ``peak_memory_bytes``, ``state_bytes`` (after the last task), ``train_tokens_per_s``,
    ``eval_tokens_per_s`` (CostMonitor), ``retention`` (mean change on held-out tasks), ``metric``.
    """
    rows = []
    for directory in run_dirs:
        run = read_run(directory)
        name = run.directory.name or str(run.directory)
        rows.append({
            "run": f"{name} ({unfinished_note(run)})" if is_unfinished(run) else name,
            "unfinished": is_unfinished(run),
            "method": run.method,
            "AA": run.metric("AA"),
            "AA_majority": run.metric("AA_majority"),
            "never_learned": _count(run.metrics, "never_learned"),
            "own_task": run.metric("own_task"),
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


def _count(metrics, key: str):
    values = (metrics or {}).get(key)
    return len(values) if isinstance(values, list) else None


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
    parser.add_argument("--include-unfinished", action="store_true",
                        help="count unfinished runs (stopped before their last stage) in the group means")
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
            table += "\n" + _group_sections(args)
        except (ConfigurationError, ValueError) as error:
            print(f"nlora compare: {error}", file=sys.stderr)
            return 2
    print(table, end="")
    write_text_atomic(args.out, table)
    print(f"written to {args.out}")
    return 0


def _group_sections(args: argparse.Namespace) -> str:
    """The group means (one protocol per group, unfinished runs left out unless asked) and the paired difference."""
    groups = group_runs(args.run_dirs, args.group_by)
    notes = []
    if not args.include_unfinished:
        left_out = [run for runs in groups.values() for run in runs if is_unfinished(run)]
        groups = {name: [run for run in runs if not is_unfinished(run)] for name, runs in groups.items()}
        groups = {name: runs for name, runs in groups.items() if runs}
        if left_out:
            names = ", ".join(f"{run.directory.name} ({unfinished_note(run)})" for run in left_out)
            notes.append(f"left out of the means: {names}; pass --include-unfinished to count them")
    if not groups:
        raise ConfigurationError("no finished run to average; pass --include-unfinished to count unfinished runs")
    if args.diff:
        _check_same_protocol(groups, args.diff)
    groups, split_notes = split_by_protocol(groups)
    notes += split_notes
    rows = summarize_groups(groups)
    for row in rows:  # --include-unfinished: the groups that count unfinished runs say so (names stay for --diff)
        if any(is_unfinished(run) for run in groups[row["group"]]):
            row["group"] = f"{row['group']} (includes unfinished)"
    text = format_groups_markdown(rows, args.group_by)
    if args.diff:
        text += "\n" + format_difference_markdown(
            paired_difference(groups, *args.diff, num_resamples=args.resamples, seed=args.bootstrap_seed))
    return text + "".join(f"\nNote: {note}.\n" for note in notes)


def _check_same_protocol(groups: dict[str, list[Any]], names: Sequence[str]) -> None:
    """A paired difference needs one protocol across both groups: refuse naming the first differing setting."""
    runs = [run for name in names for run in groups.get(name, [])]
    for run in runs[1:]:
        differences = protocol_differences(runs[0], run)
        if differences:
            raise ConfigurationError(
                f"--diff {names[0]} {names[1]}: runs {runs[0].directory.name} and {run.directory.name} differ in protocol "
                f"({differences[0]}); a difference is only meaningful within one protocol"
            )
