"""Bad input: one clear error naming the cause, and nothing already written is lost (docs/errors.md).

Most cases run the real command line against a directory that already holds a finished run, with
``--overwrite`` given, and check that the error comes before anything in that directory changes.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest
import torch

from nlora_lightning import ContinualLightningModule, LoRAConfig, MethodConfig, TaskSequenceDataModule
from nlora_lightning.cli import main
from nlora_lightning.errors import (
    CheckpointMismatchError,
    ConfigurationError,
    DataError,
    NonFiniteLossError,
    RunDirectoryError,
)
from nlora_lightning.models.loading import QuantizationConfig, load_tokenizer

REPO = Path(__file__).resolve().parents[1]


def write_benchmark(root: Path, **overrides) -> Path:
    """A valid two-task CL_Benchmark folder; ``overrides`` replace file contents (relative path -> text)."""
    for task, labels in {"alpha": ["yes", "no"], "beta": ["red", "blue"]}.items():
        folder = root / "G" / task
        folder.mkdir(parents=True, exist_ok=True)
        records = [{"label": labels[i % 2], "sentence": f"{task} sample {i}"} for i in range(8)]
        (folder / "labels.json").write_text(json.dumps(labels))
        (folder / "train.json").write_text(json.dumps(records))
        (folder / "test.json").write_text(json.dumps(records[:4]))
    (root / "_meta").mkdir(exist_ok=True)
    (root / "_meta" / "instruction_config.json").write_text(json.dumps({"G": [{"instruction": "Pick.\n"}]}))
    for relative, text in overrides.items():
        path = root / relative
        if text is None:
            path.unlink()
        else:
            path.write_text(text)
    return root


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    data = write_benchmark(root / "data")
    main(["fit", *run_args(root, data)])
    assert (root / "run" / "cl_metrics.json").is_file()
    return root


def run_args(root: Path, data: Path) -> list[str]:
    return [
        "--config", str(REPO / "configs" / "tiny.yaml"),
        "--data.data_dir", str(data), "--data.tasks", "[alpha, beta]", "--data.max_eval_samples", "4",
        "--trainer.default_root_dir", str(root / "run"), "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.logger.init_args.name", "run",
    ]


def fail_cli(finished_run: Path, capsys, *extra: str, data_overrides=None, expect=Exception) -> str:
    """Run a failing ``nlora fit --overwrite`` over the finished run; return the error text."""
    before = snapshot(finished_run / "run")
    data = write_benchmark(finished_run / "bad-data", **(data_overrides or {})) if data_overrides else finished_run / "data"
    with pytest.raises((expect, SystemExit)) as caught:
        main(["fit", *run_args(finished_run, data), "--overwrite", *extra])
    if data_overrides:
        import shutil

        shutil.rmtree(finished_run / "bad-data")
    assert snapshot(finished_run / "run") == before, "the existing run was changed"
    if isinstance(caught.value, SystemExit):
        assert expect is SystemExit or expect is Exception, f"expected {expect.__name__}, got a parser error"
        return capsys.readouterr().err
    assert isinstance(caught.value, expect)
    return str(caught.value)


# ----- data ------------------------------------------------------------------------------------
DATA_CASES = [
    ("missing task dir", {"G/beta/labels.json": None, "G/beta/train.json": None, "G/beta/test.json": None}, FileNotFoundError, None),
    ("missing split file", {"G/beta/test.json": None}, FileNotFoundError, r"missing file .*beta/test.json"),
    ("malformed JSON", {"G/alpha/train.json": '[{"label": "yes", "sentence": "x"'}, DataError, r"malformed JSON in .*alpha/train.json.*line 1"),
    ("record without label", {"G/alpha/train.json": '[{"sentence": "x"}]'}, DataError, r"record 0 has no 'label' field"),
    ("record without sentence", {"G/alpha/train.json": '[{"label": "yes"}]'}, DataError, r"record 0 has no 'sentence' field"),
    ("label not in labels.json", {"G/alpha/test.json": '[{"label": "maybe", "sentence": "x"}]'}, DataError, r"label 'maybe'.*not in labels.json"),
    ("empty split", {"G/beta/train.json": "[]"}, DataError, r"beta/train.json is empty"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case, overrides, error, message", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data(finished_run, capsys, case, overrides, error, message):
    if case == "missing task dir":
        import shutil

        data = write_benchmark(finished_run / "bad-data")
        shutil.rmtree(data / "G" / "beta")
        before = snapshot(finished_run / "run")
        with pytest.raises(FileNotFoundError, match=r"task 'beta' not found in .*tasks there: \['alpha'\]"):
            main(["fit", *run_args(finished_run, data), "--overwrite"])
        shutil.rmtree(data)
        assert snapshot(finished_run / "run") == before
        return
    text = fail_cli(finished_run, capsys, data_overrides=overrides, expect=error)
    assert __import__("re").search(message, text), text


def test_missing_data_dir(finished_run, capsys):
    text = fail_cli(finished_run, capsys, "--data.data_dir", "/no/such/dir", expect=FileNotFoundError)
    assert "data_dir '/no/such/dir' does not exist" in text


# ----- configuration -----------------------------------------------------------------------------
CLI_CASES = [
    ("unknown preset", ["--data.tasks", "null", "--data.preset", "order9"], ConfigurationError, "unknown preset 'order9'"),
    ("unknown task name", ["--data.tasks", "[alpha, gamma]"], FileNotFoundError, "task 'gamma' not found"),
    ("duplicate tasks", ["--data.tasks", "[alpha, alpha]"], ConfigurationError, "duplicate task(s) ['alpha']"),
    ("negative lambda", ["--model.methods", '[{"name": "nlora_l1", "weight": -0.1}]'], ValueError, "must be a finite number >= 0"),
    ("rank r <= 0", ["--model.lora.r", "0"], ValueError, "LoRA rank r must be a positive integer"),
    ("target modules absent", ["--model.lora.target_modules", "[qkv_proj]"], ValueError, "match no linear layer"),
    ("gguf_file missing", ["--model.random_init", "null", "--model.model_name_or_path", str(REPO / "configs"),
                           "--model.gguf_file", "nope.gguf"], FileNotFoundError, "gguf_file 'nope.gguf' not found"),
    ("official mode on non-square layer", ["--model.methods", '[{"name": "nlora_l1", "weight": 0.1, "options": {"mode": "official"}}]'],
     ValueError, "non-square layer model.layers.0.self_attn.v_proj"),
    ("unknown regularizer", ["--model.methods", '[{"name": "l3", "weight": 0.1}]'], ConfigurationError, "unknown method 'l3'"),
    ("prompt budget too small", ["--data.max_source_length", "8"], ConfigurationError, "max_source_length=8 is too short for task 'alpha'"),
    ("held-out task also trained", ["--data.held_out_tasks", "[alpha]"], ConfigurationError, "also in the training sequence"),
    ("tasks and preset together", ["--data.preset", "standard_order1"], ConfigurationError, "exactly one of data.tasks"),
    ("random_init without model_type", ["--model.random_init", '{"hidden_size": 8}'], ValueError, "needs a 'model_type'"),
]


@pytest.mark.parametrize("case, extra, error, message", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_bad_configuration(finished_run, capsys, case, extra, error, message):
    text = fail_cli(finished_run, capsys, *extra, expect=error)
    assert message in text, text


def test_gpu_requested_without_cuda(finished_run, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    text = fail_cli(finished_run, capsys, "--trainer.accelerator", "gpu", expect=MisconfigurationException)
    assert "not available" in text or "No supported gpu backend" in text


def test_four_bit_without_bitsandbytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"4-bit quantization needs bitsandbytes.*nlora-lightning\[quant\]"):
        QuantizationConfig(bits=4).to_transformers()


# ----- run directories and checkpoints -------------------------------------------------------------
def test_finished_run_directory_is_refused(finished_run):
    before = snapshot(finished_run / "run")
    with pytest.raises(RunDirectoryError, match="already holds a finished run; pass --overwrite"):
        main(["fit", *run_args(finished_run, finished_run / "data")])
    assert snapshot(finished_run / "run") == before


def test_incompatible_checkpoint_on_resume(finished_run):
    before = snapshot(finished_run / "run")
    with pytest.raises(CheckpointMismatchError, match=r"lora: checkpoint .*'r': 4.* vs now .*'r': 2"):
        main(["fit", *run_args(finished_run, finished_run / "data"), "--model.lora.r", "2", "--ckpt_path", "last"])
    with pytest.raises(CheckpointMismatchError, match=r"task_names: checkpoint \['alpha', 'beta'\] vs now \['beta', 'alpha'\]"):
        main(["fit", *run_args(finished_run, finished_run / "data"), "--data.tasks", "[beta, alpha]", "--ckpt_path", "last"])
    assert snapshot(finished_run / "run") == before


# ----- handled without an error ----------------------------------------------------------------------
def test_tokenizer_without_pad_token_uses_eos(tmp_path, caplog):
    from nlora_lightning.models import byte_tokenizer

    tok = byte_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    with caplog.at_level(logging.INFO, logger="nlora_lightning.models.loading"):
        loaded = load_tokenizer(str(tmp_path), None)
    assert loaded.pad_token == loaded.eos_token
    assert "has no pad token; using its eos token" in caplog.text


def test_long_prompts_are_shortened_with_one_warning_per_task(tmp_path, caplog):
    data = write_benchmark(tmp_path, **{"G/alpha/train.json": json.dumps([{"label": "yes", "sentence": "long " * 200}] * 4)})
    dm = TaskSequenceDataModule(tasks=["alpha"], data_dir=str(data), max_source_length=80, cache_dir=str(tmp_path / "cache"))
    from nlora_lightning.models import byte_tokenizer

    dm.tokenizer, dm.decoder_only = byte_tokenizer(), True
    with caplog.at_level(logging.WARNING, logger="nlora_lightning.data.datamodule"):
        dm.setup("fit")
    warnings = [r.getMessage() for r in caplog.records if "exceed max_source_length" in r.getMessage()]
    assert warnings == ["task alpha/train: 4 of 4 prompts exceed max_source_length=80 tokens; their sentences were "
                        "shortened from the end (instruction, options and 'Answer:' kept)"]
    assert all(len(e["prompt_ids"]) == 80 for e in dm._train_examples[0])


class NaNAtStep(ContinualLightningModule):
    def task_forward(self, batch):
        out = super().task_forward(batch)
        return out._replace(loss=out.loss * float("nan")) if self.global_step == 3 else out


@pytest.mark.slow
def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(tiny_llama_init, tiny, make_trainer, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    module = NaNAtStep(random_init=tiny_llama_init, tokenizer="byte", lora=LoRAConfig(r=2, alpha=8, dropout=0.0),
                       methods=[MethodConfig("nlora_l1", 0.01)], evaluation={"mode": "rank"})
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer = make_trainer(callbacks=[checkpoint], enable_checkpointing=True)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at task 1, global step 3 \(task loss nan"):
        trainer.fit(module, datamodule=tiny.data())
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def console(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Run the ``nlora`` console entry with ``args``; return (exit status, stderr)."""
    from nlora_lightning import cli

    monkeypatch.setattr(sys, "argv", ["nlora", *args])
    with pytest.raises(SystemExit) as caught:
        cli.run()
    return caught.value.code, capsys.readouterr().err


