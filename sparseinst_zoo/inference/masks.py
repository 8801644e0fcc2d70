"""Mask geometry shared by :class:`~sparseinst_zoo.inference.results.Results`, the visualiser and the writer.

Tight boxes of bool masks, exact pixel-outline polygons (also joined into one, for YOLO label files) and COCO
run-length encoding (with its area).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from scipy.spatial import cKDTree

__all__ = ["masks_to_boxes", "mask_to_polygons", "join_polygons", "mask_to_segment", "encode_rle", "rle_area"]

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


def join_polygons(polygons: list[np.ndarray]) -> np.ndarray:
    """One (P, 2) polygon tracing every one of ``polygons`` (outer boundaries and holes), through bridges of width 0.

    Each polygon but the largest is attached, at its vertex closest to one, to a vertex of a larger polygon; the
    joined path runs around the largest one and, at each attachment vertex, goes over to the attached polygon,
    around it and back along the same segment. A bridge is crossed once in each direction, so it adds and removes
    nothing when the polygon is filled (even-odd or non-zero winding, as pycocotools and OpenCV fill): the filled
    area is that of the parts, holes kept, as one instance. Ultralytics' ``merge_multi_segment`` joins the parts of a
    COCO mask into one YOLO line the same way.

    Example:
        >>> a = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
        >>> join_polygons([a, a + [3, 0]]).tolist()  # doctest: +NORMALIZE_WHITESPACE
        [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0], [4.0, 0.0], [4.0, 1.0], [3.0, 1.0], [3.0, 0.0], [1.0, 0.0], [1.0, 1.0],
         [0.0, 1.0]]
    """
    rings = [np.asarray(r, np.float32) for r in sorted(polygons, key=lambda ring: -abs(_signed_area(ring)))]
    if not rings:
        return np.zeros((0, 2), np.float32)
    children: list[dict[int, list[tuple[int, int]]]] = [{} for _ in rings]
    for parent, parent_vertex, ring, vertex in _attachments(rings):
        children[parent].setdefault(parent_vertex, []).append((ring, vertex))
    return np.asarray(_trace(rings, children), np.float32).reshape(-1, 2)


def _attachments(rings: list[np.ndarray]) -> list[tuple[int, int, int, int]]:
    """The bridges, ``(parent ring, its vertex, ring, own vertex)``, of a tree spanning all rings from ring 0.

    Short bridges first (Kruskal): the candidates are each vertex's nearest neighbours of other rings (a k-d tree);
    a ring none of them reaches is bridged from its closest vertex pair with the rings already joined.
    """
    sizes = [len(r) for r in rings]
    points = np.concatenate(rings)
    owner = np.repeat(np.arange(len(rings)), sizes)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    distances, neighbours = cKDTree(points).query(points, k=min(17, len(points)))
    distances, neighbours = distances.reshape(len(points), -1), neighbours.reshape(len(points), -1)
    sources = np.broadcast_to(np.arange(len(points))[:, None], neighbours.shape)
    other = owner[neighbours] != owner[sources]
    order = np.argsort(distances[other], kind="stable")
    pairs = np.stack([sources[other][order], neighbours[other][order]], 1)
    rings_of = np.sort(owner[pairs], 1)
    _, first = np.unique(rings_of[:, 0] * len(rings) + rings_of[:, 1], return_index=True)
    pairs = pairs[np.sort(first)]  # the closest pair of each two neighbouring rings, closest first
    root = list(range(len(rings)))  # union-find over rings

    def find(ring: int) -> int:
        while root[ring] != ring:
            root[ring] = root[root[ring]]
            ring = root[ring]
        return ring

    edges: dict[int, list[tuple[int, int, int]]] = {}
    for a, b in pairs.tolist():
        ring_a, ring_b = find(int(owner[a])), find(int(owner[b]))
        if ring_a != ring_b:
            root[ring_a] = ring_b
            edges.setdefault(int(owner[a]), []).append((a, int(owner[b]), b))
            edges.setdefault(int(owner[b]), []).append((b, int(owner[a]), a))
    for ring in range(1, len(rings)):  # rings no candidate reached (rare): bridge to ring 0's tree
        if find(ring) != find(0):
            joined = np.flatnonzero([find(int(r)) == find(0) for r in owner])
            target, own = _closest_vertices(points[joined], rings[ring])
            a, b = int(offsets[ring]) + own, int(joined[target])
            root[find(ring)] = find(0)
            edges.setdefault(ring, []).append((a, int(owner[b]), b))
            edges.setdefault(int(owner[b]), []).append((b, ring, a))
    found, seen, queue = [], {0}, [0]
    while queue:  # orient the tree away from ring 0
        ring = queue.pop()
        for own, other_ring, theirs in edges.get(ring, []):
            if other_ring not in seen:
                seen.add(other_ring)
                queue.append(other_ring)
                found.append((ring, own - int(offsets[ring]), other_ring, theirs - int(offsets[other_ring])))
    return found


def _closest_vertices(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices ``(i, j)`` of the closest pair ``a[i]``, ``b[j]``, in chunks of ``a`` (bounded memory)."""
    best, pair = np.inf, (0, 0)
    step = max(1, 1_000_000 // max(len(b), 1))
    for start in range(0, len(a), step):
        distances = ((a[start : start + step, None, :] - b[None, :, :]) ** 2).sum(-1)
        row, col = np.unravel_index(int(distances.argmin()), distances.shape)
        if distances[row, col] < best:
            best, pair = float(distances[row, col]), (start + int(row), int(col))
    return pair


def _trace(rings: list[np.ndarray], children: list[dict[int, list[tuple[int, int]]]]) -> list[np.ndarray]:
    """The joined vertex sequence: depth first over the attachment tree, with an explicit stack (no recursion
    limit for thousands of specks). An attached ring is traced from its attachment vertex back to it."""
    out: list[np.ndarray] = []
    # per ring being traced: [ring, start vertex, next step, steps, attached rings still to visit at this vertex]
    stack: list[list[Any]] = [[0, 0, 0, len(rings[0]), []]]
    while stack:
        frame = stack[-1]
        ring, start, step, steps, pending = frame
        size = len(rings[ring])
        if pending:
            child, vertex = pending.pop()
            stack.append([child, vertex, 0, len(rings[child]) + 1, []])
        elif step == steps:
            stack.pop()
            if stack:  # back over the bridge, to the vertex of the ring it left
                parent = stack[-1]
                out.append(rings[parent[0]][(parent[1] + parent[2] - 1) % len(rings[parent[0]])])
        else:
            vertex = (start + step) % size
            out.append(rings[ring][vertex])
            frame[2] = step + 1
            frame[4] = list(reversed(children[ring].get(vertex, []))) if step < size else []
    return out


def mask_to_segment(mask: np.ndarray) -> np.ndarray:
    """The whole of a 2-D bool mask as one (P, 2) ``x, y`` polygon: every part and hole of
    :func:`mask_to_polygons`, joined by :func:`join_polygons` (an empty mask gives no points).

    Filling it (e.g. pycocotools' ``frPyObjects``) gives the mask back, pixel for pixel.

    Example:
        >>> m = np.zeros((4, 6), bool); m[1:3, 1:2] = m[1:3, 4:5] = True
        >>> mask_to_segment(m).shape
        (10, 2)
    """
    return join_polygons(mask_to_polygons(mask, include_holes=True))


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
