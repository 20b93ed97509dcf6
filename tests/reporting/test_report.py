import json
from pathlib import Path

import matplotlib.image
import pytest

from nlora_lightning.reporting.plots import heatmap_png, save_png, short_layer_names
from nlora_lightning.reporting.report import render_markdown, write_report
from nlora_lightning.reporting.runfiles import read_run

from .conftest import TASKS, write_fake_run

PNGS = ("acc_matrix.png", "collision.png", "orthogonality.png", "sparsity.png")


def assert_png(path: Path) -> None:
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_report_holds_every_section_with_the_files_values(fake_run):
    path = write_report(fake_run)
    assert path == fake_run / "report.md"
    text = path.read_text()
    assert "# Run report: nlora_run" in text and "**method**: nlora" in text and "train time**: 123 s" in text
    assert "1. reviews\n2. topics\n3. intents" in text
    # metrics in percent, FWT null -> n/a
    assert "| 75.00 | -10.00 | 10.00 | n/a |" in text
    # accuracy matrix: stage names from the history, blanks where not evaluated
    assert "| after reviews | 90.0 |  |  |" in text
    assert "| after intents | 75.0 | 65.0 | 85.0 |" in text
    # zero-shot and held-out results in their own sections
    assert "## Zero-shot baseline" in text and "| topics | 20.0 |" in text
    assert "## Held-out tasks" in text and "| languages | 25.0 |" in text
    # headline means over pairs i < j: collision (0.01 + 0.02 + 0.03) / 3, overlap (0.1 + 0.2 + 0.6) / 3
    assert "Mean collision over task pairs i < j: 2.00 %" in text
    assert "Mean overlap over task pairs i < j: 0.3000" in text
    assert "| reviews | 50.0 | 1.0 | 2.0 |" in text  # collision table in percent
    # per-task means over 4 layers: sparsity 0.5 + 0.1 t + 0.03, nuclear norm 1 + t; mean nuclear norm 2
    assert "| topics | 63.0 | 2.0000 | 1.5000 |" in text and "Mean nuclear norm: 2.0000" in text
    assert "tau = 1 %" in text and "nlora_l1 (lambda=0.4)" in text and "max train samples | all" in text
    assert "## Notes" not in text
    for name in PNGS:
        assert f"]({name})" in text
        assert_png(fake_run / name)


def test_missing_files_are_skipped_with_a_note(tmp_path):
    run = write_fake_run(tmp_path / "partial", files=("cl_metrics",))
    text = write_report(run).read_text()
    for name in ("run_info.json", "cl_details.json", "collision.csv", "orthogonality.csv", "adapter_stats.csv"):
        assert f"`{name}` not found" in text
    assert "| 75.00 | -10.00 | 10.00 | n/a |" in text
    assert "| after reviews | 90.0 |" in text  # square matrix without history: rows named after the tasks
    assert "collision" not in text.split("## Notes")[0].lower()
    assert (run / "acc_matrix.png").is_file()
    assert not any((run / name).exists() for name in PNGS[1:])


def test_unreadable_file_is_noted_not_fatal(fake_run):
    (fake_run / "collision.csv").write_text("task,reviews,topics\nreviews,0.1\n")
    (fake_run / "cl_details.json").write_text("{not json")
    text = write_report(fake_run).read_text()
    assert "`collision.csv` could not be read (ValueError" in text
    assert "`cl_details.json` could not be read" in text
    assert "Mean overlap over task pairs" in text  # the other files still make their sections


def test_read_run_stage_names_and_means(fake_run):
    run = read_run(fake_run)
    assert run.tasks == TASKS and run.stage_names == TASKS
    assert run.collision.pair_mean() == pytest.approx(0.02)
    assert run.nuclear_norm_mean == pytest.approx(2.0)
    assert run.metric("FWT") is None and run.metric("AA") == pytest.approx(0.75)


def test_joint_run_rows_use_the_stage_name(tmp_path):
    run_dir = tmp_path / "mtl"
    run_dir.mkdir()
    (run_dir / "cl_metrics.json").write_text(json.dumps({"tasks": ["a", "b"], "acc_matrix": [[0.5, 0.7]], "AA": 0.6,
                                                          "BWT": None, "forgetting": None, "FWT": None}))
    (run_dir / "cl_details.json").write_text(json.dumps({"history": [{"stage": 0, "stage_name": "a+b"}]}))
    text = render_markdown(read_run(run_dir))
    assert "| after a+b | 50.0 | 70.0 |" in text and "| 60.00 | n/a | n/a | n/a |" in text


def test_heatmap_png_tolerates_missing_cells(tmp_path):
    png = heatmap_png([[0.5, None], [float("nan"), 1.0]], ["r0", "r1"], ["c0", "c1"], "title", scale=100)
    save_png(tmp_path / "h.png", png)
    assert_png(tmp_path / "h.png")
    with pytest.raises(ValueError):
        heatmap_png([[0.5]], ["r0", "r1"], ["c0"], "wrong shape")


def test_short_layer_names_drop_shared_components():
    assert short_layer_names(["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]) == ["0.q_proj", "1.v_proj"]
    assert short_layer_names(["a.q", "b.c.v"]) == ["a.q", "b.c.v"]  # different depths: unchanged
    assert short_layer_names(["only.one"]) == ["only.one"]


def test_report_gives_the_intervals_and_explains_the_missing_forgetting_under_diagonal_final(fake_run):
    metrics = json.loads((fake_run / "cl_metrics.json").read_text())
    metrics.update({"forgetting": None, "eval_schedule": "diagonal_final", "AA_ci95": [0.7, 0.8], "BWT_ci95": [-0.15, -0.05],
                    "bootstrap": {"resamples": 1000, "seed": 0, "confidence": 0.95}})
    (fake_run / "cl_metrics.json").write_text(json.dumps(metrics))
    text = render_markdown(read_run(fake_run))
    assert "| 75.00 | -10.00 | n/a | n/a |" in text
    assert "1000 resamples, seed 0" in text and "AA [70.00, 80.00], BWT [-15.00, -5.00]" in text
    assert "Evaluation schedule `diagonal_final`" in text and "forgetting" in text


def test_report_puts_the_trivial_baselines_next_to_aa_and_counts_never_learned_tasks(tmp_path):
    text = render_markdown(read_run(write_fake_run(tmp_path / "run", aa=0.75, baselines=True)))
    headline = text.split("## Tasks")[0]  # before the first section
    assert "**AA 75.00 %; trivial baselines: always the majority training answer 40.00 %, chance 30.00 %.**" in headline
    assert "**Never learned: 1 of 3 tasks** (intents)" in headline
    assert "## Trivial baselines (%)" in text
    assert "| reviews | `positive` | 2 | 50.0 | 50.0 | 90.0 [80.0, 97.0] | learned |" in text
    assert "| intents | `ask \\| tell` | free text | n/a | 40.0 | 45.0 | never learned |" in text  # | escaped, no interval
    # an older run without baselines: neither the headline nor the section
    older = render_markdown(read_run(write_fake_run(tmp_path / "older")))
    assert "trivial baselines" not in older and "Never learned" not in older and "## Trivial baselines" not in older
