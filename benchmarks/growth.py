"""Cost as the sequence grows, and how close a step comes to the machine's limit (``speed.py --growth``).

At task T (T - 1 finished adapters) it measures, per consolidation mode, a training step, the
peak memory of one step (weights, frozen adapters and the step's own peak), the evaluation of one
batch by greedy decoding, and the checkpoint size (the slot plus the adapter store). Synthetic tasks
on SmolLM2-135M's shapes with random weights (speed does not depend on the weights; no download):

- ``lowrank``: the default; a layer's frozen pair turns into one dense update past the crossover;
- ``lowrank_factors``: the frozen pair always as the rank-R factors (the form before the crossover rule);
- ``merge``: finished adapters added into the base weights (flat cost, cannot be switched off).

Steps are timed round-robin over every (mode, T) variant, median over rounds. The last JSON line
holds ``task{T}_vs_task1_step`` per mode, and for the default mode at task 1 the achieved FLOP/s of
a step and of evaluation (prompt pass, decode steps) against a large fp32 ``torch.mm`` timed in the
same run; the top operators of one step follow the table (torch.profiler).
"""

from __future__ import annotations

import gc
import io
import statistics
import time
from typing import Callable

import torch
from torch import nn

from benchmarks.flops import AdapterShape, DecoderShape, generation_flops, matmul_peak_flops, profile_table, training_step_flops
from nlora_lightning import ContinualLightningModule, LoRAConfig, MethodConfig
from nlora_lightning.data.collate import TrainCollator
from nlora_lightning.models import forward as fwd
from nlora_lightning.models.forward import pad_rows

SMOLLM2_SHAPE = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                 "max_position_embeddings": 2048, "tie_word_embeddings": True}
TINY_SHAPE = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300, "max_position_embeddings": 256}
MODES = {"lowrank": ("lowrank", "auto"), "lowrank_factors": ("lowrank", "factors"), "merge": ("merge", "auto")}
NEW_TOKENS = 4


def log(message: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def build(shape: dict, consolidation: str, tasks: int, device: torch.device, seed: int = 0) -> ContinualLightningModule:
    """A module whose store holds ``tasks - 1`` finished, trained-looking adapters (random B), slot live."""
    module = ContinualLightningModule(random_init=shape, tokenizer="byte", consolidation=consolidation,
                                      lora=LoRAConfig(r=8, alpha=32, dropout=0.1),
                                      methods=[MethodConfig("nlora_l1", 0.4)])
    module.configure_model()
    module.to(device)
    adapters = module.adapters
    generator = torch.Generator().manual_seed(seed)
    for task in range(tasks - 1):  # the store directly: finish_task would re-consolidate at every task
        adapters.reset_slot(task)
        with torch.no_grad():
            for layer in adapters.layers.values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=generator).to(layer.lora_B) * 0.01)
        adapters.snapshot_slot(task)
    module.current_task = tasks - 1
    adapters.reset_slot(tasks - 1)
    module.model.train()
    return module


def set_task(module: ContinualLightningModule, task: int, frozen_form: str) -> None:
    """Make ``module`` look like it is training task ``task`` (1-based): tasks 1..task-1 frozen."""
    adapters = module.adapters
    if adapters.consolidation == "merge":
        if task - 1 != len(adapters.merged_tasks):
            adapters.freeze_tasks(range(task - 1))  # merge only grows; build() gives each merge variant its own module
        return
    if adapters.frozen_form != frozen_form or adapters.frozen_tasks != list(range(task - 1)):
        adapters.frozen_form = frozen_form
        adapters.freeze_tasks(range(task - 1))


def synthetic_batches(tokenizer, rows: int, length: int, seed: int = 0) -> tuple[dict, dict]:
    """A training batch (prompt + a 3-token answer, lengths 60-100 % of ``length``) and left-padded prompts."""
    g = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(rows):
        prompt_len = int(torch.randint(int(0.6 * length), length - 2, (), generator=g))
        examples.append({"prompt_ids": torch.randint(3, 256, (prompt_len,), generator=g).tolist(),
                         "answer_ids": torch.randint(3, 256, (3,), generator=g).tolist(), "task": 0})
    train = TrainCollator(tokenizer.pad_token_id, True)(examples)
    prompts = [e["prompt_ids"] for e in examples]
    eval_batch = {"input_ids": pad_rows(prompts, tokenizer.pad_token_id, left=True),
                  "attention_mask": pad_rows([[1] * len(p) for p in prompts], 0, left=True)}
    return train, eval_batch


