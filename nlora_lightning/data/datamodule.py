"""``TaskSequenceDataModule``: the tasks of a continual-learning sequence, in order, in one ``fit``.

Epochs map to stages: stage s covers epochs ``[s * epochs_per_task, (s + 1) * epochs_per_task)``.
A stage trains one task (the usual sequence), one task plus replayed samples of earlier tasks
(``replay``), or all tasks at once (``joint``, the multi-task upper bound, a single stage).

Evaluation uses one loader per task that is fixed for the whole fit; each loader's sampler asks the
data module whether its task is scheduled at that moment, which is:
    - before training (Lightning's sanity check), every task, when the zero-shot baseline is on, and
      the held-out tasks, when the retention baseline is on;
    - at the end of stage s, every task seen so far (``eval_schedule="full"``) or only the stage's
      own tasks (``"diagonal_final"``), the next stage's tasks (for forward transfer, when on) and,
      after the last stage, every task seen plus the held-out tasks;
    - during ``trainer.validate`` / ``trainer.test``, every task.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Literal, Optional

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from nlora_lightning.data.benchmark import TaskData, load_tasks, resolve_task_names
from nlora_lightning.data.collate import EvalCollator, TrainCollator
from nlora_lightning.data.encoding import EncodingConfig, encode_prompt, encode_split, encode_task_answer, task_prompt
from nlora_lightning.data.natural_instructions import NaturalInstructionsConfig
from nlora_lightning.data.task_metrics import check_metric_options, resolve_task_metrics
from nlora_lightning.data.replay import ReplayConfig, draw_replay
from nlora_lightning.data.sampling import EpochSampler, ResumableDataLoader, ScheduledSampler
from nlora_lightning.data.schedule import EVAL_SCHEDULES, sanity_check_tasks, stage_end_tasks, task_stages
from nlora_lightning.data.splits import EVALUATION_SPLITS, check_validation_room, select_task_rows
from nlora_lightning.data.toy import TOY_BENCHMARK_DIR
from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError

__all__ = ["EVAL_SCHEDULES", "EVALUATION_SPLITS", "ReplayConfig", "TaskSequenceDataModule"]

# Identity entries added after checkpoints were first written: a checkpoint without one had the default.
_IDENTITY_DEFAULTS = {"task_header": True, "eval_schedule": "full", "validation_samples": None, "evaluate_on": "test",
                      "natural_instructions": {"train_reference": "random", "score_references": "all", "on_empty_reference": "drop"}}

log = logging.getLogger(__name__)

# Unscheduled evaluation loaders are empty on purpose.
warnings.filterwarnings("ignore", message=r".*across ranks is zero.*")


class TaskSequenceDataModule(pl.LightningDataModule):
    """Feeds the tasks of a continual-learning sequence in order (see the module docstring).

    Args:
        tasks: Task names, in training order. Exclusive with ``preset``.
        preset: ``standard_order1..3`` or ``long_order4..6`` (the paper's orders), ``superni_order1..2`` (SAPT's).
        data_dir: A folder in the CL_Benchmark layout, or of natural-instructions task folders (SAPT's
            SuperNI; see :mod:`~nlora_lightning.data.natural_instructions`). ``None`` uses the packaged toy benchmark.
        max_train_samples: Per-task cap on training samples (seeded, class-stratified).
        max_eval_samples: Per-task cap on test samples (seeded, class-stratified).
        validation_samples: Size of a validation set carved out of each task's ``train.json``
            (seeded, class-stratified); training samples are then drawn from the rest only, so the
            two never overlap. ``None``: no validation set, training draws from the whole file.
        evaluate_on: The split every evaluation scores: ``"test"`` (default) or ``"validation"``
            (needs ``validation_samples``; the test files are then not even encoded), e.g. to
            choose a hyperparameter without looking at test data.
        epochs_per_task: Epochs of each stage (the paper: 10).
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size (default: ``batch_size``).
        sort_eval_by_length: Evaluate each task's samples longest prompt first, so a batch holds
            prompts of similar length and pads little (scores are kept per sample: no result changes).
        max_source_length: Prompt token budget (sentences are shortened past it; see ``encoding``).
        max_target_length: Answer token budget, EOS included.
        joint: Train all tasks at once in a single stage (multi-task learning).
        replay: Replay settings, or ``None``.
        held_out_tasks: Tasks never trained on, evaluated zero-shot after the last stage.
        on_unknown_label: Records whose label is not in labels.json: ``error`` (default),
            ``drop`` them, or ``keep`` them (they always count as wrong; the released code keeps
            MNLI's 131 test records labelled "-").
        task_header: Keep the ``Task:``/``Dataset:`` lines in every prompt (the paper's template);
            ``False`` drops them (see :func:`~nlora_lightning.data.templates.build_prompt`).
        eval_schedule: Which tasks each stage end evaluates. ``"full"``: every task seen so far,
            which fills the lower triangle of R (about T^2/2 task evaluations; forgetting needs it).
            ``"diagonal_final"``: each task right after its own training, and every task after the
            last stage (2T - 1 task evaluations): AA, BWT and FWT stay defined, forgetting does not.
            Forward transfer adds the next task at each stage end under either schedule.
        seed: Seeds subsampling, shuffling and replay draws.
        num_workers: DataLoader workers.
        cache_dir: Where tokenised datasets are cached (default ``$NLORA_DATASETS_CACHE``, else
            ``$NLORA_CACHE_DIR/datasets``).
        instruction_config: The instruction file (group -> list of instructions); default: looked
            for in ``data_dir/_meta`` and ``data_dir`` (O-LoRA keeps it in its repo's ``configs/``).
        metric: The metric of every task (``rougeL``, ``exact_match``, ``accuracy``); default per
            format: ROUGE-L for natural-instructions tasks, exact match for CL_Benchmark tasks.
        task_metrics: Per-task metric overrides, ``{task: metric}``.
        natural_instructions: Which reference trains and which score natural-instructions tasks.
        max_new_tokens: Generation length. ``None``: the longest label's answer for tasks with a
            label set, ``max_target_length`` for free-text tasks (SuperNI's configs set 50 for all).

    Raises:
        ConfigurationError: For an unknown preset, duplicate tasks, no tasks, held-out tasks that
            are also trained, non-positive sizes, an unknown ``eval_schedule`` or ``evaluate_on``,
            or ``evaluate_on="validation"`` without ``validation_samples``. :meth:`load_tasks`
            also raises it for a task whose ``train.json`` is too small for the validation set.

    Example:
        >>> dm = TaskSequenceDataModule(tasks=["reviews", "topics"], max_train_samples=64)
        >>> dm.task_names, dm.total_epochs
        (['reviews', 'topics'], 2)
    """

    def __init__(
        self,
        tasks: Optional[list[str]] = None,
        preset: Optional[str] = None,
        data_dir: Optional[str] = None,
        max_train_samples: Optional[int] = None,
        max_eval_samples: Optional[int] = None,
        validation_samples: Optional[int] = None,
        evaluate_on: Literal["test", "validation"] = "test",
        epochs_per_task: int = 1,
        batch_size: int = 8,
        eval_batch_size: Optional[int] = None,
        sort_eval_by_length: bool = True,
        max_source_length: int = 512,
        max_target_length: int = 50,
        joint: bool = False,
        replay: Optional[ReplayConfig] = None,
        held_out_tasks: Optional[list[str]] = None,
        on_unknown_label: Literal["error", "drop", "keep"] = "error",
        task_header: bool = True,
        eval_schedule: Literal["full", "diagonal_final"] = "full",
        seed: int = 42,
        num_workers: int = 0,
        cache_dir: Optional[str] = None,
        instruction_config: Optional[str] = None,
        metric: Optional[str] = None,
        task_metrics: Optional[dict[str, str]] = None,
        natural_instructions: Optional[NaturalInstructionsConfig] = None,
        max_new_tokens: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.task_names = resolve_task_names(tasks, preset)
        self.held_out_tasks = list(held_out_tasks or [])
        overlap = sorted(set(self.held_out_tasks) & set(self.task_names))
        if overlap:
            raise ConfigurationError(f"held_out_tasks {overlap} are also in the training sequence")
        for name, value in [("max_train_samples", max_train_samples), ("max_eval_samples", max_eval_samples),
                            ("validation_samples", validation_samples), ("epochs_per_task", epochs_per_task),
                            ("batch_size", batch_size), ("eval_batch_size", eval_batch_size),
                            ("max_source_length", max_source_length), ("max_target_length", max_target_length),
                            ("max_new_tokens", max_new_tokens)]:
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigurationError(f"data.{name} must be a positive integer, got {value!r}")
        if joint and replay is not None:
            raise ConfigurationError("joint (multi-task) training and replay exclude each other")
        if on_unknown_label not in ("error", "drop", "keep"):
            raise ConfigurationError(f"on_unknown_label must be 'error', 'drop' or 'keep', got {on_unknown_label!r}")
        if eval_schedule not in EVAL_SCHEDULES:
            raise ConfigurationError(f"data.eval_schedule must be one of {list(EVAL_SCHEDULES)}, got {eval_schedule!r}")
        if evaluate_on not in EVALUATION_SPLITS:
            raise ConfigurationError(f"data.evaluate_on must be one of {list(EVALUATION_SPLITS)}, got {evaluate_on!r}")
        if evaluate_on == "validation" and validation_samples is None:
            raise ConfigurationError("data.evaluate_on=validation needs data.validation_samples (the size of the "
                                     "validation set carved out of each task's train.json)")
        check_metric_options(metric, task_metrics, self.task_names + self.held_out_tasks)
        self.metric, self.task_metrics, self.max_new_tokens = metric, dict(task_metrics or {}), max_new_tokens
        self.natural_instructions = natural_instructions or NaturalInstructionsConfig()
        self.task_metric_names: list[str] = []  # per column, filled by load_tasks()
        self.data_dir = Path(data_dir) if data_dir is not None else TOY_BENCHMARK_DIR
        self.instruction_config = instruction_config
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.validation_samples = validation_samples
        self.evaluate_on = evaluate_on
        self.epochs_per_task = epochs_per_task
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.sort_eval_by_length = bool(sort_eval_by_length)
        self.max_source_length = max_source_length
        self.max_target_length = max_target_length
        self.joint = joint
        self.replay = replay
        self.on_unknown_label = on_unknown_label
        self.task_header = bool(task_header)
        self.eval_schedule = eval_schedule
        self.seed = seed
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        # Evaluation protocol; ForgettingMetrics turns these on for forward transfer.
        self.zero_shot_baseline = False
        self.evaluate_next_task = False
        self.retention_baseline = False  # held-out tasks on the base model too (ForgettingMetrics: retention)
        # Filled by setup().
        self.tokenizer: Any = None
        self.decoder_only: Optional[bool] = None
        self._train_examples: list[list[dict]] = []
        self._eval_examples: list[list[dict]] = []
        self._candidates: list[list[list[int]]] = []
        self._label_names: list[list[str]] = []
        self._replay_draws: dict[int, list[tuple[int, int]]] = {}
        self._eval_loaders: Optional[list[DataLoader]] = None
        self._tasks: Optional[list[TaskData]] = None

    # ----- the stage structure -------------------------------------------------------------
    @property
    def all_task_names(self) -> list[str]:
        """Sequence tasks, then held-out tasks: the columns of every evaluation."""
        return self.task_names + self.held_out_tasks

    @property
    def stages(self) -> list[list[int]]:
        return task_stages(len(self.task_names), self.joint)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def total_epochs(self) -> int:
        return self.num_stages * self.epochs_per_task

    def stage_for_epoch(self, epoch: int) -> int:
        return min(epoch // self.epochs_per_task, self.num_stages - 1)

    def is_stage_end(self, epoch: int) -> bool:
        return (epoch + 1) % self.epochs_per_task == 0

    def stage_name(self, stage: int) -> str:
        return "+".join(self.task_names[t] for t in self.stages[stage])

    def train_labels(self, task: int) -> list[str]:
        """Gold answers of task ``task``'s training samples (after subsampling): the majority baseline's input."""
        return [e["label"] for e in self._train_examples[task]]

    def label_names(self, task: int) -> list[str]:
        """The label set of task ``task`` (``labels.json``)."""
        return list(self._label_names[task])

    def scheduled_eval_tasks(self) -> set[int]:
        """Columns evaluated right now (see the module docstring)."""
        trainer = self._trainer_or_none()
        if trainer is None or not trainer.state.fn or trainer.state.fn.value != "fit":
            return set(range(len(self.all_task_names)))
        if trainer.sanity_checking:
            return sanity_check_tasks(len(self.task_names), len(self.held_out_tasks), self.zero_shot_baseline,
                                      self.retention_baseline)
        if not self.is_stage_end(trainer.current_epoch):
            return set()
        return stage_end_tasks(self.stages, self.stage_for_epoch(trainer.current_epoch), self.eval_schedule,
                               self.evaluate_next_task, len(self.held_out_tasks))

    def _trainer_or_none(self):
        try:
            return self.trainer
        except RuntimeError:
            return None

    # ----- loading --------------------------------------------------------------------------
    def _resolve_tokenizer(self) -> None:
        if self.tokenizer is not None and self.decoder_only is not None:
            return
        module = self.trainer.lightning_module if self._trainer_or_none() is not None else None
        if module is None or not hasattr(module, "tokenizer"):
            raise ConfigurationError(
                "TaskSequenceDataModule needs a tokenizer: attach it to a ContinualLightningModule through "
                "trainer.fit(module, datamodule=dm), or set dm.tokenizer and dm.decoder_only yourself"
            )
        self.tokenizer = module.tokenizer
        self.decoder_only = not module.is_seq2seq

    def load_tasks(self) -> list[TaskData]:
        """Read and validate every task's files (once); bad data fails here, before anything is written."""
        if self._tasks is None:
            tasks = load_tasks(self.data_dir, self.all_task_names, self.instruction_config, self.on_unknown_label,
                               self.natural_instructions, self.seed)
            self.task_metric_names = resolve_task_metrics(tasks, self.metric, self.task_metrics)
            for index, task in enumerate(tasks):  # a carved validation set must leave the training samples asked for
                check_validation_room(task.name, len(task.records["train"]), self.validation_samples, self.max_train_samples,
                                      trained=index < len(self.task_names))
            self._tasks = tasks
        return self._tasks

    def reference_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """Per natural-instructions task and split: its instances, those without a non-empty reference
        (dropped or kept, see ``natural_instructions.on_empty_reference``) and those with several; ``{}``
        before the tasks are read and for CL_Benchmark tasks."""
        return {task.name: task.reference_counts for task in self._tasks or [] if task.reference_counts}

    def check_prompt_budget(self, tokenizer) -> None:
        """Fail fast when ``max_source_length`` cannot hold a task's template even with an empty sentence."""
        for task in self.load_tasks():
            prompt, span = task_prompt(task, "", self.task_header)
            encode_prompt(tokenizer, prompt, span, self.max_source_length, task.name)

    def setup(self, stage: str) -> None:
        if self._train_examples and self._eval_examples:
            return
        self._resolve_tokenizer()
        from nlora_lightning.models.loading import cache_dir as default_cache

        cache = Path(self.cache_dir or os.environ.get("NLORA_DATASETS_CACHE") or default_cache() / "datasets")
        config = EncodingConfig(self.max_source_length, self.max_target_length, bool(self.decoder_only), self.task_header)
        tasks = self.load_tasks()
        self._train_examples, self._eval_examples, self._candidates = [], [], []
        self._label_names = [task.labels for task in tasks]
        for index, task in enumerate(tasks):
            trained = index < len(self.task_names)
            train = encode_split(task, "train", self.tokenizer, config, cache) if trained or self.validation_samples else None
            test = encode_split(task, "test", self.tokenizer, config, cache) if self.evaluate_on == "test" else None
            rows = select_task_rows(index, self.seed, _strata(task, train), _strata(task, test), self.max_train_samples,
                                    self.max_eval_samples, self.validation_samples, self.evaluate_on)
            evaluated = test if rows.evaluation_split == "test" else train
            self._eval_examples.append(self._examples(task, rows.evaluation_split, index, evaluated, rows.evaluation, config))
            self._candidates.append([encode_task_answer(self.tokenizer, task, label, config) for label in task.labels])
            if trained:
                self._train_examples.append(self._examples(task, "train", index, train, rows.train, config))
        self._draw_replay()

    def _examples(self, task: TaskData, split: str, index: int, dataset, rows: list[int], config: EncodingConfig) -> list[dict]:
        """The encoded ``rows`` of ``dataset`` (a file of ``task``) as examples; ``split`` names them in logs and ids."""
        examples = dataset.select(rows).to_list()
        truncated = sum(e["truncated"] for e in examples)
        if truncated:
            limit = config.max_source_length
            log.warning(
                "task %s/%s: %d of %d prompts exceed max_source_length=%d tokens; their sentences were shortened "
                "from the end (instruction, options and 'Answer:' kept)", task.name, split, truncated, len(examples), limit,
            )
        for e, row in zip(examples, rows):
            e["task"], e["split"] = index, split
            # Stable across runs with the same seed and sizes: the record's position in the split's file
            # (train.json for the validation split; counted after records dropped by on_unknown_label="drop").
            e["sample_id"] = row
        return examples

    def _draw_replay(self) -> None:
        self._replay_draws = {}
        if self.replay is not None:
            self._replay_draws = draw_replay([[e["label"] for e in examples] for examples in self._train_examples],
                                             self.replay, self.seed)

    def stage_train_examples(self, stage: int) -> list[dict]:
        examples = [e for t in self.stages[stage] for e in self._train_examples[t]]
        examples += [self._train_examples[t][i] for t, i in self._replay_draws.get(stage, [])]
        return examples

    # ----- loaders ----------------------------------------------------------------------------
    def _rank_world(self) -> tuple[int, int]:
        trainer = self._trainer_or_none()
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        trainer = self._trainer_or_none()
        epoch = trainer.current_epoch if trainer is not None else 0
        examples = self.stage_train_examples(self.stage_for_epoch(epoch))
        rank, world = self._rank_world()
        sampler = EpochSampler(len(examples), seed=self.seed, epoch=epoch, rank=rank, world_size=world)
        return ResumableDataLoader(
            examples,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=TrainCollator(self.tokenizer.pad_token_id, bool(self.decoder_only)),
            num_workers=self.num_workers,
        )

    def _evaluation_loaders(self) -> list[DataLoader]:
        if self._eval_loaders is None:
            rank, world = self._rank_world()
            self._eval_loaders = [
                DataLoader(
                    examples,
                    batch_size=self.eval_batch_size,
                    sampler=ScheduledSampler(len(examples), (lambda t=t: t in self.scheduled_eval_tasks()), rank, world,
                                             order=self._evaluation_order(examples)),
                    collate_fn=EvalCollator(self.tokenizer.pad_token_id, bool(self.decoder_only), t, self._candidates[t],
                                            self._label_names[t], self.task_metric_names[t],
                                            self.max_new_tokens or (None if self._candidates[t] else self.max_target_length)),
                    num_workers=self.num_workers,
                )
                for t, examples in enumerate(self._eval_examples)
            ]
        return self._eval_loaders

    def _evaluation_order(self, examples: list[dict]) -> Optional[list[int]]:
        if not self.sort_eval_by_length:
            return None
        return sorted(range(len(examples)), key=lambda i: -len(examples[i]["prompt_ids"]))  # stable: ties keep file order

    def val_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    def test_dataloader(self) -> list[DataLoader]:
        return self._evaluation_loaders()

    # ----- checkpoints -------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {
            "task_names": self.task_names,
            "held_out_tasks": self.held_out_tasks,
            "joint": self.joint,
            "epochs_per_task": self.epochs_per_task,
            "seed": self.seed,
            "max_train_samples": self.max_train_samples,
            "validation_samples": self.validation_samples,
            "evaluate_on": self.evaluate_on,
            "replay": None if self.replay is None else vars(self.replay),
            "task_header": self.task_header,
            "eval_schedule": self.eval_schedule,
            "natural_instructions": vars(self.natural_instructions),  # which reference trains (natural-instructions tasks)
        }

    def state_dict(self) -> dict[str, Any]:
        return {**self._identity(), "replay_draws": {s: list(map(list, d)) for s, d in self._replay_draws.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self._identity()
        stored = {k: state.get(k, _IDENTITY_DEFAULTS.get(k)) for k in mine}
        differences = [f"{k}: checkpoint {stored[k]!r} vs now {v!r}" for k, v in mine.items() if stored[k] != v]
        if differences:
            raise CheckpointMismatchError(
                "the checkpoint was written for another task sequence; " + "; ".join(differences)
            )


def _strata(task: TaskData, dataset) -> Optional[list[str]]:
    """The labels a split is stratified by; free-text answers have none, so their draw is a plain seeded one."""
    if dataset is None:
        return None
    return dataset["label"] if task.labels else [""] * len(dataset)
