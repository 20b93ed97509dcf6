"""benchmarks/lambda_sweep.py on hand-written run folders: table values, plot, refusals."""

import json
from pathlib import Path

import matplotlib.image
import pytest

REPO = Path(__file__).resolve().parents[2]
TASKS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def lambda_sweep(load_script):
    return load_script("benchmarks/lambda_sweep.py")


def write_run(directory: Path, weight, diagonal, final_row, collision_pairs, options=None, method="nlora"):
    """A finished 3-task run: run_info.json, cl_metrics.json (R with the given diagonal and last row), collision.csv."""
    directory.mkdir(parents=True)
    regularizers = [] if weight is None else [{"name": "nlora_l1", "weight": weight, "task_weights": {},
                                                "options": {"mode": "delta_w"} if options is None else options}]
    (directory / "run_info.json").write_text(json.dumps({"method": method, "hyperparameters": {"regularizers": regularizers}}))
    matrix = [[diagonal[0], None, None], [0.5, diagonal[1], None], final_row]
    assert final_row[2] == diagonal[2]
    aa = sum(final_row) / 3
    bwt = ((final_row[0] - diagonal[0]) + (final_row[1] - diagonal[1])) / 2
    (directory / "cl_metrics.json").write_text(json.dumps({"tasks": TASKS, "acc_matrix": matrix, "AA": aa, "BWT": bwt}))
    p01, p02, p12 = collision_pairs
    rows = [[0.9, p01, p02], [p01, 0.9, p12], [p02, p12, 0.9]]
    lines = ["task," + ",".join(TASKS)] + [f"{t}," + ",".join(str(v) for v in row) for t, row in zip(TASKS, rows)]
    (directory / "collision.csv").write_text("\n".join(lines) + "\n")
    return directory


def test_table_and_plot_from_run_folders(lambda_sweep, tmp_path):
    # Given out of order; the lambda comes from run_info.json, not from the folder name.
    high = write_run(tmp_path / "sweep" / "lambda_x" / "nlora-seed0", 1e-3, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3))
    low = write_run(tmp_path / "sweep" / "lambda_y" / "nlora-seed0", 1e-5, [0.8, 0.6, 1.0], [0.6, 0.5, 1.0], (0.8, 0.8, 0.5))
    base = write_run(tmp_path / "inclora-seed0", None, [0.9, 0.7, 1.0], [0.5, 0.7, 1.0], (0.9, 0.9, 0.9), method="inclora")
    out = tmp_path / "out"
    assert lambda_sweep.main([str(high), str(low), "--baseline", str(base), "--out", str(out)]) == 0
    table = (out / "lambda_sweep.md").read_text()
    assert table.startswith("# Lambda sweep: nlora_l1/delta_w")
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    # AA = mean of the last row, BWT = mean drop on the earlier tasks, own-task = mean of the diagonal, collision = pair mean
    assert lines == [
        "| 0 (inclora) | real_data/inclora-seed0 | 73.33 | -20.00 | 86.67 | 90.00 |".replace("real_data", tmp_path.name),
        "| 1e-5 | lambda_y/nlora-seed0 | 70.00 | -15.00 | 80.00 | 70.00 |",
        "| 1e-3 | lambda_x/nlora-seed0 | 56.67 | -5.00 | 60.00 | 20.00 |",
    ]
    image = matplotlib.image.imread(out / "lambda_sweep.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300


def test_own_task_accuracy_skips_missing_diagonal_entries(lambda_sweep, tmp_path):
    run = write_run(tmp_path / "run", 1e-4, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3))
    metrics = json.loads((run / "cl_metrics.json").read_text())
    metrics["acc_matrix"][1][1] = None
    (run / "cl_metrics.json").write_text(json.dumps(metrics))
    point = lambda_sweep.read_point(run)
    assert point.own_task == pytest.approx(0.7) and point.lam == 1e-4 and point.form == "nlora_l1/delta_w"


def test_runs_of_different_forms_or_per_task_lambdas_are_refused(lambda_sweep, tmp_path, capsys):
    delta_w = write_run(tmp_path / "d", 1e-3, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3))
    official = write_run(tmp_path / "o", 0.4, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3), options={"mode": "official"})
    with pytest.raises(SystemExit) as exit_info:
        lambda_sweep.main([str(delta_w), str(official), "--no-baseline", "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "different nlora_l1 forms" in capsys.readouterr().err
    info = json.loads((delta_w / "run_info.json").read_text())
    info["hyperparameters"]["regularizers"][0]["task_weights"] = {"b": 1e-2}
    (delta_w / "run_info.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="one nlora_l1 lambda for every task"):
        lambda_sweep.read_point(delta_w)
    with pytest.raises(SystemExit):
        lambda_sweep.main([str(tmp_path / "nowhere"), "--no-baseline", "--out", str(tmp_path / "out")])
    assert "not a run directory" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_default_runs_leave_out_runs_that_have_not_finished(lambda_sweep, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(lambda_sweep, "RESULTS", tmp_path)
    done = write_run(tmp_path / "lambda_sweep" / "lambda_1e-4" / "nlora-seed0", 1e-4, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3))
    training = write_run(tmp_path / "lambda_sweep" / "lambda_1e-5" / "nlora-seed0", 1e-5, [0.6, 0.4, 0.8], [0.5, 0.4, 0.8], (0.1, 0.2, 0.3))
    for run, status in ((done, "finished"), (training, "running")):
        info = json.loads((run / "run_info.json").read_text())
        (run / "run_info.json").write_text(json.dumps({**info, "status": status}))
    assert lambda_sweep.default_runs(0) == [done]  # the main table's nlora-seed0 does not exist here either
    assert "lambda_sweep/lambda_1e-5/nlora-seed0 is unfinished" in capsys.readouterr().err
