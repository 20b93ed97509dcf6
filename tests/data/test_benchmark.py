import json
from pathlib import Path

import pytest

from nlora_lightning.data.benchmark import PRESETS, load_instructions, load_task, resolve_task_names
from nlora_lightning.errors import ConfigurationError, DataError


def write_task(root: Path, group="SC", task="mini", labels=("good", "bad"), train=None, test=None):
    folder = root / group / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.json").write_text(json.dumps(list(labels)))
    records = [{"label": labels[i % len(labels)], "sentence": f"s{i}"} for i in range(6)]
    (folder / "train.json").write_text(json.dumps(train if train is not None else records))
    (folder / "test.json").write_text(json.dumps(test if test is not None else records[:3]))
    meta = root / "_meta"
    meta.mkdir(exist_ok=True)
    (meta / "instruction_config.json").write_text(json.dumps({group: [{"instruction_type": "zero-shot", "instruction": "Pick.\n"}]}))
    return folder


def test_loads_cl_benchmark_layout_from_temp_dir(tmp_path):
    write_task(tmp_path)
    task = load_task(tmp_path, "mini")
    assert (task.group, task.labels, task.instruction) == ("SC", ["good", "bad"], "Pick.\n")
    assert len(task.records["train"]) == 6 and task.records["test"][0] == {"label": "good", "sentence": "s0"}


def test_presets_follow_the_reference_orders():
    assert PRESETS["standard_order1"] == ["dbpedia", "amazon", "yahoo", "agnews"]
    assert PRESETS["long_order4"][:4] == ["MNLI", "CB", "WiC", "COPA"] and len(PRESETS["long_order6"]) == 15
    assert all(sorted(PRESETS[f"long_order{i}"]) == sorted(PRESETS["long_order4"]) for i in (5, 6))


def test_resolve_task_names_errors():
    with pytest.raises(ConfigurationError, match="unknown preset 'order9'"):
        resolve_task_names(None, "order9")
    with pytest.raises(ConfigurationError, match=r"duplicate task\(s\) \['a'\]"):
        resolve_task_names(["a", "b", "a"], None)
    with pytest.raises(ConfigurationError, match="exactly one"):
        resolve_task_names(["a"], "standard_order1")


def test_unknown_label_policies(tmp_path):
    write_task(tmp_path, test=[{"label": "good", "sentence": "x"}, {"label": "-", "sentence": "y"}])
    with pytest.raises(DataError, match=r"label '-'.*not in labels.json"):
        load_task(tmp_path, "mini")
    assert len(load_task(tmp_path, "mini", on_unknown_label="drop").records["test"]) == 1
    assert len(load_task(tmp_path, "mini", on_unknown_label="keep").records["test"]) == 2


def test_instructions_read_from_meta(tmp_path):
    write_task(tmp_path)
    assert load_instructions(tmp_path) == {"SC": "Pick.\n"}


def test_task_names_with_glob_characters_are_found(tmp_path):
    write_task(tmp_path, task="rev[1]")
    write_task(tmp_path, task="rev1")  # what the unescaped pattern rev[1] would match instead
    assert load_task(tmp_path, "rev[1]").name == "rev[1]"


def test_empty_file_says_so(tmp_path):
    folder = write_task(tmp_path)
    (folder / "train.json").write_text("")
    with pytest.raises(DataError, match=r"train.json is empty \(0 bytes\): it must hold JSON"):
        load_task(tmp_path, "mini")


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    folder = write_task(tmp_path)
    (folder / "labels.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(["good", "bad"]).encode())
    assert load_task(tmp_path, "mini").labels == ["good", "bad"]


def test_duplicate_labels_are_refused_by_name(tmp_path):
    write_task(tmp_path, labels=("good", "bad", "good"))
    with pytest.raises(DataError, match=r"labels.json lists label\(s\) \['good'\] more than once"):
        load_task(tmp_path, "mini")


def test_olora_layout_needs_the_instruction_file_named(tmp_path):
    write_task(tmp_path / "data")
    (tmp_path / "data" / "_meta" / "instruction_config.json").rename(tmp_path / "instruction_config.json")
    with pytest.raises(FileNotFoundError) as caught:
        load_instructions(tmp_path / "data")
    message = str(caught.value)
    assert f"looked for {tmp_path / 'data' / '_meta' / 'instruction_config.json'} and" in message
    assert "mapping each task group to a list of instructions" in message and "--data.instruction_config PATH" in message
    assert load_instructions(tmp_path / "data", tmp_path / "instruction_config.json") == {"SC": "Pick.\n"}
    with pytest.raises(FileNotFoundError, match="data.instruction_config '/no/file.json' does not exist; it must be"):
        load_instructions(tmp_path / "data", "/no/file.json")


def test_instruction_file_may_list_plain_strings(tmp_path):
    write_task(tmp_path)
    (tmp_path / "mine.json").write_text(json.dumps({"SC": ["Choose.\n"]}))
    assert load_instructions(tmp_path, tmp_path / "mine.json") == {"SC": "Choose.\n"}
    (tmp_path / "bad.json").write_text(json.dumps({"SC": "Choose.\n"}))
    with pytest.raises(DataError, match="must be a JSON object mapping each task group to a list of instructions"):
        load_instructions(tmp_path, tmp_path / "bad.json")


def test_data_module_passes_the_instruction_file_on(tmp_path):
    from nlora_lightning import TaskSequenceDataModule

    write_task(tmp_path / "data")
    (tmp_path / "data" / "_meta" / "instruction_config.json").rename(tmp_path / "instructions.json")
    dm = TaskSequenceDataModule(tasks=["mini"], data_dir=str(tmp_path / "data"), instruction_config=str(tmp_path / "instructions.json"))
    assert dm.load_tasks()[0].instruction == "Pick.\n"