def to(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def frozen_costs(module: ContinualLightningModule) -> dict[str, str]:
    """How each target projection currently applies its frozen part (for the FLOP count)."""
    costs = {}
    for name, layer in module.adapters.layers.items():
        kind = name.rsplit(".", 1)[-1]
        if layer.frozen_rank == 0 or not layer.frozen_enabled:
            costs[kind] = "none"
        elif not layer.frozen_is_dense:
            costs[kind] = "factors"
        else:
            folded = type(layer.base_layer) is nn.Linear and layer.base_layer.weight.dtype == layer.frozen_delta.dtype
            costs[kind] = "folded" if folded else "dense"
    return costs


def checkpoint_bytes(module: ContinualLightningModule, task: int) -> int:
    """Bytes of the slot plus the adapter store of tasks 1..task-1, serialised as a checkpoint holds them."""
    state = module.adapters.state_dict()
    state["snapshots"] = {t: s for t, s in state["snapshots"].items() if t < task - 1}
    buffer = io.BytesIO()
    torch.save({"state_dict": module.state_dict(), "nlora": {"adapters": state}}, buffer)
    return buffer.tell()


def run_growth(device: torch.device, tasks: list[int], tiny: bool, quick: bool, rows: int, length: int) -> tuple[dict, list[str]]:
    """The table rows (as notes) and the JSON figures."""
    from benchmarks.speed import our_step, peak_extra_bytes
    from benchmarks.memory import storage_bytes

    shape = TINY_SHAPE if tiny else SMOLLM2_SHAPE
    last, warmup, repeats = max(tasks), (0 if tiny else 1), (1 if tiny else 3 if quick else 7)
    log(f"building the modules ({last - 1} finished adapters each)")
    lowrank = build(shape, "lowrank", last, device)
    merged = build(shape, "merge", last, device)
    set_task(merged, last, "auto")
    train, prompts = (to(b, device) for b in synthetic_batches(lowrank.tokenizer, rows, length))
    variants: dict[tuple[str, int], tuple] = {}
    for mode, (_, form) in MODES.items():
        for task in ([last] if mode == "merge" else tasks):
            module = merged if mode == "merge" else lowrank
            variants[(mode, task)] = (module, form, our_step(module, train))

    def evaluate(module) -> None:
        module.model.eval()
        fwd.generate_answers(module.model, module.tokenizer, prompts["input_ids"], prompts["attention_mask"], NEW_TOKENS, False)
        module.model.train()

    step_s: dict = {key: [] for key in variants}
    eval_s: dict = {key: [] for key in variants}
    log(f"timing {len(variants)} variants round-robin, batch {tuple(train['input_ids'].shape)}")
    for round_index in range(warmup + repeats):
        for key, (module, form, step) in variants.items():
            set_task(module, key[1], form)
            for fn, store in ((step, step_s), (lambda: evaluate(module), eval_s)):
                sync(device)
                start = time.perf_counter()
                with torch.no_grad() if store is eval_s else torch.enable_grad():
                    fn()
                sync(device)
                if round_index >= warmup:
                    store[key].append(time.perf_counter() - start)
    figures, notes = {}, ["| mode | task | step s | eval s | step peak MiB | checkpoint MiB | frozen form |", "|---|---|---|---|---|---|---|"]
    first = statistics.median(step_s[("lowrank", min(tasks))])
    for key, (module, form, step) in variants.items():
        set_task(module, key[1], form)
        gc.collect()
        peak = storage_bytes(module) + peak_extra_bytes(step, device)
        forms = ",".join(f"{k}:{v}" for k, v in sorted(frozen_costs(module).items()))
        step_median, eval_median = statistics.median(step_s[key]), statistics.median(eval_s[key])
        notes.append(f"| {key[0]} | {key[1]} | {step_median:.4f} | {eval_median:.4f} | {peak / 2**20:.1f} | "
                     f"{checkpoint_bytes(module, key[1]) / 2**20:.2f} | {forms} |")
        if key[1] == last:
            figures[f"task{last}_vs_task1_step_{key[0]}"] = step_median / first
            figures[f"task{last}_vs_task1_eval_{key[0]}"] = eval_median / statistics.median(eval_s[("lowrank", min(tasks))])
    figures.update(utilisation(lowrank, train, prompts, device, 1 if tiny else 3 if quick else 7, notes))
    return figures, notes


def utilisation(module, train: dict, prompts: dict, device: torch.device, repeats: int, notes: list[str]) -> dict:
    """Achieved FLOP/s of a step and of evaluation at task 1, against the fp32 mm peak; a profile of one step."""
    from benchmarks.speed import our_step

    set_task(module, 1, "auto")
    shape = DecoderShape.from_config(module.model.config)
    costs = frozen_costs(module)
    adapter_shape = AdapterShape(tuple(sorted(costs)), module.adapters.config.r, 0, "none")
    rows, length = train["input_ids"].shape
    positions = int((train["labels"][:, 1:] != -100).sum())
    step_flops = training_step_flops(shape, adapter_shape, rows, length, positions)
    gen = generation_flops(shape, adapter_shape, prompts["input_ids"].shape[0], prompts["input_ids"].shape[1], NEW_TOKENS)
    step = our_step(module, train)
    model = module.model

    def prompt_pass() -> None:
        model(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"], use_cache=True, logits_to_keep=1)

    def generate() -> None:
        fwd.generate_answers(model, module.tokenizer, prompts["input_ids"], prompts["attention_mask"], NEW_TOKENS, False)

    def timed(fn: Callable[[], None], repeats: int) -> float:
        fn()
        times = []
        for _ in range(repeats):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    peak = matmul_peak_flops(device, size=(4096 if device.type == "cuda" else 1024 if repeats < 7 else 2048))
    step_time = timed(step, repeats)
    model.eval()
    with torch.no_grad():
        prompt_time, generate_time = timed(prompt_pass, repeats), timed(generate, repeats)
    decode_time = max(generate_time - prompt_time, 1e-9)
    figures = {"matmul_peak_flops": peak, "step_flops_per_s": step_flops["total"] / step_time,
               "eval_prompt_flops_per_s": gen["prompt_pass"] / prompt_time, "eval_decode_flops_per_s": gen["decode_steps"] / decode_time}
    for key in ("step", "eval_prompt", "eval_decode"):
        figures[f"{key}_utilisation"] = figures[f"{key}_flops_per_s"] / peak
    notes.append("")
    notes.append(f"fp32 mm peak {peak / 1e9:.1f} GFLOP/s; training step {step_flops['total'] / 1e9:.3f} GFLOP in {step_time:.4f} s = "
                 f"{figures['step_utilisation']:.1%} of peak (" + ", ".join(f"{k} {v / 1e9:.3f}" for k, v in step_flops.items() if k != "total")
                 + f" GFLOP; padding {1 - float(train['attention_mask'].float().mean()):.1%} of the batch)")
    notes.append(f"evaluation: prompt pass {gen['prompt_pass'] / 1e9:.3f} GFLOP in {prompt_time:.4f} s = {figures['eval_prompt_utilisation']:.1%}, "
                 f"{NEW_TOKENS - 1} decode steps {gen['decode_steps'] / 1e9:.3f} GFLOP in {decode_time:.4f} s = {figures['eval_decode_utilisation']:.1%}")
    model.train()
    notes.append("")
    notes.append("top operators of one training step (torch.profiler, self time):")
    notes.append("```")
    notes.append(profile_table(step, device))
    notes.append("```")
    return figures


def main(args) -> dict:
    """``speed.py --growth``: print the table, the utilisation notes, then one JSON line."""
    import json
    import os
    import platform

    device = torch.device(args.device)
    tasks = sorted({int(t) for t in args.tasks.split(",")})
    if tasks[0] != 1:
        raise SystemExit(f"--tasks must start at 1 (the reference of every ratio), got {args.tasks!r}")
    rows, length = (2, 16) if args.tiny else (4, 96) if args.quick else (args.batch_size, args.max_length)
    torch.manual_seed(0)
    figures, notes = run_growth(device, tasks, args.tiny, args.quick, rows, length)
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}" + (
        f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ", CPU")
    model = "tiny LLaMA" if args.tiny else "SmolLM2-135M shapes, random weights"
    if args.write:
        write_growth(notes, machine, model, args.argv)
    for note in notes:
        print(note)
    out = {key: float(f"{value:.4g}") for key, value in figures.items()}
    out.update(tasks=tasks, machine=machine)
    print(json.dumps(out))
    return out


def write_growth(notes: list[str], machine: str, model: str, argv) -> None:
    from pathlib import Path

    from nlora_lightning.io import write_text_atomic

    path = Path(__file__).resolve().parent / "results" / "performance.md"
    section = "\n".join([f"## Cost as the sequence grows, {time.strftime('%Y-%m-%d %H:%M')} — {model} on {machine}", "",
                         f"Command: `python benchmarks/speed.py {' '.join(argv)}`", "", *notes, ""])
    previous = path.read_text() if path.is_file() else "# Performance results\n"
    write_text_atomic(path, previous.rstrip() + "\n\n" + section)
