"""Per-task LoRA over a whole model: injection, the trainable slot, the adapter store, consolidation.

The store keeps every finished task's factors on the CPU (``A_t``, ``B_t``, raw, plus the scaling),
so analysis, export and per-task evaluation can use them, while the layers only hold the
consolidated frozen pair (or, with ``consolidation="merge"``, nothing: the updates live in the base
weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Literal, NamedTuple, Optional, Sequence

import torch
from torch import Tensor, nn

from nlora_lightning.lora.config import LoRAConfig, default_target_modules
from nlora_lightning.lora.layer import ContinualLoRALinear

__all__ = ["AdapterSnapshot", "ContinualLoRAModel", "LayerFactors", "inject_lora"]

Consolidation = Literal["lowrank", "merge", "none"]
FrozenForm = Literal["auto", "factors", "dense"]


class LayerFactors(NamedTuple):
    """What a regularizer sees of one adapted layer."""

    name: str
    A: Tensor  # trainable slot, r x d_in
    B: Tensor  # trainable slot, d_out x r
    previous_A: Tensor  # finished tasks' A concatenated, R x d_in (raw, unscaled)
    scaling: float
    # Finished tasks' B concatenated, d_out x R, each task's scaling folded in: the earlier tasks'
    # summed update is ``previous_B @ previous_A`` (kept as factors also with consolidation="merge").
    previous_B: Optional[Tensor] = None


@dataclass
class AdapterSnapshot:
    """The slot's factors at the end of one task, on the CPU."""

    A: dict[str, Tensor]
    B: dict[str, Tensor]
    scaling: float

    def state_dict(self) -> dict:
        return {"A": self.A, "B": self.B, "scaling": self.scaling}

    @classmethod
    def from_state_dict(cls, state: dict) -> "AdapterSnapshot":
        return cls(A=dict(state["A"]), B=dict(state["B"]), scaling=float(state["scaling"]))


def _matches(module_name: str, target: str) -> bool:
    return module_name == target or module_name.endswith("." + target)


def inject_lora(model: nn.Module, config: LoRAConfig, target_modules: Sequence[str]) -> dict[str, ContinualLoRALinear]:
    """Replace every linear layer named by ``target_modules`` with a :class:`ContinualLoRALinear`.

    Raises:
        ValueError: If a target name matches no linear layer of the model (the message lists the
            linear layer names the model does have).
    """
    named = dict(model.named_modules())
    linear_names = [name for name, module in named.items() if isinstance(module, nn.Linear)]
    unmatched = [t for t in target_modules if not any(_matches(n, t) for n in linear_names)]
    if unmatched:
        available = sorted({name.rsplit(".", 1)[-1] for name in linear_names})
        raise ValueError(
            f"LoRA target_modules {unmatched} match no linear layer of this "
            f"{type(model).__name__}; its linear layers are named {available}"
        )
    layers: dict[str, ContinualLoRALinear] = {}
    for name in linear_names:
        if not any(_matches(name, t) for t in target_modules):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = named[parent_name] if parent_name else model
        wrapped = ContinualLoRALinear(named[name], config.r, config.alpha, config.dropout)
        setattr(parent, child, wrapped)
        layers[name] = wrapped
    return layers


