"""One optimisation step: forward (under autocast), finiteness checks, losses, backward, clipping, AdamW, schedule.

The model's outputs are checked before the Hungarian matcher sees them (scipy rejects a cost matrix with NaN or
infinity), the losses before the backward pass; under DDP every process agrees on the verdict, so all stop together.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from .losses import SparseInstCriterion

__all__ = ["NotFinite", "TrainStep"]


class NotFinite(Exception):
    """The outputs or losses of a step are NaN or infinite: ``args`` = (what, the values); the engine explains it."""


class TrainStep:
    """Runs one training step and returns the loss terms ``[loss, *criterion terms]`` (detached, one tensor).

    Args:
        model: the (possibly DDP-wrapped) model in train mode.
        criterion: the SparseInst losses.
        optimizer / scheduler / scaler: AdamW, its LambdaLR and the AMP GradScaler.
        autocast_dtype: None for fp32, else the autocast dtype.
        clip_grad: clip the global gradient norm to this value (None: no clipping).
        world: number of processes (the non-finite verdict is all-reduced when > 1).
    """

    def __init__(
        self,
        model: nn.Module,
        criterion: SparseInstCriterion,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        scaler: torch.amp.GradScaler,
        autocast_dtype: torch.dtype | None,
        clip_grad: float | None,
        world: int,
    ) -> None:
        self.model, self.criterion, self.optimizer = model, criterion, optimizer
        self.scheduler, self.scaler = scheduler, scaler
        self.autocast_dtype, self.clip_grad, self.world = autocast_dtype, clip_grad, world
        self.names: list[str] = ["loss", *criterion.weights]
        self.last_lr = 0.0

    def _any_process(self, finite: torch.Tensor) -> bool:
        """Whether any process saw a non-finite value (``finite``: this process's 0-d bool verdict); one sync."""
        flag = (~finite).float().reshape(1)
        if self.world > 1:
            dist.all_reduce(flag)
        return bool(flag.item())

    def _forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        autocast: Any = (
            torch.autocast(images.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            outputs = self.model(images)
        finite = torch.stack([torch.isfinite(value).all() for value in outputs.values()]).all()
        if self._any_process(finite):
            bad = [name for name, value in outputs.items() if not torch.isfinite(value).all()]
            raise NotFinite("the model's outputs are not finite", ", ".join(bad) or "on another process")
        return outputs

    def __call__(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Train on one batch; returns the detached loss terms in the order of :attr:`names`."""
        outputs = self._forward(images)
        losses = self.criterion(outputs, targets)
        loss = sum(losses.values())
        terms = torch.stack([loss.detach(), *(v.detach() for v in losses.values())])
        self.names = ["loss", *losses]
        if self._any_process(torch.isfinite(terms).all()):
            raise NotFinite("the loss is not finite", ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad is not None:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.requires_grad]
            torch.nn.utils.clip_grad_norm_(params, self.clip_grad)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.last_lr = float(self.optimizer.param_groups[0]["lr"])  # the lr this step used
        with warnings.catch_warnings():
            # fp16: GradScaler skips the optimizer step while it lowers its scale (inf gradients in the first
            # steps); the schedule still follows the iteration count, as detectron2's AMP trainer does.
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            self.scheduler.step()
        return terms
