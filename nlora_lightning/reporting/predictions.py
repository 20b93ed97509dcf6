"""The per-sample predictions of a run: one file, ``predictions.jsonl``, in the run directory.

One JSON object per line and evaluated test sample::

    {"stage": 2, "task": "sst2", "sample_id": 17, "prediction": "positive", "label": "negative", "score": 0.0}

``stage`` is the index (0-based) of the training stage after which the sample was evaluated, or
``null`` for the zero-shot baseline before any training; ``task`` the task's name (sequence tasks
and held-out tasks); ``sample_id`` the sample's position in the task's test file (after records
dropped by ``data.on_unknown_label="drop"``), so two runs with the same data seed and sizes
evaluate the same ids and can be paired sample by sample; ``prediction`` the generated text
(``generate``) or the label ranked first (``rank``); ``score`` the sample's score (1.0 or 0.0 for
exact match). Lines are ordered by stage (zero-shot first), then task column, then sample id.

The file is rewritten whole and atomically at each stage end (:func:`replace_stage`); a resumed
run first keeps exactly the lines of the stages its checkpoint had finished (:func:`keep_stages`).

Runs written before this layout hold one file per evaluation,
``predictions/stage{i}_task{j}.jsonl`` (``zeroshot_task{j}.jsonl``). :func:`read_predictions` still
reads them (for one release); ``python -m nlora_lightning.reporting.predictions RUN_DIR...``
converts them into ``predictions.jsonl`` and deletes the old files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from nlora_lightning.io import write_text_atomic

__all__ = [
    "LEGACY_PREDICTIONS_DIR",
    "PREDICTIONS_FILE",
    "aligned_scores",
    "convert_legacy_predictions",
    "keep_stages",
    "prediction_record",
    "read_predictions",
    "replace_stage",
    "sample_score",
    "scores_by_id",
    "write_predictions",
]

PREDICTIONS_FILE = "predictions.jsonl"
LEGACY_PREDICTIONS_DIR = "predictions"
FIELDS = ("stage", "task", "sample_id", "prediction", "label", "score")


def sample_score(sample: Any) -> float:
    """The score of one evaluated sample: its own ``score`` when the evaluation gives one, else 1.0/0.0 from ``correct``.

    The one place where exact-match correctness becomes a score.
    """
    score = getattr(sample, "score", None)
    return float(sample.correct) if score is None else float(score)


def prediction_record(stage: Optional[int], task: str, sample: Any) -> dict[str, Any]:
    """The line of ``predictions.jsonl`` for ``sample`` (a :class:`~nlora_lightning.evaluation.SamplePrediction`)."""
    return {"stage": stage, "task": task, "sample_id": sample.sample_id, "prediction": sample.prediction,
            "label": sample.label, "score": sample_score(sample)}


def _stage_key(record: dict[str, Any]) -> int:
    return -1 if record["stage"] is None else int(record["stage"])


def write_predictions(run_dir: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write ``records`` as the run's ``predictions.jsonl``, atomically; returns its path.

    The records are ordered by stage (a stable sort: the order within a stage is kept).
    """
    rows = sorted(records, key=_stage_key)
    path = Path(run_dir) / PREDICTIONS_FILE
    write_text_atomic(path, "".join(json.dumps({k: r[k] for k in FIELDS}, ensure_ascii=False) + "\n" for r in rows))
    return path


def _read_lines(path: Path, required: Sequence[str]) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(record, dict) or any(key not in record for key in required):
            raise ValueError(f"{path}:{number}: expected an object with {', '.join(repr(k) for k in required)}")
        records.append(record)
    return records


def _legacy_task_names(run_dir: Path) -> list[str]:
    """Task columns of an old run: ``cl_metrics.json``'s tasks, then ``run_info.json``'s held-out tasks."""
    names: list[str] = []
    for file, key in (("cl_metrics.json", "tasks"), ("run_info.json", "held_out_tasks")):
        path = run_dir / file
        if path.is_file():
            names += list(json.loads(path.read_text(encoding="utf-8")).get(key) or [])
    return names


def _read_legacy(run_dir: Path) -> list[dict[str, Any]]:
    """The old per-evaluation files of ``run_dir`` as ``predictions.jsonl`` records (score from ``correct``)."""
    folder = run_dir / LEGACY_PREDICTIONS_DIR
    names = _legacy_task_names(run_dir)
    records = []
    for path in folder.glob("*_task*.jsonl"):
        prefix, _, task = path.stem.partition("_task")
        if not task.isdigit() or not (prefix == "zeroshot" or (prefix.startswith("stage") and prefix[5:].isdigit())):
            raise ValueError(f"{path}: not a predictions file name (expected stage<i>_task<j>.jsonl or zeroshot_task<j>.jsonl)")
        column = int(task)
        if column >= len(names):
            raise ValueError(f"{path}: task column {column}, but {run_dir} names only {len(names)} tasks "
                             "(cl_metrics.json 'tasks' and run_info.json 'held_out_tasks')")
        stage = None if prefix == "zeroshot" else int(prefix[5:])
        for record in _read_lines(path, ("sample_id", "correct")):
            records.append({"stage": stage, "task": names[column], "sample_id": record["sample_id"],
                            "prediction": record.get("prediction"), "label": record.get("label"),
                            "score": float(bool(record["correct"])), "_column": column})
    records.sort(key=lambda r: (_stage_key(r), r["_column"], r["sample_id"] is None, r["sample_id"]))
    for record in records:
        del record["_column"]
    return records


