"""Postprocessing of SparseInst outputs into instances, exactly as the reference, vectorised over the batch.

Per image (see docs/predict.md): ``score = sqrt(sigmoid(class logits) * sigmoid(objectness))``; one label per query (max
over classes); keep ``score > score_threshold``; mask probabilities ``p = sigmoid(mask logits)`` at stride 4 of the
padded input; rescore ``score *= sum(p * [p > t]) / (sum([p > t]) + 1e-6)`` with ``t = mask_threshold``; upsample the
kept probabilities bilinearly to the padded input size, crop to the resized image, upsample to the original size and
threshold ``> mask_threshold``. No NMS.

Scores, labels, the keep decision and the kept queries are computed for the whole batch at once on the outputs'
device; the host then reads the number of instances per image (the only synchronisation, and no copy goes back to
the device) and only the kept masks are upsampled. Of those, a mask with no probability near the threshold is not
upsampled at all: bilinear values are convex combinations, so it is all False at every size (at the evaluation
threshold most of the 100 queries are such empty masks, and the upsampling is most of the postprocessing time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from .._constants import MASK_STRIDE
from ..errors import SparseInstError

__all__ = [
    "postprocess",
    "instance_scores",
    "mask_quality",
    "upsample_masks",
    "UPSAMPLE_CHUNK_PIXELS",
    "CPU_UPSAMPLE_CHUNK_PIXELS",
    "VISIBLE_MARGIN",
]

#: float32 values upsampled at once on an accelerator (64 MiB): bounds memory for many instances on large images.
UPSAMPLE_CHUNK_PIXELS = 16 * 1024 * 1024
#: the same on a CPU (8 MiB): a few masks at a time keep the two bilinear passes in cache, about twice as fast as
#: 64 MiB at once (100 masks of 640x864: ~90 ms against ~205 ms on 2 cores).
CPU_UPSAMPLE_CHUNK_PIXELS = 2 * 1024 * 1024
#: masks whose probabilities all stay this far below the mask threshold are not upsampled (they cannot cross it: each
#: bilinear value is a convex combination, and four passes of float32 rounding move a value by less than 1e-6).
VISIBLE_MARGIN = 1e-4


def instance_scores(pred_logits: torch.Tensor, pred_scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(score, label)`` per query: ``max_c sqrt(sigmoid(logit_c) * sigmoid(objectness))``, shapes (B, N)."""
    prob = torch.sqrt(pred_logits.float().sigmoid() * pred_scores.float().sigmoid())
    return prob.max(dim=-1)


def mask_quality(mask_prob: torch.Tensor, mask_threshold: float = 0.45) -> torch.Tensor:
    """The reference's mask-aware rescoring factor: mean probability inside each mask, ``(..., H, W) -> (...)``."""
    binary = (mask_prob > mask_threshold).float()
    return (mask_prob * binary).sum((-2, -1)) / (binary.sum((-2, -1)) + 1e-6)


def _check_outputs(outputs: Mapping[str, torch.Tensor], num_images: int, original_sizes: Sequence) -> None:
    missing = [k for k in ("pred_logits", "pred_masks", "pred_scores") if k not in outputs]
    if missing:
        raise SparseInstError(
            f"postprocess: model outputs lack {missing}; expected pred_logits, pred_masks, pred_scores"
        )
    batch = outputs["pred_logits"].shape[0]
    if not (batch == outputs["pred_masks"].shape[0] == outputs["pred_scores"].shape[0] == num_images):
        raise SparseInstError(
            f"postprocess: batch sizes differ: pred_logits {batch}, pred_masks {outputs['pred_masks'].shape[0]}, "
            f"pred_scores {outputs['pred_scores'].shape[0]}, resized_sizes {num_images}"
        )
    if len(original_sizes) != num_images:
        raise SparseInstError(f"postprocess: {num_images} resized sizes but {len(original_sizes)} original sizes")


