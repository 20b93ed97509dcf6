"""The collators' label positions, checked against positions worked out independently of them."""

import torch

from nlora_lightning import TaskSequenceDataModule
from nlora_lightning.data.collate import TrainCollator
from nlora_lightning.models import byte_tokenizer

IGNORE = -100
PAD = 0


def test_decoder_only_labels_are_the_answer_tokens_at_the_answer_positions():
    examples = [
        {"prompt_ids": [11, 12, 13], "answer_ids": [21, 22, 1], "task": 0},
        {"prompt_ids": [14, 15], "answer_ids": [23, 1], "task": 0},
    ]
    batch = TrainCollator(pad_token_id=PAD, decoder_only=True)(examples)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 21, 22, 1], [14, 15, 23, 1, PAD, PAD]]
    assert batch["labels"].tolist() == [[IGNORE, IGNORE, IGNORE, 21, 22, 1], [IGNORE, IGNORE, 23, 1, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]


def test_seq2seq_labels_are_the_answer_alone():
    examples = [{"prompt_ids": [11, 12, 13], "answer_ids": [21, 1], "task": 1}, {"prompt_ids": [14], "answer_ids": [22, 23, 1], "task": 1}]
    batch = TrainCollator(pad_token_id=PAD, decoder_only=False)(examples)
    assert batch["input_ids"].tolist() == [[11, 12, 13], [14, PAD, PAD]]
    assert batch["labels"].tolist() == [[21, 1, IGNORE], [22, 23, 1]]
    assert batch["task"].tolist() == [1, 1]


def test_training_batches_supervise_exactly_the_text_after_answer():
    # The byte tokenizer maps one character to one token, so the answer's first position is the
    # length of the text up to and including the last "Answer:", found in the decoded row.
    dm = TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=8, batch_size=8)
    dm.tokenizer, dm.decoder_only = byte_tokenizer(), True
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    examples = {tuple(e["prompt_ids"]): e for e in dm.stage_train_examples(0)}
    eos = dm.tokenizer.eos_token_id
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        length = int(mask.sum())
        text = dm.tokenizer.decode(ids[:length].tolist(), skip_special_tokens=True)
        start = text.rindex("Answer:") + len("Answer:")
        supervised = (labels != IGNORE).nonzero().flatten().tolist()
        assert supervised == list(range(start, length)), text
        assert torch.equal(labels[start:length], ids[start:length])
        assert labels[length - 1] == eos
        label_text = next(e["label"] for p, e in examples.items() if list(p) == ids[:start].tolist())
        assert dm.tokenizer.decode(labels[start : length - 1].tolist()) == " " + label_text


def test_drawn_train_batches_are_a_seeded_draw_without_replacement():
    from nlora_lightning.data.collate import drawn_train_batches

    examples = [{"prompt_ids": [10 + i], "answer_ids": [1], "task": 0} for i in range(10)]
    collate = TrainCollator(pad_token_id=PAD, decoder_only=True)

    def drawn(seed, samples=7, batch_size=3):
        batches = list(drawn_train_batches(examples, samples, batch_size, seed, collate))
        return [len(b["input_ids"]) for b in batches], [int(row[0]) - 10 for b in batches for row in b["input_ids"]]

    sizes, ids = drawn(seed=1)
    assert sizes == [3, 3, 1]
    assert len(set(ids)) == 7 and set(ids) <= set(range(10))
    assert ids == torch.randperm(10, generator=torch.Generator().manual_seed(1))[:7].tolist()
    torch.manual_seed(123)  # the global RNG plays no part
    assert drawn(seed=1) == (sizes, ids)
    assert drawn(seed=2)[1] != ids
    assert drawn(seed=1, samples=50)[1] == torch.randperm(10, generator=torch.Generator().manual_seed(1)).tolist()
