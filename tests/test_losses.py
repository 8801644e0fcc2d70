"""SparseInst losses against straightforward reference formulas on small tensors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparseinst_zoo.training.losses import LOSS_WEIGHTS, SparseInstCriterion


def _focal(logit: float, target: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target == 1 else 1 - p
    a_t = alpha if target == 1 else 1 - alpha
    return -a_t * (1 - p_t) ** gamma * math.log(p_t)


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def _reference_losses(outputs, labels, soft_targets, matches, num_classes):
    """Loop-based losses for given matches: list of (image, query, global target index, label)."""
    logits, masks, scores = outputs["pred_logits"], outputs["pred_masks"], outputs["pred_scores"]
    batch, queries = logits.shape[:2]
    num_inst = max(sum(len(lab) for lab in labels), 1)
    matched = {(b, q): (t, c) for b, q, t, c in matches}
    focal = 0.0
    for b in range(batch):
        for q in range(queries):
            for c in range(num_classes):
                target = 1.0 if (b, q) in matched and matched[(b, q)][1] == c else 0.0
                focal += _focal(logits[b, q, c].item(), target)
    dice, bce, bce_pixels, obj = 0.0, 0.0, 0, 0.0
    for b, q, t, _ in matches:
        p = masks[b, q].flatten().sigmoid()
        tgt = soft_targets[t]
        dice += 1 - (2 * (p * tgt).sum() / ((p * p).sum() + (tgt * tgt).sum() + 1e-4)).item()
        for logit, target in zip(masks[b, q].flatten().tolist(), tgt.tolist()):
            bce += _bce(logit, target)
            bce_pixels += 1
        binary = p >= 0.4
        truth = tgt > 0.5
        iou = (binary & truth).sum().item() / ((binary | truth).sum().item() + 1e-6)
        obj += _bce(scores[b, q, 0].item(), iou)
    return {
        "loss_ce": 2.0 * focal / num_inst,
        "loss_dice": 2.0 * dice / num_inst,
        "loss_mask": 5.0 * bce / bce_pixels,
        "loss_objectness": 1.0 * obj / len(matches),
    }


def test_losses_match_reference_formulas():
    torch.manual_seed(0)
    batch, queries, classes = 2, 4, 3
    outputs = {
        "pred_logits": torch.randn(batch, queries, classes),
        "pred_masks": torch.randn(batch, queries, 2, 2) * 2,
        "pred_scores": torch.randn(batch, queries, 1),
    }
    # input 8x8, masks at stride 4 -> 2x2; each target is one exact stride-4 cell block so soft == binary
    masks0 = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks0[0, :4, :4] = 1
    masks0[1, 4:, :] = 1
    masks1 = torch.zeros(1, 6, 8, dtype=torch.uint8)  # smaller than the padded input: zero-padded
    masks1[0, :4, 4:] = 1
    targets = [{"labels": torch.tensor([2, 0]), "masks": masks0}, {"labels": torch.tensor([1]), "masks": masks1}]
    criterion = SparseInstCriterion(classes)
    losses = criterion(outputs, targets)
    soft = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 0]])
    indices = criterion.matcher(outputs, [t["labels"] for t in targets], soft)
    matches, offset = [], [0, 2]
    for b, (rows, cols) in enumerate(indices):
        for q, t in zip(rows.tolist(), cols.tolist()):
            matches.append((b, q, offset[b] + t, targets[b]["labels"][t].item()))
    expected = _reference_losses(outputs, [t["labels"] for t in targets], soft, matches, classes)
    assert set(losses) == set(LOSS_WEIGHTS)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value, rel=1e-4), name


def test_losses_are_differentiable_and_zero_instance_safe():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 2, requires_grad=True)
    masks = torch.randn(2, 3, 4, 4, requires_grad=True)
    scores = torch.randn(2, 3, 1, requires_grad=True)
    outputs = {"pred_logits": logits, "pred_masks": masks, "pred_scores": scores}
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 16, 16, dtype=torch.uint8)}
    losses = SparseInstCriterion(2)(outputs, [empty, empty])
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total)
    assert losses["loss_dice"].item() == 0 and losses["loss_mask"].item() == 0
    # background-only focal loss: sum over all logits with num_instances clamped at 1
    expected = 2.0 * F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    expected = (expected * (1 - 0.25) * logits.sigmoid() ** 2).sum()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert masks.grad is not None and scores.grad is not None

    one = {"labels": torch.tensor([1]), "masks": torch.ones(1, 16, 16, dtype=torch.uint8)}
    logits.grad = None
    losses = SparseInstCriterion(2)(outputs, [empty, one])
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_dice"].item() > 0
    assert logits.grad.abs().sum() > 0


def test_bad_labels_and_weights_are_rejected():
    outputs = {
        "pred_logits": torch.zeros(1, 2, 2),
        "pred_masks": torch.zeros(1, 2, 2, 2),
        "pred_scores": torch.zeros(1, 2, 1),
    }
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\)"):
        SparseInstCriterion(2)(outputs, [{"labels": torch.tensor([2]), "masks": torch.ones(1, 8, 8)}])
    with pytest.raises(ValueError, match="unknown loss"):
        SparseInstCriterion(2, weights={"loss_box": 1.0})
    with pytest.raises(ValueError, match="predicts 2 classes"):
        SparseInstCriterion(3)(outputs, [{"labels": torch.tensor([0]), "masks": torch.ones(1, 8, 8)}])
