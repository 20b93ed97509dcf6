import pytest

from nlora_lightning.errors import ConfigurationError
from nlora_lightning.metrics.text import METRICS, check_metric_name, rouge_l, score_prediction

# Fixed pairs covering what SAPT's scorer does: stemming (cats/cat, running/run), punctuation and
# case, word order (LCS, not bag of words), numbers, empty strings, long summaries, non-ASCII.
PAIRS = [
    ("the cats sat on the mat", "a cat sat on a mat"),
    ("He is running quickly to the stores.", "he runs quickly to the store"),
    ("POS", "POS"),
    ("positive", "negative"),
    ("joy", "sadness"),
    ("B", "b"),
    ("Order: fox brown quick the", "the quick brown fox"),
    ("In 2019, 3 people won $400.", "in 2019 three people won 400 dollars"),
    ("", "a reference"),
    ("a prediction", ""),
    ("Amanda can't find Betty's number; Larry called her last time they were at the park together.",
     "Hannah is looking for Betty's number. Amanda can't find it. Larry called Betty last time."),
    ("Café naïve résumé", "cafe naive resume"),
    ("generalization generalizations generalize", "generalized generalizing general"),
    ("I'm gonna go to the beach with my friends this weekend, want to come?",
     "I am going to the beach this weekend with friends. Do you want to come along?"),
]


@pytest.mark.parametrize("prediction,reference", PAIRS)
def test_rouge_l_matches_the_rouge_score_package_with_stemming(prediction, reference):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    expected = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, [reference]) == pytest.approx(expected, abs=1e-6)


def test_several_references_take_the_best():
    references = ["something unrelated", "the cat sat on the mat"]
    assert rouge_l("the cat sat on the mat", references) == pytest.approx(1.0)
    assert rouge_l("the cat sat", references) == pytest.approx(max(rouge_l("the cat sat", [r]) for r in references))
    assert score_prediction("exact_match", "The cat sat on the mat!", references) == 1.0
    assert score_prediction("exact_match", "the cat", references) == 0.0
    assert rouge_l("anything", []) == 0.0


def test_accuracy_compares_like_exact_match_and_scores_are_floats():
    assert score_prediction("accuracy", " Positive ", ["positive"]) == 1.0
    assert score_prediction("accuracy", "negative", ["positive"]) == 0.0
    assert isinstance(score_prediction("rougeL", "a b", ["a c"]), float)


def test_unknown_metric_is_named_with_its_option():
    assert check_metric_name("rougeL", "data.metric") == "rougeL"
    with pytest.raises(ConfigurationError, match=r"data.task_metrics\['t'\]: unknown metric 'bleu'; metrics: \['rougeL'"):
        check_metric_name("bleu", "data.task_metrics['t']")
    with pytest.raises(ConfigurationError, match="unknown metric 'f1'"):
        score_prediction("f1", "a", ["a"])
    assert METRICS == ("rougeL", "exact_match", "accuracy")