def read_predictions(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every record of the run in ``run_dir``, in file order; ``[]`` when it wrote none.

    Reads ``predictions.jsonl``, or, for a run written before that layout, its ``predictions/``
    folder (see the module docstring).

    Raises:
        ValueError: A line is not a JSON object with the fields above (the message names file and line).
    """
    directory = Path(run_dir)
    path = directory / PREDICTIONS_FILE
    if path.is_file():
        return _read_lines(path, FIELDS)
    if (directory / LEGACY_PREDICTIONS_DIR).is_dir():
        return _read_legacy(directory)
    return []


def replace_stage(run_dir: str | Path, stage: Optional[int], records: Sequence[dict[str, Any]]) -> None:
    """Replace the lines of ``stage`` (``None``: zero-shot) by ``records``; every other stage's lines stay.

    Nothing is written when there is neither a record nor a file (a module that returns no predictions).
    """
    if not records and not (Path(run_dir) / PREDICTIONS_FILE).is_file():
        return
    kept = [r for r in read_predictions(run_dir) if r["stage"] != stage]
    write_predictions(run_dir, kept + list(records))


def keep_stages(run_dir: str | Path, stages: Iterable[Optional[int]]) -> None:
    """Keep only the lines of ``stages`` (a resumed run's finished evaluations); no file is created if there is none."""
    directory = Path(run_dir)
    if not (directory / PREDICTIONS_FILE).is_file():
        return
    wanted = set(stages)
    records = read_predictions(directory)
    kept = [r for r in records if r["stage"] in wanted]
    if len(kept) != len(records):
        write_predictions(directory, kept)


def scores_by_id(records: Iterable[dict[str, Any]], stage: Optional[int], task: str) -> dict[Any, float]:
    """``{sample_id: score}`` of ``task`` evaluated after ``stage``; empty when it was not evaluated then."""
    return {r["sample_id"]: float(r["score"]) for r in records if r["stage"] == stage and r["task"] == task}


def aligned_scores(evaluations: Sequence[dict[Any, float]]) -> Optional[torch.Tensor]:
    """A ``(len(evaluations), n)`` float64 tensor of scores, columns ordered by sample id.

    ``None`` when an evaluation is empty or they do not hold the same sample ids (then they cannot
    be paired).
    """
    if not evaluations or any(not e for e in evaluations):
        return None
    ids = sorted(evaluations[0], key=lambda i: (i is None, i))
    if any(set(e) != set(ids) for e in evaluations[1:]):
        return None
    return torch.tensor([[e[i] for i in ids] for e in evaluations], dtype=torch.float64)


def convert_legacy_predictions(run_dir: str | Path) -> Path:
    """Write ``predictions.jsonl`` from an old run's ``predictions/`` folder, check it, then delete the folder.

    The new file is read back and must hold, for every old file, the same samples with the same
    prediction, label and score before anything is deleted.

    Raises:
        FileNotFoundError: ``run_dir`` has no ``predictions/`` folder.
        FileExistsError: ``run_dir`` already holds ``predictions.jsonl``.
        ValueError: An old file is malformed, or the file read back differs.
    """
    directory = Path(run_dir)
    folder = directory / LEGACY_PREDICTIONS_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{directory} has no {LEGACY_PREDICTIONS_DIR}/ folder to convert")
    if (directory / PREDICTIONS_FILE).exists():
        raise FileExistsError(f"{directory / PREDICTIONS_FILE} exists already; remove it to convert {folder} again")
    records = _read_legacy(directory)
    path = write_predictions(directory, records)
    if _read_lines(path, FIELDS) != records:
        path.unlink()
        raise ValueError(f"{path} does not read back as the records of {folder}; nothing was deleted")
    shutil.rmtree(folder)
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Convert old runs' ``predictions/`` folders into one ``predictions.jsonl`` each."""
    parser = argparse.ArgumentParser(prog="python -m nlora_lightning.reporting.predictions", description=main.__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories holding a predictions/ folder")
    args = parser.parse_args(argv)
    failed = 0
    for directory in args.run_dirs:
        try:
            print(convert_legacy_predictions(directory))
        except (OSError, ValueError) as error:
            print(f"{directory}: {error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
