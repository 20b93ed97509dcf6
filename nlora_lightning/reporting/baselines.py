"""A run's trivial baselines and never-learned tasks, from its predictions and its training answers.

:func:`run_baselines` gives what ``ForgettingMetrics`` writes into ``cl_metrics.json``
(``AA_chance``, ``AA_majority``, ``never_learned``, ``baselines``); the math is in
:mod:`nlora_lightning.metrics.baselines`.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from nlora_lightning.metrics.baselines import (
    ScoreFunction,
    baseline_average,
    chance_score,
    exact_match_score,
    majority_baseline,
    never_learned,
)
from nlora_lightning.metrics.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED
from nlora_lightning.reporting.predictions import aligned_scores, scores_by_id

__all__ = ["NEVER_LEARNED_RULE", "run_baselines"]

NEVER_LEARNED_RULE = ("never learned: the lower end of the 95 % bootstrap interval of the score right after the task's "
                      "own training is at or below the majority score")


def _test_labels(records: Sequence[dict[str, Any]], task: str) -> list[str]:
    """Gold labels of the task's test samples, by sample id, from the first stage that evaluated it."""
    stages = sorted({r["stage"] for r in records if r["task"] == task}, key=lambda s: -1 if s is None else s)
    if not stages:
        return []
    chosen = [r for r in records if r["task"] == task and r["stage"] == stages[0]]
    return [str(r["label"]) for r in sorted(chosen, key=lambda r: (r["sample_id"] is None, r["sample_id"]))]


def run_baselines(records: Sequence[dict[str, Any]], tasks: Sequence[str], stages: Sequence[Sequence[int]],
                  train_answers: Sequence[Sequence[str]], label_counts: Sequence[Optional[int]],
                  score_functions: Optional[Sequence[ScoreFunction]] = None, num_resamples: int = DEFAULT_RESAMPLES,
                  seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Chance and majority score per trained task, their AA, and the never-learned flags.

    Args:
        records: The run's predictions (``predictions.jsonl`` lines).
        tasks: The sequence's task names (held-out tasks have no training answers: not included).
        stages: Task indices trained in each stage (a task's own stage is the one that trains it).
        train_answers: Per task, the gold answers of its training samples.
        label_counts: Per task, the size of its label set; ``None`` for free-text tasks (no chance).
        score_functions: Per task, ``score(prediction, reference)``; default exact match.
        num_resamples, seed: Of the bootstrap interval of the own-stage score.

    Returns:
        ``{"AA_chance", "AA_majority", "never_learned": [task names], "baselines": {"tasks": {name:
        {...}}, "rule", "resamples", "seed"}}``; a task not evaluated yet has ``null`` majority and flag.
    """
    if not (len(tasks) == len(train_answers) == len(label_counts)):
        raise ValueError(f"{len(tasks)} tasks, {len(train_answers)} training answer lists, {len(label_counts)} label counts")
    own_stage = {t: i for i, stage in enumerate(stages) for t in stage}
    per_task: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(tasks):
        entry: dict[str, Any] = {"labels": label_counts[j],
                                 "chance": None if label_counts[j] is None else chance_score(label_counts[j]),
                                 "majority_answer": None, "majority": None, "own": None, "own_ci95": None, "never_learned": None}
        references = _test_labels(records, name)
        if references and train_answers[j]:
            score = score_functions[j] if score_functions is not None else exact_match_score
            entry["majority_answer"], entry["majority"] = majority_baseline(train_answers[j], references, score)
            own = aligned_scores([scores_by_id(records, own_stage.get(j), name)])
            if own is not None:
                flag, interval = never_learned(own[0], entry["majority"], num_resamples, seed)
                entry.update(own=float(own[0].mean()), own_ci95=None if interval is None else list(interval), never_learned=flag)
        per_task[name] = entry
    return {
        "AA_chance": baseline_average([e["chance"] for e in per_task.values()]),
        "AA_majority": baseline_average([e["majority"] for e in per_task.values()]),
        "never_learned": [name for name, e in per_task.items() if e["never_learned"]],
        "baselines": {"tasks": per_task, "rule": NEVER_LEARNED_RULE, "resamples": num_resamples, "seed": seed},
    }

