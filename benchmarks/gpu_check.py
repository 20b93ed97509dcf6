"""GPU acceptance in one command (``make gpu-check``): what no CPU test can show, each item pass or fail.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check] [--only NAME ...] [--list]

On a CUDA machine it runs, each as its own process with a time limit:

1. the gpu-marked tests (``pytest -m gpu --accelerator gpu``);
2. a bf16 CLI fit of a random-weight LLaMA-shaped and of a T5-shaped model on one device, across
   three tasks (two task boundaries: the frozen adapters grow twice);
3. the LLaMA fit with ``configs/strategies/ddp.yaml`` on every visible GPU, then ``fsdp.yaml``;
4. an FSDP fit killed (SIGKILL) inside its second task, resumed with ``--ckpt_path last``: it must
   finish with the uninterrupted FSDP run's accuracy matrix;
5. a 4-bit QLoRA fit through bitsandbytes (a random LLaMA saved as a folder, loaded quantized);
6. ``benchmarks/speed.py --device cuda --random-weights t5_large`` and ``llama_7b`` (real shapes).

It writes ``OUT/report.md`` and ``OUT/report.json`` (pass/fail, seconds and peak GPU memory per
item, the tail of a failed item's output) and exits 1 if any item failed. Sized for about 10
minutes on one H100. Without CUDA it prints one line and exits 0. ``--list`` prints the plan.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
HELPERS = REPO / "tests" / "helpers"
TASKS = "[reviews, topics, intents]"  # three tasks: two task boundaries
# Big enough to exercise bf16 kernels, sharding and several FSDP units; small enough for seconds per task.
LLAMA = ("{model_type: llama, hidden_size: 512, intermediate_size: 1376, num_hidden_layers: 4, num_attention_heads: 8, "
         "num_key_value_heads: 8, max_position_embeddings: 1024}")
T5 = "{model_type: t5, d_model: 512, d_kv: 64, d_ff: 1024, num_layers: 4, num_heads: 8}"
KILL_STEP = 9  # inside the second task: 2 epochs x 4 batches per task


@dataclass
class CheckItem:
    """One acceptance item: a command, its time limit, and an optional check of what it left on disk."""

    name: str
    command: list[str]
    timeout_s: int
    expect_returncode: int = 0
    check: Optional[Callable[[], Optional[str]]] = None  # returns why it failed, or None


@dataclass
class ItemResult:
    name: str
    passed: bool
    seconds: float
    peak_gpu_memory_mib: Optional[float]
    returncode: Optional[int]
    detail: str = ""
    command: list[str] = field(default_factory=list)


class GpuMemoryPeak:
    """The highest memory in use on any GPU while it runs (``nvidia-smi``, sampled twice a second)."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s, self.peak, self._stop = interval_s, None, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout
                used = max(float(v) for v in out.split())
                self.peak = used if self.peak is None else max(self.peak, used)
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "GpuMemoryPeak":
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def run_item(item: CheckItem, env: Optional[dict] = None, memory: Callable[[], GpuMemoryPeak] = GpuMemoryPeak) -> ItemResult:
    """Run one item; a timeout, an unexpected exit status or a failed check fails it (never raises)."""
    start = time.monotonic()
    with memory() as peak:
        try:
            done = subprocess.run(item.command, cwd=REPO, env=env, capture_output=True, text=True, timeout=item.timeout_s)
            returncode, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as error:
            returncode, output = None, f"timed out after {item.timeout_s} s\n{_text(error.stdout)}{_text(error.stderr)}"
    seconds = round(time.monotonic() - start, 1)
    problem = None
    if returncode != item.expect_returncode:
        problem = f"exit status {returncode}, expected {item.expect_returncode}"
    elif item.check is not None:
        try:
            problem = item.check()
        except Exception as error:  # a check that crashes fails its item, not the whole report
            problem = f"check raised {type(error).__name__}: {error}"
    detail = "" if problem is None else problem + "\n" + output[-3000:]
    return ItemResult(item.name, problem is None, seconds, peak.peak, returncode, detail, list(item.command))


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def run_items(items: Sequence[CheckItem], env: Optional[dict] = None, runner: Callable[..., ItemResult] = run_item,
              echo: Callable[[str], None] = print) -> list[ItemResult]:
    results = []
    for item in items:
        echo(f"gpu-check: {item.name} ...")
        result = runner(item, env)
        echo(f"gpu-check: {item.name}: {'pass' if result.passed else 'FAIL'} ({result.seconds} s)")
        results.append(result)
    return results


def format_report(results: Sequence[ItemResult], machine: str) -> str:
    lines = ["# GPU acceptance check (`make gpu-check`)", "", f"Machine: {machine}", "",
             "| item | result | seconds | peak GPU memory (MiB) |", "|:---|:---|---:|---:|"]
    for r in results:
        memory = "n/a" if r.peak_gpu_memory_mib is None else f"{r.peak_gpu_memory_mib:.0f}"
        lines.append(f"| {r.name} | {'pass' if r.passed else 'FAIL'} | {r.seconds:.1f} | {memory} |")
    failed = [r for r in results if not r.passed]
    lines += ["", f"{len(results) - len(failed)} of {len(results)} items passed."]
    for r in failed:
        lines += ["", f"## {r.name}", "", "```", " ".join(r.command), r.detail.strip(), "```"]
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[ItemResult], out: Path, machine: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"machine": machine, "items": [asdict(r) for r in results]}, indent=2) + "\n")
    (out / "report.md").write_text(format_report(results, machine))
    return out / "report.md"


