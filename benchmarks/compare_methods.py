"""Run several continual-learning methods on one task sequence and write a side-by-side table.

    python benchmarks/compare_methods.py --data-dir ../shared/data/CL_Benchmark --preset standard_order1 \\
        --methods seqlora inclora olora nlora nlora_official --seeds 0 \\
        --max-train-samples 250 --max-eval-samples 100 --epochs 1 --batch-size 8 --max-length 256 \\
        --out benchmarks/results/real_data

Each (method, seed) is one ``nlora fit`` in its own run directory under ``--out``, composed from
the model config (``configs/models/<model>.yaml`` or a path), the benchmark config
(``configs/benchmarks/<preset>.yaml``, a path, or ``none`` for the model config's own tasks) and
``configs/methods/<method>.yaml``, plus the size overrides. The script is restartable: finished
runs are kept, interrupted ones resume from their last checkpoint. ``--jobs N`` trains N runs at a
time, each with ``OMP_NUM_THREADS`` = cores / N unless the environment sets it (a second thread speeds
one run up less than 2x, so on 2 cores two one-thread runs side by side finish sooner than in turn). At the end it writes
``comparison.md`` (the table of ``nlora compare`` plus the command, sizes, wall time and machine)
and exits 1 if any run failed; ``--table-only`` writes it from the finished runs alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning.io import write_text_atomic  # noqa: E402
from nlora_lightning.reporting.compare import compare_runs, format_markdown  # noqa: E402
from nlora_lightning.run_dir import run_state  # noqa: E402

# Models with grouped-query attention: v_proj is non-square (SmolLM2: 576 -> 192; tiny: 64 -> 32),
# where the released r x r form is undefined, so nlora_official adapts q_proj only there.
GQA_MODELS = ("smollm2", "tiny")
# Methods by the form of their nlora_l1: --nlora-lambda sets the delta_w form's default lambda,
# --nlora-official-lambda the released r x r form's (model.method_defaults.nlora_l1/<form>).
DELTA_W_METHODS = ("nlora", "nlora_olora")
OFFICIAL_METHODS = ("nlora_official",)


def resolve_config(value: str, folder: str) -> Path:
    """A YAML path as given, or the file ``configs/<folder>/<value>.yaml``."""
    path = Path(value)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path.resolve()
    path = REPO / "configs" / folder / f"{value}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (REPO / "configs" / folder).glob("*.yaml"))
        raise FileNotFoundError(f"no config {value!r} in configs/{folder}/ (known: {', '.join(known)})")
    return path


def run_config(run_dir: Path, forward_transfer: bool) -> Path:
    """Trainer settings of one run: its own log directory, checkpoints, no progress bar."""
    config = {
        "trainer": {
            "default_root_dir": str(run_dir),
            "logger": {"class_path": "nlora_lightning.loggers.ContinualCSVLogger",
                       "init_args": {"save_dir": str(run_dir.parent), "name": run_dir.name, "version": ""}},
            "callbacks": [
                {"class_path": "nlora_lightning.callbacks.FreezePreviousAdapters"},
                {"class_path": "nlora_lightning.callbacks.ForgettingMetrics", "init_args": {"forward_transfer": forward_transfer}},
                {"class_path": "nlora_lightning.callbacks.CollisionMonitor"},
                {"class_path": "nlora_lightning.callbacks.RunReport"},
                {"class_path": "nlora_lightning.callbacks.ContinualCheckpoint",
                 "init_args": {"save_last": True, "save_top_k": 0, "every_n_train_steps": 20, "save_on_train_epoch_end": True}},
            ],
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "log_every_n_steps": 5,
        }
    }
    path = run_dir.parent / f".{run_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def method_configs(args: argparse.Namespace, method: str) -> list[Path]:
    """Model, benchmark (unless ``--preset none``) and method config of one method's runs."""
    configs = [resolve_config(args.model, "models")]
    if args.preset != "none":
        configs.append(resolve_config(args.preset, "benchmarks"))
    return configs + [resolve_config(method, "methods")]


def fit_command(args: argparse.Namespace, method: str, seed: int, run_dir: Path, state: str) -> list[str]:
    """The ``nlora fit`` command line of one (method, seed) run; ``state`` is its :func:`run_state`."""
    command = [sys.executable, "-m", "nlora_lightning", "fit"]
    for config in [*method_configs(args, method), run_config(run_dir, args.forward_transfer)]:
        command += ["--config", str(config)]
    if args.data_dir is not None:
        command += ["--data.data_dir", args.data_dir]
    command += [
        "--data.max_train_samples", str(args.max_train_samples),
        "--data.max_eval_samples", str(args.max_eval_samples),
        "--data.epochs_per_task", str(args.epochs),
        "--data.batch_size", str(args.batch_size),
        "--data.eval_batch_size", "32",
        "--data.max_source_length", str(args.max_length),
        "--data.seed", str(seed), "--model.seed", str(seed), "--seed_everything", str(seed),
    ]
    if method == "nlora_official" and Path(args.model).stem in GQA_MODELS:
        command += ["--model.lora.target_modules", "[q_proj]"]
    if args.lr is not None:
        command += ["--model.optimizer.init_args.lr", str(args.lr)]
    if getattr(args, "eval_schedule", None) is not None:  # callers building a Namespace by hand may leave it out
        command += ["--data.eval_schedule", args.eval_schedule]
    for form, methods, value in (("delta_w", DELTA_W_METHODS, args.nlora_lambda),
                                 ("official", OFFICIAL_METHODS, args.nlora_official_lambda)):
        if value is not None and method in methods:  # one form's entry; the configs' other forms stay
            command += [f"--model.method_defaults.nlora_l1/{form}", json.dumps({"weight": value})]
    command += args.fit_arg
    if state == "unfinished":  # resume; a run stopped before its first save starts again
        saved = any((run_dir / "checkpoints").glob("*.ckpt"))
        command += ["--ckpt_path", "last"] if saved else ["--overwrite"]
    return command


