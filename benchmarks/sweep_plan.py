"""Every method's weight sweep (issue 26, item 2) on one page: the setting, its grid, the default, run in turn.

    python benchmarks/sweep_plan.py --list
    python benchmarks/sweep_plan.py all --data-dir ../shared/data/CL_Benchmark --jobs 2 --dry-run
    python benchmarks/sweep_plan.py ella ewc_lora --data-dir ../shared/data/CL_Benchmark --jobs 2

Each plan is one ``benchmarks/sweep.py`` command (selection on a validation set carved out of
train.json, then the default and the chosen value on test at ``--final-seeds``), written to
``<out-root>/<plan name>/``; sweep.py resumes finished and interrupted runs, so rerunning this
command carries on where a killed one stopped. Sizes default to standard order 1 at 250 training
samples x 1 epoch per task, 100 validation and 100 test samples per task.

Why these grids: each spans the default and goes the way the earlier studies point. ELLA at its
default (1e3) was IncLoRA in all but name (97-99 % of its predictions identical), so its grid goes
up; EWC-LoRA at 4e4 barely learned, so its grid goes down; N-LoRA at 1e-3 was below IncLoRA on
every seed at 250 samples and 3e-5 led the 500 x 1 selection, so its grid covers the decades below.
The others span the default by half-decades or, for MIGU's kept ratio and GORP's energy threshold,
their useful range. ``tests/benchmarks/test_sweep_plan.py`` checks that every template, filled with
the default, gives exactly the shipped config's methods, so a sweep changes nothing but its setting.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class SweepPlan:
    """One method's sweep: the ``nlora fit`` option it sets and the values it tries."""

    name: str  # the output folder under --out-root
    method: str  # configs/methods/<method>.yaml
    key: str  # the nlora fit option the grid sets
    template: str  # its value, with {value} where the grid value goes
    grid: tuple[str, ...]
    default: str  # the shipped value (must be in the grid: the default's validation score is the baseline)
    weaker: str = "smaller"  # which end of the grid constrains the least (ties go there)

    def sweep_args(self) -> list[str]:
        return ["--method", self.method, "--key", self.key, "--template", self.template, "--grid", *self.grid,
                "--default", self.default, "--weaker", self.weaker]


_FISHER = '"options": {"fisher_samples": 64, "fisher_batch_size": 8, "fisher_per_sample": true, "gamma": 1.0}'

PLANS: tuple[SweepPlan, ...] = (
    SweepPlan("nlora_delta_w", "nlora", "model.method_defaults.nlora_l1/delta_w", '{"weight": {value}}',
              ("1e-5", "3e-5", "1e-4", "3e-4", "1e-3"), "1e-3"),
    SweepPlan("nlora_official", "nlora_official", "model.method_defaults.nlora_l1/official", '{"weight": {value}}',
              ("0.04", "0.13", "0.4", "1.3"), "0.4"),
    SweepPlan("olora", "olora", "model.methods",
              '[{"name": "olora_orthogonality", "weight": {value}}, {"name": "l2", "weight": 0.0}]',
              ("0.05", "0.15", "0.5", "1.5"), "0.5"),
    SweepPlan("ella", "ella", "model.methods", '[{"name": "ella", "weight": {value}}]',
              ("1e3", "1e4", "1e5", "1e6"), "1e3"),
    SweepPlan("ewc_lora", "ewc_lora", "model.methods", '[{"name": "ewc_lora", "weight": {value}, ' + _FISHER + "}]",
              ("4e1", "4e2", "4e3", "4e4"), "4e4"),
    SweepPlan("ewc", "ewc", "model.methods", '[{"name": "ewc", "weight": {value}, ' + _FISHER + "}]",
              ("1e2", "1e3", "1e4", "1e5"), "1e3"),
    SweepPlan("lwf", "lwf", "model.methods", '[{"name": "lwf", "weight": {value}, "options": {"temperature": 2.0}}]',
              ("0.1", "0.3", "1", "3"), "1"),
    SweepPlan("migu_top_ratio", "migu", "model.methods",
              '[{"name": "migu", "options": {"top_ratio": {value}, "skip_first_task": true}}]',
              ("0.1", "0.3", "0.5", "0.7"), "0.3", weaker="larger"),  # a larger kept ratio constrains less
    SweepPlan("gorp_threshold", "gorp", "model.methods",
              '[{"name": "gorp", "options": {"threshold": {value}, "factors": ["A"]}}]',
              ("0.8", "0.9", "0.95", "0.99"), "0.9"),  # a lower threshold projects out a smaller subspace
)
BY_NAME = {plan.name: plan for plan in PLANS}


def sweep_argv(plan: SweepPlan, args: argparse.Namespace) -> list[str]:
    """The ``benchmarks/sweep.py`` arguments of one plan at this command's sizes."""
    argv = [*plan.sweep_args(), "--preset", args.preset, "--model", args.model,
            "--max-train-samples", str(args.max_train_samples), "--max-eval-samples", str(args.max_eval_samples),
            "--epochs", str(args.epochs), "--validation-samples", str(args.validation_samples),
            "--seeds", *map(str, args.seeds), "--final-seeds", *map(str, args.final_seeds),
            "--jobs", str(args.jobs), "--out", str(Path(args.out_root) / plan.name)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.eval_schedule:
        argv += ["--eval-schedule", args.eval_schedule]
    if args.selection_only:
        argv.append("--selection-only")
    return argv


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans", nargs="*", help=f"plan names, or all: {', '.join(BY_NAME)}")
    parser.add_argument("--list", action="store_true", help="print every plan and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the sweep.py commands; run none")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--preset", default="standard_order1")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-train-samples", type=int, default=250)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--validation-samples", type=int, default=100)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the selection runs")
    parser.add_argument("--final-seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds of the test runs")
    parser.add_argument("--eval-schedule", choices=["full", "diagonal_final"], default="diagonal_final")
    parser.add_argument("--selection-only", action="store_true")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out-root", default="benchmarks/results/sweeps_250x1")
    args = parser.parse_args(argv)
    if not args.list:
        names = list(BY_NAME) if args.plans == ["all"] else args.plans
        unknown = [name for name in names if name not in BY_NAME]
        if not names or unknown:
            parser.error(f"name plans to run ({', '.join(BY_NAME)}, or all)" + (f"; unknown: {unknown}" if unknown else ""))
        args.plans = names
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    if args.list:
        for plan in PLANS:
            print(f"{plan.name}: {plan.key} = {plan.template}, grid {' '.join(plan.grid)}, default {plan.default}, "
                  f"weaker end {plan.weaker}")
        return 0
    commands = [sweep_argv(BY_NAME[name], args) for name in args.plans]
    if args.dry_run:
        for command in commands:
            print(shlex.join([sys.executable, "benchmarks/sweep.py", *command]))
        return 0
    import importlib.util

    spec = importlib.util.spec_from_file_location("sweep", REPO / "benchmarks" / "sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    failed = [name for name, command in zip(args.plans, commands) if sweep.main(command) != 0]
    if failed:
        print(f"sweep_plan: failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
