from nlora_lightning.reporting.metric_names import metric_of_run, scoring_lines


def test_scoring_lines_name_the_metric_and_the_reference_rule():
    rouge = scoring_lines({"metric": "rougeL", "scoring": "mean per-sample score; a sample with several references takes the best over them"})
    assert rouge[0].startswith("Scores: ROUGE-L F-measure") and "best over them" in rouge[0]
    mixed = scoring_lines({"metric": "mixed", "task_metrics": {"a": "rougeL", "b": "accuracy"}})
    assert mixed[0].startswith("Scores per task: a: ROUGE-L") and "b: accuracy" in mixed[0]


def test_runs_written_before_the_metric_was_recorded_read_as_exact_match():
    assert metric_of_run({"AA": 0.5}) == "exact_match" and metric_of_run(None) == "exact_match"
    assert scoring_lines({})[0].startswith("Scores: exact match")
