"""One device chooser for predict, evaluation, benchmark and training, and where a model already is.

Example:
    >>> from sparseinst_zoo._device import select_device
    >>> select_device("cpu")
    device(type='cpu')
    >>> select_device(None).type in ("cuda", "cpu")
    True
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import SparseInstError

__all__ = ["model_device", "select_device"]

_AUTO = "auto"


def select_device(device: str | torch.device | None = None, *, local_rank: int | None = None) -> torch.device:
    """The device to run on, checked to exist on this machine.

    Args:
        device: ``None`` or ``'auto'`` (CUDA when available, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``,
            ``'mps'``, or a :class:`torch.device`.
        local_rank: the GPU index a bare ``'cuda'`` (or auto) means, e.g. ``LOCAL_RANK`` under torchrun; None leaves
            the index unset (PyTorch's current device).

    Raises:
        SparseInstError: for a device name PyTorch does not know, or a device this machine does not have.

    Example:
        >>> select_device(torch.device("cpu"))
        device(type='cpu')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() == _AUTO):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    chosen = _parse(device)
    if chosen.type == "cuda":
        if chosen.index is None and local_rank is not None:
            chosen = torch.device("cuda", local_rank)
        _check_cuda(chosen)
    elif chosen.type == "meta":
        raise SparseInstError("device 'meta' holds shapes without values, nothing can run there; use 'cpu' or 'cuda'")
    elif chosen.type == "mps" and not torch.backends.mps.is_available():
        raise SparseInstError(
            f"device {str(chosen)!r} was requested but Apple's MPS is not available here; use device='cpu' or 'auto'"
        )
    return chosen


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _parse(device: str | torch.device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    try:
        return torch.device(device.strip())
    except (RuntimeError, TypeError):
        raise SparseInstError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto'") from None


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        build = "a CPU-only PyTorch build" if torch.version.cuda is None else "no usable CUDA GPU"
        raise SparseInstError(
            f"device {str(device)!r} was requested but this machine has {build} "
            f"(torch {torch.__version__}); use device='cpu' or 'auto'"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        available = ", ".join(f"cuda:{i}" for i in range(count))
        raise SparseInstError(
            f"device {str(device)!r} does not exist: this machine has {count} CUDA GPU(s) "
            f"({available}); pick one of them, or 'auto'"
        )
