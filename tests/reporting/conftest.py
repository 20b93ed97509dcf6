"""A hand-written run directory: three tasks, every file the callbacks write."""

from __future__ import annotations

import json
from pathlib import Path

from typing import Optional

import pytest

from nlora_lightning.reporting.predictions import write_predictions

TASKS = ["reviews", "topics", "intents"]
LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
          "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"]


BASELINES = {
    "AA_chance": 0.3, "AA_majority": 0.4, "never_learned": ["intents"],
    "baselines": {"resamples": 1000, "seed": 0, "rule": "...", "tasks": {
        "reviews": {"labels": 2, "chance": 0.5, "majority_answer": "positive", "majority": 0.5, "own": 0.9,
                    "own_ci95": [0.8, 0.97], "never_learned": False},
        "topics": {"labels": 4, "chance": 0.25, "majority_answer": "sport", "majority": 0.3, "own": 0.7,
                   "own_ci95": [0.6, 0.8], "never_learned": False},
        "intents": {"labels": None, "chance": None, "majority_answer": "ask | tell", "majority": 0.4, "own": 0.45,
                    "own_ci95": None, "never_learned": True}}},
}


def write_fake_run(directory: Path, *, method: str = "nlora", aa: float = 0.75, bwt: float = -0.1, seed: int = 0,
                   final_correct: Optional[list[list[bool]]] = None, baselines: bool = False, collision_pairs=(0.01, 0.02, 0.03),
                   overlap_pairs=(0.1, 0.2, 0.6), files: tuple[str, ...] = ("run_info", "cl_metrics", "cl_details", "collision",
                                                                              "orthogonality", "adapter_stats")) -> Path:
    """Write the files named in ``files``; pair values are for (0,1), (0,2), (1,2).

    ``baselines``: write the trivial baselines into ``cl_metrics.json`` (``intents`` never learned).
    ``final_correct``: per task, the correctness of samples 0..n-1 after the last stage, written as
    ``predictions.jsonl``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if "run_info" in files:
        (directory / "run_info.json").write_text(json.dumps({
            "method": method, "model": "random_init", "tasks": TASKS, "held_out_tasks": ["languages"],
            "hyperparameters": {"adapters": "per_task", "lora": {"r": 8, "alpha": 32, "dropout": 0.1, "target_modules": None},
                                "regularizers": [{"name": "nlora_l1", "weight": 0.4, "task_weights": {}, "options": {}}],
                                "optimizer": "AdamW", "lr": 0.001, "weight_decay": 0.0, "epochs_per_task": 2, "batch_size": 8,
                                "max_train_samples": None, "max_eval_samples": 50, "seed": seed, "data_seed": seed,
                                "collision_tau": 0.01},
            "status": "finished", "started": "2025-01-01T00:00:00+00:00", "train_time_s": 123.4}))
    if "cl_metrics" in files:
        (directory / "cl_metrics.json").write_text(json.dumps({
            "tasks": TASKS,
            "acc_matrix": [[0.9, None, None], [0.8, 0.7, None], [0.75, 0.65, 0.85]],
            "AA": aa, "BWT": bwt, "forgetting": 0.1, "FWT": None, **(BASELINES if baselines else {})}))
    if final_correct:
        write_predictions(directory, [{"stage": len(TASKS) - 1, "task": TASKS[task], "sample_id": i, "prediction": "x",
                                       "label": "x" if c else "y", "score": float(c)}
                                      for task, correct in enumerate(final_correct) for i, c in enumerate(correct)])
    if "cl_details" in files:
        (directory / "cl_details.json").write_text(json.dumps({
            "zero_shot": {"reviews": 0.1, "topics": 0.2, "intents": 0.05},
            "held_out": {"languages": 0.25},
            "history": [{"stage": i, "stage_name": name, "cl/AA": 0.5} for i, name in enumerate(TASKS)],
            "completed_stages": 3, "num_stages": 3}))
    for name, pairs, diagonal in (("collision", collision_pairs, 0.5), ("orthogonality", overlap_pairs, 0.4)):
        if name in files:
            m = [[diagonal, pairs[0], pairs[1]], [pairs[0], diagonal, pairs[2]], [pairs[1], pairs[2], diagonal]]
            lines = ["task," + ",".join(TASKS)] + [f"{t}," + ",".join(f"{v:.6f}" for v in row) for t, row in zip(TASKS, m)]
            (directory / f"{name}.csv").write_text("\n".join(lines) + "\n")
    if "adapter_stats" in files:
        lines = ["task,layer,sparsity,nuclear_norm,fro_norm"]
        for t, task in enumerate(TASKS):
            for l, layer in enumerate(LAYERS):
                lines.append(f"{task},{layer},{0.5 + 0.1 * t + 0.02 * l:.6f},{1.0 + t},{0.5 + t}")
        (directory / "adapter_stats.csv").write_text("\n".join(lines) + "\n")
    return directory


@pytest.fixture
def fake_run(tmp_path: Path) -> Path:
    return write_fake_run(tmp_path / "nlora_run")
