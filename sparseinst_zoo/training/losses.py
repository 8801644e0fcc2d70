"""SparseInst training losses: focal class loss, dice + pixel BCE mask losses and the IoU-aware objectness loss.

Weights and reductions follow the reference recipe: focal (alpha 0.25, gamma 2) summed over all N x C logits / number
of instances, weight 2; dice summed over matched pairs / number of instances, weight 2; pixel BCE averaged over the
pixels of matched masks, weight 5; objectness BCE against the IoU of the binarised masks, averaged over matched
queries, weight 1. The number of instances is averaged over processes when ``torch.distributed`` is initialised.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from .._distributed import is_distributed, world_size
from ..errors import SparseInstError
from .matcher import HungarianMatcher, downsample_target_masks

__all__ = ["dice_loss", "mask_iou", "num_instances_across_processes", "SparseInstCriterion", "LOSS_WEIGHTS"]

LOSS_WEIGHTS: dict[str, float] = {"loss_ce": 2.0, "loss_mask": 5.0, "loss_dice": 2.0, "loss_objectness": 1.0}


def dice_loss(pred_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Per-pair ``1 - dice`` of matched ``(M, HW)`` mask logits and soft targets; returns ``(M,)``."""
    probs = pred_logits.sigmoid()
    numerator = 2 * (probs * targets).sum(-1)
    denominator = (probs * probs).sum(-1) + (targets * targets).sum(-1)
    return 1 - numerator / (denominator + eps)


@torch.no_grad()
def mask_iou(pred_logits: torch.Tensor, targets: torch.Tensor, threshold: float = 0.4) -> torch.Tensor:
    """IoU of ``sigmoid(pred) >= threshold`` and ``targets > 0.5`` per matched pair; ``(M, HW)`` -> ``(M,)``."""
    pred = (pred_logits.sigmoid() >= threshold).float()
    target = (targets > 0.5).float()
    intersection = (pred * target).sum(-1)
    union = pred.sum(-1) + target.sum(-1) - intersection
    return intersection / (union + 1e-6)


def num_instances_across_processes(count: int, device: torch.device) -> float:
    """Ground-truth instances per process, averaged over all processes when distributed, and at least 1."""
    total = torch.tensor([float(count)], device=device)
    if is_distributed():
        dist.all_reduce(total)
    return max(total.item() / world_size(), 1.0)


class SparseInstCriterion(nn.Module):
    """Matches predictions to targets and computes the weighted SparseInst losses.

    Args:
        num_classes: classes of ``pred_logits``.
        weights: loss name -> weight; defaults to :data:`LOSS_WEIGHTS`.
        matcher: defaults to :class:`~sparseinst_zoo.training.matcher.HungarianMatcher` (alpha 0.8, beta 0.2).

    Example:
        >>> import torch
        >>> criterion = SparseInstCriterion(num_classes=2)
        >>> outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.zeros(1, 3, 8, 8),
        ...            "pred_scores": torch.zeros(1, 3, 1)}
        >>> targets = [{"labels": torch.tensor([1]), "masks": torch.ones(1, 32, 32, dtype=torch.uint8)}]
        >>> sorted(criterion(outputs, targets))
        ['loss_ce', 'loss_dice', 'loss_mask', 'loss_objectness']
    """

    def __init__(
        self,
        num_classes: int,
        weights: dict[str, float] | None = None,
        matcher: HungarianMatcher | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.weights = dict(LOSS_WEIGHTS if weights is None else weights)
        unknown = set(self.weights) - set(LOSS_WEIGHTS)
        if unknown:
            raise SparseInstError(f"unknown loss names {sorted(unknown)}; expected some of {sorted(LOSS_WEIGHTS)}")
        self.matcher = matcher or HungarianMatcher()

    def forward(
        self,
        outputs: dict[str, torch.Tensor],
        targets: Sequence[dict[str, torch.Tensor]],
        input_shape: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted losses ``loss_ce``, ``loss_mask``, ``loss_dice`` and ``loss_objectness`` (scalars, float32).

        Args:
            outputs: ``pred_logits`` (B, N, C), ``pred_masks`` (B, N, h, w), ``pred_scores`` (B, N, 1).
            targets: per image ``labels`` (K,) contiguous class ids and ``masks`` (K, H, W) binary masks in padded
                input coordinates (H, W at most the padded size; they are zero-padded).
            input_shape: padded input size; defaults to 4x the mask prediction size.
        """
        outputs = {k: v.float() for k, v in outputs.items()}  # losses in float32, also under autocast
        pred_logits, pred_masks, pred_scores = outputs["pred_logits"], outputs["pred_masks"], outputs["pred_scores"]
        if pred_logits.shape[-1] != self.num_classes:
            raise SparseInstError(
                f"the model predicts {pred_logits.shape[-1]} classes but the loss expects {self.num_classes}"
            )
        mask_size = pred_masks.shape[-2:]
        if input_shape is None:
            input_shape = (mask_size[0] * 4, mask_size[1] * 4)
        labels = [t["labels"].to(pred_logits.device, torch.long) for t in targets]
        for image_labels in labels:
            if image_labels.numel() and (image_labels.min() < 0 or image_labels.max() >= self.num_classes):
                raise SparseInstError(f"target labels must be in [0, {self.num_classes}), got {image_labels.tolist()}")
        with torch.no_grad():
            target_masks = downsample_target_masks(
                [t["masks"] for t in targets], input_shape, mask_size, pred_masks.device
            )
        indices = self.matcher(outputs, labels, target_masks)
        num_instances = num_instances_across_processes(target_masks.shape[0], pred_logits.device)

        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(pred_logits.device)
        src_idx = torch.cat([src for src, _ in indices]).to(pred_logits.device)
        offsets = torch.tensor([0] + [int(lab.numel()) for lab in labels]).cumsum(0)
        tgt_idx = torch.cat([tgt + offsets[i] for i, (_, tgt) in enumerate(indices)]).to(pred_logits.device)

        one_hot = torch.zeros_like(pred_logits)
        if src_idx.numel():
            matched_labels = torch.cat([lab[tgt.to(lab.device)] for lab, (_, tgt) in zip(labels, indices)])
            one_hot[batch_idx, src_idx, matched_labels] = 1.0
        losses = {
            "loss_ce": sigmoid_focal_loss(pred_logits, one_hot, alpha=0.25, gamma=2.0, reduction="sum") / num_instances
        }

        if src_idx.numel() == 0:
            zero_masks = pred_masks.sum() * 0.0
            losses.update(loss_dice=zero_masks, loss_mask=zero_masks.clone(), loss_objectness=pred_scores.sum() * 0.0)
        else:
            src_masks = pred_masks[batch_idx, src_idx].flatten(1)
            matched_targets = target_masks[tgt_idx]
            ious = mask_iou(src_masks.detach(), matched_targets)
            losses["loss_dice"] = dice_loss(src_masks, matched_targets).sum() / num_instances
            losses["loss_mask"] = F.binary_cross_entropy_with_logits(src_masks, matched_targets, reduction="mean")
            losses["loss_objectness"] = F.binary_cross_entropy_with_logits(
                pred_scores[batch_idx, src_idx, 0], ious, reduction="mean"
            )
        return {name: losses[name] * self.weights.get(name, 0.0) for name in LOSS_WEIGHTS if name in self.weights}
