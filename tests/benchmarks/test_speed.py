"""benchmarks/speed.py --growth --tiny: every (mode, task) row, the forms switching at the crossover, the JSON figures."""

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks import speed  # noqa: E402


@pytest.mark.slow
def test_growth_tiny_form(capsys):
    out = speed.main(["--growth", "--tiny", "--tasks", "1,3"])
    printed = capsys.readouterr().out.splitlines()
    assert json.loads(printed[-1]) == out
    rows = {tuple(cell.strip() for cell in line.split("|")[1:3]): line for line in printed if line.startswith("| ") and "---" not in line}
    assert set(rows) == {("mode", "task"), ("lowrank", "1"), ("lowrank", "3"), ("lowrank_factors", "1"), ("lowrank_factors", "3"), ("merge", "3")}
    # Tiny LLaMA, r = 8: at task 3 (rank 16) v_proj (32 -> 16) is past the crossover, q_proj (32 -> 32) not yet.
    assert rows[("lowrank", "3")].endswith("| q_proj:factors,v_proj:folded |")
    assert rows[("lowrank_factors", "3")].endswith("| q_proj:factors,v_proj:factors |")
    assert rows[("merge", "3")].endswith("| q_proj:none,v_proj:none |")
    for mode in ("lowrank", "lowrank_factors", "merge"):
        assert out[f"task3_vs_task1_step_{mode}"] > 0 and out[f"task3_vs_task1_eval_{mode}"] > 0
    for key in ("step", "eval_prompt", "eval_decode"):
        assert out[f"{key}_utilisation"] > 0
        assert abs(out[f"{key}_utilisation"] / (out[f"{key}_flops_per_s"] / out["matmul_peak_flops"]) - 1) < 1e-2
    checkpoint_mib = {key: float(line.split("|")[6]) for key, line in rows.items() if key[0] == "lowrank"}
    assert checkpoint_mib[("lowrank", "3")] > checkpoint_mib[("lowrank", "1")]  # two more adapters stored
    assert out["tasks"] == [1, 3]
    assert any("aten::" in line for line in printed)  # the profile's operator table


def test_eval_superni_tiny_times_both_paths_on_the_same_prompts(capsys):
    out = speed.main(["--eval-superni", "--tiny"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == out
    assert out["prompts"] == 32 and out["nlora_s"] > 0 and out["plain_generate_s"] > 0
    assert out["superni_eval_vs_generate"] == pytest.approx(out["nlora_s"] / out["plain_generate_s"], rel=1e-2)
    assert out["answers_identical"] == out["prompts"]  # same greedy tokens, whatever the batch order
