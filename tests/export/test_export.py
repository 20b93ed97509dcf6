"""``nlora export``: a real tiny run's adapters load in PEFT and compute what the run computed."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError, RunDirectoryError, UnfinishedRunError
from nlora_lightning.export import ExportError, export_run, main

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["Review: a fine film. Sentiment:", "Topic of: the match ended 2-1"]

pytestmark = pytest.mark.slow  # every test here needs the tiny run below


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-task N-LoRA run of configs/tiny.yaml (reviews, topics)."""
    from nlora_lightning.cli import main as cli_main

    root = tmp_path_factory.mktemp("runs")
    cli_main([
        "fit", "--config", str(REPO / "configs" / "tiny.yaml"), "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(root / "tiny"),
        "--trainer.logger.init_args.save_dir", str(root), "--trainer.logger.init_args.name", "tiny",
    ])
    return root / "tiny"


@pytest.fixture(scope="module")
def checkpoint(tiny_run: Path) -> dict:
    return torch.load(tiny_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_run(tiny_run, tmp_path_factory.mktemp("exports") / "out", merge=True)


def fresh_base(checkpoint: dict):
    from nlora_lightning.models.loading import load_backbone

    hp = checkpoint["hyper_parameters"]
    backbone = load_backbone(None, random_init=hp["random_init"], tokenizer=hp["tokenizer"], seed=hp["seed"])
    return backbone.model.eval(), backbone.tokenizer


def input_ids(tokenizer) -> torch.Tensor:
    encoded = [tokenizer(t).input_ids for t in TEXTS]
    length = min(len(e) for e in encoded)
    return torch.tensor([e[:length] for e in encoded])


@torch.no_grad()
def logits_of(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids).logits


def peft_with_all_tasks(exported: Path, checkpoint: dict, folders: list[str]):
    from peft import PeftModel

    base, tokenizer = fresh_base(checkpoint)
    model = PeftModel.from_pretrained(base, exported / folders[0], adapter_name=folders[0])
    for folder in folders[1:]:
        model.load_adapter(exported / folder, adapter_name=folder)
    model.base_model.set_adapter(folders)
    return model.eval(), tokenizer


def write_run(tmp_path: Path, tiny_run: Path, checkpoint: dict, name: str = "run") -> Path:
    """A copy of the tiny run with ``checkpoint`` as its last.ckpt."""
    run = tmp_path / name
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_run / "config.yaml", run / "config.yaml")
    torch.save(checkpoint, run / "checkpoints" / "last.ckpt")
    return run


