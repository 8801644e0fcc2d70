"""Count the host-device synchronisations a piece of PyTorch code would make on a GPU, by running it on the CPU.

On a CPU every tensor is already on the host, so nothing synchronises; this helper instead follows which tensors
*would* live on the accelerator and records the operations that would make the host wait for it:

* device tensors are the model's parameters and buffers, every upload (``tensor.to(...)`` / ``.cuda()`` of a host
  tensor, ``torch.tensor(..., device=...)``) and every result of an operation with a device tensor among its inputs;
* a **sync** is a device-to-host read of a device tensor: ``.cpu()``, ``.numpy()``, ``.tolist()``, ``.item()``,
  ``bool()`` / ``int()`` / ``float()``, and the operations whose output size depends on the data (``nonzero``,
  ``masked_select``, ``unique``, boolean-mask indexing, ...);
* an **upload** is a host-to-device copy: from pageable memory it also waits for the stream, so the fast path keeps
  uploads to the input images (pinned on CUDA) and makes no others in steady state.

Limitation: ``tensor.to("cpu")`` of a device tensor is not recognised (on a CPU it is the same call as an upload to
the model's device); the code under test uses ``.cpu()`` for reads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

# reads of a device tensor that make the host wait for the accelerator
_READS = {"cpu", "numpy", "tolist", "item", "__bool__", "__int__", "__float__", "__index__", "equal", "allclose"}
# operations whose output shape depends on device data (the size has to come back to the host)
_DATA_DEPENDENT = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount", "histc"}
_FACTORIES = {"tensor", "as_tensor"}


def _tensors(value: Any) -> list[torch.Tensor]:
    return [leaf for leaf in tree_flatten(value)[0] if isinstance(leaf, torch.Tensor)]


def _moves(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether a ``.to`` / ``.cuda`` call names a device (``.to(torch.float32)`` is a cast, not a copy)."""
    if name == "cuda":
        return True
    return kwargs.get("device") is not None or any(isinstance(a, (str, torch.device)) for a in args[1:])


class SyncCounter(TorchFunctionMode):
    """A torch function mode recording would-be GPU synchronisations (``syncs``) and uploads (``uploads``).

    Example:
        >>> import numpy as np, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> with SyncCounter(model) as counter:
        ...     _ = model.predict(np.zeros((64, 64, 3), np.uint8), optimize=False)
        >>> counter.syncs
        ['cpu']
    """

    def __init__(self, *modules: nn.Module) -> None:
        super().__init__()
        self._device: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive so ids are never reused)
        self.syncs: list[str] = []
        self.uploads: list[tuple[int, ...]] = []
        for module in modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                self._mark(tensor)

    def _mark(self, value: Any) -> None:
        for tensor in _tensors(value):
            self._device[id(tensor)] = tensor

    def _on_device(self, value: Any) -> bool:
        return any(id(tensor) in self._device for tensor in _tensors(value))

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - the torch protocol
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        inputs_on_device = self._on_device((args, kwargs))
        if inputs_on_device and (name in _READS or name in _DATA_DEPENDENT):
            self.syncs.append(name)
        if inputs_on_device and name in ("__getitem__", "__setitem__", "index_put_", "index_put"):
            indices = _tensors(args[1:2])
            if any(index.dtype == torch.bool for index in indices):
                self.syncs.append(f"{name}[bool mask]")
        result = func(*args, **kwargs)
        if name == "cpu" and inputs_on_device and result is args[0]:
            result = result.clone()  # a GPU tensor's .cpu() is a new host tensor; on a CPU it is the same object
        if name in ("cpu", "numpy", "tolist", "item"):
            return result  # now on the host
        if name in ("to", "cuda") and not inputs_on_device and _moves(name, args, kwargs):
            self.uploads.append(tuple(args[0].shape))
            self._mark(result)
        elif name in _FACTORIES and kwargs.get("device") is not None:
            self.uploads.append(tuple(result.shape))
            self._mark(result)
        elif inputs_on_device or kwargs.get("device") is not None:
            self._mark(result)  # computed on the device, or allocated there (zeros, arange, full, ...)
        return result
