"""``report.md`` and PNG figures from a run directory's files; ``nlora report RUN_DIR``.

Reads ``run_info.json`` (RunReport), ``cl_metrics.json`` and ``cl_details.json``
(ForgettingMetrics), ``collision.csv``, ``orthogonality.csv`` and ``adapter_stats.csv``
(CollisionMonitor); any of them may be missing, and the report says which.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional, Sequence

from nlora_lightning.io import write_text_atomic
from nlora_lightning.methods import describe_lambda
from nlora_lightning.reporting.cost import cost_lines
from nlora_lightning.reporting.metric_names import matrix_name, scoring_lines
from nlora_lightning.reporting.plots import heatmap_png, save_png, sparsity_png
from nlora_lightning.reporting.retention import retention_lines
from nlora_lightning.reporting.runfiles import CL_METRICS, RunFiles, SquareTable, format_number, format_percent, read_run

__all__ = ["main", "render_markdown", "write_plots", "write_report"]

REPORT = "report.md"
ACC_PNG, COLLISION_PNG, ORTHOGONALITY_PNG, SPARSITY_PNG = "acc_matrix.png", "collision.png", "orthogonality.png", "sparsity.png"
_OVERLAP_TITLE = r"Update overlap $\Vert\Delta W_i^\top \Delta W_j\Vert_F \,/\, (\Vert\Delta W_i\Vert_F \Vert\Delta W_j\Vert_F)$"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left_columns: int = 1) -> list[str]:
    """A Markdown table; the first ``left_columns`` columns are left-aligned (labels), the rest right (numbers)."""
    escape = lambda text: str(text).replace("|", "\\|")  # noqa: E731 - task names may hold any character
    lines = ["| " + " | ".join(escape(h) for h in header) + " |",
             "|" + "|".join(":---" if k < left_columns else "---:" for k in range(len(header))) + "|"]
    return lines + ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]


def _hyperparameter_rows(info: dict[str, Any]) -> list[list[str]]:
    hp = info.get("hyperparameters") or {}
    rows = [["model", str(info.get("model", "n/a"))]]
    lora = hp.get("lora")
    if lora:
        targets = ", ".join(lora.get("target_modules") or []) or "model default"
        rows.append(["LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, targets: {targets}"])
    elif hp.get("adapters") == "none":
        rows.append(["LoRA", "none (full fine-tuning)"])
    methods = hp.get("methods") or hp.get("regularizers") or []  # run_info.json before issue 24: "regularizers"
    described = []
    for reg in methods:
        text = f"{reg.get('name')} (lambda={reg.get('weight')}"
        text += f", per task {reg['task_weights']}" if reg.get("task_weights") else ""
        text += f", {reg['options']}" if reg.get("options") else ""
        note = describe_lambda(str(reg.get("name")), reg.get("options") or {})  # the method's own note, e.g. the form
        described.append(text + ")" + (f"; {note}" if note else ""))
    rows.append(["methods", "; ".join(described) or "none"])
    if hp.get("optimizer"):
        rows.append(["optimizer", f"{hp['optimizer']} (lr={hp.get('lr')}, weight decay={hp.get('weight_decay')})"])
    for key in ("epochs_per_task", "batch_size", "max_train_samples", "max_eval_samples", "validation_samples", "evaluate_on",
                "seed", "data_seed", "precision", "forward_transfer", "collision_tau"):
        if key in hp and not (key == "validation_samples" and hp[key] is None):  # the scored split: evaluate_on
            rows.append([key.replace("_", " "), "all" if hp[key] is None and key.startswith("max_") else str(hp[key])])
    evaluation = hp.get("evaluation")
    if isinstance(evaluation, dict):
        rows.append(["evaluation", ", ".join(f"{k}={v}" for k, v in evaluation.items())])
    return rows


def _accuracy_section(run: RunFiles) -> list[str]:
    metrics = run.metrics or {}
    lines = ["## Continual-learning metrics", ""]
    keys = ("AA", "BWT", "forgetting", "FWT")
    lines += _table(keys, [[format_percent(run.metric(k), 2) for k in keys]], left_columns=0)
    lines += ["", "Percent. AA: mean accuracy over all tasks after the last completed stage; BWT and forgetting: "
              "over tasks before the last; FWT needs the zero-shot baseline (n/a: not measured or undefined).", ""]
    lines += scoring_lines(metrics)  # which metric "accuracy" means here (ROUGE-L for SuperNI)
    lines += _interval_lines(metrics)
    if metrics.get("eval_schedule") == "diagonal_final":
        lines += ["Evaluation schedule `diagonal_final`: each task was evaluated right after its own training and "
                  "after the last stage only (plus the next task when forward transfer is on), so forgetting, which "
                  "needs every earlier row of the matrix, is not reported (n/a). AA, BWT and FWT use only evaluated entries.", ""]
    matrix, tasks = metrics.get("acc_matrix") or [], run.tasks
    if matrix:
        lines += [f"## {matrix_name(metrics)} matrix R[i][j] (%)", "",
                  "Rows: after training stage i; columns: task j. Blank: not evaluated.", ""]
        rows = [[f"after {name}", *(("" if v is None else format_percent(v, 1)) for v in row)]
                for name, row in zip(run.stage_names, matrix)]
        lines += _table(["", *tasks], rows) + ["", f"![Accuracy matrix]({ACC_PNG})", ""]
    details = run.details or {}
    if details.get("completed_stages") is not None and details.get("num_stages") is not None:
        lines += [f"Completed stages: {details['completed_stages']} of {details['num_stages']}.", ""]
    zero_shot = details.get("zero_shot")
    if zero_shot:
        lines += ["## Zero-shot baseline (before any training, %)", ""]
        lines += _table(["task", "accuracy"], [[name, format_percent(v, 1)] for name, v in zero_shot.items()]) + [""]
    held_out = details.get("held_out")
    lines += retention_lines(metrics)  # held-out tasks before and after: replaces the plain held-out table
    if held_out and not metrics.get("retention"):
        lines += ["## Held-out tasks (never trained; evaluated after the last stage, %)", ""]
        lines += _table(["task", "accuracy"], [[name, format_percent(v, 1)] for name, v in held_out.items()]) + [""]
    return lines


def _interval_lines(metrics: dict[str, Any]) -> list[str]:
    intervals = [(key, metrics.get(f"{key}_ci95")) for key in ("AA", "BWT")]
    intervals = [(key, bounds) for key, bounds in intervals if isinstance(bounds, (list, tuple)) and len(bounds) == 2]
    if not intervals:
        return []
    boot = metrics.get("bootstrap") or {}
    text = ", ".join(f"{key} [{format_percent(lo, 2)}, {format_percent(hi, 2)}]" for key, (lo, hi) in intervals)
    return [f"95 % confidence intervals (percentile bootstrap over test samples, {boot.get('resamples', '?')} resamples, "
            f"seed {boot.get('seed', '?')}; each task's samples resampled with the same indices at every stage): {text}. "
            "They cover test-sample noise only, not the spread over training seeds.", ""]


def _baseline_headline(run: RunFiles) -> list[str]:
    """The run's AA next to its trivial baselines' AA, and the count of never-learned tasks (nothing for older runs)."""
    metrics = run.metrics or {}
    if "never_learned" not in metrics and "AA_majority" not in metrics:
        return []
    lines = [f"**AA {format_percent(run.metric('AA'), 2)} %; trivial baselines: always the majority training answer "
             f"{format_percent(run.metric('AA_majority'), 2)} %, chance {format_percent(run.metric('AA_chance'), 2)} %.**", ""]
    flagged = metrics.get("never_learned")
    if isinstance(flagged, list):
        judged = [t for t, e in ((metrics.get("baselines") or {}).get("tasks") or {}).items() if e.get("never_learned") is not None]
        lines += [f"**Never learned: {len(flagged)} of {len(judged)} tasks**" + (f" ({', '.join(flagged)})" if flagged else "")
                  + ": right after its own training, the task's score is not above its majority score beyond the 95 % "
                  "bootstrap interval (see Trivial baselines).", ""]
    return lines


def _baseline_section(run: RunFiles) -> list[str]:
    """Per task: chance, the majority answer and its score, the own-stage score with its interval, the flag."""
    baselines = ((run.metrics or {}).get("baselines") or {})
    tasks = baselines.get("tasks") or {}
    if not tasks:
        return []

    def own(entry: dict[str, Any]) -> str:
        bounds = entry.get("own_ci95")
        interval = f" [{format_percent(bounds[0], 1)}, {format_percent(bounds[1], 1)}]" if bounds else ""
        return format_percent(entry.get("own"), 1) + interval

    rows = [[name, "n/a" if e.get("majority_answer") is None else f"`{e['majority_answer']}`",
             "free text" if e.get("labels") is None else str(e["labels"]), format_percent(e.get("chance"), 1),
             format_percent(e.get("majority"), 1), own(e), {True: "never learned", False: "learned", None: "n/a"}[e.get("never_learned")]]
            for name, e in tasks.items()]
    lines = ["## Trivial baselines (%)", "",
             "Chance: 1 / number of labels. Majority: the score on the test set of always giving the task's most frequent "
             "training answer (ties: first in sorted order). Own: the score right after the task's own training, with its "
             f"95 % bootstrap interval over test samples ({baselines.get('resamples', '?')} resamples, seed "
             f"{baselines.get('seed', '?')}); the task is never learned when the interval's lower end is at or below the "
             "majority score.", ""]
    lines += _table(["task", "majority answer", "labels", "chance", "majority", "own [95 % interval]", "verdict"], rows, left_columns=2)
    return lines + [""]


def _square_section(table: SquareTable, title: str, explanation: str, headline: str, cell, image: str) -> list[str]:
    lines = [f"## {title}", "", explanation, "", headline, ""]
    lines += _table(["", *table.names], [[name, *(cell(v) for v in row)] for name, row in zip(table.names, table.values)])
    return lines + ["", f"![{title}]({image})", ""]


def _stats_by_task(run: RunFiles) -> tuple[list[str], dict[str, dict[str, float]]]:
    layers: list[str] = []
    by_task: dict[str, dict[str, float]] = defaultdict(dict)
    for stat in run.adapter_stats or []:
        if stat.layer not in layers:
            layers.append(stat.layer)
        by_task[stat.task][stat.layer] = stat.sparsity
    return layers, by_task


def _analysis_section(run: RunFiles, tau_text: str) -> list[str]:
    lines: list[str] = []
    if run.collision is not None:
        mean = run.collision.pair_mean()
        lines += _square_section(
            run.collision, "Parameter collision (%)",
            f"Share of entries of Delta W that are non-zero (|value| > {tau_text} of the update's largest magnitude) "
            "in both tasks' updates, mean over adapted layers. Diagonal: share of non-zero entries of the task's own update.",
            f"**Mean collision over task pairs i < j: {format_percent(mean, 2)} %**" if mean is not None
            else "One task: no pairs.",
            lambda v: format_percent(v, 1), COLLISION_PNG)
    if run.orthogonality is not None:
        mean = run.orthogonality.pair_mean()
        lines += _square_section(
            run.orthogonality, "Orthogonality: update overlap",
            "`||Delta W_i^T Delta W_j||_F / (||Delta W_i||_F ||Delta W_j||_F)`, mean over adapted layers: 0 = orthogonal "
            "updates, lower is better. The diagonal is below 1 for updates of rank > 1.",
            f"**Mean overlap over task pairs i < j: {format_number(mean, 4)}**" if mean is not None else "One task: no pairs.",
            lambda v: format_number(v, 3), ORTHOGONALITY_PNG)
    if run.adapter_stats:
        per_task: dict[str, list] = defaultdict(list)
        for stat in run.adapter_stats:
            per_task[stat.task].append(stat)
        rows = [[task, format_percent(sum(s.sparsity for s in stats) / len(stats), 1),
                 format_number(sum(s.nuclear_norm for s in stats) / len(stats), 4),
                 format_number(sum(s.fro_norm for s in stats) / len(stats), 4)] for task, stats in per_task.items()]
        lines += ["## Task updates", "", f"Mean over {len(_stats_by_task(run)[0])} adapted layers; sparsity: share of entries "
                  f"at or below {tau_text} of the update's largest magnitude.", "",
                  f"**Mean nuclear norm: {format_number(run.nuclear_norm_mean, 4)}**", ""]
        lines += _table(["task", "sparsity (%)", "nuclear norm", "Frobenius norm"], rows)
        lines += ["", f"![Sparsity per layer]({SPARSITY_PNG})", ""]
    return lines


def render_markdown(run: RunFiles) -> str:
    """The text of ``report.md`` for the files read into ``run``."""
    info = run.run_info or {}
    hp = info.get("hyperparameters") or {}
    tau = hp.get("collision_tau")
    tau_text = f"tau = {100 * tau:g} %" if isinstance(tau, (int, float)) else "tau (CollisionMonitor's threshold)"
    lines = [f"# Run report: {run.directory.name}", ""]
    facts = [("method", info.get("method")), ("status", info.get("status")), ("started", info.get("started")),
             ("train time", f"{run.train_time_s:.0f} s" if run.train_time_s is not None else None)]
    lines += [f"- **{k}**: {v}" for k, v in facts if v is not None] + [""]
    if info.get("error"):
        lines += [f"Error: `{info['error']}`", ""]
    lines += _baseline_headline(run)
    if run.tasks:
        lines += ["## Tasks (training order)", ""] + [f"{i + 1}. {name}" for i, name in enumerate(run.tasks)] + [""]
    if info.get("held_out_tasks"):
        lines += ["Held out (never trained): " + ", ".join(info["held_out_tasks"]), ""]
    if info:
        lines += ["## Settings", ""] + _table(["setting", "value"], _hyperparameter_rows(info), left_columns=2) + [""]
    if run.metrics is not None:
        lines += _accuracy_section(run)
        lines += _baseline_section(run)
    lines += cost_lines(info)  # CostMonitor's figures, when the run had one
    lines += _analysis_section(run, tau_text)
    if run.notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in run.notes] + [""]
    return "\n".join(lines)


def write_plots(run: RunFiles) -> list[Path]:
    """Write the PNGs the files allow; returns their paths."""
    written: list[Path] = []

    def save(name: str, png: bytes) -> None:
        save_png(run.directory / name, png)
        written.append(run.directory / name)

    matrix = (run.metrics or {}).get("acc_matrix")
    if matrix:
        save(ACC_PNG, heatmap_png(matrix, [f"after {s}" for s in run.stage_names], run.tasks,
                                  "Accuracy R[i][j] (%): after stage i, on task j", scale=100, xlabel="evaluated task",
                                  ylabel="after training", cmap="RdYlGn", colorbar_label="accuracy"))
    if run.collision is not None:
        save(COLLISION_PNG, heatmap_png(run.collision.values, run.collision.names, run.collision.names,
                                        "Parameter collision (%), mean over layers", scale=100, cmap="Reds",
                                        xlabel="task", ylabel="task", colorbar_label="collision rate"))
    if run.orthogonality is not None:
        save(ORTHOGONALITY_PNG, heatmap_png(run.orthogonality.values, run.orthogonality.names, run.orthogonality.names,
                                            _OVERLAP_TITLE, value_format="{:.3f}",
                                            cmap="Blues", xlabel="task", ylabel="task", colorbar_label="overlap"))
    layers, by_task = _stats_by_task(run)
    if layers:
        series = {task: [values.get(layer, float("nan")) for layer in layers] for task, values in by_task.items()}
        save(SPARSITY_PNG, sparsity_png(series, layers, "Sparsity of each task's update per layer"))
    return written


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and the PNG figures into ``run_dir`` from its files; returns the report's path.

    Raises:
        FileNotFoundError: If ``run_dir`` is not a directory.
    """
    directory = Path(run_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"run directory {directory} does not exist")
    run = read_run(directory)
    write_plots(run)
    path = directory / REPORT
    write_text_atomic(path, render_markdown(run))
    return path


def main(argv: Sequence[str]) -> int:
    """``nlora report RUN_DIR``: regenerate ``report.md`` and the PNGs from the run's files."""
    parser = argparse.ArgumentParser(prog="nlora report", description=main.__doc__)
    parser.add_argument("run_dir", type=Path, help="a run's log dir (holds cl_metrics.json)")
    args = parser.parse_args(list(argv))
    problem = _run_dir_problem(args.run_dir)
    if problem:
        print(f"nlora report: {problem}", file=sys.stderr)
        return 2
    print(write_report(args.run_dir))
    return 0


def _run_dir_problem(directory: Path) -> Optional[str]:
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not (directory / CL_METRICS).is_file():
        return (f"{directory} holds no {CL_METRICS}: not a run directory, or no stage has finished yet "
                "(ForgettingMetrics writes it at each stage end)")
    return None