def postprocess(
    outputs: Mapping[str, torch.Tensor],
    resized_sizes: Sequence[tuple[int, int]],
    original_sizes: Sequence[tuple[int, int]],
    score_threshold: float = 0.005,
    mask_threshold: float = 0.45,
    max_detections: int | None = 100,
    sort_by_score: bool = False,
) -> list[dict[str, torch.Tensor]]:
    """Turn raw SparseInst outputs into per-image instances at the original image sizes.

    Args:
        outputs: ``pred_logits`` (B, N, C), ``pred_masks`` (B, N, Hp/4, Wp/4) and ``pred_scores`` (B, N, 1) logits
            (torch tensors on any device and float dtype; they are computed on in float32).
        resized_sizes: each image's ``(h, w)`` inside the padded ``(Hp, Wp)`` input.
        original_sizes: each image's ``(H, W)`` to resize the masks to.
        score_threshold: keep queries whose class score (before mask rescoring) is above this (reference: 0.005).
        mask_threshold: probability threshold of the masks and of the rescoring (reference: 0.45).
        max_detections: keep at most this many instances per image, the highest final scores (``None``: all).
        sort_by_score: order instances by descending final score instead of query order (the reference's).

    Returns:
        One dict per image: ``scores`` (K,) float32, ``labels`` (K,) int64, ``masks`` (K, H, W) bool, ``queries`` (K,)
        int64 (the query index of each instance), on the outputs' device.

    Example:
        >>> import torch
        >>> out = {"pred_logits": torch.randn(1, 10, 80), "pred_masks": torch.randn(1, 10, 16, 24),
        ...        "pred_scores": torch.randn(1, 10, 1)}
        >>> result = postprocess(out, [(64, 90)], [(75, 105)])[0]
        >>> result["masks"].shape[1:]
        torch.Size([75, 105])
    """
    num_images = len(resized_sizes)
    _check_outputs(outputs, num_images, original_sizes)
    pred_masks = outputs["pred_masks"]
    padded = (pred_masks.shape[-2] * MASK_STRIDE, pred_masks.shape[-1] * MASK_STRIDE)
    for h, w in resized_sizes:
        if h > padded[0] or w > padded[1]:
            raise SparseInstError(f"postprocess: resized size {(h, w)} exceeds the padded input size {padded}")

    scores, labels = instance_scores(outputs["pred_logits"], outputs["pred_scores"])
    mask_prob = pred_masks.float().sigmoid()
    final = scores * mask_quality(mask_prob, mask_threshold)
    queries_by_image, selected = _select_queries(
        scores > score_threshold, final, mask_prob, mask_threshold, max_detections, sort_by_score
    )
    results: list[dict[str, torch.Tensor]] = []
    for i, ((h, w), original) in enumerate(zip(resized_sizes, original_sizes)):
        kept, visible = selected[i]
        queries = queries_by_image[i, :kept]
        masks = upsample_masks(mask_prob[i, queries], padded, (h, w), original, mask_threshold, visible=visible)
        results.append({"scores": final[i, queries], "labels": labels[i, queries], "masks": masks, "queries": queries})
    return results


def _select_queries(
    keep: torch.Tensor,
    final: torch.Tensor,
    mask_prob: torch.Tensor,
    mask_threshold: float,
    max_detections: int | None,
    sort_by_score: bool,
) -> tuple[torch.Tensor, list[tuple[int, list[int]]]]:
    """Which queries each image keeps, in output order, and which of them can have a visible mask.

    Everything is computed for the whole batch on the outputs' device; the host then reads, in one small transfer
    (the only synchronisation, and nothing is copied back to the device), how many queries each image keeps and
    which of those may have pixels above the threshold.

    Returns:
        ``queries_by_image`` (B, N): each image's kept queries first, in output order; and per image, the number of
        kept queries and the positions (increasing, within that prefix) of those whose masks may be visible.
    """
    ranking = torch.where(keep, final, torch.full_like(final, -1.0))  # final scores are >= 0
    order = torch.sort(ranking, dim=-1, descending=True, stable=True).indices
    num_queries = final.shape[1]
    if max_detections is not None and max_detections < num_queries:
        top = torch.zeros_like(keep)
        top.scatter_(1, order[:, : max(int(max_detections), 0)], True)
        keep = keep & top
    if not sort_by_score:
        order = torch.arange(num_queries, device=final.device).expand_as(order)
    kept_in_order = torch.gather(keep, 1, order)
    # the kept queries first, still in output order (a stable sort), so each image's instances are a prefix
    kept_first = torch.sort((~kept_in_order).to(torch.uint8), dim=1, stable=True).indices
    queries_by_image = torch.gather(order, 1, kept_first)
    kept = torch.gather(kept_in_order, 1, kept_first)
    visible = torch.gather(mask_prob.amax(dim=(-2, -1)) > mask_threshold - VISIBLE_MARGIN, 1, queries_by_image) & kept
    visible_first = torch.sort((~visible).to(torch.uint8), dim=1, stable=True).indices
    counts = torch.stack([kept.sum(dim=1), visible.sum(dim=1)], dim=1)
    host = torch.cat([counts, visible_first], dim=1).cpu().tolist()
    return queries_by_image, [(row[0], row[2 : 2 + row[1]]) for row in host]


