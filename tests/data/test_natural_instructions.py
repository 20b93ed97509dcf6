import json
import logging
from pathlib import Path

import pytest

from nlora_lightning.data.benchmark import PRESETS, load_tasks
from nlora_lightning.data.natural_instructions import (
    NaturalInstructionsConfig,
    derive_label_set,
    draw_reference,
    load_natural_instructions_task,
    read_task_file,
)
from nlora_lightning.data.task_metrics import resolve_task_metrics
from nlora_lightning.data.templates import build_natural_instructions_prompt
from nlora_lightning.errors import ConfigurationError, DataError

SUMMARY, SENTIMENT = "task100_tiny_summary", "task200_tiny_sentiment"


def test_reads_both_output_forms_and_derives_labels_only_for_the_classification_task(superni_dir, caplog):
    with caplog.at_level(logging.WARNING):
        summary, sentiment = load_tasks(superni_dir, [SUMMARY, SENTIMENT])
    assert (summary.format, sentiment.format) == ("natural_instructions", "natural_instructions")
    assert summary.instruction == "Summarize the text in a few words." and summary.labels == []
    assert sentiment.labels == ["NEG", "POS"]  # plain-string outputs, two values
    first = sentiment.records["test"][0]
    assert first["references"] == [first["label"]] and first["instance_id"] == "task200-test-0"
    # the instance whose only reference is empty is dropped from train and counted
    assert len(summary.records["train"]) == 7 and summary.reference_counts["train"] == {
        "instances": 8, "without_reference": 1, "several_references": 1}
    assert "1 instance(s) without a non-empty reference dropped" in caplog.text
    assert summary.records["train"][1]["references"] == ["river and green", "a second reference"]  # stripped


def test_several_references_train_on_one_seeded_draw_and_score_against_all(superni_dir):
    task = load_natural_instructions_task(superni_dir / SUMMARY, SUMMARY, NaturalInstructionsConfig(), seed=3)
    record = next(r for r in task.records["train"] if len(r["references"]) == 2)
    assert record["label"] in record["references"]
    assert record["label"] == draw_reference(record["references"], record["instance_id"], 3, "random")
    draws = {draw_reference(["a", "b", "c", "d"], "id-1", seed, "random") for seed in range(20)}
    assert len(draws) > 1  # the seed changes the draw
    assert draw_reference(["a", "b"], "x", 0, "first") == "a"
    sapt = load_natural_instructions_task(superni_dir / SUMMARY, SUMMARY,
                                          NaturalInstructionsConfig(train_reference="first", score_references="train_reference"), seed=3)
    record = sapt.records["train"][1]
    assert record["references"] == [record["label"]] == ["river and green"]


def test_empty_references_kept_on_request(superni_dir):
    task = load_natural_instructions_task(superni_dir / SUMMARY, SUMMARY, NaturalInstructionsConfig(on_empty_reference="keep"), seed=0)
    assert len(task.records["train"]) == 8 and task.records["train"][2]["references"] == [""]


def test_label_set_rule():
    assert derive_label_set([["A"], ["B"], ["A"], ["C"], ["E"], ["D"], ["B"], ["A"], ["C"], ["E"]]) == ["A", "B", "C", "D", "E"]
    assert derive_label_set([["x"], ["y"], ["z"]]) == []  # each value once: free text
    assert derive_label_set([["A"], ["A", "B"]]) == []  # several references: free text


def test_sapt_prompt_and_presets():
    prompt, span = build_natural_instructions_prompt("Do it.", "the input")
    assert prompt == "Definition: Do it.\n\nNow complete the following example -\nInput: the input\nOutput: "
    assert prompt[span[0]:span[1]] == "the input"
    order1, order2 = PRESETS["superni_order1"], PRESETS["superni_order2"]
    assert len(order1) == 15 and sorted(order1) == sorted(order2)
    assert order1[:2] == ["task1572_samsum_summary", "task363_sst2_polarity_classification"]
    assert order2[:2] == ["task748_glucose_reverse_cause_event_detection", "task073_commonsenseqa_answer_generation"]
    assert order1[-1] == order2[-1] == "task875_emotion_classification"


def test_metrics_default_to_rouge_l_and_accuracy_needs_a_label_set(superni_dir):
    tasks = load_tasks(superni_dir, [SUMMARY, SENTIMENT])
    assert resolve_task_metrics(tasks) == ["rougeL", "rougeL"]
    assert resolve_task_metrics(tasks, task_metrics={SENTIMENT: "accuracy"}) == ["rougeL", "accuracy"]
    with pytest.raises(ConfigurationError, match=rf"data.metric: metric 'accuracy' cannot apply to task '{SUMMARY}': its references are free text"):
        resolve_task_metrics(tasks, "accuracy")
    with pytest.raises(ConfigurationError, match=r"data.task_metrics names task 'nope'"):
        resolve_task_metrics(tasks, task_metrics={"nope": "rougeL"})


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return path


@pytest.mark.parametrize("content,message", [
    ({"Instances": [{"id": "a", "input": "x", "output": ["y"]}]}, r"no 'Definition'"),
    ({"Definition": ["Do."]}, r"no 'Instances'"),
    ({"Definition": ["Do."], "Instances": [{"id": "t-7", "output": ["y"]}]}, r"instance 't-7' \(position 0\) has no 'input' field"),
    ({"Definition": ["Do."], "Instances": [{"id": "t-8", "input": "x"}]}, r"instance 't-8' \(position 0\) has no 'output' field"),
    ({"Definition": ["Do."], "Instances": [{"id": "t-9", "input": "x", "output": 3}]}, r"instance 't-9': 'output' must be a string or a list"),
    ({"Definition": [], "Instances": [{"id": "a", "input": "x", "output": "y"}]}, r"'Definition' must be a non-empty string"),
    ([1, 2], r"must hold a natural-instructions task object"),
])
def test_bad_task_files_name_the_file_and_instance(tmp_path, content, message):
    path = write(tmp_path / "task1" / "train.json", content)
    with pytest.raises(DataError, match=message) as error:
        read_task_file(path)
    assert str(path) in str(error.value)


def test_preset_task_missing_from_the_data_dir_is_named(superni_dir):
    with pytest.raises(FileNotFoundError, match=r"task 'task1572_samsum_summary' not found in .*tasks there: \['task100_tiny_summary'"):
        load_tasks(superni_dir, PRESETS["superni_order1"])


def test_bad_reference_options_are_named():
    with pytest.raises(ConfigurationError, match=r"data.natural_instructions.train_reference must be one of \['random', 'first'\]"):
        NaturalInstructionsConfig(train_reference="last")


def test_a_folder_holding_both_layouts_serves_superni_tasks_and_cl_benchmark_held_out_tasks(superni_dir):
    root = superni_dir.parent
    cl = root / "CL_Benchmark" / "COPA" / "COPA"
    cl.mkdir(parents=True)
    records = [{"label": "A" if i % 2 else "B", "sentence": f"Question {i}? A or B"} for i in range(4)]
    for split in ("train", "test"):
        (cl / f"{split}.json").write_text(json.dumps(records))
    (cl / "labels.json").write_text(json.dumps(["A", "B"]))
    instructions = root / "CL_Benchmark" / "_meta" / "instruction_config.json"
    write(instructions, {"SC": ["Pick.\n"]})
    summary, copa = load_tasks(root, [SUMMARY, "COPA"], instruction_config=instructions)
    assert summary.format == "natural_instructions" and (copa.format, copa.group, copa.labels) == ("cl_benchmark", "COPA", ["A", "B"])
    assert resolve_task_metrics([summary, copa]) == ["rougeL", "exact_match"]
