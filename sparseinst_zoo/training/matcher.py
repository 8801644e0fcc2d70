"""Bipartite matching of SparseInst predictions to ground-truth instances.

The cost is the reference one: ``dice(mask)^alpha * prob(class)^beta`` (alpha 0.8, beta 0.2), maximised with
:func:`scipy.optimize.linear_sum_assignment`. Targets are the ground-truth masks zero-padded to the batch's padded
input size and bilinearly downsampled to the prediction size (stride 4), i.e. *soft* masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ..errors import SparseInstError

__all__ = ["dice_score", "downsample_target_masks", "HungarianMatcher"]


def dice_score(pred_logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Pairwise soft dice between every prediction and every target.

    Args:
        pred_logits: mask logits ``(P, HW)``.
        targets: soft target masks ``(T, HW)`` in [0, 1].
        eps: added to the denominator.

    Returns:
        ``(P, T)`` scores ``2 p.t / (|p|^2 + |t|^2 + eps)`` with ``p = sigmoid(logits)``.
    """
    probs = pred_logits.sigmoid()
    numerator = 2 * probs @ targets.t()
    denominator = (probs * probs).sum(-1)[:, None] + (targets * targets).sum(-1)[None, :]
    return numerator / (denominator + eps)


def downsample_target_masks(
    masks: Sequence[torch.Tensor], input_shape: Sequence[int], output_shape: Sequence[int], device: torch.device
) -> torch.Tensor:
    """Zero-pad every image's masks to ``input_shape``, stack them and resize bilinearly to ``output_shape``.

    Args:
        masks: per image a ``(K_i, H_i, W_i)`` binary tensor with ``H_i <= input_shape[0]``, ``W_i <= input_shape[1]``.
        input_shape: padded input size ``(Hp, Wp)`` of the batch.
        output_shape: prediction size ``(h, w)`` (stride 4 of the input).
        device: where the result lives.

    Returns:
        ``(sum K_i, h * w)`` float32 soft masks, images in order.
    """
    height, width = int(input_shape[0]), int(input_shape[1])
    padded = []
    for image_masks in masks:
        if image_masks.shape[0] == 0:
            continue
        mask_h, mask_w = image_masks.shape[-2:]
        if mask_h > height or mask_w > width:
            raise SparseInstError(f"target masks of size {mask_h}x{mask_w} exceed the padded input {height}x{width}")
        image_masks = image_masks.to(device=device, dtype=torch.float32)
        padded.append(F.pad(image_masks, (0, width - mask_w, 0, height - mask_h)))
    if not padded:
        return torch.zeros(0, int(output_shape[0]) * int(output_shape[1]), device=device)
    stacked = torch.cat(padded)[:, None]
    resized = F.interpolate(stacked, size=tuple(int(s) for s in output_shape), mode="bilinear", align_corners=False)
    return resized.flatten(1)


class HungarianMatcher:
    """One-to-one assignment of the N instance queries of each image to its ground-truth instances.

    The cost matrix of the whole batch is computed at once (in float32, without gradients); only the assignment
    itself runs per image.

    Args:
        alpha: exponent of the dice score.
        beta: exponent of the class probability.

    Example:
        >>> import torch
        >>> matcher = HungarianMatcher()
        >>> outputs = {"pred_logits": torch.zeros(1, 3, 2), "pred_masks": torch.full((1, 3, 2, 2), -9.0)}
        >>> outputs["pred_masks"][0, 2] = 9.0  # query 2 covers the whole 2x2 target
        >>> matcher(outputs, [torch.tensor([1])], torch.ones(1, 4))
        [(tensor([2]), tensor([0]))]
    """

    def __init__(self, alpha: float = 0.8, beta: float = 0.2) -> None:
        self.alpha = alpha
        self.beta = beta

    @torch.no_grad()
    def cost_matrix(
        self, outputs: dict[str, torch.Tensor], labels: Sequence[torch.Tensor], target_masks: torch.Tensor
    ) -> torch.Tensor:
        """``(B, N, T)`` matching scores of every query against every target of the batch (higher is better)."""
        batch, num_queries = outputs["pred_logits"].shape[:2]
        pred_masks = outputs["pred_masks"].detach().float().flatten(2).flatten(0, 1)  # (B*N, HW)
        probs = outputs["pred_logits"].detach().float().sigmoid().flatten(0, 1)  # (B*N, C)
        target_ids = torch.cat([lab.to(probs.device, torch.long) for lab in labels])
        mask_score = dice_score(pred_masks, target_masks.float())
        class_prob = probs[:, target_ids]
        cost = mask_score.pow(self.alpha) * class_prob.pow(self.beta)
        return cost.view(batch, num_queries, -1)

    @torch.no_grad()
    def __call__(
        self, outputs: dict[str, torch.Tensor], labels: Sequence[torch.Tensor], target_masks: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match queries to targets.

        Args:
            outputs: model outputs with ``pred_logits`` (B, N, C) and ``pred_masks`` (B, N, h, w).
            labels: per image the ``(K_i,)`` contiguous class labels.
            target_masks: ``(sum K_i, h * w)`` soft masks from :func:`downsample_target_masks`.

        Returns:
            per image ``(query_indices, target_indices)`` int64 CPU tensors of equal length ``min(N, K_i)``;
            target indices are local to the image.
        """
        sizes = [int(lab.numel()) for lab in labels]
        if len(sizes) != outputs["pred_logits"].shape[0]:
            raise SparseInstError(
                f"got targets for {len(sizes)} images but outputs for {outputs['pred_logits'].shape[0]}"
            )
        if sum(sizes) != target_masks.shape[0]:
            raise SparseInstError(f"{sum(sizes)} labels but {target_masks.shape[0]} target masks")
        empty = torch.zeros(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in sizes]
        cost = self.cost_matrix(outputs, labels, target_masks).cpu()
        indices = []
        for image, image_cost in enumerate(cost.split(sizes, dim=-1)):
            if sizes[image] == 0:
                indices.append((empty, empty))
                continue
            rows, cols = linear_sum_assignment(image_cost[image].numpy(), maximize=True)
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