def test_resuming_a_finished_run_says_so_and_changes_no_byte(finished_run, monkeypatch, capsys):
    before = snapshot(finished_run / "run")
    code, err = console(monkeypatch, capsys, "fit", *run_args(finished_run, finished_run / "data"), "--ckpt_path", "last")
    assert code == 1
    assert err.endswith(f"nlora: error: RunDirectoryError: run {finished_run / 'run'} already finished: nothing to resume; "
                        "pass --overwrite to train it again\n"), err
    assert "Traceback" not in err
    assert snapshot(finished_run / "run") == before


def test_explicit_checkpoint_file_is_compared_with_the_settings_given(finished_run, tmp_path):
    checkpoint = str(finished_run / "run" / "checkpoints" / "last.ckpt")
    elsewhere = ["--trainer.default_root_dir", str(tmp_path / "new"), "--trainer.logger.init_args.save_dir", str(tmp_path),
                 "--trainer.logger.init_args.name", "new"]
    # LightningCLI alone would load r=4 from the checkpoint over the r=2 given here, and train.
    with pytest.raises(CheckpointMismatchError, match=r"lora: checkpoint .*'r': 4.* vs now .*'r': 2"):
        main(["fit", *run_args(finished_run, finished_run / "data"), *elsewhere, "--model.lora.r", "2", "--ckpt_path", checkpoint])
    with pytest.raises(CheckpointMismatchError, match=r"methods: checkpoint .*nlora_l1.* vs now .*olora_orthogonality"):
        main(["fit", *run_args(finished_run, finished_run / "data"), *elsewhere, "--ckpt_path", checkpoint,
              "--model.methods", '[{"name": "olora_orthogonality", "weight": 0.1}]'])
    assert not (tmp_path / "new").exists()


