"""Resume mid-sequence after SIGKILL: the final matrix and adapters equal an uninterrupted run's."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
EPOCHS, BATCHES = 2, 3  # per task: 2 epochs of 3 batches -> 6 steps; task k spans steps [6k, 6k + 6)


SHIPPED = [REPO / "configs" / "tiny.yaml", REPO / "configs" / "demo.yaml", *sorted((REPO / "configs" / "models").glob("*.yaml"))]
# every_n_train_steps=2 saves mid-epoch; =3 saves on every epoch's last batch, which ContinualCheckpoint must skip.
MID_EPOCH, ON_LAST_BATCH = {"every_n_train_steps": 2}, {"every_n_train_steps": 3}


def checkpoint_settings(config: dict) -> dict:
    (callback,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ContinualCheckpoint")]
    return dict(callback.get("init_args") or {})


def shipped_checkpoint_settings() -> dict[str, dict]:
    """The distinct checkpoint settings of the shipped model configs, each named by the configs using it."""
    distinct: dict[str, tuple[list[str], dict]] = {}
    for path in SHIPPED:
        settings = checkpoint_settings(yaml.safe_load(path.read_text()))
        names, _ = distinct.setdefault(repr(sorted(settings.items())), ([], settings))
        names.append(path.stem)
    return {"+".join(names): settings for names, settings in distinct.values()}


def write_config(tmp_path: Path, name: str, kill_step=None, checkpoint=MID_EPOCH) -> Path:
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(tmp_path / name)
    trainer["logger"]["init_args"].update(save_dir=str(tmp_path), name=name)
    trainer["deterministic"] = True
    for callback in trainer["callbacks"]:
        if callback["class_path"].endswith("Checkpoint"):
            callback["init_args"] = {"save_last": True, "save_top_k": 0, **checkpoint}
    if kill_step is not None:
        trainer["callbacks"].append({"class_path": "kill_at_step.KillAtStep", "init_args": {"step": kill_step}})
    config["model"]["lora"]["dropout"] = 0.1  # exercises the per-step RNG
    config["data"].update(tasks=["reviews", "topics", "intents"], max_train_samples=8 * BATCHES, epochs_per_task=EPOCHS)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run(config: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests" / "helpers")}
    result = subprocess.run([sys.executable, "-m", "nlora_lightning", "fit", "--config", str(config), *extra],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return result


def final_state(run_dir: Path) -> tuple[list, dict]:
    metrics = json.loads((run_dir / "cl_metrics.json").read_text())
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    snapshots = checkpoint["nlora"]["adapters"]["snapshots"]
    slot = {k: v for k, v in checkpoint["state_dict"].items()}
    return metrics["acc_matrix"], {"snapshots": snapshots, "slot": slot}


def metric_rows(run_dir: Path) -> list[dict]:
    """metrics.csv as (step, logged values) rows, in file order."""
    with open(run_dir / "metrics.csv", newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def assert_same(a, b, path="") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory) -> Path:
    """The run directory of an uninterrupted 3-task run."""
    root = tmp_path_factory.mktemp("reference")
    run(write_config(root, "reference"))
    return root / "reference"


@pytest.fixture(scope="module")
def reference(reference_dir):
    """The uninterrupted run's (accuracy matrix, adapters)."""
    return final_state(reference_dir)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["right after the previous task's last step", "at a random step"])
def test_sigkill_inside_a_task_then_resume_matches_uninterrupted(tmp_path, reference, where):
    kill_task = 1
    first = EPOCHS * BATCHES * kill_task + 1  # steps are counted after they complete
    # The first case is the hard one: a step-based save on a task's last batch would precede its evaluation.
    kill_step = first if where.startswith("right") else random.Random(os.getpid()).randrange(first + 1, first + EPOCHS * BATCHES - 1)
    checkpoint = ON_LAST_BATCH if where.startswith("right") else MID_EPOCH

    killed = run(write_config(tmp_path, "killed", kill_step, checkpoint), check=False)
    assert killed.returncode == -signal.SIGKILL, f"expected SIGKILL at step {kill_step}:\n{killed.stderr[-2000:]}"
    assert (tmp_path / "killed" / "checkpoints" / "last.ckpt").is_file()
    if not where.startswith("right"):  # once is enough: a fresh start over the killed run is refused
        refused = run(write_config(tmp_path, "killed", checkpoint=checkpoint), check=False)
        assert refused.returncode == 1 and "unfinished run" in refused.stderr
        assert "Traceback" not in refused.stderr, "an input error is one line, not a traceback"

    run(write_config(tmp_path, "killed", checkpoint=checkpoint), "--ckpt_path", "last")
    resumed = final_state(tmp_path / "killed")
    assert resumed[0] == reference[0], f"killed at step {kill_step}"
    assert_same(resumed[1], reference[1], f"killed at step {kill_step}")
    info = json.loads((tmp_path / "killed" / "run_info.json").read_text())
    assert info["status"] == "finished"


