"""One writer per run directory: the lock file, its refusal naming the holder, the take-over of a dead holder."""

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nlora_lightning.errors import RunDirectoryError
from nlora_lightning.run_layout import LOCK_FILE
from nlora_lightning.run_lock import RunLock, pid_alive

REPO = Path(__file__).resolve().parents[1]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(directory: Path, pid: int, host: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
                                "command": "nlora fit --config a.yaml"}))
    return path


def test_lock_records_the_holder_and_is_released(tmp_path):
    lock = RunLock(tmp_path / "run", command="nlora fit --config x.yaml")
    lock.acquire()
    holder = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    assert holder["command"] == "nlora fit --config x.yaml" and holder["started"].endswith("+00:00")
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_second_writer_is_refused_naming_the_holder(tmp_path):
    write_lock(tmp_path, os.getppid())  # a live process on this host
    with pytest.raises(RunDirectoryError, match=rf"in use by another job \(pid {os.getppid()} on host .* since 2026-01-01"):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getppid(), "the holder's lock stays"


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_line(tmp_path, capsys):
    pid = dead_pid()
    assert not pid_alive(pid)
    write_lock(tmp_path, pid)
    lock = RunLock(tmp_path)
    lock.acquire()
    assert f"taking over the lock of {tmp_path}: its holder (pid {pid} " in capsys.readouterr().err
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_of_another_host_is_never_taken_over(tmp_path):
    write_lock(tmp_path, dead_pid(), host="elsewhere-node")
    with pytest.raises(RunDirectoryError, match=rf"host elsewhere-node.* if that job is gone, remove {tmp_path / LOCK_FILE}"):
        RunLock(tmp_path).acquire()


def test_releasing_does_not_remove_a_lock_taken_over_by_another_job(tmp_path):
    lock = RunLock(tmp_path)
    lock.acquire()
    write_lock(tmp_path, os.getppid())  # another job took the directory over
    lock.release()
    assert (tmp_path / LOCK_FILE).exists()


def tiny(tmp_path: Path, name: str, *extra: str, config: Path = REPO / "configs" / "tiny.yaml") -> list[str]:
    return ["fit", "--config", str(config), "--trainer.default_root_dir", str(tmp_path / name),
            "--trainer.logger.init_args.save_dir", str(tmp_path), "--trainer.logger.init_args.name", name,
            "--data.tasks", "[reviews]", "--data.epochs_per_task", "1", *extra]


def nlora(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests" / "helpers")])}
    return subprocess.Popen([sys.executable, "-m", "nlora_lightning", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.slow
def test_two_fits_into_one_directory_the_second_is_refused(tmp_path):
    """Issue 28 bug 2: both ran and exited 0, metrics.csv got every step twice."""
    config = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    # The first job waits at its first step until the second has ended.
    go_on = tmp_path / "second-done"
    config["trainer"]["callbacks"].append({"class_path": "signal_at_step.SignalAtStep",
                                           "init_args": {"step": 0, "signum": 0, "wait_for": str(go_on)}})
    slow = tmp_path / "slow.yaml"
    slow.write_text(yaml.safe_dump(config))
    first = nlora(*tiny(tmp_path, "run", config=slow))
    deadline = time.monotonic() + 240
    while not (tmp_path / "run" / LOCK_FILE).exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    second = nlora(*tiny(tmp_path, "run", "--ckpt_path", "last"))
    out, err = second.communicate(timeout=300)
    go_on.touch()
    first_out, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-3000:]
    assert second.returncode == 1, err[-3000:]
    assert f"run directory {tmp_path / 'run'} is in use by another job (pid {first.pid} on host" in err
    assert "Traceback" not in err
    with open(tmp_path / "run" / "metrics.csv", newline="") as file:
        steps = [row["step"] for row in csv.DictReader(file) if row.get("train/loss")]
    assert steps == [str(step) for step in range(4)], "every step once"
    assert not (tmp_path / "run" / LOCK_FILE).exists(), "released at the end"


@pytest.mark.slow
def test_fit_takes_over_the_lock_of_a_killed_job(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path / "run", pid)
    job = nlora(*tiny(tmp_path, "run"))
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, err[-3000:]
    assert f"taking over the lock of {tmp_path / 'run'}: its holder (pid {pid} on host" in err
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["status"] == "finished"
