"""Tabulate and plot a lambda sweep of one N-LoRA penalty form: AA, BWT, own-task accuracy, collision.

    python benchmarks/lambda_sweep.py --out benchmarks/results/real_data/lambda_sweep

By default it reads the delta_w sweep on SmolLM2, standard order 1: every
``benchmarks/results/real_data/lambda_sweep/lambda_*/nlora-seed0`` plus the main table's
``benchmarks/results/real_data/nlora-seed0`` (lambda 1e-3), and draws IncLoRA
(``inclora-seed0``, lambda 0) as the reference. Each run's lambda is read from its ``run_info.json``
(the ``nlora_l1`` entry), never from the folder name; runs of different penalty forms are refused.
Writes ``lambda_sweep.md`` (the table) and ``lambda_sweep.png`` (the four figures against log lambda)
into ``--out``.

Own-task accuracy is the mean of the accuracy matrix's diagonal (each task right after its own
training): it measures plasticity, as BWT measures forgetting. Collision is the mean over task
pairs i < j of ``collision.csv`` (the CollisionMonitor's threshold).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning.io import write_text_atomic  # noqa: E402
from nlora_lightning.methods import build_method  # noqa: E402
from nlora_lightning.reporting.runfiles import RunFiles, format_percent, read_run  # noqa: E402
from nlora_lightning.run_dir import run_state  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "real_data"
TABLE, PLOT = "lambda_sweep.md", "lambda_sweep.png"
# (row key, table header, plot label)
FIGURES = [("AA", "AA (%)", "AA"), ("BWT", "BWT (%)", "BWT"), ("own_task", "own-task acc. (%)", "own-task accuracy"),
           ("collision", "collision (%)", "collision")]


@dataclass
class SweepPoint:
    """One run's figures (fractions; ``None`` where the run's files lack them)."""

    run: Path
    method: Optional[str]
    lam: float
    form: Optional[str]
    AA: Optional[float]
    BWT: Optional[float]
    own_task: Optional[float]
    collision: Optional[float]


def own_task_accuracy(run: RunFiles) -> Optional[float]:
    """Mean of the accuracy matrix's diagonal R[i][i] over the tasks that have it."""
    matrix = (run.metrics or {}).get("acc_matrix") or []
    diagonal = [row[i] for i, row in enumerate(matrix) if i < len(row) and isinstance(row[i], (int, float))]
    return sum(diagonal) / len(diagonal) if diagonal else None


def nlora_lambda(run: RunFiles) -> tuple[float, Optional[str]]:
    """The run's nlora_l1 lambda and penalty form from ``run_info.json``; ``(0.0, None)`` for a run without it.

    Raises:
        ValueError: If ``run_info.json`` is missing or the nlora_l1 entry has per-task lambdas or several entries.
    """
    if run.run_info is None:
        raise ValueError(f"{run.directory}: no readable run_info.json, so its lambda is unknown")
    hyperparameters = run.run_info.get("hyperparameters") or {}
    listed = hyperparameters.get("methods") or hyperparameters.get("regularizers") or []  # "regularizers": before issue 24
    entries = [r for r in listed if r.get("name") == "nlora_l1"]
    if not entries:
        return 0.0, None
    if len(entries) > 1 or entries[0].get("task_weights"):
        raise ValueError(f"{run.directory}: a sweep needs one nlora_l1 lambda for every task, got {entries}")
    return float(entries[0]["weight"]), build_method("nlora_l1", dict(entries[0].get("options") or {})).lambda_key()


def read_point(directory: Path) -> SweepPoint:
    run = read_run(directory)
    lam, form = nlora_lambda(run)
    return SweepPoint(directory, run.method, lam, form, run.metric("AA"), run.metric("BWT"), own_task_accuracy(run),
                      run.collision.pair_mean() if run.collision is not None else None)


def read_sweep(run_dirs: Sequence[Path]) -> list[SweepPoint]:
    """The runs' points sorted by lambda.

    Raises:
        ValueError: If a folder is missing, or the runs mix penalty forms (their lambdas are not comparable).
    """
    missing = [str(d) for d in run_dirs if not Path(d).is_dir()]
    if missing:
        raise ValueError(f"not a run directory: {', '.join(missing)}")
    points = sorted((read_point(Path(d)) for d in run_dirs), key=lambda p: (p.lam, str(p.run)))
    forms = sorted({p.form for p in points if p.form is not None})
    if len(forms) > 1:
        raise ValueError(f"the runs use different nlora_l1 forms {forms}; their lambdas are on different scales")
    return points