# ----- the plan ---------------------------------------------------------------------------------
def _fit(work: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nlora_lightning", "fit", "--config", "configs/tiny.yaml",
            "--trainer.accelerator", "gpu", "--trainer.devices", "1", "--trainer.precision", "bf16-mixed",
            "--trainer.default_root_dir", str(work / name), "--trainer.logger.init_args.save_dir", str(work),
            "--trainer.logger.init_args.name", name, "--data.tasks", TASKS, "--data.epochs_per_task", "2",
            "--data.batch_size", "8", *extra]


def _finished(run: Path, stages: int = 3) -> Callable[[], Optional[str]]:
    def check() -> Optional[str]:
        info = json.loads((run / "run_info.json").read_text())
        matrix = json.loads((run / "cl_metrics.json").read_text())["acc_matrix"]
        if info.get("status") != "finished":
            return f"run_info.json status {info.get('status')!r}"
        if len(matrix) != stages or any(v is None for v in matrix[-1]):
            return f"accuracy matrix incomplete: {matrix}"
        return None
    return check


def _same_matrix(run: Path, reference: Path) -> Callable[[], Optional[str]]:
    def check() -> Optional[str]:
        problem = _finished(run)()
        if problem:
            return problem
        a = json.loads((run / "cl_metrics.json").read_text())["acc_matrix"]
        b = json.loads((reference / "cl_metrics.json").read_text())["acc_matrix"]
        # bf16 kernels on a GPU are not bit-deterministic: allow one test sample (of 16) per cell.
        gap = max(abs(x - y) for row_a, row_b in zip(a, b) for x, y in zip(row_a, row_b) if x is not None and y is not None)
        return None if gap <= 1 / 16 + 1e-9 else f"resumed matrix {a} differs from the uninterrupted run's {b}"
    return check


def plan(work: Path) -> list[CheckItem]:
    """Every item, in order; ``work`` holds the runs."""
    llama, t5 = ("--model.random_init", LLAMA), ("--model.random_init", T5)
    ddp, fsdp = ("--config", "configs/strategies/ddp.yaml"), ("--config", "configs/strategies/fsdp.yaml")
    every_gpu = ("--trainer.devices", "-1")
    kill = ("--trainer.callbacks+=kill_at_step.KillAtStep", f"--trainer.callbacks.step={KILL_STEP}")
    random_llama = work / "random_llama"
    save_llama = ("from nlora_lightning.models import load_backbone; import yaml, sys; "
                  f"b = load_backbone(None, random_init=yaml.safe_load('{LLAMA}'), seed=0); "
                  f"b.model.save_pretrained(sys.argv[1])")
    qlora = ("--model.random_init", "null", "--model.model_name_or_path", str(random_llama), "--model.tokenizer", "byte",
             "--model.quantization", "{bits: 4, compute_dtype: bfloat16}")
    speed = [sys.executable, "benchmarks/speed.py", "--device", "cuda", "--quick", "--data-dir",
             str(REPO / "nlora_lightning" / "data" / "toy_benchmark"), "--task", "reviews", "--random-weights"]
    return [
        CheckItem("gpu-marked tests", [sys.executable, "-m", "pytest", "-m", "gpu", "--accelerator", "gpu", "-q", "-x"], 180),
        CheckItem("bf16 fit, LLaMA-shaped, 1 GPU", _fit(work, "llama_1gpu", *llama), 100, check=_finished(work / "llama_1gpu")),
        CheckItem("bf16 fit, T5-shaped, 1 GPU", _fit(work, "t5_1gpu", *t5), 100, check=_finished(work / "t5_1gpu")),
        CheckItem("bf16 fit, LLaMA-shaped, DDP on every GPU", _fit(work, "llama_ddp", *ddp, *llama, *every_gpu), 100,
                  check=_finished(work / "llama_ddp")),
        CheckItem("bf16 fit, LLaMA-shaped, FSDP on every GPU", _fit(work, "llama_fsdp", *fsdp, *llama, *every_gpu), 100,
                  check=_finished(work / "llama_fsdp")),
        CheckItem("FSDP fit killed in task 2", _fit(work, "llama_fsdp_killed", *fsdp, *llama, *every_gpu, *kill), 100,
                  expect_returncode=-9),
        CheckItem("FSDP fit resumed with --ckpt_path last", _fit(work, "llama_fsdp_killed", *fsdp, *llama, *every_gpu,
                                                                 "--ckpt_path", "last"), 100,
                  check=_same_matrix(work / "llama_fsdp_killed", work / "llama_fsdp")),
        CheckItem("random LLaMA saved for QLoRA", [sys.executable, "-c", save_llama, str(random_llama)], 60),
        CheckItem("4-bit QLoRA fit (bitsandbytes)", _fit(work, "qlora", *qlora), 100, check=_finished(work / "qlora")),
        CheckItem("speed.py t5_large (real shapes)", [*speed, "t5_large"], 150),
        CheckItem("speed.py llama_7b (real shapes)", [*speed, "llama_7b"], 200),
    ]


def machine_description() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no CUDA"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return f"{len(names)} x {names[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu_check")
    parser.add_argument("--work", type=Path, default=None, help="where the runs go (default: a temporary folder)")
    parser.add_argument("--only", nargs="*", default=None, help="run only the items whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    import tempfile

    work = args.work or Path(tempfile.mkdtemp(prefix="nlora-gpu-check-"))
    items = plan(work)
    if args.only:
        items = [i for i in items if any(word in i.name for word in args.only)]
    if args.list:
        for item in items:
            print(f"{item.name} (limit {item.timeout_s} s): {' '.join(item.command)}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing was run (run it on a machine with a GPU)")
        return 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    results = run_items(items, env)
    report = write_report(results, args.out, machine_description())
    failed = [r.name for r in results if not r.passed]
    print(f"gpu-check: {len(results) - len(failed)} of {len(results)} passed; report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