def upsample_masks(
    probs: torch.Tensor,
    padded: tuple[int, int],
    resized: tuple[int, int],
    original: tuple[int, int],
    mask_threshold: float,
    chunk_pixels: int | None = None,
    visible: Sequence[int] | None = None,
) -> torch.Tensor:
    """Stride-4 probabilities (K, h, w) -> (K, H, W) bool masks at the original size, as the reference.

    Bilinear to the padded input size, crop to the resized image, bilinear to the original size, ``> threshold``;
    a few masks at a time (about ``chunk_pixels`` float32 values in flight; default: cache-sized on a CPU, 64 MiB on
    an accelerator), so memory is bounded by the bool output (1 byte per pixel) rather than K x H x W float32. Each
    mask is computed alone, so the chunking changes nothing.

    Args:
        visible: the increasing positions of the masks to upsample; the others are returned all False. Only for
            masks whose probabilities are all ``<= mask_threshold - VISIBLE_MARGIN``: bilinear resizing takes convex
            combinations, so such a mask has no pixel above the threshold at any size. None: upsample every mask.

    Example:
        >>> probs = torch.zeros(2, 4, 4)
        >>> probs[1, 1:3, 1:3] = 0.9
        >>> masks = upsample_masks(probs, (16, 16), (16, 16), (8, 8), 0.45, visible=[1])
        >>> masks.shape, masks[0].any().item(), masks[1].sum().item()
        (torch.Size([2, 8, 8]), False, 16)
    """
    height, width = original
    if chunk_pixels is None:
        chunk_pixels = CPU_UPSAMPLE_CHUNK_PIXELS if probs.device.type == "cpu" else UPSAMPLE_CHUNK_PIXELS
    step = max(1, chunk_pixels // max(1, height * width, padded[0] * padded[1]))
    empty = torch.empty if visible is None else torch.zeros
    masks = empty((probs.shape[0], height, width), dtype=torch.bool, device=probs.device)
    for start, stop in _runs(range(probs.shape[0]) if visible is None else visible, step):
        chunk = _upsample(probs[start:stop], padded, resized, original)
        torch.gt(chunk, mask_threshold, out=masks[start:stop])
    return masks


def _runs(positions: Iterable[int], longest: int) -> Iterator[tuple[int, int]]:
    """``[start, stop)`` stretches of consecutive ``positions`` (increasing), each at most ``longest`` long.

    Example:
        >>> list(_runs([0, 1, 2, 5, 6, 9], longest=2))
        [(0, 2), (2, 3), (5, 7), (9, 10)]
    """
    start, length = 0, 0
    for position in positions:
        if length and position == start + length and length < longest:
            length += 1
            continue
        if length:
            yield start, start + length
        start, length = position, 1
    if length:
        yield start, start + length


def _upsample(
    probs: torch.Tensor, padded: tuple[int, int], resized: tuple[int, int], original: tuple[int, int]
) -> torch.Tensor:
    """(k, h, w) stride-4 probabilities -> (k, H, W) float probabilities at the original size (the reference's)."""
    chunk = F.interpolate(probs[:, None], size=padded, mode="bilinear", align_corners=False)
    chunk = chunk[:, :, : resized[0], : resized[1]]
    return F.interpolate(chunk, size=original, mode="bilinear", align_corners=False)[:, 0]
