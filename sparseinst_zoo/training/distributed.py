"""torch.distributed queries that also work in a single process (no process group)."""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size"]


def is_distributed() -> bool:
    """True inside an initialised process group (e.g. under ``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1