def format_lambda(lam: float) -> str:
    return "0" if lam == 0 else f"{lam:.0e}".replace("e-0", "e-").replace("e+0", "e")


def markdown(points: Sequence[SweepPoint], baseline: Optional[SweepPoint]) -> str:
    form = next((p.form for p in points if p.form), "nlora_l1")
    lines = [f"# Lambda sweep: {form}", "",
             "| lambda | run | " + " | ".join(header for _, header, _ in FIGURES) + " |",
             "|---:|:---|" + "---:|" * len(FIGURES)]
    rows = ([baseline] if baseline is not None else []) + list(points)
    for p in rows:
        label = f"0 ({p.method})" if p is baseline else format_lambda(p.lam)
        cells = [format_percent(getattr(p, key), 2) for key, _, _ in FIGURES]
        lines.append(f"| {label} | {p.run.parent.name}/{p.run.name} | " + " | ".join(cells) + " |")
    lines += ["", "AA and BWT from each run's cl_metrics.json; own-task accuracy: mean of the accuracy matrix's diagonal "
              "(each task right after its own training); collision: mean over task pairs i < j of collision.csv. "
              "Lambda from each run's run_info.json.", "", f"![AA, BWT, own-task accuracy and collision against lambda]({PLOT})", ""]
    return "\n".join(lines)


def plot_png(points: Sequence[SweepPoint], baseline: Optional[SweepPoint]) -> bytes:
    """AA, BWT, own-task accuracy and collision (%) against log10 lambda; the baseline as dashed lines."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.5, 4.2))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    swept = [p for p in points if p.lam > 0]
    for index, (key, _, label) in enumerate(FIGURES):
        color = f"C{index}"
        xy = [(p.lam, 100 * getattr(p, key)) for p in swept if getattr(p, key) is not None]
        if xy:
            axes.plot(*zip(*xy), marker="o", color=color, label=label)
        if baseline is not None and getattr(baseline, key) is not None:
            axes.axhline(100 * getattr(baseline, key), color=color, linestyle="--", linewidth=1)
    axes.set_xscale("log")
    axes.set_xlabel("lambda (log scale)")
    axes.set_ylabel("%")
    form = next((p.form for p in points if p.form), "nlora_l1")
    suffix = f"; dashed: {baseline.method} (lambda 0)" if baseline is not None else ""
    axes.set_title(f"{form} lambda sweep{suffix}", fontsize=10)
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def default_runs(seed: int) -> list[Path]:
    """The sweep's finished runs of ``seed`` (a run still training, or killed, is left out and named)."""
    runs = sorted((RESULTS / "lambda_sweep").glob(f"lambda_*/nlora-seed{seed}")) + [RESULTS / f"nlora-seed{seed}"]
    for run in runs:
        if run_state(run) != "finished":
            print(f"[skip] {run.relative_to(RESULTS)} is {run_state(run)}", file=sys.stderr)
    return [run for run in runs if run_state(run) == "finished"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path,
                        help="run directories (default: the SmolLM2 order-1 delta_w sweep of the given --seed)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the default runs (default: %(default)s)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="a lambda-0 reference run drawn as dashed lines (default: inclora-seed<seed> next to the main table)")
    parser.add_argument("--no-baseline", action="store_true", help="draw no reference run")
    parser.add_argument("--out", type=Path, required=True, help="folder for lambda_sweep.md and lambda_sweep.png")
    args = parser.parse_args(argv)
    runs = args.runs or default_runs(args.seed)
    baseline_dir = None if args.no_baseline else args.baseline or RESULTS / f"inclora-seed{args.seed}"
    try:
        points = read_sweep(runs)
        baseline = read_point(baseline_dir) if baseline_dir is not None and baseline_dir.is_dir() else None
    except ValueError as error:
        parser.error(str(error))
    if baseline_dir is not None and baseline is None and args.baseline is not None:
        parser.error(f"--baseline {baseline_dir} is not a run directory")
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(points, baseline)
    write_text_atomic(args.out / TABLE, text)
    from nlora_lightning.reporting.plots import save_png

    save_png(args.out / PLOT, plot_png(points, baseline))
    print(text, end="")
    print(f"written: {args.out / TABLE}, {args.out / PLOT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
