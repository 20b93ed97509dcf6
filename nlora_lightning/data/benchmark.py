"""Reading the CL_Benchmark layout: task lookup, presets, validation of every file and record.

Natural-instructions task folders (SAPT's SuperNI, presets ``superni_order1/2``) are read by
:mod:`nlora_lightning.data.natural_instructions`; :func:`load_tasks` picks the reader per task.

Layout (O-LoRA / N-LoRA): ``<data_dir>/<group>/<task>/{train,test,labels}.json`` with train/test
JSON lists of ``{"label": str, "sentence": str}``, labels.json a list of distinct strings, and the
instructions in ``<data_dir>/_meta/instruction_config.json`` keyed by group (or any file given as
``data.instruction_config``: O-LoRA's own layout keeps it in its repo's ``configs/`` folder).
"""

from __future__ import annotations

import glob
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Sequence

from nlora_lightning.errors import ConfigurationError, DataError

__all__ = ["PRESETS", "TaskData", "load_task", "load_tasks", "load_instructions", "resolve_task_names", "find_task_dir", "SPLITS"]

log = logging.getLogger(__name__)

SPLITS = ("train", "test")

PRESETS: dict[str, list[str]] = {
    "standard_order1": ["dbpedia", "amazon", "yahoo", "agnews"],
    "standard_order2": ["dbpedia", "amazon", "agnews", "yahoo"],
    "standard_order3": ["yahoo", "amazon", "agnews", "dbpedia"],
    "long_order4": ["MNLI", "CB", "WiC", "COPA", "QQP", "BoolQA", "RTE", "IMDB", "yelp", "amazon", "SST-2", "dbpedia", "agnews", "MultiRC", "yahoo"],
    "long_order5": ["MultiRC", "BoolQA", "WiC", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews", "yelp", "amazon", "yahoo"],
    "long_order6": ["yelp", "amazon", "MNLI", "CB", "COPA", "QQP", "RTE", "IMDB", "SST-2", "dbpedia", "agnews", "yahoo", "MultiRC", "BoolQA", "WiC"],
    # SAPT (Zhao et al., ACL 2024), gen_script_superni_*.py: Order 1 and Order 2, natural-instructions task folders.
    "superni_order1": [
        "task1572_samsum_summary", "task363_sst2_polarity_classification", "task1290_xsum_summarization",
        "task181_outcome_extraction", "task002_quoref_answer_generation", "task1510_evalution_relation_extraction",
        "task639_multi_woz_user_utterance_generation", "task1729_personachat_generate_next",
        "task073_commonsenseqa_answer_generation", "task1590_diplomacy_text_generation",
        "task748_glucose_reverse_cause_event_detection", "task511_reddit_tifu_long_text_summarization",
        "task591_sciq_answer_generation", "task1687_sentiment140_classification", "task875_emotion_classification",
    ],
    "superni_order2": [
        "task748_glucose_reverse_cause_event_detection", "task073_commonsenseqa_answer_generation",
        "task1590_diplomacy_text_generation", "task639_multi_woz_user_utterance_generation", "task1572_samsum_summary",
        "task1687_sentiment140_classification", "task591_sciq_answer_generation", "task363_sst2_polarity_classification",
        "task1510_evalution_relation_extraction", "task1729_personachat_generate_next", "task181_outcome_extraction",
        "task511_reddit_tifu_long_text_summarization", "task002_quoref_answer_generation", "task1290_xsum_summarization",
        "task875_emotion_classification",
    ],
}

UnknownLabelPolicy = Literal["error", "drop", "keep"]


@dataclass
class TaskData:
    """One task's labels, instruction and validated records.

    ``format`` is ``"cl_benchmark"`` or ``"natural_instructions"`` (then ``instruction`` is the
    task's Definition, ``labels`` the derived label set or empty for free text, records carry their
    ``references`` and ``reference_counts`` counts instances per split; see ``natural_instructions``).
    """

    name: str
    group: str
    labels: list[str]
    instruction: Optional[str]  # None for COPA, whose sentence states question and options
    records: dict[str, list[dict]]
    format: str = "cl_benchmark"
    reference_counts: dict[str, dict[str, int]] = field(default_factory=dict)


def resolve_task_names(tasks: Optional[Sequence[str]], preset: Optional[str]) -> list[str]:
    """The task list from explicit names or a preset (exactly one of the two)."""
    if (tasks is None) == (preset is None):
        raise ConfigurationError("give exactly one of data.tasks (a list of task names) and data.preset")
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigurationError(f"unknown preset {preset!r}; presets: {sorted(PRESETS)}")
        names = list(PRESETS[preset])
    else:
        names = list(tasks)  # type: ignore[arg-type]
    if not names:
        raise ConfigurationError("the task list is empty")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"duplicate task(s) {duplicates} in the task list {names}: each task appears once")
    return names


