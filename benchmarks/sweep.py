"""Choose one setting of a method on validation data, then score the default and the chosen value on test.

    python benchmarks/sweep.py --method nlora \\
        --key model.method_defaults.nlora_l1/delta_w --template '{"weight": {value}}' \\
        --grid 1e-5 1e-4 1e-3 1e-2 --default 1e-3 --validation-samples 50 \\
        --data-dir ../shared/data/CL_Benchmark --preset standard_order1 --model smollm2 \\
        --max-train-samples 250 --max-eval-samples 100 --seeds 0 --final-seeds 0 1 2 \\
        --out benchmarks/results/sweeps/nlora_delta_w

``--key`` is any ``nlora fit`` option and ``--template`` its value with ``{value}`` where the grid
value goes, so the tool knows nothing of a method's API: a regularizer weight as above, MIGU's mask
ratio (``--key model.methods --template '[{"name": "migu", "options": {"top_ratio":
{value}, "skip_first_task": true}}]' --weaker larger``) or GORP's energy threshold likewise.

Protocol (every run is one ``nlora fit`` of ``compare_methods.py``, so the sweep is restartable:
finished runs are kept, interrupted ones resume):

1. Selection: every grid value trains with ``data.validation_samples N`` (a seeded, class-stratified
   set per task carved out of train.json, never trained on) and ``data.evaluate_on validation``, so
   the test files are not even read. Runs: ``<out>/selection/value_<v>/<method>-seed<s>``.
2. Rule: the value with the best validation AA (mean over ``--seeds``) wins; values within 1e-9 of
   the best tie, and ties go to the weaker penalty (``--weaker smaller``, the default: the smaller
   value; ``larger`` for settings such as a kept-gradient ratio). A run whose ``run_info.json``
   does not say it scored the validation split is refused.
3. Test: the default value and the chosen one train again with the same carve-out (so on the same
   training samples) and ``data.evaluate_on test`` at ``--final-seeds``:
   ``<out>/test/value_<v>/<method>-seed<s>``.

``--selection-only`` stops after step 2 (for a study that runs the chosen value on test itself, on
its own training samples). ``--jobs N`` trains N runs of a stage at a time (as in ``compare_methods.py``). Writes
``<out>/sweep.md``; exits 1 if a run failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning.io import write_text_atomic  # noqa: E402
from nlora_lightning.reporting.runfiles import format_percent, read_run  # noqa: E402
from nlora_lightning.run_dir import run_state  # noqa: E402

TABLE = "sweep.md"
TIE = 1e-9  # AA values closer than this are a tie (they are means of the same counts)


def _compare_methods():
    spec = importlib.util.spec_from_file_location("compare_methods", REPO / "benchmarks" / "compare_methods.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare_methods = _compare_methods()


def choose(validation_aa: dict[str, float], weaker: str = "smaller") -> str:
    """The grid value (as given) with the best validation AA; ties go to the weaker end of the grid.

    Raises:
        ValueError: For no values, or ``weaker`` other than ``smaller``/``larger``.

    Example:
        >>> choose({"1e-4": 0.61, "1e-3": 0.61, "1e-2": 0.55})
        '1e-4'
    """
    if not validation_aa:
        raise ValueError("no grid value has a validation AA to choose from")
    if weaker not in ("smaller", "larger"):
        raise ValueError(f"weaker must be 'smaller' or 'larger', got {weaker!r}")
    best = max(validation_aa.values())
    tied = [value for value, aa in validation_aa.items() if aa >= best - TIE]
    pick = min if weaker == "smaller" else max
    return pick(tied, key=float)


def render(template: str, value: str) -> str:
    if "{value}" not in template:
        raise ValueError(f"--template {template!r} has no {{value}} placeholder")
    return template.replace("{value}", value)


@dataclass
class Point:
    """Runs of one grid value on one split: AA and BWT per seed (``None`` until finished)."""

    value: str
    split: str
    runs: list[Path]
    AA: list[Optional[float]]
    BWT: list[Optional[float]]

    @property
    def complete(self) -> bool:
        return all(a is not None for a in self.AA)

    def mean(self, key: str) -> Optional[float]:
        values = getattr(self, key)
        return sum(values) / len(values) if values and all(v is not None for v in values) else None


def run_dir(out: Path, split: str, method: str, value: str, seed: int) -> Path:
    return out / ("selection" if split == "validation" else "test") / f"value_{value}" / f"{method}-seed{seed}"


def read_point(out: Path, split: str, method: str, value: str, seeds: Sequence[int]) -> Point:
    """The figures of one grid value's finished runs; refuses a run that scored another split."""
    runs = [run_dir(out, split, method, value, seed) for seed in seeds]
    aa, bwt = [], []
    for run in runs:
        if run_state(run) != "finished":
            aa.append(None)
            bwt.append(None)
            continue
        files = read_run(run)
        scored = ((files.run_info or {}).get("hyperparameters") or {}).get("evaluate_on", "test")
        if scored != split:
            raise ValueError(f"{run}: run_info.json says it scored the {scored!r} split, the sweep needs {split!r}; "
                             "move the folder away and run the sweep again")
        aa.append(files.metric("AA"))
        bwt.append(files.metric("BWT"))
    return Point(value, split, runs, aa, bwt)


