"""torch.distributed helpers for training, evaluation and prediction that also work in a single process.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables), the process
group is joined from the environment: gloo on CPU, NCCL on CUDA with this process on ``cuda:LOCAL_RANK``. Without a
process group every query answers as the only process (rank 0 of 1) and the collectives return their input.

Example:
    >>> rank(), world_size(), broadcast_from_rank0("runs/predict2"), gather_to_rank0(3)
    (0, 1, 'runs/predict2', [3])
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "local_rank",
    "join_process_group",
    "process_group_from_env",
    "broadcast_from_rank0",
    "gather_to_rank0",
    "barrier",
]

T = TypeVar("T")


def is_distributed() -> bool:
    """True inside an initialised process group (e.g. under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK`` under torchrun, 0 without a process group)."""
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def _runs_on_cuda(device: str | torch.device | None) -> bool:
    """Whether work asked for on ``device`` (None or ``'auto'``: CUDA if available) runs on a CUDA GPU."""
    if not torch.cuda.is_available():
        return False
    if device is None or str(device).strip().lower() == "auto":
        return True
    return str(device).strip().lower().startswith("cuda")


def join_process_group(device: str | torch.device | None = None) -> bool:
    """Join the process group ``torchrun`` describes (env ``WORLD_SIZE`` > 1); True if this call created it.

    NCCL when the work runs on CUDA (``device`` None, ``'auto'`` or a CUDA device, and a GPU is there), with this
    process's GPU set to ``cuda:LOCAL_RANK`` first; gloo otherwise (e.g. ``device='cpu'`` on a GPU machine). Does
    nothing in a single process or when a group exists already.
    """
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if _runs_on_cuda(device) else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


@contextlib.contextmanager
def process_group_from_env(device: str | torch.device | None = None) -> Iterator[None]:
    """Inside: torchrun's process group is joined (:func:`join_process_group`); destroyed at exit if joined here."""
    created = join_process_group(device)
    try:
        yield
    finally:
        if created:
            dist.destroy_process_group()


def broadcast_from_rank0(value: T) -> T:
    """Rank 0's ``value`` on every rank (a picklable object; e.g. the run folder only rank 0 may choose)."""
    if world_size() == 1:
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_rank0(value: T) -> list[T] | None:
    """Every rank's ``value`` in rank order on rank 0 (None on the other ranks); a synchronisation point."""
    if world_size() == 1:
        return [value]
    gathered: list[Any] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def barrier() -> None:
    """Wait until every rank gets here (nothing to wait for in a single process)."""
    if world_size() > 1:
        dist.barrier()