def _check_data_dir(data_dir: Path) -> None:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir {str(data_dir)!r} does not exist or is not a directory")


def _is_task_dir(path: Path) -> bool:
    """A folder with a task's files (COPA's group folder, also named COPA, holds only the task folder)."""
    return path.is_dir() and any((path / f).is_file() for f in ("labels.json", "train.json", "test.json"))


def find_task_dir(data_dir: Path, name: str) -> Path:
    _check_data_dir(data_dir)
    from nlora_lightning.data.natural_instructions import find_ni_task_dir

    direct = find_ni_task_dir(data_dir, name)  # natural-instructions: <data_dir>/<task>/ (SAPT's SuperNI folder)
    if direct is not None:
        return direct
    matches = sorted(p for p in data_dir.glob(f"*/{glob.escape(name)}") if _is_task_dir(p))  # names like rev[1]
    if not matches:  # a folder holding both benchmarks: <data_dir>/CL_Benchmark/<group>/<task>, <data_dir>/SuperNI/<task>
        matches = sorted(p for p in data_dir.glob(f"*/*/{glob.escape(name)}") if _is_task_dir(p) and not p.parent.name.startswith("_"))
    if not matches:
        available = sorted(p.name for p in data_dir.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_"))
        available += sorted(p.parent.name for p in data_dir.glob("*/train.json"))  # natural-instructions tasks
        raise FileNotFoundError(
            f"task {name!r} not found in {data_dir} (looked for <group>/{name}/ and {name}/); tasks there: {sorted(available)}"
        )
    if len(matches) > 1:
        raise ConfigurationError(f"task {name!r} appears in several groups: {[str(m) for m in matches]}")
    return matches[0]


def _read_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a UTF-8 byte-order mark (some Windows editors) is accepted
        if not text.strip():
            raise DataError(f"{path} is empty ({path.stat().st_size} bytes): it must hold JSON")
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"malformed JSON in {path}: {error.msg} at line {error.lineno}, column {error.colno}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not UTF-8 text: {error}") from None


_INSTRUCTION_FORMAT = 'a JSON object mapping each task group to a list of instructions, e.g. {"SC": [{"instruction": "What is the sentiment? ..."}]} (plain strings in the list also work; the first is used)'


def load_instructions(data_dir: Path, instruction_config: Optional[str | Path] = None) -> dict[str, str]:
    """Group -> instruction text, from ``instruction_config`` or, by default, ``_meta/instruction_config.json``
    (or ``instruction_config.json``) in ``data_dir``.

    Raises:
        FileNotFoundError: Saying where it looked, what the file holds, and naming ``data.instruction_config``.
        DataError: The file is not a group -> list of instructions mapping.
    """
    _check_data_dir(data_dir)
    if instruction_config is not None:
        candidates = [Path(instruction_config)]
        if not candidates[0].is_file():
            raise FileNotFoundError(f"data.instruction_config {str(instruction_config)!r} does not exist; it must be {_INSTRUCTION_FORMAT}")
    else:
        candidates = [data_dir / "_meta" / "instruction_config.json", data_dir / "instruction_config.json"]
    for candidate in candidates:
        if candidate.is_file():
            raw = _read_json(candidate)
            try:
                return {group: _first_instruction(entries) for group, entries in raw.items()}
            except (TypeError, KeyError, IndexError, AttributeError):
                raise DataError(f"{candidate} must be {_INSTRUCTION_FORMAT}") from None
    raise FileNotFoundError(
        f"no instruction file: looked for {candidates[0]} and {candidates[1]}; it must be {_INSTRUCTION_FORMAT}; "
        "with O-LoRA's layout it is configs/instruction_config.json in their repository: pass it as "
        "--data.instruction_config PATH"
    )


def _first_instruction(entries) -> str:
    if not isinstance(entries, list):
        raise TypeError(entries)
    text = entries[0] if isinstance(entries[0], str) else entries[0]["instruction"]
    if not isinstance(text, str):
        raise TypeError(text)
    return text


