"""report.md says which penalty form a regularizer's lambda belongs to and where the shipped default comes from."""

import json

from nlora_lightning.reporting.report import render_markdown
from nlora_lightning.reporting.runfiles import read_run

from .conftest import write_fake_run


def settings_row(run_dir, regularizers):
    info = json.loads((run_dir / "run_info.json").read_text())
    info["hyperparameters"]["regularizers"] = regularizers
    (run_dir / "run_info.json").write_text(json.dumps(info))
    return next(line for line in render_markdown(read_run(run_dir)).splitlines() if line.startswith("| methods |"))


def test_each_nlora_form_names_its_lambdas_provenance(tmp_path):
    run = write_fake_run(tmp_path / "run", files=("run_info",))
    delta_w = settings_row(run, [{"name": "nlora_l1", "weight": 0.001, "task_weights": {}, "options": {"mode": "delta_w"}}])
    assert "nlora_l1 (lambda=0.001, {'mode': 'delta_w'}); form nlora_l1/delta_w: paper's form" in delta_w
    assert "SmolLM2-135M, standard order 1 (benchmarks/results/real_data/lambda_sweep)" in delta_w
    official = settings_row(run, [{"name": "nlora_l1", "weight": 0.4, "task_weights": {}, "options": {"mode": "official"}}])
    assert "form nlora_l1/official: released code's form" in official and "the paper's lambdas" in official
    mean = settings_row(run, [{"name": "nlora_l1", "weight": 0.1, "task_weights": {}, "options": {"reduction": "mean"}}])
    assert "form nlora_l1/delta_w/mean" in mean
    olora = settings_row(run, [{"name": "olora_orthogonality", "weight": 0.5, "task_weights": {}, "options": {}}])
    assert olora.rstrip(" |").endswith("olora_orthogonality (lambda=0.5)")
