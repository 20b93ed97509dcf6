import pytest
import torch

from nlora_lightning.metrics.baselines import (
    baseline_average,
    chance_score,
    constant_answer_scores,
    exact_match_score,
    majority_baseline,
    most_frequent_answer,
    never_learned,
)
from nlora_lightning.metrics.bootstrap import percentile_interval, resampled_accuracies


def test_chance_is_one_over_the_labels():
    assert chance_score(2) == 0.5 and chance_score(3) == pytest.approx(1 / 3) and chance_score(1) == 1.0
    with pytest.raises(ValueError, match="at least one label"):
        chance_score(0)


def test_majority_is_the_most_frequent_training_answer_scored_on_the_test_labels():
    train = ["neg", "pos", "pos", "neutral", "pos", "neg"]
    test = ["neg", "neg", "neg", "pos"]  # the test set's own majority (neg) is not the training one
    assert majority_baseline(train, test) == ("pos", 0.25)
    assert most_frequent_answer(["b", "a", "b", "a"]) == "a"  # tie: first in sorted order, whatever the order seen
    assert most_frequent_answer(["a", "b", "b", "a"]) == "a"
    assert exact_match_score("Positive.", "positive") == 1.0  # normalised like the evaluation
    with pytest.raises(ValueError, match="training answer"):
        majority_baseline([], test)
    with pytest.raises(ValueError, match="test sample"):
        majority_baseline(train, [])


def test_any_score_function_gives_the_generation_analogue():
    def overlap(prediction: str, reference: str) -> float:  # a stand-in for ROUGE-L: shared words / reference words
        words = reference.split()
        return sum(w in prediction.split() for w in words) / len(words)

    train = ["the cat sat", "a dog ran", "the cat sat"]
    scores = constant_answer_scores("the cat sat", ["the cat ran", "a bird"], overlap)
    assert scores.tolist() == [2 / 3, 0.0]
    assert majority_baseline(train, ["the cat ran", "a bird"], overlap) == ("the cat sat", pytest.approx(1 / 3))


def test_never_learned_compares_the_interval_lower_end_with_the_majority():
    learned = torch.tensor([1.0] * 18 + [0.0] * 2)  # 90 %: far above a 50 % majority
    flag, (low, high) = never_learned(learned, 0.5, num_resamples=500, seed=3)
    assert not flag and 0.5 < low <= 0.9 <= high
    # the interval is the percentile bootstrap of the mean, as for AA
    assert (low, high) == percentile_interval(resampled_accuracies([learned], 500, 3)[0][:, 0])
    # 60 % over 20 samples is above a 50 % majority, but not beyond the noise: flagged
    noisy = torch.tensor([1.0] * 12 + [0.0] * 8)
    flag, (low, _) = never_learned(noisy, 0.5, num_resamples=500, seed=3)
    assert flag and low <= 0.5
    # the same 60 % over 2000 samples is beyond the noise
    assert not never_learned(noisy.repeat(100), 0.5, num_resamples=500, seed=3)[0]
    assert never_learned(torch.tensor([0.0, 1.0]), 0.5, num_resamples=0) == (True, None)  # no resamples: the mean
    assert never_learned(torch.tensor([1.0, 1.0]), 0.5, num_resamples=0) == (False, None)
    with pytest.raises(ValueError, match="at least one"):
        never_learned(torch.tensor([]), 0.5)


def test_baseline_average_needs_every_task():
    assert baseline_average([0.5, 0.25, 0.75]) == 0.5
    assert baseline_average([0.5, None]) is None and baseline_average([]) is None
