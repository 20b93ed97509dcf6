from collections import Counter

import pytest
import torch

from nlora_lightning.data.sampling import EpochSampler, ResumableDataLoader, ScheduledSampler, stratified_subsample


def test_stratified_subsample_keeps_class_proportions_and_is_seeded():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    picked = stratified_subsample(labels, 20, seed=1)
    assert Counter(labels[i] for i in picked) == {"a": 12, "b": 6, "c": 2}
    assert picked == stratified_subsample(labels, 20, seed=1) and picked == sorted(picked)
    assert picked != stratified_subsample(labels, 20, seed=2)
    assert stratified_subsample(labels, None, 0) == list(range(100))
    assert stratified_subsample(labels, 500, 0) == list(range(100))


def test_epoch_sampler_shards_cover_everything_and_reshuffle_per_epoch():
    shards = [list(EpochSampler(10, seed=0, epoch=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to equal shards
    assert set(sum(shards, [])) == set(range(10))
    assert list(EpochSampler(10, 0, epoch=0)) != list(EpochSampler(10, 0, epoch=1))


def test_scheduled_sampler_is_empty_when_not_scheduled():
    scheduled = {"on": False}
    sampler = ScheduledSampler(5, lambda: scheduled["on"], rank=1, world_size=2)
    assert list(sampler) == [] and len(sampler) == 0
    scheduled["on"] = True
    assert list(sampler) == [1, 3] and len(sampler) == 2


def test_resumable_loader_skips_batches_already_trained():
    data = list(range(10))
    loader = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(10, seed=4, epoch=2))
    full = [b.tolist() for b in loader]
    iterator = iter(loader)
    next(iterator)
    next(iterator)
    state = loader.state_dict()
    resumed = ResumableDataLoader(data, batch_size=3, sampler=EpochSampler(10, seed=4, epoch=2))
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == full[2:]
    assert len(resumed) == len(full)  # Lightning counts the epoch's batches in full


def test_resumable_loader_ignores_state_of_another_epoch():
    loader = ResumableDataLoader(list(range(6)), batch_size=2, sampler=EpochSampler(6, seed=0, epoch=1))
    loader.load_state_dict({"epoch": 0, "batches_yielded": 2})
    assert len(list(loader)) == 3