class ContinualLoRAModel:
    """Manages the continual LoRA layers injected into ``model``.

    Args:
        model: A Hugging Face model (its ``config.model_type`` picks default target modules).
        config: Rank, alpha, dropout and target modules.
        consolidation: How finished tasks enter the forward pass: ``"lowrank"`` (one concatenated
            frozen pair per layer, exact, default), ``"merge"`` (added into the unquantized base
            weights: no extra cost at all), or ``"none"`` (kept apart, for checks).
        seed: Seeds the per-task initialisation of the slot, so every rank and every resumed run
            draws the same A_t.
        frozen_form: How ``lowrank``/``none`` apply a layer's frozen pair: ``"auto"`` as the rank-R
            pair while that is cheaper per token, then as one dense d_out x d_in update computed
            from it (the same function; the factors stay for O-LoRA and ELLA); ``"factors"`` or
            ``"dense"`` force one form (for checks and benchmarks). Checkpoints do not depend on it.

    Example:
        >>> adapters = ContinualLoRAModel(hf_model, LoRAConfig(r=8))  # doctest: +SKIP
        >>> adapters.finish_task(0); adapters.start_task(1)  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        config: LoRAConfig,
        consolidation: Consolidation = "lowrank",
        seed: int = 0,
        frozen_form: FrozenForm = "auto",
    ) -> None:
        if consolidation not in ("lowrank", "merge", "none"):
            raise ValueError(f"consolidation must be 'lowrank', 'merge' or 'none', got {consolidation!r}")
        if frozen_form not in ("auto", "factors", "dense"):
            raise ValueError(f"frozen_form must be 'auto', 'factors' or 'dense', got {frozen_form!r}")
        self.frozen_form = frozen_form
        self.model = model
        self.config = config
        self.consolidation = consolidation
        self.seed = seed
        model_type = getattr(getattr(model, "config", None), "model_type", "")
        self.target_modules = list(config.target_modules or default_target_modules(model_type))
        self.layers = inject_lora(model, config, self.target_modules)
        self.snapshots: dict[int, AdapterSnapshot] = {}
        self.merged_tasks: list[int] = []
        self.frozen_tasks: list[int] = []  # tasks whose snapshot is part of the forward pass

    # ----- the trainable slot -------------------------------------------------------------
    def slot_parameters(self) -> Iterator[nn.Parameter]:
        for layer in self.layers.values():
            yield layer.lora_A
            yield layer.lora_B

    def slot_parameter_names(self, prefix_of: Optional[nn.Module] = None) -> set[str]:
        ids = {id(p) for p in self.slot_parameters()}
        root = prefix_of if prefix_of is not None else self.model
        return {name for name, p in root.named_parameters() if id(p) in ids}

    def set_slot_trainable(self, trainable: bool) -> None:
        for p in self.slot_parameters():
            p.requires_grad_(trainable)

    def reset_slot(self, task: int) -> None:
        """Fresh A (seeded by ``seed`` and ``task``) and zero B in every layer."""
        generator = torch.Generator().manual_seed(self.seed * 100_003 + task)
        for layer in self.layers.values():
            layer.reset_slot(generator)

    def snapshot_slot(self, task: int) -> AdapterSnapshot:
        """Copy the slot to the CPU store as task ``task``'s adapter."""
        snapshot = AdapterSnapshot(
            A={n: l.lora_A.detach().to("cpu", copy=True) for n, l in self.layers.items()},
            B={n: l.lora_B.detach().to("cpu", copy=True) for n, l in self.layers.items()},
            scaling=self.config.scaling,
        )
        self.snapshots[task] = snapshot
        return snapshot

    # ----- the frozen part ----------------------------------------------------------------
    def freeze_tasks(self, tasks: Iterable[int]) -> None:
        """Make exactly ``tasks`` (finished, in the store) the frozen part of the forward pass."""
        tasks = sorted(set(tasks))
        missing = [t for t in tasks if t not in self.snapshots]
        if missing:
            raise KeyError(f"no stored adapter for task(s) {missing}; stored: {sorted(self.snapshots)}")
        if self.consolidation == "merge":
            removed = [t for t in self.merged_tasks if t not in tasks]
            if removed:
                raise RuntimeError(
                    f"task(s) {removed} are merged into the base weights and cannot be removed; "
                    "use consolidation='lowrank' to switch adapters on and off"
                )
            for task in tasks:
                if task not in self.merged_tasks:
                    snap = self.snapshots[task]
                    for name, layer in self.layers.items():
                        layer.merge_into_base(snap.A[name], snap.B[name] * snap.scaling)
                    self.merged_tasks.append(task)
        for name, layer in self.layers.items():
            if tasks:
                frozen_A = torch.cat([self.snapshots[t].A[name] for t in tasks], dim=0)
                frozen_B = torch.cat([self.snapshots[t].B[name] * self.snapshots[t].scaling for t in tasks], dim=1)
            else:
                frozen_A = torch.zeros(0, layer.in_features)
                frozen_B = torch.zeros(layer.out_features, 0)
            # In merge mode the frozen pair stays only as factors for O-LoRA and ELLA.
            dense = False if self.consolidation == "merge" else {"auto": None, "factors": False, "dense": True}[self.frozen_form]
            layer.set_frozen(frozen_A, frozen_B, dense=dense)
            layer.frozen_enabled = self.consolidation != "merge"
        self.frozen_tasks = tasks

    def set_slot_enabled(self, enabled: bool) -> None:
        for layer in self.layers.values():
            layer.slot_enabled = enabled

    def activate_only(self, task: int, slot_task: Optional[int]) -> None:
        """Only ``task``'s adapter in the forward pass (per-task oracle evaluation).

        ``slot_task`` is the task the live trainable slot belongs to (None when no slot is live);
        a task not trained yet leaves only the base model.
        """
        in_slot = slot_task == task
        self.freeze_tasks([task] if (task in self.snapshots and not in_slot) else [])
        self.set_slot_enabled(in_slot)

    def activate_all(self, slot_live: bool) -> None:
        """Every stored adapter, plus the slot when it is live: the continual model."""
        self.freeze_tasks(sorted(self.snapshots))
        self.set_slot_enabled(slot_live)

    def layer_factors(self) -> list[LayerFactors]:
        return [
            LayerFactors(name, layer.lora_A, layer.lora_B, layer.frozen_A, layer.scaling, layer.frozen_B)
            for name, layer in self.layers.items()
        ]

    def update_factors(self, task: int, cumulative: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        """Task ``task``'s update per layer as factors ``(A, B_scaled)`` with ``Delta W = B_scaled @ A``.

        With ``cumulative=True`` (one shared adapter trained through all tasks), the stored
        snapshots are cumulative and task t's own update is snapshot t minus snapshot t-1, which is
        again a low-rank product of concatenated factors.
        """
        snap = self.snapshots[task]
        factors = {n: (snap.A[n], snap.B[n] * snap.scaling) for n in self.layers}
        return self._minus_snapshot(factors, task - 1) if cumulative else factors

    def _minus_snapshot(self, factors: dict[str, tuple[Tensor, Tensor]], task: int) -> dict[str, tuple[Tensor, Tensor]]:
        """``factors`` minus task ``task``'s snapshot, again as factors (concatenated); unchanged if not stored."""
        if task not in self.snapshots:
            return factors
        prev = self.snapshots[task]
        return {n: (torch.cat([A, prev.A[n]], 0), torch.cat([B, -prev.B[n] * prev.scaling], 1)) for n, (A, B) in factors.items()}

    def slot_update_factors(self, minus_snapshot: Optional[int] = None) -> dict[str, tuple[Tensor, Tensor]]:
        """The trainable slot's current update per layer as ``(A, B_scaled)``, detached, on the CPU.

        ``minus_snapshot``: subtract that task's stored snapshot (a shared adapter's slot is cumulative,
        so its own task's update is the slot minus the previous snapshot); ignored when it is not stored.
        """
        factors = {n: (l.lora_A.detach().cpu(), (l.lora_B.detach() * l.scaling).cpu()) for n, l in self.layers.items()}
        return factors if minus_snapshot is None else self._minus_snapshot(factors, minus_snapshot)

    # ----- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "snapshots": {t: s.state_dict() for t, s in self.snapshots.items()},
            "merged_tasks": list(self.merged_tasks),
            "frozen_tasks": list(self.frozen_tasks),
            "target_modules": list(self.target_modules),
            "layers": {n: (l.out_features, l.in_features) for n, l in self.layers.items()},
            "r": self.config.r,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the store and rebuild the frozen part (the base must be freshly loaded)."""
        mine = {n: (l.out_features, l.in_features) for n, l in self.layers.items()}
        theirs = {n: tuple(shape) for n, shape in state["layers"].items()}
        if mine != theirs or state["r"] != self.config.r:
            raise ValueError(
                "the checkpoint's adapters do not fit this model: it adapted "
                f"{len(theirs)} layers with r={state['r']} ({_describe(theirs)}), this model has "
                f"{len(mine)} layers with r={self.config.r} ({_describe(mine)})"
            )
        if self.merged_tasks:
            raise RuntimeError("cannot load adapters into a model whose base already has merged updates")
        self.snapshots = {int(t): AdapterSnapshot.from_state_dict(s) for t, s in state["snapshots"].items()}
        # Merge in the original order so the base weights come out bit-identical.
        for task in state.get("merged_tasks", []):
            self.freeze_tasks(self.merged_tasks + [task])
        self.freeze_tasks(state["frozen_tasks"])


def _describe(shapes: dict[str, tuple]) -> str:
    if not shapes:
        return "none"
    first = next(iter(shapes))
    return f"first {first} {shapes[first][0]}x{shapes[first][1]}"
