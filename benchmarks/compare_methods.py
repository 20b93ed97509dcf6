"""Run several continual-learning methods on one task sequence and write a side-by-side table.

    python benchmarks/compare_methods.py --data-dir ../shared/data/CL_Benchmark --preset standard_order1 \\
        --methods seqlora inclora olora nlora nlora_official --seeds 0 \\
        --max-train-samples 250 --max-eval-samples 100 --epochs 1 --batch-size 8 --max-length 256 \\
        --out benchmarks/results/real_data

Each (method, seed) is one ``nlora fit`` in its own run directory under ``--out``, composed from
``configs/models/<model>.yaml``, ``configs/benchmarks/<preset>.yaml`` and
``configs/methods/<method>.yaml`` plus the size overrides. The script is restartable: finished runs
are kept, interrupted ones resume from their last checkpoint. At the end it writes
``comparison.md`` (the table of ``nlora compare`` plus the command, sizes, wall time and machine).
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
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning.io import write_text_atomic  # noqa: E402
from nlora_lightning.reporting.compare import compare_runs, format_markdown  # noqa: E402
from nlora_lightning.run_dir import run_state  # noqa: E402

# Settings a method needs on a given model beyond its config file.
METHOD_OVERRIDES = {
    # SmolLM2 uses grouped-query attention: v_proj is 576 -> 192, where the released r x r form is undefined.
    ("smollm2", "nlora_official"): ["--model.lora.target_modules", "[q_proj]"],
}


def run_config(run_dir: Path, forward_transfer: bool) -> Path:
    """Trainer settings of one run: its own log directory, checkpoints, no progress bar."""
    config = {
        "trainer": {
            "default_root_dir": str(run_dir),
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--preset", default="standard_order1")
    parser.add_argument("--model", default="smollm2", help="a file in configs/models/")
    parser.add_argument("--methods", nargs="+", default=["seqlora", "inclora", "olora", "nlora", "nlora_official"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-train-samples", type=int, default=250)
    parser.add_argument("--max-eval-samples", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=None, help="override the benchmark config's learning rate")
    parser.add_argument("--nlora-lambda", type=float, default=None,
                        help="lambda of nlora_l1 for delta_w-mode methods (the benchmark config's value is tuned for T5-large)")
    parser.add_argument("--forward-transfer", action="store_true", help="also evaluate zero-shot and next tasks (slower)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "real_data"))
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_dirs, timings = [], {}
    for seed in args.seeds:
        for method in args.methods:
            run_dir = out / f"{method}-seed{seed}"
            run_dirs.append(run_dir)
            state = run_state(run_dir)
            if state == "finished":
                print(f"[keep] {run_dir.name} finished earlier", flush=True)
                continue
            command = [
                sys.executable, "-m", "nlora_lightning", "fit",
                "--config", str(REPO / "configs" / "models" / f"{args.model}.yaml"),
                "--config", str(REPO / "configs" / "benchmarks" / f"{args.preset}.yaml"),
                "--config", str(REPO / "configs" / "methods" / f"{method}.yaml"),
                "--config", str(run_config(run_dir, args.forward_transfer)),
                "--data.data_dir", args.data_dir,
                "--data.max_train_samples", str(args.max_train_samples),
                "--data.max_eval_samples", str(args.max_eval_samples),
                "--data.epochs_per_task", str(args.epochs),
                "--data.batch_size", str(args.batch_size),
                "--data.eval_batch_size", "32",
                "--data.max_source_length", str(args.max_length),
                "--data.seed", str(seed), "--model.seed", str(seed), "--seed_everything", str(seed),
                *METHOD_OVERRIDES.get((args.model, method), []),
            ]
            if args.lr is not None:
                command += ["--model.optimizer.init_args.lr", str(args.lr)]
            if args.nlora_lambda is not None and method in ("nlora", "nlora_olora"):
                command += ["--model.regularizer_defaults", json.dumps({"nlora_l1": {"weight": args.nlora_lambda}})]
            if state == "unfinished":  # resume; a run stopped before its first save starts again
                saved = any((run_dir / "checkpoints").glob("*.ckpt"))
                command += ["--ckpt_path", "last"] if saved else ["--overwrite"]
            print(f"[run] {run_dir.name}: {shlex.join(command)}", flush=True)
            t0 = time.time()
            with open(out / f"{run_dir.name}.log", "a") as log:
                result = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            timings[run_dir.name] = time.time() - t0
            if result.returncode != 0:
                print(f"[fail] {run_dir.name} exited {result.returncode}; see {out / (run_dir.name + '.log')}", flush=True)

    finished = [d for d in run_dirs if run_state(d) == "finished"]
    table = format_markdown(compare_runs(finished)) if finished else "(no finished run)"
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    lines = [
        f"# {args.model} on {args.preset}", "",
        "Command:", "", "```", shlex.join([sys.executable.split('/')[-1], *sys.argv]) if argv is None else shlex.join(argv), "```", "",
        f"Sizes: {args.max_train_samples} training and {args.max_eval_samples} test samples per task (seeded, "
        f"class-stratified), {args.epochs} epoch(s) per task, batch {args.batch_size}, prompts cut at {args.max_length} tokens. "
        f"Seeds: {args.seeds}. Machine: {machine}. Wall time of this invocation: {(time.time() - started) / 60:.1f} min "
        "(a restarted comparison keeps finished runs; each run's own training time is in the table).",
        "", table, "",
    ]
    write_text_atomic(out / "comparison.md", "\n".join(lines))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
