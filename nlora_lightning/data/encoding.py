"""Tokenising prompts and answers, with a truncation policy that keeps the template intact."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from nlora_lightning.data.benchmark import TaskData
from nlora_lightning.data.templates import build_natural_instructions_prompt, build_prompt
from nlora_lightning.errors import ConfigurationError

__all__ = ["EncodingConfig", "encode_prompt", "encode_answer", "encode_split", "encode_task_answer", "task_prompt", "tokenizer_fingerprint"]

log = logging.getLogger(__name__)
_FORMAT_VERSION = 2  # bump when the encoding changes, to invalidate cached datasets


@dataclass(frozen=True)
class EncodingConfig:
    """Token budgets. A prompt over ``max_source_length`` loses tokens from the end of its sentence
    only: the task header, instruction, options and the closing "Answer:" are always kept.
    ``task_header`` is passed to :func:`~nlora_lightning.data.templates.build_prompt`."""

    max_source_length: int = 512
    max_target_length: int = 50
    decoder_only: bool = True
    task_header: bool = True


def encode_prompt(tokenizer, prompt: str, span: tuple[int, int], max_length: int, task: str = "") -> tuple[list[int], bool]:
    """Token ids of ``prompt`` (with the tokenizer's special tokens), shortened inside ``span`` if needed."""
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)
        ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
        if len(ids) <= max_length:
            return ids, False
        excess = len(ids) - max_length
        in_span = [i for i, (s, e) in enumerate(offsets) if e > s and s >= span[0] and e <= span[1]]
        if len(in_span) < excess:
            raise ConfigurationError(
                f"max_source_length={max_length} is too short for task {task!r}: its template without the "
                f"sentence already takes {len(ids) - len(in_span)} tokens"
            )
        dropped = set(in_span[len(in_span) - excess :])
        return [t for i, t in enumerate(ids) if i not in dropped], True
    # Slow tokenizers have no offsets: encode the three parts apart and cut the sentence's tokens.
    head = tokenizer.encode(prompt[: span[0]], add_special_tokens=False)
    sentence = tokenizer.encode(prompt[span[0] : span[1]], add_special_tokens=False)
    tail = tokenizer.encode(prompt[span[1] :], add_special_tokens=False)
    special = len(tokenizer.build_inputs_with_special_tokens([]))
    budget = max_length - special - len(head) - len(tail)
    if budget < 0:
        raise ConfigurationError(f"max_source_length={max_length} is too short for task {task!r}'s template")
    truncated = len(sentence) > budget
    return list(tokenizer.build_inputs_with_special_tokens(head + sentence[:budget] + tail)), truncated


def encode_answer(tokenizer, label: str, config: EncodingConfig, leading_space: Optional[bool] = None) -> list[int]:
    """Answer tokens plus EOS. Decoder-only answers start with a space: they follow "Answer:".

    ``leading_space`` overrides that (``False`` after a prompt that ends with a space).
    """
    space = config.decoder_only if leading_space is None else leading_space
    ids = tokenizer.encode(" " + label if space else label, add_special_tokens=False)[: config.max_target_length - 1]
    return ids + [tokenizer.eos_token_id]


def task_prompt(task: TaskData, sentence: str, task_header: bool = True) -> tuple[str, tuple[int, int]]:
    """The prompt of one sample in its task's template, and the span of the sample's own text."""
    if task.format == "natural_instructions":
        return build_natural_instructions_prompt(task.instruction or "", sentence)
    return build_prompt(task.name, task.group, task.instruction, task.labels, sentence, task_header)


def encode_task_answer(tokenizer, task: TaskData, label: str, config: EncodingConfig) -> list[int]:
    """An answer of ``task``: SAPT's prompt ends with "Output: ", so its answers take no leading space."""
    return encode_answer(tokenizer, label, config, leading_space=False if task.format == "natural_instructions" else None)


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else f"{tokenizer.name_or_path}|{len(tokenizer)}"
    extra = f"|{tokenizer.pad_token_id}|{tokenizer.eos_token_id}|{type(tokenizer).__name__}"
    return hashlib.sha256((text + extra).encode()).hexdigest()[:16]


def encode_split(
    task: TaskData, split: str, tokenizer, config: EncodingConfig, cache_dir: Optional[Path] = None
):
    """The split as a ``datasets.Dataset`` with label, sentence, prompt_ids, answer_ids, label_index, truncated.

    The tokenised result is cached on disk (keyed by the records, the template, the tokenizer and
    the budgets), so a second run reads it back instead of tokenising again.
    """
    import datasets

    records = task.records[split]
    key = json.dumps(
        [_FORMAT_VERSION, task.format, task.name, task.group, task.labels, task.instruction, records, asdict(config), tokenizer_fingerprint(tokenizer)],
        sort_keys=True,
    )
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:24]
    label_to_index = {label: i for i, label in enumerate(task.labels)}
    answers = {label: encode_task_answer(tokenizer, task, label, config) for label in task.labels}

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {"prompt_ids": [], "answer_ids": [], "label_index": [], "truncated": []}
        for label, sentence in zip(batch["label"], batch["sentence"]):
            prompt, span = task_prompt(task, sentence, config.task_header)
            ids, truncated = encode_prompt(tokenizer, prompt, span, config.max_source_length, task.name)
            out["prompt_ids"].append(ids)
            out["answer_ids"].append(answers[label] if label in answers else encode_task_answer(tokenizer, task, label, config))
            out["label_index"].append(label_to_index.get(label, -1))
            out["truncated"].append(truncated)
        return out

    columns = {"label": [r["label"] for r in records], "sentence": [r["sentence"] for r in records]}
    # Every reference a sample is scored against (natural-instructions); CL_Benchmark: its label.
    columns["references"] = [r.get("references") or [r["label"]] for r in records]
    table = datasets.Dataset.from_dict(columns)
    kwargs: dict[str, Any] = {"batched": True, "new_fingerprint": fingerprint, "desc": f"tokenising {task.name}/{split}"}
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        kwargs["cache_file_name"] = str(cache_dir / f"{task.name}-{split}-{fingerprint}.arrow")
        kwargs["load_from_cache_file"] = True
    with _quiet_datasets():
        return table.map(encode, **kwargs)


class _quiet_datasets:
    """Silence the progress bars of ``datasets`` for small maps."""

    def __enter__(self):
        import datasets

        self._was_enabled = datasets.utils.logging.is_progress_bar_enabled()
        datasets.utils.logging.disable_progress_bar()

    def __exit__(self, *exc):
        import datasets

        if self._was_enabled:
            datasets.utils.logging.enable_progress_bar()