def _validate_records(path: Path, raw, labels: list[str], on_unknown_label: UnknownLabelPolicy) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise DataError(f"{path} must hold a JSON list of {{'label', 'sentence'}} records, got {type(raw).__name__}")
    if not raw:
        raise DataError(f"{path} is empty: a split needs at least one record")
    known = set(labels)
    records, unknown = [], {}
    for index, record in enumerate(raw):
        if not isinstance(record, dict):
            raise DataError(f"{path}: record {index} is a {type(record).__name__}, not an object")
        for key in ("label", "sentence"):
            if key not in record:
                raise DataError(f"{path}: record {index} has no {key!r} field (fields: {sorted(record)})")
            if not isinstance(record[key], str):
                raise DataError(f"{path}: record {index} field {key!r} is not a string")
        label = record["label"]
        if label not in known:
            unknown[label] = unknown.get(label, 0) + 1
            if on_unknown_label == "drop":
                continue
            if on_unknown_label == "error":
                raise DataError(
                    f"{path}: record {index} has label {label!r}, which is not in labels.json {labels}; "
                    "fix the file, or set data.on_unknown_label to 'drop' or 'keep'"
                )
        records.append({"label": label, "sentence": record["sentence"]})
    if unknown:
        verb = "dropped" if on_unknown_label == "drop" else "kept (they always count as wrong)"
        log.warning("%s: %d record(s) with labels outside labels.json %s were %s", path, sum(unknown.values()), dict(unknown), verb)
    if not records:
        raise DataError(f"{path}: no record is left after dropping unknown labels")
    return records


def load_task(
    data_dir: str | Path,
    name: str,
    instructions: Optional[dict[str, str]] = None,
    on_unknown_label: UnknownLabelPolicy = "error",
    splits: Sequence[str] = SPLITS,
) -> TaskData:
    """Read and validate one task.

    Raises:
        FileNotFoundError: The data dir, the task dir or a split file is missing.
        DataError: Malformed JSON, a record without ``label``/``sentence``, a label outside
            labels.json (with ``on_unknown_label="error"``), or an empty split.
    """
    data_dir = Path(data_dir)
    task_dir = find_task_dir(data_dir, name)
    group = task_dir.parent.name
    labels = _read_json(task_dir / "labels.json")
    if not isinstance(labels, list) or not labels or not all(isinstance(l, str) for l in labels):
        raise DataError(f"{task_dir / 'labels.json'} must be a non-empty JSON list of strings")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise DataError(f"{task_dir / 'labels.json'} lists label(s) {duplicates} more than once; each label must appear once")
    if instructions is None:
        instructions = load_instructions(data_dir)
    instruction = None
    if name != "COPA":
        if group not in instructions:
            raise DataError(f"no instruction for group {group!r} (task {name!r}) in instruction_config.json; groups: {sorted(instructions)}")
        instruction = instructions[group]
    records = {
        split: _validate_records(task_dir / f"{split}.json", _read_json(task_dir / f"{split}.json"), labels, on_unknown_label)
        for split in splits
    }
    return TaskData(name=name, group=group, labels=labels, instruction=instruction, records=records)


def load_tasks(
    data_dir: str | Path,
    names: Sequence[str],
    instruction_config: Optional[str | Path] = None,
    on_unknown_label: UnknownLabelPolicy = "error",
    natural_instructions=None,
    seed: int = 42,
) -> list[TaskData]:
    """Every task of ``names``, each read by the reader of its folder's format.

    A folder with labels.json is a CL_Benchmark task (its instruction file is then needed); one
    without is a natural-instructions task (``natural_instructions`` is its
    :class:`~nlora_lightning.data.natural_instructions.NaturalInstructionsConfig`; default settings
    when ``None``; ``seed`` seeds the training-reference draw).

    Raises:
        FileNotFoundError, DataError: As :func:`load_task` and
            :func:`~nlora_lightning.data.natural_instructions.load_natural_instructions_task`, naming the file.
    """
    from nlora_lightning.data.natural_instructions import (
        NaturalInstructionsConfig,
        is_natural_instructions_dir,
        load_natural_instructions_task,
    )

    data_dir = Path(data_dir)
    folders = {name: find_task_dir(data_dir, name) for name in names}  # every task is found before any is read
    instructions = None
    tasks = []
    for name, folder in folders.items():
        if is_natural_instructions_dir(folder):
            tasks.append(load_natural_instructions_task(folder, name, natural_instructions or NaturalInstructionsConfig(), seed))
            continue
        if instructions is None:
            instructions = load_instructions(data_dir, instruction_config)
        tasks.append(load_task(data_dir, name, instructions, on_unknown_label))
    return tasks
