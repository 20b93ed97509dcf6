"""Validation carving and row selection: disjoint, stratified, seeded, refused when the task is too small."""

from collections import Counter

import pytest

from nlora_lightning import TaskSequenceDataModule
from nlora_lightning.data.sampling import carve_validation, stratified_subsample
from nlora_lightning.data.splits import check_validation_room, select_task_rows
from nlora_lightning.errors import ConfigurationError
from nlora_lightning.models import byte_tokenizer

# 60/30/10, interleaved so that file order says nothing about the class.
LABELS = [label for i in range(60) for label, count in (("a", 60), ("b", 30), ("c", 10)) if i < count]


@pytest.mark.parametrize("seed", range(6))
def test_carved_validation_is_disjoint_from_training_stratified_and_seeded(seed):
    rows = select_task_rows(3, seed, LABELS, ["x"] * 40, max_train_samples=30, validation_samples=20, evaluate_on="validation")
    train, validation = set(rows.train), set(rows.evaluation)
    assert rows.evaluation_split == "validation" and len(validation) == 20 and len(train) == 30
    assert not train & validation and train | validation <= set(range(len(LABELS)))
    assert Counter(LABELS[i] for i in validation) == {"a": 12, "b": 6, "c": 2}  # 60:30:10 of 20
    assert Counter(LABELS[i] for i in train) == {"a": 18, "b": 9, "c": 3}  # 54:27:9 of the 90 left
    again = select_task_rows(3, seed, LABELS, None, max_train_samples=30, validation_samples=20, evaluate_on="validation")
    assert again == rows  # test.json is not needed to evaluate on validation
    other_seed = select_task_rows(3, seed + 1, LABELS, None, max_train_samples=30, validation_samples=20, evaluate_on="validation")
    other_task = select_task_rows(4, seed, LABELS, None, max_train_samples=30, validation_samples=20, evaluate_on="validation")
    assert other_seed.evaluation != rows.evaluation and other_task.evaluation != rows.evaluation


def test_without_carving_the_rows_are_those_drawn_before_the_option_existed():
    rows = select_task_rows(2, 5, LABELS, LABELS[:40], max_train_samples=25, max_eval_samples=10)
    assert rows.train == stratified_subsample(LABELS, 25, 5 + 7919 * 2)
    assert rows.evaluation == stratified_subsample(LABELS[:40], 10, 5 + 7919 * 2 + 1) and rows.evaluation_split == "test"


def test_carving_while_evaluating_on_test_keeps_the_training_rows_of_the_validation_runs():
    # A sweep chooses on validation, then reruns on test: both must train on the same samples.
    on_validation = select_task_rows(0, 1, LABELS, None, max_train_samples=40, validation_samples=12, evaluate_on="validation")
    on_test = select_task_rows(0, 1, LABELS, LABELS[:50], max_train_samples=40, max_eval_samples=20, validation_samples=12)
    assert on_test.train == on_validation.train and on_test.evaluation_split == "test"


def test_carve_validation_covers_every_index_once():
    validation, rest = carve_validation(LABELS, 7, seed=0)
    assert sorted(validation + rest) == list(range(len(LABELS))) and len(validation) == 7
    with pytest.raises(ValueError, match="leaves none of the 100 samples"):
        carve_validation(LABELS, 100, seed=0)


def test_a_task_too_small_for_validation_and_training_is_refused_with_its_size():
    check_validation_room("mini", 30, 10, 20)  # exactly enough
    with pytest.raises(ConfigurationError, match=r"task 'mini' has 30 samples in train.json, too few for "
                                                  r"data.validation_samples=10 plus data.max_train_samples=21 \(disjoint\)"):
        check_validation_room("mini", 30, 10, 21)
    with pytest.raises(ConfigurationError, match=r"task 'mini' has 30 samples in train.json, too few for data.validation_samples=30;"):
        check_validation_room("mini", 30, 30, None)
    check_validation_room("held", 31, 30, 500, trained=False)  # a held-out task trains on nothing


def ready(dm):
    dm.tokenizer, dm.decoder_only = byte_tokenizer(), True
    dm.setup("fit")
    return dm


def test_the_data_module_evaluates_on_validation_samples_it_never_trains_on():
    dm = ready(TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=40, validation_samples=16,
                                      evaluate_on="validation", held_out_tasks=["intents"]))
    for task in range(3):
        evaluated = dm._eval_examples[task]
        assert len(evaluated) == 16 and {e["split"] for e in evaluated} == {"validation"}
        if task < 2:
            trained = {e["sample_id"] for e in dm._train_examples[task]}
            assert len(trained) == 40 and not trained & {e["sample_id"] for e in evaluated}
    # sample ids are positions in train.json: the evaluated sentences are that file's records
    records = dm.load_tasks()[1].records["train"]
    assert all(records[e["sample_id"]]["sentence"] == e["sentence"] for e in dm._eval_examples[1])
    on_test = ready(TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=40, max_eval_samples=8, validation_samples=16))
    assert [e["sample_id"] for e in on_test._train_examples[1]] == [e["sample_id"] for e in dm._train_examples[1]]
    assert {e["split"] for e in on_test._eval_examples[1]} == {"test"} and len(on_test._eval_examples[1]) == 8


def test_data_module_refusals_name_the_cause():
    with pytest.raises(ConfigurationError, match="data.evaluate_on=validation needs data.validation_samples"):
        TaskSequenceDataModule(tasks=["reviews"], evaluate_on="validation")
    with pytest.raises(ConfigurationError, match=r"data.evaluate_on must be one of \['test', 'validation'\], got 'dev'"):
        TaskSequenceDataModule(tasks=["reviews"], validation_samples=8, evaluate_on="dev")
    too_big = TaskSequenceDataModule(tasks=["reviews"], validation_samples=300, max_train_samples=64)
    with pytest.raises(ConfigurationError, match="task 'reviews' has 320 samples in train.json, too few for data.validation_samples=300"):
        too_big.load_tasks()
    carved = TaskSequenceDataModule(tasks=["reviews"], validation_samples=8)
    with pytest.raises(Exception, match="validation_samples: checkpoint None vs now 8"):
        carved.load_state_dict(TaskSequenceDataModule(tasks=["reviews"]).state_dict())
