import json

import pytest

from nlora_lightning.cli import main as nlora
from nlora_lightning.reporting.compare import compare_runs, format_markdown

from .conftest import write_fake_run


def test_compare_runs_reads_headline_figures_and_marks_missing_ones(tmp_path):
    full = write_fake_run(tmp_path / "nlora_run", method="nlora", aa=0.75, baselines=True)
    bare = write_fake_run(tmp_path / "olora_run", aa=0.5, files=("cl_metrics",))  # and no baselines: an older run
    rows = compare_runs([full, bare])
    assert rows[0] == {"run": "nlora_run", "unfinished": False, "method": "nlora", "AA": 0.75, "AA_majority": 0.4, "never_learned": 1,
                       "own_task": pytest.approx((0.9 + 0.7 + 0.85) / 3), "BWT": -0.1, "forgetting": 0.1, "collision_mean": pytest.approx(0.02), "overlap_mean": pytest.approx(0.3),
                       "train_time_s": 123.4, "peak_memory_bytes": None, "state_bytes": None, "train_tokens_per_s": None,
                       "eval_tokens_per_s": None, "retention": None, "metric": "exact_match"}
    assert rows[1]["method"] is None and rows[1]["collision_mean"] is None and rows[1]["AA"] == 0.5
    assert rows[1]["AA_majority"] is None and rows[1]["never_learned"] is None
    assert rows[1]["own_task"] == pytest.approx((0.9 + 0.7 + 0.85) / 3)  # from the matrix: older runs have it too
    table = format_markdown(rows).splitlines()
    assert table[0] == ("| run | method | AA (%) | majority AA (%) | never learned | own-task acc. (%) | BWT (%) | forgetting (%) | collision (%) "
                        "| overlap | train time (s) | peak memory | stored state | train tokens/s | eval tokens/s | retention (%) | metric |")
    no_cost = "| n/a | n/a | n/a | n/a | n/a | exact_match |"  # cost, retention: not in these fake runs
    assert table[2] == "| nlora_run | nlora | 75.00 | 40.00 | 1 | 81.67 | -10.00 | 10.00 | 2.00 | 0.3000 | 123 " + no_cost
    assert table[3] == "| olora_run | n/a | 50.00 | n/a | n/a | 81.67 | -10.00 | 10.00 | n/a | n/a | n/a " + no_cost


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


def patch_info(run, **changes):
    info = json.loads((run / "run_info.json").read_text())
    for key, value in changes.items():
        if key in info:
            info[key] = value
        else:
            info["hyperparameters"][key] = value
    (run / "run_info.json").write_text(json.dumps(info))
    return run


def compare(capsys, *args):
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_runs_of_different_task_lists_are_never_averaged_together(tmp_path, capsys):
    """Issue 28 bug 3: [reviews, topics] and [intents, languages] runs were one mean."""
    a = write_fake_run(tmp_path / "a", aa=0.6)
    b = patch_info(write_fake_run(tmp_path / "b", aa=0.2), tasks=["intents", "languages", "reviews"])
    c = write_fake_run(tmp_path / "c", aa=0.8, seed=1)
    code, out, _ = compare(capsys, a, b, c, "--group-by", "method", "--out", tmp_path / "t.md")
    assert code == 0
    assert "| nlora [protocol 1] | 2 | 70.00 ± 14.14 |" in out  # a and c only
    assert "| nlora [protocol 2] | 1 | 20.00 ± n/a |" in out
    assert "group 'nlora' was split into 2 groups: its runs differ in protocol (tasks: ['reviews', 'topics', 'intents'] vs " \
           "['intents', 'languages', 'reviews'])" in out


def test_a_difference_across_protocols_is_refused_naming_the_setting(tmp_path, capsys):
    a = write_fake_run(tmp_path / "a", method="nlora")
    b = patch_info(write_fake_run(tmp_path / "b", method="olora"), epochs_per_task=3)
    code, _, err = compare(capsys, a, b, "--diff", "nlora", "olora", "--out", tmp_path / "t.md")
    assert code == 2
    assert err == ("nlora compare: --diff nlora olora: runs a and b differ in protocol (epochs_per_task: 2 vs 3); "
                   "a difference is only meaningful within one protocol\n")


def test_unfinished_runs_are_marked_and_left_out_of_means(tmp_path, capsys):
    """Issue 28 bug 3: a killed run (status running, 1 of 2 tasks) was listed and averaged like a finished one."""
    done = write_fake_run(tmp_path / "done", aa=0.6)
    killed = patch_info(write_fake_run(tmp_path / "killed", aa=0.2, seed=1), status="running")
    details = json.loads((killed / "cl_details.json").read_text())
    (killed / "cl_details.json").write_text(json.dumps({**details, "completed_stages": 1}))
    code, out, _ = compare(capsys, done, killed, "--group-by", "method", "--out", tmp_path / "t.md")
    assert code == 0
    assert "| killed (unfinished: running, 1 of 3 stages) | nlora | 20.00 |" in out
    assert "| nlora | 1 | 60.00 ± n/a |" in out
    assert "left out of the means: killed (unfinished: running, 1 of 3 stages); pass --include-unfinished" in out
    code, out, _ = compare(capsys, done, killed, "--group-by", "method", "--include-unfinished", "--out", tmp_path / "t.md")
    assert "| nlora (includes unfinished) | 2 | 40.00 ± 28.28 |" in out
    olora = write_fake_run(tmp_path / "olora", method="olora", aa=0.5)
    code, out, _ = compare(capsys, done, killed, olora, "--diff", "nlora", "olora", "--include-unfinished", "--out", tmp_path / "t.md")
    assert code == 0 and "| nlora (includes unfinished) | 2 |" in out
