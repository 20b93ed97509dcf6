from collections import Counter

import pytest
import torch

from nlora_lightning.data.sampling import EpochSampler, ResumableDataLoader, ScheduledSampler, stratified_subsample


def largest_remainder_quotas(counts: dict[str, int], k: int) -> dict[str, int]:
    """Per-class sizes of a k-sample stratified draw, worked out by hand (ties: smaller label first)."""
    n = sum(counts.values())
    quotas = {label: k * c // n for label, c in counts.items()}
    by_remainder = sorted(counts, key=lambda label: (-(k * counts[label] % n), label))
    for label in by_remainder[: k - sum(quotas.values())]:
        quotas[label] += 1
    return quotas


def test_stratified_subsample_keeps_class_proportions_and_is_seeded():
    labels = ["a"] * 60 + ["b"] * 30 + ["c"] * 10
    picked = stratified_subsample(labels, 20, seed=1)
    assert Counter(labels[i] for i in picked) == {"a": 12, "b": 6, "c": 2}
    assert picked == stratified_subsample(labels, 20, seed=1) and picked == sorted(picked)
    assert picked != stratified_subsample(labels, 20, seed=2)
    assert stratified_subsample(labels, None, 0) == list(range(100))
    assert stratified_subsample(labels, 500, 0) == list(range(100))


@pytest.mark.parametrize("k", [3, 7, 11, 20, 33])
def test_stratified_subsample_hits_the_class_quotas_for_every_seed(k):
    # Interleaved labels and many seeds: a uniform draw of k indices matches every quota by luck
    # with a vanishing probability (one seed and one size could pass by chance).
    counts = {"a": 50, "b": 30, "c": 15, "d": 5}
    labels = [label for i in range(50) for label, c in counts.items() if i < c]
    expected = largest_remainder_quotas(counts, k)
    for seed in range(12):
        picked = stratified_subsample(labels, k, seed=seed)
        assert len(picked) == len(set(picked)) == k
        assert Counter(labels[i] for i in picked) == {label: q for label, q in expected.items() if q}, (k, seed)


def test_epoch_sampler_shards_cover_everything_and_reshuffle_per_epoch():
    shards = [list(EpochSampler(10, seed=0, epoch=0, rank=r, world_size=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded to equal shards
    assert set(sum(shards, [])) == set(range(10))
    assert list(EpochSampler(10, 0, epoch=0)) != list(EpochSampler(10, 0, epoch=1))


def test_epoch_sampler_order_depends_on_the_seed_at_every_epoch():
    for epoch in range(3):
        orders = [tuple(EpochSampler(20, seed=seed, epoch=epoch)) for seed in range(6)]
        assert len(set(orders)) == 6, f"epoch {epoch}: some seeds give the same order"
        assert all(sorted(order) == list(range(20)) for order in orders)
        assert orders[3] == tuple(EpochSampler(20, seed=3, epoch=epoch))  # and the same seed repeats it


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


def test_scheduled_sampler_follows_the_given_order_and_shards_it():
    order = [3, 0, 4, 1, 2]
    assert list(ScheduledSampler(5, lambda: True, order=order)) == order
    shards = [list(ScheduledSampler(5, lambda: True, rank=r, world_size=2, order=order)) for r in range(2)]
    assert shards == [[3, 4, 2], [0, 1]]  # every sample exactly once over the ranks
    with pytest.raises(ValueError, match="permutation"):
        ScheduledSampler(5, lambda: True, order=[0, 1, 1, 2, 3])
