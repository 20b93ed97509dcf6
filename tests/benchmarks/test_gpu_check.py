"""benchmarks/gpu_check.py on a machine without CUDA: the one-line exit, the item runner, the report, the plan."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up
spec.loader.exec_module(gpu_check)


class NoMemory:
    peak = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


def item(name, code, **kwargs):
    return gpu_check.CheckItem(name, [sys.executable, "-c", code], kwargs.pop("timeout_s", 60), **kwargs)


def test_without_cuda_it_prints_one_line_and_exits_0(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    assert capsys.readouterr().out == "gpu-check: no CUDA device on this machine; nothing was run (run it on a machine with a GPU)\n"
    assert not (tmp_path / "out").exists()


def test_item_runner_passes_fails_and_times_out(tmp_path):
    run = lambda i: gpu_check.run_item(i, memory=NoMemory)  # noqa: E731
    assert run(item("ok", "print('fine')")).passed
    failed = run(item("exit 3", "import sys; print('boom'); sys.exit(3)"))
    assert not failed.passed and failed.returncode == 3 and failed.detail.startswith("exit status 3, expected 0") and "boom" in failed.detail
    assert run(item("killed", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", expect_returncode=-9)).passed
    slow = run(item("slow", "import time; time.sleep(30)", timeout_s=1))
    assert not slow.passed and "timed out after 1 s" in slow.detail
    bad_check = run(item("check", "pass", check=lambda: "matrix incomplete"))
    assert not bad_check.passed and bad_check.detail.startswith("matrix incomplete")
    crashing = run(item("crash", "pass", check=lambda: 1 / 0))
    assert not crashing.passed and "check raised ZeroDivisionError" in crashing.detail


def test_report_lists_every_item_and_details_failures(tmp_path):
    results = gpu_check.run_items([item("good", "pass"), item("bad", "import sys; sys.exit(2)")],
                                  runner=lambda i, env: gpu_check.run_item(i, env, memory=NoMemory), echo=lambda text: None)
    path = gpu_check.write_report(results, tmp_path / "out", "test machine")
    text = path.read_text()
    assert "| good | pass |" in text and "| bad | FAIL |" in text and "1 of 2 items passed." in text
    assert "## bad" in text and "exit status 2" in text and (tmp_path / "out" / "report.json").is_file()


def test_plan_covers_every_item_of_the_issue(tmp_path):
    names = [i.name for i in gpu_check.plan(tmp_path)]
    for wanted in ("gpu-marked tests", "LLaMA-shaped, 1 GPU", "T5-shaped, 1 GPU", "DDP", "FSDP on every GPU", "killed",
                   "resumed", "QLoRA", "t5_large", "llama_7b"):
        assert any(wanted in name for name in names), wanted
    assert sum(i.timeout_s for i in gpu_check.plan(tmp_path)) <= 25 * 60  # limits; the expected total is ~10 min


def test_every_fit_of_the_plan_parses(tmp_path, monkeypatch, capsys):
    """Each fit command's options and configs compose (parsed only: --print_config builds nothing)."""
    from nlora_lightning.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.syspath_prepend(str(REPO / "tests" / "helpers"))  # kill_at_step.KillAtStep
    fits = [i for i in gpu_check.plan(tmp_path) if "fit" in i.command]
    assert len(fits) == 7
    for check in fits:
        words = check.command[check.command.index("fit"):]
        with pytest.raises(SystemExit) as caught:
            main([*words, "--print_config"])
        assert caught.value.code in (0, None), check.name
        printed = capsys.readouterr().out
        assert "precision: bf16-mixed" in printed and "accelerator: gpu" in printed, check.name
        assert ("FSDPStrategy" in printed) == ("FSDP" in check.name), check.name
        assert ("KillAtStep" in printed) == ("killed" in check.name), check.name
