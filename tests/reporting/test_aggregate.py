import math
import statistics

import pytest
import torch

from nlora_lightning.cli import main as nlora
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.bootstrap import paired_difference_interval
from nlora_lightning.reporting.aggregate import format_groups_markdown, group_runs, paired_difference, summarize_groups

from .conftest import write_fake_run

AA = {"nlora": [0.70, 0.74, 0.72], "inclora": [0.66, 0.71, 0.70]}
BWT = {"nlora": [-0.05, -0.08, -0.02], "inclora": [-0.10, -0.12, -0.06]}


def correct(method, seed, task):
    # 20 samples per task; nlora gets a few more right, on the same sample ids
    n_right = 12 + task + seed + (3 if method == "nlora" else 0)
    return [i < n_right for i in range(20)]


@pytest.fixture
def study(tmp_path):
    return [write_fake_run(tmp_path / f"{m}_s{s}", method=m, seed=s, aa=AA[m][s], bwt=BWT[m][s],
                           final_correct=[correct(m, s, t) for t in range(3)]) for m in AA for s in range(3)]


def test_groups_give_mean_std_and_n(study):
    rows = {r["group"]: r for r in summarize_groups(group_runs(study, "method"))}
    assert rows["nlora"]["runs"] == 3 and rows["nlora"]["AA"] == (pytest.approx(0.72), pytest.approx(0.02), 3)
    assert rows["inclora"]["BWT"].std == pytest.approx(statistics.stdev(BWT["inclora"]))
    own = (0.9 + 0.7 + 0.85) / 3  # every fake run has the same diagonal
    assert rows["nlora"]["own_task"] == (pytest.approx(own), pytest.approx(0.0), 3)
    header = format_groups_markdown(list(rows.values()), "method").splitlines()[0]
    assert header.endswith("| forgetting (%) mean ± std | own-task acc. (%) mean ± std | n (AA) |")


def test_paired_difference_over_seeds_and_over_test_samples(study):
    diff = paired_difference(group_runs(study, "method"), "nlora", "inclora", num_resamples=300, seed=1)
    d = [a - b for a, b in zip(AA["nlora"], AA["inclora"])]
    assert diff.per_seed["AA"] == pytest.approx(d)
    half = 4.303 * statistics.stdev(d) / math.sqrt(3)  # t(0.975, 2 df)
    assert diff.over_seeds["AA"] == (pytest.approx(statistics.mean(d) - half), pytest.approx(statistics.mean(d) + half))
    expected = paired_difference_interval(
        [torch.tensor(correct("nlora", s, t), dtype=torch.float64) for s in range(3) for t in range(3)],
        [torch.tensor(correct("inclora", s, t), dtype=torch.float64) for s in range(3) for t in range(3)],
        300, 1)
    assert diff.over_samples_aa == pytest.approx(expected)
    assert 0 < diff.over_samples_aa[0] <= 0.15 <= diff.over_samples_aa[1]  # nlora is right on 3 more of 20 everywhere


def test_no_sample_interval_without_shared_samples(tmp_path):
    runs = [write_fake_run(tmp_path / "a", method="nlora", final_correct=[[True] * 5] * 3),
            write_fake_run(tmp_path / "b", method="inclora", final_correct=[[True] * 4] * 3)]
    diff = paired_difference(group_runs(runs), "nlora", "inclora")
    assert diff.over_samples_aa is None and "different samples" in diff.over_samples_note
    assert diff.over_seeds["AA"] is None and len(diff.per_seed["AA"]) == 1  # one seed: no t interval


def test_bad_groupings(tmp_path, study):
    with pytest.raises(ConfigurationError, match=r"--diff names 'olora', but the groups are \['inclora', 'nlora'\]"):
        paired_difference(group_runs(study), "olora", "nlora")
    twice = study + [write_fake_run(tmp_path / "again", method="nlora", seed=0)]
    with pytest.raises(ConfigurationError, match="two runs with seed/data_seed"):
        paired_difference(group_runs(twice), "nlora", "inclora")


def test_nlora_compare_group_by_and_diff(study, tmp_path, capsys):
    out = tmp_path / "cmp.md"
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", *map(str, study), "--group-by", "method", "--diff", "nlora", "inclora", "--resamples", "200", "--out", str(out)])
    assert exit_info.value.code == 0
    text = out.read_text()
    assert "| nlora_s0 | nlora | 70.00 |" in text  # the per-run table is still there
    assert "| nlora | 3 | 72.00 ± 2.00 |" in text
    assert "Paired difference nlora - inclora over 3 shared seed(s)" in text and "paired bootstrap" in text
    with pytest.raises(SystemExit) as exit_info:
        nlora(["compare", *map(str, study), "--diff", "nlora", "olora"])
    assert exit_info.value.code == 2 and "--diff names 'olora'" in capsys.readouterr().err
