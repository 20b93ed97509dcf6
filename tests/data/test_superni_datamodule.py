"""SuperNI-format tasks through the data module and a fit on the tiny model: ROUGE-L matrices and records."""

import json

import pytest

from nlora_lightning.callbacks import ForgettingMetrics
from nlora_lightning.data.encoding import EncodingConfig, encode_split
from nlora_lightning.data.natural_instructions import NaturalInstructionsConfig
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.models import byte_tokenizer
from nlora_lightning.reporting.predictions import read_predictions

SUMMARY, SENTIMENT = "task100_tiny_summary", "task200_tiny_sentiment"


def test_encoding_uses_sapt_prompt_and_answers_without_a_leading_space(superni_dir, tiny):
    task = tiny.data(tasks=[SUMMARY], data_dir=str(superni_dir)).load_tasks()[0]
    tok = byte_tokenizer()
    rows = encode_split(task, "test", tok, EncodingConfig(max_source_length=400, max_target_length=30)).to_list()
    prompt = tok.decode(rows[0]["prompt_ids"])
    assert prompt.startswith("Definition: Summarize the text in a few words.\n\nNow complete the following example -\nInput: Text about")
    assert prompt.endswith("\nOutput: ")
    assert tok.decode(rows[0]["answer_ids"][:-1]) == task.records["test"][0]["label"]  # no space: the prompt ends with one
    assert rows[0]["references"] == task.records["test"][0]["references"]


def test_free_text_sampling_is_seeded_and_not_alphabetical(superni_dir, tiny):
    def chosen(seed):
        data = tiny.data(tasks=[SUMMARY], data_dir=str(superni_dir), max_train_samples=3, seed=seed,
                         natural_instructions=NaturalInstructionsConfig(train_reference="first"))  # the seed only samples
        data.tokenizer, data.decoder_only = byte_tokenizer(), True
        data.setup("fit")
        return [e["sample_id"] for e in data._train_examples[0]]

    draws = {tuple(chosen(seed)) for seed in range(6)}
    assert len(draws) > 1 and all(len(d) == 3 for d in draws)
    assert chosen(4) == chosen(4)


def test_bad_metric_options_fail_at_construction(tiny):
    with pytest.raises(ConfigurationError, match=r"data.metric: unknown metric 'bleu'"):
        tiny.data(metric="bleu")
    with pytest.raises(ConfigurationError, match=r"data.task_metrics\['reviews'\]: unknown metric 'f1'"):
        tiny.data(task_metrics={"reviews": "f1"})


@pytest.mark.slow
def test_fit_on_superni_tasks_writes_rouge_l_matrix_and_scored_predictions(superni_dir, tiny, tiny_llama_init, make_trainer, tmp_path):
    module = tiny.module(tiny_llama_init, evaluation={"mode": "generate"})
    data = tiny.data(tasks=[SUMMARY, SENTIMENT], data_dir=str(superni_dir), max_train_samples=4, max_eval_samples=3,
                     max_new_tokens=6, natural_instructions=NaturalInstructionsConfig(train_reference="first"))
    trainer = make_trainer(name="superni", callbacks=[ForgettingMetrics(forward_transfer=False, bootstrap_resamples=50)])
    trainer.fit(module, datamodule=data)
    run = tmp_path / "superni"
    metrics = json.loads((run / "cl_metrics.json").read_text())
    assert metrics["metric"] == "rougeL" and metrics["task_metrics"] == {SUMMARY: "rougeL", SENTIMENT: "rougeL"}
    assert "best over them" in metrics["scoring"]
    every = read_predictions(run)
    for i, j in [(0, 0), (1, 0), (1, 1)]:
        records = [r for r in every if r["stage"] == i and r["task"] == [SUMMARY, SENTIMENT][j]]
        assert len(records) == 3 and all(0.0 <= r["score"] <= 1.0 for r in records)
        assert metrics["acc_matrix"][i][j] == pytest.approx(sum(r["score"] for r in records) / 3)
        assert all(len(r["prediction"]) <= 6 for r in records)  # byte tokenizer: one character at most per new token
    lo, hi = metrics["AA_ci95"]
    assert lo <= metrics["AA"] <= hi
    assert "## ROUGE-L matrix R[i][j] (%)" in (run / "report.md").read_text()
    counts = json.loads((run / "run_info.json").read_text())["reference_counts"]
    assert counts[SUMMARY]["train"] == {"instances": 8, "without_reference": 1, "several_references": 1}
    assert counts[SUMMARY]["test"] == {"instances": 4, "without_reference": 0, "several_references": 0}
    assert counts[SENTIMENT]["train"]["without_reference"] == 0 and set(counts) == {SUMMARY, SENTIMENT}


def test_resuming_with_another_training_reference_is_refused(superni_dir, tiny):
    from nlora_lightning.errors import CheckpointMismatchError

    saved = tiny.data(tasks=[SUMMARY], data_dir=str(superni_dir)).state_dict()
    other = tiny.data(tasks=[SUMMARY], data_dir=str(superni_dir), natural_instructions=NaturalInstructionsConfig(train_reference="first"))
    with pytest.raises(CheckpointMismatchError, match="natural_instructions: checkpoint .*'random'.* vs now .*'first'"):
        other.load_state_dict(saved)
    older = {k: v for k, v in saved.items() if k != "natural_instructions"}  # written before the setting existed
    tiny.data(tasks=[SUMMARY], data_dir=str(superni_dir)).load_state_dict(older)
