"""Hungarian matcher: hand-made cases, soft targets and zero-instance images."""

from __future__ import annotations

import itertools

import pytest
import torch

from sparseinst_zoo.training.matcher import HungarianMatcher, dice_score, downsample_target_masks


def _outputs(masks: torch.Tensor, logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"pred_masks": masks, "pred_logits": logits}


def test_dice_score_matches_formula():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 10), torch.rand(2, 10)
    scores = dice_score(pred, target)
    for i, j in itertools.product(range(3), range(2)):
        p, t = pred[i].sigmoid(), target[j]
        expected = 2 * (p * t).sum() / ((p * p).sum() + (t * t).sum() + 1e-4)
        assert scores[i, j] == pytest.approx(expected.item(), rel=1e-5)


def test_matcher_picks_the_overlapping_queries():
    # 4 queries on a 4x4 grid; targets are the left half (class 0) and the top-right quadrant (class 1)
    left = torch.zeros(4, 4)
    left[:, :2] = 1
    top_right = torch.zeros(4, 4)
    top_right[:2, 2:] = 1
    masks = torch.full((1, 4, 4, 4), -10.0)
    masks[0, 3][top_right.bool()] = 10.0
    masks[0, 1][left.bool()] = 10.0
    logits = torch.zeros(1, 4, 2)
    targets = torch.stack([left, top_right]).flatten(1)
    rows, cols = HungarianMatcher()(_outputs(masks, logits), [torch.tensor([0, 1])], targets)[0]
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 1, 1: 3}


def test_class_probability_breaks_ties():
    masks = torch.zeros(1, 2, 2, 2)  # identical masks: only the class term differs
    logits = torch.tensor([[[-3.0, 3.0], [3.0, -3.0]]])
    rows, cols = HungarianMatcher()(_outputs(masks, logits), [torch.tensor([0])], torch.ones(1, 4))[0]
    assert rows.tolist() == [1] and cols.tolist() == [0]


def test_cost_is_dice_pow_alpha_times_prob_pow_beta():
    torch.manual_seed(1)
    masks, logits = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 4)
    labels = [torch.tensor([2]), torch.tensor([0, 3])]
    targets = torch.rand(3, 4)
    cost = HungarianMatcher().cost_matrix(_outputs(masks, logits), labels, targets)
    assert cost.shape == (2, 3, 3)
    flat_ids = [2, 0, 3]
    for b, q, t in itertools.product(range(2), range(3), range(3)):
        p = masks[b, q].flatten().sigmoid()
        dice = 2 * (p * targets[t]).sum() / ((p * p).sum() + (targets[t] ** 2).sum() + 1e-4)
        expected = dice**0.8 * logits[b, q, flat_ids[t]].sigmoid() ** 0.2
        assert cost[b, q, t] == pytest.approx(expected.item(), rel=1e-5)


def test_images_without_instances_and_more_targets_than_queries():
    torch.manual_seed(2)
    matcher = HungarianMatcher()
    outputs = _outputs(torch.randn(3, 2, 2, 2), torch.randn(3, 2, 5))
    labels = [torch.zeros(0, dtype=torch.long), torch.tensor([1, 2, 3]), torch.zeros(0, dtype=torch.long)]
    indices = matcher(outputs, labels, torch.rand(3, 4))
    assert [len(r) for r, _ in indices] == [0, 2, 0]  # 3 targets, only 2 queries
    assert len(set(indices[1][0].tolist())) == 2 and set(indices[1][1].tolist()) <= {0, 1, 2}
    none = matcher(outputs, [torch.zeros(0, dtype=torch.long)] * 3, torch.zeros(0, 4))
    assert all(r.numel() == 0 and c.numel() == 0 for r, c in none)


def test_downsample_pads_then_resizes_bilinearly():
    mask = torch.ones(1, 4, 4, dtype=torch.uint8)  # image 4x4 inside a padded 8x8 input
    soft = downsample_target_masks([mask, torch.zeros(0, 8, 8)], (8, 8), (2, 2), torch.device("cpu"))
    assert soft.shape == (1, 4)
    assert soft[0].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    soft = downsample_target_masks([mask], (8, 8), (3, 3), torch.device("cpu"))
    assert 0 < soft[0, 4] < 1  # soft values at the border
    with pytest.raises(ValueError, match="exceed"):
        downsample_target_masks([torch.ones(1, 9, 8)], (8, 8), (2, 2), torch.device("cpu"))
