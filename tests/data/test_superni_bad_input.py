"""Bad SuperNI input through ``nlora fit``: one error naming the file, instance id or option, and no run directory written.

Each case here builds the whole command (a few seconds); the reader's and the options' other
messages are checked directly in test_natural_instructions.py and test_superni_datamodule.py.
"""

import json
import re
from pathlib import Path

import pytest

from nlora_lightning.cli import main
from nlora_lightning.errors import ConfigurationError, DataError

REPO = Path(__file__).resolve().parents[2]
SUMMARY, SENTIMENT = "task100_tiny_summary", "task200_tiny_sentiment"


def fit_args(data: Path, run_root: Path) -> list[str]:
    return ["fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--data.data_dir", str(data),
            "--data.tasks", f"[{SUMMARY}, {SENTIMENT}]", "--data.max_new_tokens", "4", "--model.evaluation.mode", "generate",
            "--trainer.default_root_dir", str(run_root / "run"), "--trainer.logger.init_args.save_dir", str(run_root),
            "--trainer.logger.init_args.name", "run"]


def edit_train_file(data: Path, task: str, change) -> Path:
    path = data / task / "train.json"
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))
    return path


def drop_key(key):
    return lambda content: content.pop(key)


def drop_instance_key(key):  # the second instance: its id, not its position, names it
    return lambda content: content["Instances"][1].pop(key)


FILE_CASES = [
    ("task file without Definition", drop_key("Definition"), DataError, r"{path} is not a natural-instructions task file: it has no 'Definition'"),
    ("instance without output", drop_instance_key("output"), DataError, r"{path}: instance 'task100-train-1' \(position 1\) has no 'output' field"),
]


@pytest.mark.parametrize("case, change, error, message", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_bad_task_file_fails_before_the_run_directory_is_written(superni_dir, tmp_path, case, change, error, message):
    path = edit_train_file(superni_dir, SUMMARY, change)
    with pytest.raises(error) as caught:
        main(fit_args(superni_dir, tmp_path / "runs"))
    assert re.search(message.format(path=re.escape(str(path))), str(caught.value)), str(caught.value)
    assert not (tmp_path / "runs").exists()


OPTION_CASES = [
    ("preset task missing from the data dir", ["--data.tasks", "null", "--data.preset", "superni_order2"], FileNotFoundError,
     r"task 'task748_glucose_reverse_cause_event_detection' not found in .*SuperNI"),
    ("unknown metric for one task", ["--data.task_metrics", json.dumps({SENTIMENT: "f1"})], ConfigurationError,
     rf"data.task_metrics\['{SENTIMENT}'\]: unknown metric 'f1'"),
    ("accuracy on a free-text task", ["--data.metric", "accuracy"], ConfigurationError,
     rf"data.metric: metric 'accuracy' cannot apply to task '{SUMMARY}': its references are free text, with no label set"),
]


@pytest.mark.parametrize("case, extra, error, message", OPTION_CASES, ids=[c[0] for c in OPTION_CASES])
def test_bad_superni_option_fails_before_the_run_directory_is_written(superni_dir, tmp_path, case, extra, error, message, capsys):
    with pytest.raises((error, SystemExit)) as caught:
        main(fit_args(superni_dir, tmp_path / "runs") + extra)
    text = capsys.readouterr().err if isinstance(caught.value, SystemExit) else str(caught.value)
    assert re.search(message, text), text
    assert not (tmp_path / "runs").exists()


def test_accuracy_on_the_labelled_task_is_accepted(superni_dir):
    from nlora_lightning import TaskSequenceDataModule

    data = TaskSequenceDataModule(tasks=[SUMMARY, SENTIMENT], data_dir=str(superni_dir), task_metrics={SENTIMENT: "accuracy"})
    data.load_tasks()
    assert data.task_metric_names == ["rougeL", "accuracy"]
