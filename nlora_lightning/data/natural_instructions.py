"""Reading natural-instructions task files (Super-NaturalInstructions, SAPT's SuperNI benchmark).

Layout (SAPT): ``<data_dir>/<task>/{train,test}.json`` (or ``<data_dir>/<group>/<task>/...``, e.g.
``SuperNI/<task>``), each a natural-instructions task file whose ``Instances`` hold that split::

    {"Definition": ["Generate ..."], "Positive Examples": [...],
     "Instances": [{"id": "task1572-1", "input": "...", "output": ["ref 1", "ref 2"]}, ...]}

``Definition`` is a list (its first entry is used, as SAPT does) or a string; ``output`` is a list
of references or, in three of SAPT's files, a plain string. A task has no labels.json: its label
set is derived from its references when they take few distinct values (see :data:`MAX_LABEL_SET`).

References:
    - training uses one reference per instance: by default a seeded draw (``train_reference="random"``,
      seeded by the data seed and the instance id, so it does not depend on sampling or order), or
      the first (``"first"``);
    - scoring takes the best over all references (natural-instructions' convention,
      ``score_references="all"``), or only the training reference (``"train_reference"``): SAPT's
      protocol, which draws one reference and scores against it alone. Our draw is seeded but is
      not SAPT's own draw (Python's ``random`` at load time under seed 42);
    - empty strings are not references. An instance left with none (6 of reddit_tifu's training
      instances) is dropped and counted (``on_empty_reference="drop"``), or kept with the empty
      answer as its target and reference (``"keep"``, as SAPT does).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Sequence

from nlora_lightning.errors import ConfigurationError, DataError

__all__ = [
    "MAX_LABEL_SET",
    "NaturalInstructionsConfig",
    "derive_label_set",
    "draw_reference",
    "find_ni_task_dir",
    "is_natural_instructions_dir",
    "load_natural_instructions_task",
    "read_task_file",
]

log = logging.getLogger(__name__)

# A task whose references take at most this many distinct values, each used by two instances on
# average, has a label set (SuperNI: sst2, sentiment140, emotion, commonsenseqa's letters).
MAX_LABEL_SET = 16


@dataclass
class NaturalInstructionsConfig:
    """How natural-instructions references are used (see the module docstring).

    Args:
        train_reference: ``"random"`` (seeded per instance) or ``"first"``.
        score_references: ``"all"`` (best over every reference) or ``"train_reference"`` (SAPT).
        on_empty_reference: ``"drop"`` instances without a non-empty reference, or ``"keep"`` them.

    Raises:
        ConfigurationError: For a value outside those listed.
    """

    train_reference: Literal["random", "first"] = "random"
    score_references: Literal["all", "train_reference"] = "all"
    on_empty_reference: Literal["drop", "keep"] = "drop"

    def __post_init__(self) -> None:
        for name, allowed in (("train_reference", ("random", "first")), ("score_references", ("all", "train_reference")),
                              ("on_empty_reference", ("drop", "keep"))):
            if getattr(self, name) not in allowed:
                raise ConfigurationError(f"data.natural_instructions.{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")


def is_natural_instructions_dir(task_dir: Path) -> bool:
    """A task folder without labels.json is read as natural-instructions (CL_Benchmark tasks have one)."""
    return not (task_dir / "labels.json").is_file()


def find_ni_task_dir(data_dir: Path, name: str) -> Optional[Path]:
    """``data_dir/<name>`` when it holds a train.json, else None (then ``<group>/<name>`` is looked for)."""
    direct = data_dir / name
    return direct if (direct / "train.json").is_file() and is_natural_instructions_dir(direct) else None


def draw_reference(references: Sequence[str], instance_id: str, seed: int, how: str) -> str:
    """The training reference of one instance: the first, or a draw seeded by (seed, instance id).

    Example:
        >>> draw_reference(["a", "b", "c"], "task1-7", seed=42, how="first")
        'a'
    """
    if how == "first" or len(references) == 1:
        return references[0]
    return random.Random(f"{seed}:{instance_id}").choice(list(references))


def _definition(path: Path, raw: dict) -> str:
    if "Definition" not in raw:
        raise DataError(f"{path} is not a natural-instructions task file: it has no 'Definition' (keys: {sorted(raw)})")
    definition = raw["Definition"]
    if isinstance(definition, list) and definition:
        definition = definition[0]
    if not isinstance(definition, str) or not definition.strip():
        raise DataError(f"{path}: 'Definition' must be a non-empty string or a list whose first entry is one")
    return definition


def read_task_file(path: Path) -> tuple[str, list[dict]]:
    """The definition and the instances ``{"id", "input", "references"}`` of one task file.

    References lose surrounding whitespace (samsum's have a leading space, which after SAPT's
    "Output: " would train a double space); empty ones are removed (``references`` may end empty).

    Raises:
        FileNotFoundError: The file is missing.
        DataError: Not a JSON object, no ``Definition`` or ``Instances``, an instance without
            ``input`` or ``output`` (named by its id), or a field of the wrong type.
    """
    from nlora_lightning.data.benchmark import _read_json

    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path} must hold a natural-instructions task object (Definition, Instances), got a JSON {type(raw).__name__}")
    definition = _definition(path, raw)
    if "Instances" not in raw:
        raise DataError(f"{path} is not a natural-instructions task file: it has no 'Instances' (keys: {sorted(raw)})")
    if not isinstance(raw["Instances"], list) or not raw["Instances"]:
        raise DataError(f"{path}: 'Instances' must be a non-empty list")
    instances = []
    for index, instance in enumerate(raw["Instances"]):
        if not isinstance(instance, dict):
            raise DataError(f"{path}: instance {index} is a {type(instance).__name__}, not an object")
        instance_id = str(instance.get("id", f"#{index}"))
        for key in ("input", "output"):
            if key not in instance:
                raise DataError(f"{path}: instance {instance_id!r} (position {index}) has no {key!r} field (fields: {sorted(instance)})")
        output = instance["output"]
        references = [output] if isinstance(output, str) else output
        if not isinstance(instance["input"], str):
            raise DataError(f"{path}: instance {instance_id!r}: 'input' must be a string")
        if not isinstance(references, list) or not all(isinstance(r, str) for r in references):
            raise DataError(f"{path}: instance {instance_id!r}: 'output' must be a string or a list of strings")
        instances.append({"id": instance_id, "input": instance["input"], "references": [r.strip() for r in references if r.strip()]})
    return definition, instances


def derive_label_set(references_per_instance: Sequence[Sequence[str]]) -> list[str]:
    """The task's labels when every instance has one reference and they take few values, else ``[]``.

    Example:
        >>> derive_label_set([["POS"], ["NEG"], ["POS"], ["NEG"]])
        ['NEG', 'POS']
        >>> derive_label_set([["a summary"], ["another"]])
        []
    """
    if not references_per_instance or any(len(r) != 1 for r in references_per_instance):
        return []
    values = sorted({r[0] for r in references_per_instance})
    if len(values) > MAX_LABEL_SET or 2 * len(values) > len(references_per_instance):
        return []
    return values


def load_natural_instructions_task(
    task_dir: Path, name: str, config: NaturalInstructionsConfig, seed: int, splits: Sequence[str] = ("train", "test")
):
    """Read and validate one task folder into a :class:`~nlora_lightning.data.benchmark.TaskData`.

    Records are ``{"label": training reference, "sentence": input, "references": [...], "instance_id"}``.
    ``TaskData.reference_counts`` holds, per split, the instances dropped (or kept) without a
    reference and those with several references.

    Raises:
        DataError: See :func:`read_task_file`; a split left empty after dropping instances.
    """
    from nlora_lightning.data.benchmark import TaskData

    definition, records, counts, originals = None, {}, {}, []
    for split in splits:
        path = task_dir / f"{split}.json"
        split_definition, instances = read_task_file(path)
        definition = definition or split_definition
        empty = [i["id"] for i in instances if not i["references"]]
        if empty:
            action = "dropped" if config.on_empty_reference == "drop" else "kept with the empty answer as target and reference"
            log.warning("%s: %d instance(s) without a non-empty reference %s (e.g. %s)", path, len(empty), action, empty[:3])
        kept = []
        originals += [i["references"] for i in instances if i["references"]]
        for instance in instances:
            references = instance["references"]
            if not references:
                if config.on_empty_reference == "drop":
                    continue
                references = [""]
            target = draw_reference(references, instance["id"], seed, config.train_reference)
            scored = [target] if config.score_references == "train_reference" else references
            kept.append({"label": target, "sentence": instance["input"], "references": scored, "instance_id": instance["id"]})
        if not kept:
            raise DataError(f"{path}: no instance is left after dropping those without a reference")
        records[split] = kept
        counts[split] = {"instances": len(instances), "without_reference": len(empty),
                         "several_references": sum(len(i["references"]) > 1 for i in instances)}
    labels = derive_label_set(originals)
    return TaskData(name=name, group=task_dir.parent.name, labels=labels, instruction=definition, records=records,
                    format="natural_instructions", reference_counts=counts)