def fit_args(args: argparse.Namespace, value: str, split: str) -> argparse.Namespace:
    """compare_methods' settings for one run: the grid value and the split on top of the user's --fit-arg."""
    extra = [f"--{args.key}={render(args.template, value)}", f"--data.validation_samples={args.validation_samples}",
             f"--data.evaluate_on={split}"]
    return argparse.Namespace(**{**vars(args), "fit_arg": list(args.fit_arg) + extra, "nlora_lambda": None,
                                 "nlora_official_lambda": None, "forward_transfer": False})


def ensure_run(args: argparse.Namespace, value: str, split: str, seed: int) -> bool:
    """Train one run unless it finished earlier (or ``--table-only``); False when it failed."""
    directory = run_dir(Path(args.out), split, args.method_name, value, seed)
    state = run_state(directory)
    name = directory.relative_to(Path(args.out))
    if state == "finished":
        print(f"[keep] {name} finished earlier", flush=True)
        return True
    if args.table_only:
        print(f"[skip] {name} is {state}; --table-only starts no run", flush=True)
        return True
    directory.parent.mkdir(parents=True, exist_ok=True)
    command = compare_methods.fit_command(fit_args(args, value, split), args.method, seed, directory, state)
    print(f"[run] {name}: {shlex.join(command)}", flush=True)
    code = compare_methods.run_logged(command, directory.parent / f"{directory.name}.log",
                                      compare_methods.job_environment(args.jobs))
    if code != 0:
        print(f"[fail] {name} exited {code}; see {directory.parent / (directory.name + '.log')}", flush=True)
    return code == 0


def ensure_runs(args: argparse.Namespace, values: Sequence[str], split: str, seeds: Sequence[int]) -> bool:
    """:func:`ensure_run` for every (value, seed), ``args.jobs`` at a time; False when any failed."""
    tasks = [lambda v=value, s=seed: ensure_run(args, v, split, s) for value in values for seed in seeds]
    return all(compare_methods.run_jobs(args.jobs, tasks))


def _cells(point: Point) -> list[str]:
    per_seed = ", ".join(format_percent(a, 2) for a in point.AA)
    return [format_percent(point.mean("AA"), 2), per_seed, format_percent(point.mean("BWT"), 2)]


def markdown(args: argparse.Namespace, argv: Optional[Sequence[str]], selection: list[Point], chosen: Optional[str],
             finals: dict[str, Point]) -> str:
    command = ["python", "benchmarks/sweep.py", *(argv if argv is not None else sys.argv[1:])]
    weaker = "smaller" if args.weaker == "smaller" else "larger"
    lines = [
        f"# Sweep of `{args.key}` for {args.method_name}", "",
        "Command:", "", "```", shlex.join(command), "```", "",
        f"Value template: `{args.template}`. Sizes: {args.max_train_samples} training samples per task drawn from train.json "
        f"after carving out {args.validation_samples} validation samples per task (seeded, class-stratified, disjoint); "
        f"{args.max_eval_samples} test samples per task; {args.epochs} epoch(s) per task, batch {args.batch_size}.", "",
        f"Rule: the grid value with the best validation AA (mean over seeds {args.seeds}) is chosen; values within {TIE:g} "
        f"of the best tie, and ties go to the weaker setting (the {weaker} value). No test sample is read before the "
        "choice: selection runs evaluate on the validation split only.", "",
        "## Selection (validation split)", "",
        "| value | validation AA (%) | per seed | validation BWT (%) | chosen |", "|---:|---:|:---|---:|:---:|",
    ]
    for point in selection:
        lines.append(f"| {point.value} | " + " | ".join(_cells(point)) + f" | {'yes' if point.value == chosen else ''} |")
    if args.selection_only:
        chosen_line = f"Chosen: **{chosen}**." if chosen is not None else "(no choice yet: some selection runs have not finished)"
        return "\n".join(lines + ["", chosen_line, "", "No test runs: `--selection-only`.", ""])
    lines += ["", f"## Test (seeds {args.final_seeds})", ""]
    if chosen is None:
        lines += ["(no choice yet: some selection runs have not finished)", ""]
        return "\n".join(lines)
    lines += ["| row | value | test AA (%) | per seed | test BWT (%) |", "|:---|---:|---:|:---|---:|"]
    for row, value in (("default", args.default), ("chosen", chosen)):
        if value is not None:
            lines.append(f"| {row} | {value} | " + " | ".join(_cells(finals[value])) + " |")
    lines += ["", "Runs: `selection/value_<v>/<method>-seed<s>` (validation) and `test/value_<v>/<method>-seed<s>` (test).", ""]
    return "\n".join(lines)


