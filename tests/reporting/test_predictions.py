import pytest

from nlora_lightning.reporting.predictions import aligned_correctness, predictions_path, read_predictions, write_predictions


def test_written_sorted_by_id_and_aligned_by_id(tmp_path):
    a, b = predictions_path(tmp_path, 2, 0), predictions_path(tmp_path, None, 0)
    assert (a.name, b.name) == ("stage2_task0.jsonl", "zeroshot_task0.jsonl")
    write_predictions(a, [{"sample_id": 9, "prediction": "p", "label": "p", "correct": True},
                          {"sample_id": 3, "prediction": "n", "label": "p", "correct": False}])
    write_predictions(b, [{"sample_id": 3, "prediction": "p", "label": "p", "correct": True},
                          {"sample_id": 9, "prediction": "p", "label": "p", "correct": True}])
    assert [r["sample_id"] for r in read_predictions(a)] == [3, 9]
    assert aligned_correctness([a, b]).tolist() == [[0.0, 1.0], [1.0, 1.0]]
    write_predictions(b, [{"sample_id": 4, "prediction": "p", "label": "p", "correct": True}])
    assert aligned_correctness([a, b]) is None  # different samples cannot be paired
    assert aligned_correctness([a, predictions_path(tmp_path, 0, 5)]) is None  # missing file


def test_malformed_line_is_named(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"sample_id": 1}\n')
    with pytest.raises(ValueError, match=r"p.jsonl:1: expected an object with 'sample_id' and 'correct'"):
        read_predictions(path)


def test_aligned_scores_use_the_per_sample_score_of_any_metric(tmp_path):
    from nlora_lightning.reporting.predictions import aligned_correctness, write_predictions

    path = tmp_path / "p.jsonl"
    write_predictions(path, [{"sample_id": 1, "prediction": "a b", "label": "a c", "correct": False, "score": 0.5, "metric": "rougeL"},
                             {"sample_id": 0, "prediction": "x", "label": "x", "correct": True, "score": 1.0, "metric": "rougeL"}])
    assert aligned_correctness([path]).tolist() == [[1.0, 0.5]]
