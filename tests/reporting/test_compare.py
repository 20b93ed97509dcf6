import pytest

from nlora_lightning.cli import main as nlora
from nlora_lightning.reporting.compare import compare_runs, format_markdown

from .conftest import write_fake_run


def test_compare_runs_reads_headline_figures_and_marks_missing_ones(tmp_path):
    full = write_fake_run(tmp_path / "nlora_run", method="nlora", aa=0.75)
    bare = write_fake_run(tmp_path / "olora_run", aa=0.5, files=("cl_metrics",))
    rows = compare_runs([full, bare])
    assert rows[0] == {"run": "nlora_run", "method": "nlora", "AA": 0.75, "BWT": -0.1, "forgetting": 0.1,
                       "collision_mean": pytest.approx(0.02), "overlap_mean": pytest.approx(0.3), "train_time_s": 123.4,
                       "peak_memory_bytes": None, "state_bytes": None, "train_tokens_per_s": None, "eval_tokens_per_s": None,
                       "retention": None, "metric": "exact_match"}
    assert rows[1]["method"] is None and rows[1]["collision_mean"] is None and rows[1]["AA"] == 0.5
    table = format_markdown(rows).splitlines()
    assert table[0] == ("| run | method | AA (%) | BWT (%) | forgetting (%) | collision (%) | overlap | train time (s) "
                        "| peak memory | stored state | train tokens/s | eval tokens/s | retention (%) | metric |")
    no_cost = "| n/a | n/a | n/a | n/a | n/a | exact_match |"  # cost, retention: not in these fake runs
    assert table[2] == "| nlora_run | nlora | 75.00 | -10.00 | 10.00 | 2.00 | 0.3000 | 123 " + no_cost
    assert table[3] == "| olora_run | n/a | 50.00 | -10.00 | 10.00 | n/a | n/a | n/a " + no_cost


def test_nlora_compare_prints_and_writes_the_table(tmp_path, monkeypatch, capsys):
    runs = [write_fake_run(tmp_path / "a", aa=0.6), write_fake_run(tmp_path / "b", aa=0.8)]
    out = tmp_path / "cmp" / "table.md"
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", *map(str, runs), "--out", str(out)])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "| a | nlora | 60.00 |" in printed and "| b | nlora | 80.00 |" in printed
    assert out.read_text() in printed

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", str(runs[0])])
    assert exit_info.value.code == 0 and "| a | nlora | 60.00 |" in (tmp_path / "comparison.md").read_text()


def test_nlora_compare_refuses_a_missing_directory(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", str(write_fake_run(tmp_path / "a")), str(tmp_path / "nope")])
    assert exit_info.value.code == 2
    assert "not a directory" in capsys.readouterr().err and not (tmp_path / "comparison.md").exists()


def test_nlora_report_regenerates_the_report(fake_run, capsys):
    with pytest.raises(SystemExit) as exit_info:
        nlora(["report", str(fake_run)])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == str(fake_run / "report.md")
    assert "Mean collision over task pairs" in (fake_run / "report.md").read_text()
    assert (fake_run / "sparsity.png").is_file()


@pytest.mark.parametrize("case, message", [("missing", "is not a directory"), ("empty", "holds no cl_metrics.json")])
def test_nlora_report_refuses_non_run_directories(tmp_path, capsys, case, message):
    target = tmp_path / "run"
    if case == "empty":
        write_fake_run(target, files=("collision",))
    with pytest.raises(SystemExit) as exit_info:
        nlora(["report", str(target)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (target / "report.md").exists()