def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True, help="a file in configs/methods/ or a YAML path")
    parser.add_argument("--key", required=True, help="the nlora fit option the grid sets, e.g. model.method_defaults.nlora_l1/delta_w")
    parser.add_argument("--template", default="{value}", help="its value with {value} for the grid value, e.g. '{\"weight\": {value}}'")
    parser.add_argument("--grid", nargs="+", required=True, help="values to try (numbers: ties go to the weaker end)")
    parser.add_argument("--default", default=None, help="the method's default value: rerun on test next to the chosen one")
    parser.add_argument("--weaker", choices=["smaller", "larger"], default="smaller",
                        help="which end of the grid is the weaker setting (ties go there; default: %(default)s)")
    parser.add_argument("--validation-samples", type=int, default=50, help="validation samples carved out of each task's train.json")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds of the selection runs")
    parser.add_argument("--final-seeds", nargs="+", type=int, default=[0], help="seeds of the test runs")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--preset", default="standard_order1", help="a file in configs/benchmarks/, a YAML path, or none")
    parser.add_argument("--model", default="smollm2", help="a file in configs/models/ or a YAML path")
    parser.add_argument("--max-train-samples", type=int, default=250)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--eval-schedule", choices=["full", "diagonal_final"], default=None)
    parser.add_argument("--fit-arg", action="append", default=[], metavar="=ARG", help="one more argument for every nlora fit")
    parser.add_argument("--table-only", action="store_true", help="write the table from finished runs; start none")
    parser.add_argument("--selection-only", action="store_true", help="choose on validation and stop: no test runs")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at a time (default: %(default)s); each gets OMP_NUM_THREADS = cores / jobs")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        compare_methods.method_configs(args, args.method)
        for value in [*args.grid, *([args.default] if args.default is not None else [])]:
            float(value)
            render(args.template, value)
    except FileNotFoundError as error:
        parser.error(str(error))
    except ValueError as error:
        parser.error(str(error) if "template" in str(error) else f"grid and default values must be numbers: {error}")
    if len(set(map(float, args.grid))) != len(args.grid):
        parser.error(f"--grid {args.grid} repeats a value")
    if args.validation_samples <= 0:
        parser.error("--validation-samples must be positive")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    args.method_name = Path(args.method).stem
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    grid = sorted(args.grid, key=float)
    ok = ensure_runs(args, grid, "validation", args.seeds)
    try:
        selection = [read_point(out, "validation", args.method_name, value, args.seeds) for value in grid]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    chosen = choose({p.value: p.mean("AA") for p in selection}, args.weaker) if all(p.complete for p in selection) else None
    finals: dict[str, Point] = {}
    if chosen is not None:
        print(f"[chosen] {args.key} = {chosen} (validation AA {format_percent(selection[grid.index(chosen)].mean('AA'), 2)} %)")
    if chosen is not None and not args.selection_only:
        values = list(dict.fromkeys(v for v in (args.default, chosen) if v is not None))
        ok &= ensure_runs(args, values, "test", args.final_seeds)
        finals = {value: read_point(out, "test", args.method_name, value, args.final_seeds) for value in values}
    text = markdown(args, argv, selection, chosen, finals)
    write_text_atomic(out / TABLE, text)
    print(text, end="")
    print(f"written: {out / TABLE} ({(time.time() - started) / 60:.1f} min)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