def test_a_file_that_is_no_checkpoint_gets_one_line(finished_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.ckpt").write_text("hello")
    code, err = console(monkeypatch, capsys, "fit", *run_args(finished_run, finished_run / "data"), "--overwrite",
                        "--trainer.logger.init_args.save_dir", str(tmp_path), "--ckpt_path", str(tmp_path / "notes.ckpt"))
    assert code == 1 and "Traceback" not in err and "weights_only=False" not in err
    line = err.splitlines()[-1]
    assert line.startswith(f"nlora: error: CheckpointError: ckpt_path '{tmp_path / 'notes.ckpt'}' is not a checkpoint: "
                           "torch.load(weights_only=True) cannot read it ("), err
    assert line.endswith("); give a .ckpt file written by nlora fit, or --ckpt_path last"), err


def test_run_directory_under_a_file_gets_one_line(finished_run, tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    code, err = console(monkeypatch, capsys, "fit", *run_args(finished_run, finished_run / "data"),
                        "--trainer.logger.init_args.save_dir", str(tmp_path / "a-file"))
    assert code == 1 and "Traceback" not in err
    assert err.endswith(f"nlora: error: OutputDirectoryError: cannot create the run directory {tmp_path / 'a-file' / 'run'}: "
                        f"{tmp_path / 'a-file'} is a file, not a directory; choose another run directory "
                        "(--trainer.default_root_dir DIR)\n"), err