@pytest.mark.slow
@pytest.mark.parametrize("settings", list(shipped_checkpoint_settings().values()), ids=list(shipped_checkpoint_settings()))
def test_shipped_checkpoint_settings_resume_after_a_kill_past_the_first_task(tmp_path, reference_dir, reference, settings):
    """Test what ships: each model config's own checkpoint settings, killed just after task 1's evaluation.

    The resumed run's metrics.csv also equals the uninterrupted run's: every step once, none lost.
    """
    kill_step = EPOCHS * BATCHES + 1
    killed = run(write_config(tmp_path, "shipped", kill_step, settings), check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    saved = torch.load(tmp_path / "shipped" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == EPOCHS * BATCHES, "last.ckpt must be the one written after task 1's evaluation"
    run(write_config(tmp_path, "shipped", checkpoint=settings), "--ckpt_path", "last")
    resumed = final_state(tmp_path / "shipped")
    assert resumed[0] == reference[0]
    assert_same(resumed[1], reference[1])
    assert metric_rows(tmp_path / "shipped") == metric_rows(reference_dir)


def test_every_model_config_saves_inside_long_epochs():
    """Besides every epoch end, each model config saves by steps or by time inside an epoch."""
    for path in SHIPPED:
        settings = checkpoint_settings(yaml.safe_load(path.read_text()))
        assert settings.get("save_last") is True and settings.get("save_on_train_epoch_end", True), path.name
        assert settings.get("every_n_train_steps") or settings.get("train_time_interval"), path.name


@pytest.mark.slow
def test_two_runs_of_the_tiny_config_are_identical(tmp_path, reference):
    run(write_config(tmp_path, "again"))
    again = final_state(tmp_path / "again")
    assert again[0] == reference[0]
    assert_same(again[1], reference[1])


@pytest.mark.slow
def test_finished_run_is_not_overwritten_without_flag(tmp_path):
    config = write_config(tmp_path, "done")
    one_task = ("--data.tasks", "[reviews]", "--data.epochs_per_task", "1")
    run(config, *one_task)
    before = {p: p.read_bytes() for p in (tmp_path / "done").rglob("*") if p.is_file()}
    refused = run(config, *one_task, check=False)
    assert refused.returncode != 0 and "already holds a finished run" in refused.stderr
    assert {p: p.read_bytes() for p in (tmp_path / "done").rglob("*") if p.is_file()} == before
    run(config, *one_task, "--overwrite")
    assert json.loads((tmp_path / "done" / "run_info.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_checkpoint_of_another_task_list_is_refused(tmp_path):
    config = write_config(tmp_path, "base")
    run(config, "--data.tasks", "[reviews]", "--data.epochs_per_task", "1")
    other = run(config, "--data.tasks", "[topics]", "--data.epochs_per_task", "1", "--ckpt_path", "last", check=False)
    assert other.returncode != 0
    assert "CheckpointMismatchError" in other.stderr and "task_names: checkpoint ['reviews'] vs now ['topics']" in other.stderr


@pytest.mark.slow
def test_killed_before_the_first_save_then_resume_is_refused_clearly(tmp_path):
    killed = run(write_config(tmp_path, "early", kill_step=1), check=False)  # saves come every 2 steps
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "early" / "checkpoints" / "last.ckpt").exists()
    refused = run(write_config(tmp_path, "early"), "--ckpt_path", "last", check=False)
    assert refused.returncode == 1
    assert "saved no checkpoint" in refused.stderr and "--overwrite" in refused.stderr
    run(write_config(tmp_path, "early"), "--ckpt_path", "last", "--overwrite")
    assert json.loads((tmp_path / "early" / "run_info.json").read_text())["status"] == "finished"
