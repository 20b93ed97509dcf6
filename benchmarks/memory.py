"""Peak memory of a code region, counted exactly on any device.

CUDA has allocator statistics; the CPU has none, and the process's resident size hides reuse of
freed heap pages. ``LiveTensorMeter`` instead watches every tensor an operator creates inside the
region (a ``TorchDispatchMode``) and follows its storage until it is freed, so ``peak_bytes`` is the
high-water mark of storage allocated in the region and still alive, whatever the allocator does.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorMeter", "storage_bytes"]


class LiveTensorMeter(TorchDispatchMode):
    """``with LiveTensorMeter() as meter: ...`` then ``meter.peak_bytes``."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak_bytes = 0
        self._seen: set[int] = set()

    def _release(self, key: int, size: int) -> None:
        self.live -= size
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or key in self._seen:  # a view of a tensor already counted
                continue
            self._seen.add(key)
            size = storage.nbytes()
            self.live += size
            self.peak_bytes = max(self.peak_bytes, self.live)
            weakref.finalize(storage, self._release, key, size)
        return out


def storage_bytes(module: torch.nn.Module) -> int:
    """Bytes held by a module's parameters and buffers (each storage once; quantized ones as stored)."""
    seen, total = set(), 0
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    for sub in module.modules():  # bitsandbytes keeps 4-bit scales in a quant_state beside the weight
        state = getattr(getattr(sub, "weight", None), "quant_state", None)
        if state is not None and hasattr(state, "absmax"):
            total += state.absmax.untyped_storage().nbytes()
    return total
