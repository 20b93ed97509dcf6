"""``nlora validate|test|predict``: a checkpoint's continual model on every task, or on given inputs.

``test`` and ``validate`` load the checkpoint (the sum of every adapter it holds, the unfinished
task's included: the model the run would evaluate at that point), score every task of the sequence
and every held-out task on its evaluation split, print one line per task and write the scores to
``RUN/evaluations/<command>-<checkpoint>.json``, a new file: nothing the run wrote is touched.
``predict`` answers the sentences of a JSONL file (``{"sentence": ..., "task": ..., "label": ...}``,
``task`` optional with ``--task``, ``label`` optional) or, without a file, a task's
evaluation split, and writes one JSON line per input.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from nlora_lightning.errors import ConfigurationError, DataError
from nlora_lightning.io import atomic_open, write_json_atomic
from nlora_lightning.run_layout import EVALUATIONS_DIR, run_dir_of_checkpoint

__all__ = ["TaskScores", "evaluation_path", "format_scores", "read_inputs", "scores_payload"]


@dataclass
class TaskScores(Callback):
    """Collects the evaluation steps' outputs (``{"task", "correct", "total", "predictions"}``) per task."""

    correct: dict[int, int] = field(default_factory=dict)
    total: dict[int, int] = field(default_factory=dict)
    predictions: dict[int, list[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def _collect(self, outputs: Any) -> None:
        if not outputs:
            return
        task = int(outputs["task"])
        self.correct[task] = self.correct.get(task, 0) + int(outputs["correct"])
        self.total[task] = self.total.get(task, 0) + int(outputs["total"])
        self.predictions.setdefault(task, []).extend(outputs.get("predictions") or [])

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs)


def evaluation_path(checkpoint: Path, command: str, suffix: str = ".json") -> Path:
    """``RUN/evaluations/<command>-<checkpoint stem><suffix>`` beside the run the checkpoint belongs to."""
    return run_dir_of_checkpoint(checkpoint) / EVALUATIONS_DIR / f"{command}-{Path(checkpoint).stem}{suffix}"


def scores_payload(scores: TaskScores, task_names: list[str], held_out: list[str], checkpoint: Path,
                   command: str) -> dict[str, Any]:
    """Per-task accuracy (a fraction), correct and total counts, and the mean over the sequence's tasks."""
    names = [*task_names, *held_out]

    def entry(index: int) -> dict[str, Any]:
        total = scores.total.get(index, 0)
        return {"accuracy": scores.correct.get(index, 0) / total if total else None,
                "correct": scores.correct.get(index, 0), "total": total}

    tasks = {name: entry(i) for i, name in enumerate(task_names)}
    accuracies = [t["accuracy"] for t in tasks.values() if t["accuracy"] is not None]
    return {
        "command": command, "checkpoint": str(Path(checkpoint).resolve()),
        "tasks": tasks,
        "held_out": {name: entry(len(task_names) + k) for k, name in enumerate(held_out)},
        "mean_accuracy": sum(accuracies) / len(accuracies) if accuracies else None,
        "columns": names,
    }


def format_scores(payload: dict[str, Any]) -> str:
    """One line per task (``task  accuracy %  (correct/total)``), held-out tasks marked, then the mean."""
    def line(name: str, entry: dict[str, Any], mark: str = "") -> str:
        acc = entry["accuracy"]
        shown = "n/a" if acc is None or math.isnan(acc) else f"{100 * acc:6.2f}"
        return f"  {name}{mark}: {shown} % ({entry['correct']}/{entry['total']})"

    lines = [f"nlora {payload['command']}: accuracy of {payload['checkpoint']}"]
    lines += [line(n, e) for n, e in payload["tasks"].items()]
    lines += [line(n, e, " (held out)") for n, e in payload["held_out"].items()]
    mean = payload["mean_accuracy"]
    lines.append(f"  mean over the sequence: {'n/a' if mean is None else f'{100 * mean:.2f}'} %")
    return "\n".join(lines)


def write_scores(payload: dict[str, Any], path: Path) -> None:
    write_json_atomic(path, payload)


def read_inputs(path: Path, default_task: Optional[str], known_tasks: list[str]) -> list[dict[str, Any]]:
    """The lines of a predict input file as ``{"task", "sentence", "label"}`` (label None when absent).

    Raises:
        DataError: A line that is not a JSON object with a string ``sentence``, or names no task
            (and no ``--task``), or a task outside the run's sequence and held-out tasks.
    """
    if not path.is_file():
        raise FileNotFoundError(f"--input {str(path)!r} does not exist")
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not a JSON line ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("sentence"), str):
                raise DataError(f"{path}:{number}: each line must be a JSON object with a string 'sentence'")
            task = record.get("task", default_task)
            if task is None:
                raise DataError(f"{path}:{number}: the line names no 'task' and no --task was given")
            if task not in known_tasks:
                raise DataError(f"{path}:{number}: task {task!r} is not one of the run's tasks {known_tasks}")
            label = record.get("label")
            rows.append({"task": task, "sentence": record["sentence"], "label": label if isinstance(label, str) else None})
    if not rows:
        raise DataError(f"{path} holds no input line")
    return rows


