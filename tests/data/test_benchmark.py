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
