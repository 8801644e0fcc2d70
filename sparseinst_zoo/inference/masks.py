"""Mask geometry shared by :class:`~sparseinst_zoo.inference.results.Results`, the visualiser and the writer.

Tight boxes of bool masks, exact pixel-outline polygons and COCO run-length encoding (with its area).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

__all__ = ["masks_to_boxes", "mask_to_polygons", "encode_rle", "rle_area"]

ArrayLike = Any  # torch.Tensor or np.ndarray


def masks_to_boxes(masks: ArrayLike) -> ArrayLike:
    """Tight ``x1, y1, x2, y2`` boxes (pixel edges: ``x2`` is one past the last column) of (N, H, W) bool masks.

    Empty masks get ``[0, 0, 0, 0]``. Works on torch tensors (any device) and numpy arrays.

    Example:
        >>> m = np.zeros((1, 4, 5), bool); m[0, 1:3, 2:4] = True
        >>> masks_to_boxes(m).tolist()
        [[2.0, 1.0, 4.0, 3.0]]
    """
    lib = torch if isinstance(masks, torch.Tensor) else np
    n, height, width = masks.shape
    if n == 0:
        return lib.zeros((0, 4), dtype=lib.float32) if lib is np else torch.zeros((0, 4), device=masks.device)
    rows, cols = masks.any(2), masks.any(1)  # (N, H), (N, W)
    boxes: ArrayLike
    if lib is torch:
        ys = torch.arange(height, device=masks.device)
        xs = torch.arange(width, device=masks.device)
        y1 = torch.where(rows, ys, height).amin(1)
        y2 = torch.where(rows, ys + 1, 0).amax(1)
        x1 = torch.where(cols, xs, width).amin(1)
        x2 = torch.where(cols, xs + 1, 0).amax(1)
        boxes = torch.stack([x1, y1, x2, y2], 1).float()
    else:
        rows_np, cols_np = np.arange(height), np.arange(width)
        edges = [
            np.where(cols, cols_np, width).min(1),
            np.where(rows, rows_np, height).min(1),
            np.where(cols, cols_np + 1, 0).max(1),
            np.where(rows, rows_np + 1, 0).max(1),
        ]
        boxes = np.stack(edges, 1).astype(np.float32)
    empty = ~rows.any(1)
    boxes[empty] = 0
    return boxes


# Directed unit edges around a foreground pixel at (row r, col c), as (x, y) corner points; clockwise on screen.
_SIDES = {
    "top": ((0, 0), (1, 0)),
    "right": ((1, 0), (1, 1)),
    "bottom": ((1, 1), (0, 1)),
    "left": ((0, 1), (0, 0)),
}


def mask_to_polygons(mask: np.ndarray, include_holes: bool = False) -> list[np.ndarray]:
    """Exact pixel-outline polygons of a 2-D bool mask, as (P, 2) float arrays of ``x, y`` corner coordinates.

    Outer boundaries run clockwise on screen (y down), holes counter-clockwise; diagonal-only contacts split regions
    (4-connectivity). Collinear points are removed.

    Example:
        >>> m = np.zeros((4, 4), bool); m[1:3, 1:3] = True
        >>> mask_to_polygons(m)[0].tolist()
        [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]]
    """
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    neighbours = {
        "top": padded[:-2, 1:-1],
        "bottom": padded[2:, 1:-1],
        "left": padded[1:-1, :-2],
        "right": padded[1:-1, 2:],
    }
    successors: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for side, ((ax, ay), (bx, by)) in _SIDES.items():
        rows, cols = np.nonzero(inner & ~neighbours[side])
        for r, c in zip(rows.tolist(), cols.tolist()):
            successors.setdefault((c + ax, r + ay), []).append((c + bx, r + by))
    polygons: list[np.ndarray] = []
    while successors:
        start = next(iter(successors))
        loop = [start]
        prev, point = start, _pop_edge(successors, start, None)
        while point != start:
            loop.append(point)
            prev, point = point, _pop_edge(successors, point, (point[0] - prev[0], point[1] - prev[1]))
        polygon = _drop_collinear(np.asarray(loop, dtype=np.float32))
        if include_holes or _signed_area(polygon) > 0:
            polygons.append(polygon)
    return polygons


def _pop_edge(successors: dict, point: tuple[int, int], direction: tuple[int, int] | None) -> tuple[int, int]:
    """Take the next edge from ``point``; at a saddle vertex turn right (keeps diagonal neighbours apart)."""
    options = successors[point]
    if len(options) > 1 and direction is not None:
        right = (-direction[1], direction[0])  # clockwise turn on screen (y down)
        choice = next((o for o in options if (o[0] - point[0], o[1] - point[1]) == right), options[0])
    else:
        choice = options[0]
    options.remove(choice)
    if not options:
        del successors[point]
    return choice


def _drop_collinear(points: np.ndarray) -> np.ndarray:
    prev, nxt = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    cross = (points[:, 0] - prev[:, 0]) * (nxt[:, 1] - points[:, 1]) - (points[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - points[:, 0]
    )
    return points[cross != 0]


def _signed_area(polygon: np.ndarray) -> float:
    """Shoelace area; positive for clockwise-on-screen (outer) loops."""
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def encode_rle(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLEs (``counts`` as str) of (N, H, W) bool masks, via pycocotools."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def rle_area(rle: dict[str, Any]) -> int:
    """Pixel count of a COCO RLE (as written by :func:`encode_rle`).

    Example:
        >>> rle_area(encode_rle(np.ones((1, 2, 3), bool))[0])
        6
    """
    return int(mask_utils.area(rle))
