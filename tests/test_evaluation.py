import torch

from nlora_lightning import evaluation
from nlora_lightning.evaluation import SamplePrediction, count_correct, predict


def batch():
    return {"sample_id": [4, 9, 11], "label_text": ["negative", "positive", "positive"], "label_index": torch.tensor([0, 1, 1]),
            "label_names": ["negative", "positive"], "prompt_ids": [[1], [2], [3]], "candidates": [[5], [6]],
            "input_ids": torch.ones(3, 1, dtype=torch.long), "attention_mask": torch.ones(3, 1), "max_new_tokens": 2}


class Tok:
    pad_token_id = 0


def test_rank_predictions_name_the_ranked_label(monkeypatch):
    monkeypatch.setattr(evaluation.fwd, "rank_answers", lambda *args, **kwargs: torch.tensor([0, 0, 1]))
    out = predict(None, Tok(), batch(), "rank", False, torch.device("cpu"))
    assert out == [SamplePrediction(4, "negative", "negative", True), SamplePrediction(9, "negative", "positive", False),
                   SamplePrediction(11, "positive", "positive", True)]
    assert count_correct(None, Tok(), batch(), "rank", False, torch.device("cpu")) == 2


def test_generated_predictions_keep_the_text_and_use_exact_match(monkeypatch):
    monkeypatch.setattr(evaluation.fwd, "generate_answers", lambda *args, **kwargs: ["Negative.", "neutral", " positive"])
    out = predict(None, Tok(), batch(), "generate", False, torch.device("cpu"))
    assert [(p.sample_id, p.prediction, p.correct) for p in out] == [(4, "Negative.", True), (9, "neutral", False), (11, " positive", True)]


def test_generated_free_text_is_scored_by_rouge_l_against_the_best_reference(monkeypatch):
    monkeypatch.setattr(evaluation.fwd, "generate_answers", lambda *args, **kwargs: ["the cat sat", "nothing alike", ""])
    free_text = {**batch(), "candidates": [], "label_names": None, "metric": "rougeL",
                 "references": [["a cat sat down", "the cat sat"], ["the dog ran"], ["x"]]}
    out = predict(None, Tok(), free_text, "generate", False, torch.device("cpu"))
    assert [p.score for p in out] == [1.0, 0.0, 0.0] and all(p.metric == "rougeL" for p in out)
    assert [p.correct for p in out] == [True, False, False]  # a full score
    assert evaluation.score_sum(out) == 1.0
    monkeypatch.setattr(evaluation.fwd, "generate_answers", lambda *args, **kwargs: ["a cat sat", "the dog", "x"])
    partial = predict(None, Tok(), free_text, "generate", False, torch.device("cpu"))
    assert 0 < partial[0].score < 1 and 0 < partial[1].score < 1 and not partial[0].correct


def test_rank_mode_on_a_free_text_task_is_refused():
    import pytest

    from nlora_lightning.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="evaluation.mode='rank' needs a label set"):
        predict(None, Tok(), {**batch(), "candidates": [], "task": 3}, "rank", False, torch.device("cpu"))


def test_exact_match_predictions_score_one_or_zero():
    assert SamplePrediction(1, "a", "a", True).score == 1.0 and SamplePrediction(1, "a", "b", False).score == 0.0


def test_validation_step_sums_scores_not_full_matches(monkeypatch, tiny, tiny_llama_init):
    import nlora_lightning.module as module_file

    scored = [SamplePrediction(1, "a b", "a c", False, 0.5, "rougeL"), SamplePrediction(2, "x", "x", True, 1.0, "rougeL")]
    monkeypatch.setattr(module_file, "predict", lambda *args, **kwargs: scored)
    module = tiny.module(tiny_llama_init)
    out = module.validation_step({"task": torch.tensor(0)}, 0)
    assert out["correct"] == 1.5 and out["total"] == 2 and out["predictions"] == scored