def test_layout_and_info(exported: Path, checkpoint: dict):
    info = json.loads((exported / "export_info.json").read_text())
    assert [t["folder"] for t in info["tasks"]] == ["task_0_reviews", "task_1_topics"]
    assert [t["from"] for t in info["tasks"]] == ["snapshot", "snapshot"]
    assert info["task_type"] == "CAUSAL_LM" and info["base_model"]["random_init"]["model_type"] == "llama"
    for task in info["tasks"]:
        config = json.loads((exported / task["folder"] / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16
        assert task["scaling"] == checkpoint["nlora"]["adapters"]["snapshots"][task["index"]]["scaling"] == 4.0
    assert (exported / "merged" / "model.safetensors").is_file()
    assert not list(exported.rglob("*.bin")) and not list(exported.rglob("*.pt"))


def test_each_task_adapter_loads_in_peft_with_the_checkpoint_factors(exported: Path, checkpoint: dict):
    from peft import PeftModel, get_peft_model_state_dict

    snapshots = checkpoint["nlora"]["adapters"]["snapshots"]
    for index, folder in enumerate(["task_0_reviews", "task_1_topics"]):
        base, _ = fresh_base(checkpoint)
        model = PeftModel.from_pretrained(base, exported / folder)
        on_disk = load_file(exported / folder / "adapter_model.safetensors")
        assert set(get_peft_model_state_dict(model)) == set(on_disk)  # the names PEFT expects
        for layer, A in snapshots[index]["A"].items():
            peft_layer = model.base_model.model.get_submodule(layer)
            assert torch.equal(peft_layer.lora_A["default"].weight, A)
            assert torch.equal(peft_layer.lora_B["default"].weight, snapshots[index]["B"][layer])
            assert peft_layer.scaling["default"] == snapshots[index]["scaling"]


def test_all_adapters_in_peft_match_the_module_and_the_merged_model(exported: Path, checkpoint: dict):
    from transformers import AutoModelForCausalLM

    from nlora_lightning import ContinualLightningModule

    peft_model, tokenizer = peft_with_all_tasks(exported, checkpoint, ["task_0_reviews", "task_1_topics"])
    ids = input_ids(tokenizer)
    peft_logits = logits_of(peft_model, ids)

    hp = {k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_")}
    module = ContinualLightningModule(**hp)
    module.on_load_checkpoint(copy.deepcopy(checkpoint))
    ours = logits_of(module.model.eval(), ids)
    torch.testing.assert_close(peft_logits, ours, atol=1e-5, rtol=1e-5)

    base_logits = logits_of(fresh_base(checkpoint)[0], ids)
    assert (peft_logits - base_logits).abs().max() > 1e-3  # the adapters do change the function

    merged = AutoModelForCausalLM.from_pretrained(exported / "merged").eval()
    torch.testing.assert_close(logits_of(merged, ids), peft_logits, atol=1e-5, rtol=1e-5)


def test_unfinished_task_comes_from_the_trainable_slot(tmp_path: Path, tiny_run: Path, checkpoint: dict):
    ckpt = copy.deepcopy(checkpoint)
    state = ckpt["nlora"]
    finished = state["adapters"]["snapshots"].pop(1)
    state["adapters"]["frozen_tasks"], state["slot_live"] = [0], True
    for layer in finished["A"]:  # a slot that differs from the old snapshot, to see where the export read
        ckpt["state_dict"][f"model.{layer}.lora_A"] = finished["A"][layer] * 2
        ckpt["state_dict"][f"model.{layer}.lora_B"] = finished["B"][layer] * 3
    run = write_run(tmp_path, tiny_run, ckpt)
    with pytest.raises(UnfinishedRunError, match=rf"run {run} is unfinished \(1 task\(s\) finished, task 1 \(topics\) saved "
                       r"half-trained, exported as task_1_topics_unfinished\).*--allow-unfinished"):
        export_run(run, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    out = export_run(run, tmp_path / "out", allow_unfinished=True)
    tensors = load_file(out / "task_1_topics_unfinished" / "adapter_model.safetensors")
    for layer in finished["A"]:
        assert torch.equal(tensors[f"base_model.model.{layer}.lora_A.weight"], finished["A"][layer] * 2)
        assert torch.equal(tensors[f"base_model.model.{layer}.lora_B.weight"], finished["B"][layer] * 3)
    info = json.loads((out / "export_info.json").read_text())
    assert [t["from"] for t in info["tasks"]] == ["snapshot", "trainable slot"]
    assert info["unfinished"] == "1 task(s) finished, task 1 (topics) saved half-trained, exported as task_1_topics_unfinished"


def test_command_line_refuses_a_run_marked_unfinished(tmp_path: Path, tiny_run: Path, checkpoint: dict, capsys):
    """Issue 28 bug 4: a killed run (status running) exported like any other with exit 0."""
    run = write_run(tmp_path, tiny_run, checkpoint)
    (run / "run_info.json").write_text(json.dumps({"status": "interrupted"}))
    assert main([str(run), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"nlora export: error: run {run} is unfinished (status interrupted; 2 task(s) finished)")
    assert main([str(run), "--out", str(tmp_path / "out"), "--allow-unfinished"]) == 0
    assert json.loads((tmp_path / "out" / "export_info.json").read_text())["unfinished"].startswith("status interrupted")


def test_shared_adapter_merges_only_its_last_cumulative_snapshot(tmp_path: Path, tiny_run: Path, checkpoint: dict):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ckpt = copy.deepcopy(checkpoint)
    ckpt["nlora"]["identity"]["adapters"] = "shared"
    out = export_run(write_run(tmp_path, tiny_run, ckpt), tmp_path / "out", merge=True)
    base, tokenizer = fresh_base(checkpoint)
    last_only = PeftModel.from_pretrained(base, out / "task_1_topics").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    ids = input_ids(tokenizer)
    torch.testing.assert_close(logits_of(merged, ids), logits_of(last_only, ids), atol=1e-5, rtol=1e-5)


def test_missing_inputs_are_named(tmp_path: Path, tiny_run: Path):
    with pytest.raises(FileNotFoundError, match="run directory .* does not exist"):
        export_run(tmp_path / "nowhere", tmp_path / "out")
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    with pytest.raises(FileNotFoundError, match="last.ckpt does not exist.*--checkpoint"):
        export_run(empty_run, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="--checkpoint 'other.ckpt': no such file"):
        export_run(tiny_run, tmp_path / "out", checkpoint="other.ckpt")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("mutate", "merge", "error", "message"),
    [
        (lambda c: c.pop("nlora"), False, CheckpointMismatchError, "no 'nlora' entry"),
        (lambda c: c["nlora"].update(adapters=None), False, ExportError, "full fine-tuning.*state_dict"),
        (lambda c: c["hyper_parameters"].update(quantization={"bits": 4}), True, ConfigurationError, "4/8-bit quantized base"),
    ],
    ids=["not-nlora", "full-fine-tuning", "quantized-merge"],
)
def test_unexportable_checkpoints_are_refused(tmp_path, tiny_run, checkpoint, mutate, merge, error, message):
    ckpt = copy.deepcopy(checkpoint)
    mutate(ckpt)
    with pytest.raises(error, match=message):
        export_run(write_run(tmp_path, tiny_run, ckpt), tmp_path / "out", merge=merge)
    assert not (tmp_path / "out").exists()


def test_checkpoint_needing_full_unpickling_is_refused(tmp_path: Path, tiny_run: Path, checkpoint: dict):
    ckpt = copy.deepcopy(checkpoint)
    ckpt["extra"] = Path("an arbitrary object")  # not loadable with weights_only=True
    with pytest.raises(ExportError, match=r"weights_only=True.*PosixPath.*never falls back"):
        export_run(write_run(tmp_path, tiny_run, ckpt), tmp_path / "out")


def test_out_dir_is_protected_and_replaced_only_on_request(tmp_path: Path, tiny_run: Path):
    out = tmp_path / "out"
    (out / "keep").mkdir(parents=True)
    with pytest.raises(RunDirectoryError, match="not empty.*--overwrite"):
        export_run(tiny_run, out)
    with pytest.raises(RunDirectoryError, match="would replace"):
        export_run(tiny_run, tiny_run, overwrite=True)
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    export_run(tiny_run, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["export_info.json", "task_0_reviews", "task_1_topics"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old copies left behind


def test_a_failure_leaves_no_half_written_export(tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch):
    import nlora_lightning.export.writer as export_module

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "write_json_atomic", crash)  # the last file of an export
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(tiny_run, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []

    previous = tmp_path / "previous"
    (previous / "task_0_old").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="disk full"):
        export_run(tiny_run, previous, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["previous"]
    assert [p.name for p in previous.iterdir()] == ["task_0_old"]  # the old export is untouched


def test_command_line(tmp_path: Path, tiny_run: Path, capsys: pytest.CaptureFixture):
    from nlora_lightning.reporting.tools import run_tool

    assert run_tool("export", [str(tiny_run), "--out", str(tmp_path / "out")]) == 0
    assert "exported to" in capsys.readouterr().out
    assert (tmp_path / "out" / "task_1_topics" / "adapter_model.safetensors").is_file()
    assert main([str(tiny_run), "--out", str(tmp_path / "out")]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main([str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "does not exist" in capsys.readouterr().err
