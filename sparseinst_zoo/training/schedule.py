"""Learning-rate schedules: linear warm-up followed by step decay (the reference) or cosine decay."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from ..errors import SparseInstError

__all__ = ["WarmupSchedule", "resolve_milestones"]


def resolve_milestones(steps: Sequence[float], max_iters: int) -> tuple[int, ...]:
    """Decay points as iterations: values below 1 are fractions of ``max_iters``, others iteration numbers."""
    milestones = tuple(sorted(int(round(s * max_iters)) if s < 1 else int(s) for s in steps))
    if any(m <= 0 for m in milestones):
        raise SparseInstError(f"lr decay steps must be positive (fractions in (0, 1) or iterations), got {list(steps)}")
    return milestones


class WarmupSchedule:
    """Multiplier of the base learning rate at an iteration, for :class:`torch.optim.lr_scheduler.LambdaLR`.

    Warm-up rises linearly from ``warmup_factor`` to 1 over ``warmup_iters`` (detectron2 ``WarmupMultiStepLR`` /
    ``WarmupCosineLR``); ``'step'`` then multiplies by ``gamma`` at each milestone, ``'cosine'`` follows
    ``0.5 * (1 + cos(pi * it / max_iters))``. The object holds only plain numbers, so its state saves safely.

    Example:
        >>> schedule = WarmupSchedule(max_iters=100, warmup_iters=10, milestones=(50, 80))
        >>> [round(schedule(i), 4) for i in (0, 5, 10, 60, 90)]
        [0.001, 0.5005, 1.0, 0.1, 0.01]
    """

    def __init__(
        self,
        max_iters: int,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        kind: str = "step",
        milestones: Sequence[int] = (),
        gamma: float = 0.1,
    ) -> None:
        if kind not in ("step", "cosine"):
            raise SparseInstError(f"schedule must be 'step' or 'cosine', got {kind!r}")
        self.max_iters = int(max_iters)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        self.kind = kind
        self.milestones = [int(m) for m in milestones]
        self.gamma = float(gamma)

    def __call__(self, iteration: int) -> float:
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            warmup = self.warmup_factor * (1 - alpha) + alpha
        else:
            warmup = 1.0
        if self.kind == "step":
            decay = self.gamma ** bisect.bisect_right(self.milestones, iteration)
        else:
            decay = 0.5 * (1.0 + math.cos(math.pi * min(iteration, self.max_iters) / max(self.max_iters, 1)))
        return warmup * decay
