"""Seeded subsampling and the samplers of the task sequence (shuffle, shard, resume, schedule).

The samplers subclass ``DistributedSampler`` so Lightning leaves them in place under DDP: they do
their own sharding by (rank, world size) and their own seeded shuffling by epoch, which is what
makes a resumed or a multi-process run draw the same batches as a single uninterrupted one.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch.utils.data import DataLoader, DistributedSampler

__all__ = ["stratified_subsample", "carve_validation", "EpochSampler", "ScheduledSampler", "ResumableDataLoader"]


def stratified_subsample(labels: Sequence[str], k: Optional[int], seed: int) -> list[int]:
    """``k`` indices, class proportions kept (largest remainder), seeded; all indices if ``k`` is None or >= n.

    The result is sorted, so the subset keeps the file's order.

    Example:
        >>> stratified_subsample(["a"] * 6 + ["b"] * 2, 4, seed=0).__len__()
        4
    """
    n = len(labels)
    if k is None or k >= n:
        return list(range(n))
    if k <= 0:
        raise ValueError(f"sample cap must be positive, got {k}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    exact = {label: k * len(idx) / n for label, idx in by_label.items()}
    quota = {label: int(math.floor(v)) for label, v in exact.items()}
    remainder = sorted(by_label, key=lambda label: (-(exact[label] - quota[label]), label))
    for label in remainder[: k - sum(quota.values())]:
        quota[label] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for label in sorted(by_label):
        chosen.extend(rng.sample(by_label[label], quota[label]))
    return sorted(chosen)



def carve_validation(labels: Sequence[str], size: int, seed: int) -> tuple[list[int], list[int]]:
    """Split indices into a class-stratified, seeded validation set of ``size`` and the rest.

    The two lists are sorted and disjoint and together cover ``range(len(labels))``; training
    samples are drawn from the rest only, so no validation sample is ever trained on.

    Raises:
        ValueError: If ``size`` is not positive or leaves no sample for the rest.

    Example:
        >>> carve_validation(["a", "a", "b", "b"], 2, seed=0)[0].__len__()
        2
    """
    if size <= 0:
        raise ValueError(f"a validation set needs a positive size, got {size}")
    if size >= len(labels):
        raise ValueError(f"a validation set of {size} leaves none of the {len(labels)} samples for training")
    validation = stratified_subsample(labels, size, seed)
    carved = set(validation)
    return validation, [i for i in range(len(labels)) if i not in carved]

class _ShardedSampler(DistributedSampler):
    # DistributedSampler.__init__ is skipped on purpose: it would ask torch.distributed for the
    # world size, which does not exist in single-process runs.
    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:  # noqa: D107
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.length = length
        self.rank = rank
        self.num_replicas = world_size
        self.epoch = 0
        self.seed = 0
        self.shuffle = False
        self.drop_last = False

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EpochSampler(_ShardedSampler):
    """Training order: a permutation seeded by (seed, epoch), padded to equal shards, then sharded.

    ``skip`` drops the first samples of this rank's shard (a resumed epoch continues where it stopped).
    """

    def __init__(self, length: int, seed: int, epoch: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(length, rank, world_size)
        self.seed, self.epoch, self.shuffle, self.skip = seed, epoch, shuffle, 0

    def _shard(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        per_rank = math.ceil(self.length / self.num_replicas)
        padded = order + order[: per_rank * self.num_replicas - self.length]
        return padded[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard()[self.skip :])

    def __len__(self) -> int:
        # The full epoch, also while skipping: Lightning counts resumed batches from the checkpoint.
        return math.ceil(self.length / self.num_replicas)


class ScheduledSampler(_ShardedSampler):
    """Evaluation order: this rank's share of the split, or nothing when the task is not scheduled now.

    ``is_scheduled`` is asked at every iteration, so a fixed set of per-task loaders can serve every
    evaluation point of the sequence. Shards are not padded: every sample is counted exactly once.
    ``order`` is the sequence in which samples are visited (default: file order), e.g. longest
    prompt first so each batch pads little; scores are kept per sample id, so order changes no result.
    """

    def __init__(self, length: int, is_scheduled: Callable[[], bool], rank: int = 0, world_size: int = 1,
                 order: Optional[Sequence[int]] = None) -> None:
        super().__init__(length, rank, world_size)
        if order is not None and sorted(order) != list(range(length)):
            raise ValueError(f"order must be a permutation of range({length})")
        self.is_scheduled = is_scheduled
        self.order = list(order) if order is not None else list(range(length))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order[self.rank :: self.num_replicas] if self.is_scheduled() else [])

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.num_replicas)) if self.is_scheduled() else 0


class ResumableDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` that Lightning can checkpoint mid-epoch.

    Lightning stores ``state_dict()`` with the fit loop and calls ``load_state_dict`` on the fresh
    loader when it resumes; the next iteration then skips the batches already trained on.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableDataLoader needs an EpochSampler")
        self._yielded = 0
        self._skip_batches = 0

    def __iter__(self):
        skip, self._skip_batches = self._skip_batches, 0
        self.sampler.skip = skip * (self.batch_size or 1)
        self._yielded = skip
        for batch in super().__iter__():
            self._yielded += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches_yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        if state.get("epoch") == self.sampler.epoch:
            self._skip_batches = int(state.get("batches_yielded", 0))
