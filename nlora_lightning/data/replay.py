"""Experience replay: which buffered samples of earlier tasks each stage mixes in.

The draws are a pure function of the training labels, the settings and the seed, so every rank
and every resumed run replays the same samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

from nlora_lightning.data.sampling import stratified_subsample

__all__ = ["ReplayConfig", "draw_replay"]

# Keeps each task's buffer draw apart from the subsampling draws of the same seed.
_BUFFER_SEED_STRIDE = 104729


@dataclass
class ReplayConfig:
    """Experience replay: keep a few training samples of each finished task and mix them into later tasks.

    Args:
        samples_per_task: Size of each task's buffer (class-stratified, seeded).
        ratio: Replay samples added per new-task sample (0.25 adds one for every four); drawn
            evenly across earlier tasks' buffers. ``None`` adds every buffered sample.

    Raises:
        ValueError: For a non-positive buffer size or a negative ratio.
    """

    samples_per_task: int = 50
    ratio: Optional[float] = None

    def __post_init__(self) -> None:
        if self.samples_per_task <= 0:
            raise ValueError(f"replay.samples_per_task must be positive, got {self.samples_per_task}")
        if self.ratio is not None and not self.ratio >= 0:
            raise ValueError(f"replay.ratio must be >= 0 or null, got {self.ratio}")


def draw_replay(train_labels: Sequence[Sequence[str]], config: ReplayConfig, seed: int) -> dict[int, list[tuple[int, int]]]:
    """The ``(task, sample index)`` pairs each stage from 1 on replays, one stage per task in order.

    Each task's buffer is a class-stratified draw of ``config.samples_per_task`` of its training
    samples. Stage s replays every buffered sample of tasks ``0..s-1`` or, with a ``ratio``,
    ``round(ratio * len(train_labels[s]))`` of them taken round-robin over the earlier tasks'
    shuffled buffers, so each earlier task contributes evenly.

    Example:
        >>> draws = draw_replay([["a", "b"] * 4, ["c"] * 8], ReplayConfig(samples_per_task=2), seed=0)
        >>> sorted(draws), len(draws[1]), {task for task, _ in draws[1]}
        ([1], 2, {0})
    """
    buffers = [[(task, index) for index in stratified_subsample(list(labels), config.samples_per_task,
                                                                seed + _BUFFER_SEED_STRIDE * (task + 1))]
               for task, labels in enumerate(train_labels)]
    draws = {}
    for stage in range(1, len(train_labels)):
        pool = [pair for task in range(stage) for pair in buffers[task]]
        if config.ratio is not None:
            wanted = min(len(pool), round(config.ratio * len(train_labels[stage])))
            rng = random.Random(seed * 31 + stage)
            shuffled = [buffers[task][:] for task in range(stage)]
            for buffer in shuffled:
                rng.shuffle(buffer)
            pool = [b[i] for i in range(max(map(len, shuffled))) for b in shuffled if i < len(b)][:wanted]
        draws[stage] = sorted(pool)
    return draws