def write_prediction_lines(path: Path, lines: list[dict[str, Any]]) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _without_fit_callbacks_warning() -> Iterator[None]:
    """Lightning asks for the fit's callbacks when a checkpoint is loaded; evaluation leaves them out on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*callbacks used to create the checkpoint need to be provided.*")
        yield


def check_single_device(trainer: pl.Trainer, command: str) -> None:
    if trainer.world_size > 1:
        raise ConfigurationError(
            f"nlora {command} runs on one device; got {trainer.world_size} processes "
            "(pass --trainer.devices 1 --trainer.strategy auto)"
        )


def echo(text: str) -> None:
    print(text, file=sys.stdout, flush=True)


def run_evaluation(cli: Any, command: str, checkpoint: Path) -> dict[str, Any]:
    """``nlora test|validate``: score every task with the checkpoint's model; print and write the scores."""
    trainer, datamodule = cli.trainer, cli.datamodule
    check_single_device(trainer, command)
    scores = TaskScores()
    trainer.callbacks.append(scores)
    with _without_fit_callbacks_warning():
        getattr(trainer, command)(cli.model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    payload = scores_payload(scores, list(datamodule.task_names), list(datamodule.held_out_tasks or []), checkpoint, command)
    path = evaluation_path(checkpoint, command)
    write_scores(payload, path)
    echo(format_scores(payload))
    echo(f"written to {path}")
    return payload


def run_predict(cli: Any, checkpoint: Path, input_path: Optional[str], task: Optional[str],
                out: Optional[str]) -> Path:
    """``nlora predict``: one JSON line per input (``task``, ``sentence``, ``prediction``, ``label``, ``correct``)."""
    trainer, datamodule = cli.trainer, cli.datamodule
    check_single_device(trainer, "predict")
    names = list(datamodule.all_task_names)
    if input_path is None and task is None:
        raise ConfigurationError("nlora predict needs --input FILE.jsonl, or --task NAME to answer that task's test split")
    if task is not None and task not in names:
        raise ConfigurationError(f"--task {task!r} is not one of the run's tasks {names}")
    tasks = datamodule.load_tasks()
    if input_path is not None:
        rows = read_inputs(Path(input_path), task, names)
        wanted = {names.index(r["task"]) for r in rows}
        for index in wanted:  # the inputs take the place of the evaluation split of their task
            tasks[index].records["test"] = [{"label": r["label"] or "", "sentence": r["sentence"]}
                                            for r in rows if r["task"] == names[index]]
        datamodule.max_eval_samples = None  # every input gets an answer
        default_out = Path(input_path).with_suffix(".predictions.jsonl")
    else:
        wanted = {names.index(task)}
        default_out = evaluation_path(checkpoint, f"predict-{task}", ".jsonl")
    # Only the asked tasks are evaluated (an instance attribute shadows the schedule's method).
    datamodule.scheduled_eval_tasks = lambda: wanted
    scores = TaskScores()
    trainer.callbacks.append(scores)
    with _without_fit_callbacks_warning():
        trainer.validate(cli.model, datamodule=datamodule, ckpt_path=str(checkpoint), verbose=False)
    lines = []
    for index in sorted(wanted):
        records = tasks[index].records["test"]
        for p in sorted(scores.predictions.get(index, []), key=lambda p: p.sample_id):
            label = p.label or None
            lines.append({"task": names[index], "sample_id": p.sample_id, "sentence": records[p.sample_id]["sentence"],
                          "prediction": p.prediction, "label": label, "correct": p.correct if label is not None else None})
    path = Path(out) if out else default_out
    write_prediction_lines(path, lines)
    echo(f"nlora predict: {len(lines)} answer(s) written to {path}")
    return path
