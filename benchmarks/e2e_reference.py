"""The reference side of benchmarks/e2e.py: continual N-LoRA the way the released N-LoRA/O-LoRA code works.

A Hugging Face ``Trainer`` per task over a PEFT model that gets a new named LoRA adapter per task
(earlier adapters stay active and frozen), the N-LoRA penalty ``lambda * sum_layers |B_t A_t|_1``
(raw factors, as nlora's ``delta_w`` form) added in ``compute_loss``, the adapter saved at each
task end, and after each task every seen task evaluated with ``model.generate``. Only the data
(the same tokenised, capped examples and per-epoch order) and the exact-match metric come from
nlora_lightning, so that both systems see the same samples in the same order.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import Trainer, TrainingArguments

from nlora_lightning import ContinualLightningModule
from nlora_lightning.data.collate import EvalCollator, TrainCollator
from nlora_lightning.data.datamodule import TaskSequenceDataModule
from nlora_lightning.data.sampling import EpochSampler
from nlora_lightning.metrics.functional import exact_match

__all__ = ["run_reference"]


class TaskEpochSampler(EpochSampler):
    """nlora's permutation for the global epoch ``first_epoch + epoch`` (epochs run on across tasks)."""

    def __init__(self, length: int, seed: int, first_epoch: int) -> None:
        super().__init__(length, seed, epoch=first_epoch)
        self.first_epoch = first_epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = self.first_epoch + epoch


class NLoRATrainer(Trainer):
    """``Trainer`` with the N-LoRA penalty of the adapter being trained added to the loss."""

    def __init__(self, *args, adapter: str, weight: float, data_seed: int, first_epoch: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.adapter, self.weight, self.data_seed, self.first_epoch = adapter, weight, data_seed, first_epoch

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        penalty = sum((module.lora_B[self.adapter].weight @ module.lora_A[self.adapter].weight).abs().sum()
                      for module in model.modules() if hasattr(module, "lora_A") and self.adapter in module.lora_A)
        loss = outputs.loss + self.weight * penalty
        return (loss, outputs) if return_outputs else loss

    def _get_train_sampler(self, *args, **kwargs):
        return TaskEpochSampler(len(self.train_dataset), self.data_seed, self.first_epoch)


def run_reference(spec: dict) -> dict:
    """Train and evaluate the task sequence of ``spec`` (see e2e.build_spec); times, accuracy matrix, AA."""
    torch.manual_seed(spec["seed"])
    device = torch.device(spec["device"])
    # The same base weights and tokenizer as nlora's run (a GGUF file is dequantised the same way).
    loader = ContinualLightningModule(**spec["source"], adapters="none", torch_dtype="float32", seed=spec["seed"])
    loader.configure_model()
    base, tokenizer = loader.model.requires_grad_(False).to(device), loader.tokenizer
    base.config.use_cache = True
    data = TaskSequenceDataModule(**spec["data"])
    data.tokenizer, data.decoder_only = tokenizer, True
    data.setup("fit")
    stages, epochs, lora = data.num_stages, spec["data"]["epochs_per_task"], spec["lora"]
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    work = Path(spec["work"]) / "reference"
    train_collate = TrainCollator(tokenizer.pad_token_id, True)
    matrix = [[None] * stages for _ in range(stages)]
    train_s = eval_s = 0.0
    losses: list[float] = []
    model = None
    for task in range(stages):
        start = time.perf_counter()
        name = f"task{task}"
        if model is None:
            model = get_peft_model(base, config, adapter_name=name)
        else:
            model.add_adapter(name, config)
        model.base_model.set_adapter([f"task{i}" for i in range(task + 1)])  # every adapter so far is active
        for parameter_name, parameter in model.named_parameters():
            parameter.requires_grad_(f".{name}." in parameter_name)  # only the new one trains
        arguments = TrainingArguments(
            output_dir=str(work / name), per_device_train_batch_size=spec["data"]["batch_size"], num_train_epochs=epochs,
            learning_rate=spec["lr"], weight_decay=0.0, lr_scheduler_type="constant", warmup_steps=0,
            max_grad_norm=0.0,  # nlora's configs do not clip gradients either
            save_strategy="no", report_to="none", logging_strategy="no", disable_tqdm=True, remove_unused_columns=False,
            seed=spec["seed"], use_cpu=device.type == "cpu", dataloader_num_workers=0)
        trainer = NLoRATrainer(
            model=model, args=arguments, train_dataset=data.stage_train_examples(task),
            data_collator=lambda rows: {k: v for k, v in train_collate(rows).items() if k != "task"},
            adapter=name, weight=spec["lambda"], data_seed=spec["data"]["seed"], first_epoch=task * epochs)
        losses.append(trainer.train().training_loss)  # mean over the task's steps, penalty included
        model.save_pretrained(str(work / "adapters"), selected_adapters=[name])
        train_s += time.perf_counter() - start

        start = time.perf_counter()
        model.eval()
        for seen in range(task + 1):
            matrix[task][seen] = evaluate(model, tokenizer, data, seen, spec["data"]["eval_batch_size"], device)
        eval_s += time.perf_counter() - start
    final = matrix[-1]
    return {"train_s": train_s, "eval_s": eval_s, "acc_matrix": matrix, "AA": sum(final) / len(final), "task_losses": losses}


@torch.no_grad()
def evaluate(model, tokenizer, data: TaskSequenceDataModule, task: int, batch_size: int, device: torch.device) -> float:
    """Greedy generation on task ``task``'s test samples; exact-match accuracy."""
    examples = data._eval_examples[task]  # the same capped test samples nlora evaluates
    collate = EvalCollator(tokenizer.pad_token_id, True, task, data._candidates[task], data._label_names[task])
    correct = 0
    for begin in range(0, len(examples), batch_size):
        batch = collate(examples[begin : begin + batch_size])
        prompt = batch["input_ids"].to(device)
        output = model.generate(input_ids=prompt, attention_mask=batch["attention_mask"].to(device), do_sample=False,
                                max_new_tokens=batch["max_new_tokens"], pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)
        answers = tokenizer.batch_decode(output[:, prompt.shape[1] :], skip_special_tokens=True)
        correct += sum(exact_match(answer, label) for answer, label in zip(answers, batch["label_text"]))
    return correct / len(examples)
