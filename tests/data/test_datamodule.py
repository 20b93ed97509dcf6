import json
from types import SimpleNamespace

import pytest
from lightning.pytorch.trainer.states import TrainerFn

from nlora_lightning import ReplayConfig, TaskSequenceDataModule
from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError
from nlora_lightning.models import byte_tokenizer


def ready(dm, decoder_only=True):
    dm.tokenizer, dm.decoder_only = byte_tokenizer(), decoder_only
    dm.setup("fit")
    return dm


def fake_trainer(dm, epoch=0, sanity=False, fn=TrainerFn.FITTING):
    trainer = SimpleNamespace(current_epoch=epoch, sanity_checking=sanity, state=SimpleNamespace(fn=fn), global_rank=0, world_size=1)
    dm.trainer = trainer
    return trainer


def test_stage_structure_and_epoch_mapping():
    dm = TaskSequenceDataModule(tasks=["reviews", "topics", "intents"], epochs_per_task=2)
    assert dm.stages == [[0], [1], [2]] and dm.total_epochs == 6
    assert [dm.stage_for_epoch(e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    assert [dm.is_stage_end(e) for e in range(4)] == [False, True, False, True]
    joint = TaskSequenceDataModule(tasks=["reviews", "topics"], joint=True)
    assert joint.stages == [[0, 1]] and joint.stage_name(0) == "reviews+topics"


def test_evaluation_schedule():
    dm = TaskSequenceDataModule(tasks=["reviews", "topics", "intents"], held_out_tasks=["languages"])
    trainer = fake_trainer(dm, sanity=True)
    assert dm.scheduled_eval_tasks() == set()
    dm.zero_shot_baseline = dm.evaluate_next_task = True
    assert dm.scheduled_eval_tasks() == {0, 1, 2}
    trainer.sanity_checking = False
    assert dm.scheduled_eval_tasks() == {0, 1}  # end of task 0: seen + next
    trainer.current_epoch = 2
    assert dm.scheduled_eval_tasks() == {0, 1, 2, 3}  # last stage: + held-out
    trainer.state.fn = TrainerFn.VALIDATING
    assert dm.scheduled_eval_tasks() == {0, 1, 2, 3}


def test_diagonal_final_schedule_evaluates_each_task_after_its_training_and_all_at_the_end():
    dm = TaskSequenceDataModule(tasks=["reviews", "topics", "intents"], held_out_tasks=["languages"], eval_schedule="diagonal_final")
    trainer = fake_trainer(dm, epoch=1)
    assert dm.scheduled_eval_tasks() == {1}  # not task 0: its next entry is after the last stage
    dm.evaluate_next_task = True
    assert dm.scheduled_eval_tasks() == {1, 2}  # R[1][2] keeps FWT defined
    trainer.current_epoch = 2
    assert dm.scheduled_eval_tasks() == {0, 1, 2, 3}
    with pytest.raises(ConfigurationError, match=r"eval_schedule must be one of \['full', 'diagonal_final'\], got 'sparse'"):
        TaskSequenceDataModule(tasks=["reviews"], eval_schedule="sparse")


def test_task_header_option_reaches_the_prompts_and_the_identity():
    with_header = ready(TaskSequenceDataModule(tasks=["reviews"], max_eval_samples=4))
    without = ready(TaskSequenceDataModule(tasks=["reviews"], max_eval_samples=4, task_header=False))
    decode = lambda dm: dm.tokenizer.decode(dm._eval_examples[0][0]["prompt_ids"])  # noqa: E731
    assert decode(with_header).startswith("Task:") and "Dataset:" not in decode(without)
    assert decode(with_header).endswith(decode(without)[decode(without).index("\n") :])
    # the same samples, with stable ids (positions in test.json)
    assert [e["sample_id"] for e in without._eval_examples[0]] == [e["sample_id"] for e in with_header._eval_examples[0]]
    with pytest.raises(CheckpointMismatchError, match="task_header: checkpoint True vs now False"):
        without.load_state_dict(with_header.state_dict())
    old_checkpoint = {k: v for k, v in with_header.state_dict().items() if k not in ("task_header", "eval_schedule")}
    with_header.load_state_dict(old_checkpoint)  # written before these options existed: the defaults


def test_setup_reads_caps_and_builds_loaders():
    dm = ready(TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=10, max_eval_samples=6, batch_size=4))
    fake_trainer(dm, epoch=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4 and (batch["task"] == 1).all()
    assert (batch["labels"] != -100).any() and (batch["labels"][:, :5] == -100).all()
    loaders = dm.val_dataloader()
    assert len(loaders) == 2 and len(loaders[0].dataset) == 6
    assert len(dm.stage_train_examples(0)) == 10


def test_replay_mixes_seeded_samples_of_earlier_tasks():
    replay = ReplayConfig(samples_per_task=4, ratio=0.5)
    dm = ready(TaskSequenceDataModule(tasks=["reviews", "topics", "intents"], max_train_samples=8, replay=replay))
    stage2 = dm.stage_train_examples(2)
    assert len(stage2) == 8 + 4 and sorted({e["task"] for e in stage2}) == [0, 1, 2]
    again = ready(TaskSequenceDataModule(tasks=["reviews", "topics", "intents"], max_train_samples=8, replay=replay))
    assert [e["sentence"] for e in again.stage_train_examples(2)] == [e["sentence"] for e in stage2]


def test_loads_a_cl_benchmark_folder_written_in_a_temp_dir(tmp_path):
    folder = tmp_path / "NLI" / "mini"
    folder.mkdir(parents=True)
    (folder / "labels.json").write_text(json.dumps(["yes", "no"]))
    records = [{"label": ["yes", "no"][i % 2], "sentence": f"premise {i}"} for i in range(10)]
    (folder / "train.json").write_text(json.dumps(records))
    (folder / "test.json").write_text(json.dumps(records[:4]))
    (tmp_path / "_meta").mkdir()
    (tmp_path / "_meta" / "instruction_config.json").write_text(json.dumps({"NLI": [{"instruction": "Decide.\n"}]}))
    dm = ready(TaskSequenceDataModule(tasks=["mini"], data_dir=str(tmp_path)), decoder_only=False)
    example = dm._eval_examples[0][0]
    assert dm.tokenizer.decode(example["prompt_ids"]).startswith("Task:NLI\nDataset:mini\nDecide.\nOption: yes, no \npremise 0")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tasks": ["reviews"], "held_out_tasks": ["reviews"]}, "also in the training sequence"),
        ({"tasks": ["reviews"], "batch_size": 0}, "batch_size must be a positive integer"),
        ({"tasks": ["reviews"], "joint": True, "replay": ReplayConfig()}, "exclude each other"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        TaskSequenceDataModule(**kwargs)


def test_checkpoint_from_another_sequence_is_refused():
    dm = TaskSequenceDataModule(tasks=["reviews", "topics"])
    other = TaskSequenceDataModule(tasks=["topics", "reviews"])
    with pytest.raises(CheckpointMismatchError, match=r"task_names: checkpoint \['reviews', 'topics'\] vs now \['topics', 'reviews'\]"):
        other.load_state_dict(dm.state_dict())


@pytest.mark.parametrize("sort", [True, False])
def test_evaluation_batches_go_longest_prompt_first_and_cover_every_sample(sort):
    dm = ready(TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=8, max_eval_samples=12, batch_size=4,
                                      eval_batch_size=4, sort_eval_by_length=sort))
    fake_trainer(dm, epoch=0, fn=TrainerFn.VALIDATING)
    loader = dm.val_dataloader()[0]
    batches = list(loader)
    lengths = [len(p) for b in batches for p in b["prompt_ids"]]
    ids = [i for b in batches for i in b["sample_id"]]
    assert sorted(ids) == sorted(e["sample_id"] for e in loader.dataset)
    if sort:
        assert lengths == sorted(lengths, reverse=True)
    else:
        assert ids == [e["sample_id"] for e in loader.dataset] and lengths != sorted(lengths, reverse=True)