def job_environment(jobs: int, environ: Optional[dict] = None) -> dict:
    """The environment of each of ``jobs`` concurrent runs: the cores shared out unless the user set threads.

    Example:
        >>> job_environment(2, {"PATH": "/bin"})["OMP_NUM_THREADS"] == str(max(1, (os.cpu_count() or 1) // 2))
        True
    """
    environ = dict(os.environ if environ is None else environ)
    if jobs > 1 and "OMP_NUM_THREADS" not in environ:
        environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return environ


def run_logged(command: list[str], log_path: Path, env: dict) -> int:
    """Run one ``nlora fit``, appending its output to ``log_path``; its exit code."""
    with open(log_path, "a") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def run_jobs(jobs: int, tasks: Sequence[Callable[[], bool]]) -> list[bool]:
    """Call every task, ``jobs`` at a time, in order of start; their results in the order given."""
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs == 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda task: task(), tasks))


def results_table(rows: list[dict]) -> str:
    return format_markdown(rows) if rows else "(no finished run)\n"


def summary(args: argparse.Namespace, argv: Optional[list[str]], rows: list[dict], wall_s: float) -> str:
    """``comparison.md``: the command, sizes, machine, times and the table of ``rows`` (:func:`compare_runs`)."""
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    train_s = sum(row["train_time_s"] for row in rows if row["train_time_s"] is not None)
    command = [Path(sys.executable).name, *sys.argv] if argv is None else ["python", "benchmarks/compare_methods.py", *argv]
    benchmark = args.preset if args.preset != "none" else "the model config's tasks"
    return "\n".join([
        f"# {Path(args.model).stem} on {benchmark}", "",
        "Command:", "", "```", shlex.join(command), "```", "",
        f"Sizes: {args.max_train_samples} training and {args.max_eval_samples} test samples per task (seeded, "
        f"class-stratified), {args.epochs} epoch(s) per task, batch {args.batch_size}, prompts cut at {args.max_length} tokens. "
        f"Seeds: {args.seeds}. Machine: {machine}. Training time of the {len(rows)} runs below: {train_s / 60:.1f} min "
        f"in all; wall time of this invocation: {wall_s / 60:.1f} min (a restarted comparison keeps finished runs).",
        "", results_table(rows), "",
    ])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CL_Benchmark folder (default: the configs' own data)")
    parser.add_argument("--preset", default="standard_order1", help="a file in configs/benchmarks/, a YAML path, or none")
    parser.add_argument("--model", default="smollm2", help="a file in configs/models/ or a YAML path")
    parser.add_argument("--methods", nargs="+", default=["seqlora", "inclora", "olora", "nlora", "nlora_official"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-train-samples", type=int, default=250)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None, help="override the benchmark config's learning rate")
    parser.add_argument("--nlora-lambda", type=float, default=None,
                        help="lambda of nlora_l1 for the delta_w-form methods (nlora, nlora_olora); default: the "
                             "benchmark config's nlora_l1/delta_w")
    parser.add_argument("--nlora-official-lambda", type=float, default=None,
                        help="lambda of the released r x r form (nlora_official), one value for every task; default: "
                             "the benchmark config's nlora_l1/official (the paper's, tuned on T5-large)")
    parser.add_argument("--fit-arg", action="append", default=[], metavar="=ARG",
                        help="one more argument for every nlora fit, given as --fit-arg=--model.lora.target_modules=[q_proj]")
    parser.add_argument("--forward-transfer", action="store_true", help="also evaluate zero-shot and next tasks (slower)")
    parser.add_argument("--eval-schedule", choices=["full", "diagonal_final"], default=None,
                        help="data.eval_schedule of every run (default: the configs'); diagonal_final: 2T - 1 task evaluations")
    parser.add_argument("--table-only", action="store_true", help="write the table of the finished runs; start none")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs trained at a time (default: %(default)s); each gets OMP_NUM_THREADS = cores / jobs")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "real_data"))
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    try:  # every config must exist before the first (long) run starts
        for method in args.methods:
            method_configs(args, method)
    except FileNotFoundError as error:
        parser.error(str(error))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_dirs, pending = [], []
    env = job_environment(args.jobs)
    for seed in args.seeds:
        for method in args.methods:
            run_dir = out / f"{method}-seed{seed}"
            run_dirs.append(run_dir)
            state = run_state(run_dir)
            if state == "finished":
                print(f"[keep] {run_dir.name} finished earlier", flush=True)
            elif args.table_only:
                print(f"[skip] {run_dir.name} is {state}; --table-only starts no run", flush=True)
            else:
                pending.append((run_dir, fit_command(args, method, seed, run_dir, state)))

    def train(run_dir: Path, command: list[str]) -> bool:
        print(f"[run] {run_dir.name}: {shlex.join(command)}", flush=True)
        code = run_logged(command, out / f"{run_dir.name}.log", env)
        if code != 0:
            print(f"[fail] {run_dir.name} exited {code}; see {out / (run_dir.name + '.log')}", flush=True)
        return code == 0

    results = run_jobs(args.jobs, [lambda r=run_dir, c=command: train(r, c) for run_dir, command in pending])
    failed = [run_dir.name for (run_dir, _), ok in zip(pending, results) if not ok]

    rows = compare_runs([d for d in run_dirs if run_state(d) == "finished"])
    write_text_atomic(out / "comparison.md", summary(args, argv, rows, time.time() - started))
    print(results_table(rows), end="")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
