"""``Results``: the instances found in one image, with boxes, polygons, COCO export and an overlay plot."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._coco import COCO_CATEGORY_IDS, COCO_CLASSES

__all__ = ["Results", "masks_to_boxes", "mask_to_polygons", "encode_rle"]

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
    if lib is torch:
        ys = torch.arange(height, device=masks.device)
        xs = torch.arange(width, device=masks.device)
        y1 = torch.where(rows, ys, height).amin(1)
        y2 = torch.where(rows, ys + 1, 0).amax(1)
        x1 = torch.where(cols, xs, width).amin(1)
        x2 = torch.where(cols, xs + 1, 0).amax(1)
        boxes = torch.stack([x1, y1, x2, y2], 1).float()
    else:
        ys, xs = np.arange(height), np.arange(width)
        y1 = np.where(rows, ys, height).min(1)
        y2 = np.where(rows, ys + 1, 0).max(1)
        x1 = np.where(cols, xs, width).min(1)
        x2 = np.where(cols, xs + 1, 0).max(1)
        boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
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
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(np.asarray(masks, dtype=np.uint8).transpose(1, 2, 0)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _to_numpy(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _is_integer_scalar(index: Any) -> bool:
    """True for a Python/numpy integer or a 0-d integer tensor/array (not bool)."""
    if isinstance(index, bool):
        return False
    if isinstance(index, (int, np.integer)):
        return True
    if isinstance(index, torch.Tensor):
        return index.ndim == 0 and not index.is_floating_point() and index.dtype != torch.bool
    return isinstance(index, np.ndarray) and index.ndim == 0 and np.issubdtype(index.dtype, np.integer)


class Results:
    """Instances predicted in one image.

    Attributes:
        masks: (N, H, W) bool masks at the original image size (torch tensor or numpy array).
        scores: (N,) float final scores (class score x mask quality, as the reference).
        labels: (N,) int class indices into ``names``.
        names: the model's class names (index -> name).
        image_size: ``(H, W)`` of the original image.
        path: the image file (None for in-memory inputs); ``frame`` is the frame index for videos.
        orig_img: the uint8 HxWx3 RGB image the instances were predicted on (used by :meth:`plot`), or None.
        track_ids: (N,) int64 numpy array of the instances' ids across video frames, set by ``model.track``
            (-1 for an instance the tracker kept without a match), or None when not tracked.

    Index a Results with a bool mask, indices or a slice to keep some instances, e.g. ``r[r.scores > 0.5]``.

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> r = model.predict(sparseinst_zoo.inference.sources.sample_image_path())[0]
        >>> r.masks.shape[1:], r.boxes.shape[1]
        (torch.Size([300, 451]), 4)
    """

    def __init__(
        self,
        masks: ArrayLike,
        scores: ArrayLike,
        labels: ArrayLike,
        names: Sequence[str],
        image_size: tuple[int, int] | None = None,
        path: str | None = None,
        orig_img: np.ndarray | None = None,
        frame: int | None = None,
        track_ids: ArrayLike | None = None,
    ) -> None:
        if masks.ndim != 3 or not (len(masks) == len(scores) == len(labels)):
            raise ValueError(
                f"Results: masks must be (N, H, W) with N scores and labels, got masks {tuple(masks.shape)}, "
                f"{len(scores)} scores, {len(labels)} labels"
            )
        self.masks = masks
        self.scores = scores
        self.labels = labels
        self.names = tuple(names)
        self.image_size = tuple(int(s) for s in (image_size or masks.shape[-2:]))
        self.path = path
        self.orig_img = orig_img
        self.frame = frame
        self.track_ids = None if track_ids is None else _to_numpy(track_ids).astype(np.int64).reshape(-1)
        if self.track_ids is not None and len(self.track_ids) != len(scores):
            raise ValueError(f"Results: {len(self.track_ids)} track_ids for {len(scores)} instances")
        self._boxes: ArrayLike | None = None

    # -- containers ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(len(self.scores))

    def __getitem__(self, index: Any) -> Results:
        if _is_integer_scalar(index):  # one instance (e.g. ``r[r.scores.argmax()]``) stays a Results of length 1
            index = [int(index)]
        track_ids = None
        if self.track_ids is not None:
            track_ids = self.track_ids[index if isinstance(index, slice) else _to_numpy(index)]
        if isinstance(self.masks, torch.Tensor):
            index = torch.as_tensor(index, device=self.masks.device) if not isinstance(index, slice) else index
        else:
            index = _to_numpy(index) if not isinstance(index, slice) else index
        return self._new(self.masks[index], self.scores[index], self.labels[index], track_ids)

    def _new(self, masks: ArrayLike, scores: ArrayLike, labels: ArrayLike, track_ids: ArrayLike | None) -> Results:
        return Results(
            masks, scores, labels, self.names, self.image_size, self.path, self.orig_img, self.frame, track_ids
        )

    def __repr__(self) -> str:
        source = self.path or "in-memory image"
        frame = f" frame {self.frame}" if self.frame is not None else ""
        counts: dict[str, int] = {}
        for name in self.classes:
            counts[name] = counts.get(name, 0) + 1
        summary = ", ".join(f"{n} {name}" for name, n in counts.items()) or "no instances"
        return f"Results({source}{frame}, {self.image_size[0]}x{self.image_size[1]}: {summary})"

    def cpu(self) -> Results:
        """A copy with torch tensors on the CPU."""
        move = (lambda x: x.cpu()) if isinstance(self.masks, torch.Tensor) else torch.as_tensor
        return self._new(move(self.masks), move(self.scores), move(self.labels), self.track_ids)

    def numpy(self) -> Results:
        """A copy holding numpy arrays."""
        return self._new(_to_numpy(self.masks), _to_numpy(self.scores), _to_numpy(self.labels), self.track_ids)

    # -- derived ---------------------------------------------------------------------------------------------
    @property
    def boxes(self) -> ArrayLike:
        """(N, 4) float ``x1, y1, x2, y2`` boxes enclosing each mask (same container/device as ``masks``)."""
        if self._boxes is None:
            self._boxes = masks_to_boxes(self.masks)
        return self._boxes

    @property
    def classes(self) -> list[str]:
        """Class name of each instance."""
        return [self.names[i] if 0 <= i < len(self.names) else str(i) for i in _to_numpy(self.labels).tolist()]

    def polygons(self, include_holes: bool = False) -> list[list[np.ndarray]]:
        """Per instance, its outline polygons as (P, 2) ``x, y`` arrays (see :func:`mask_to_polygons`)."""
        return [mask_to_polygons(m, include_holes) for m in _to_numpy(self.masks)]

    def category_ids(self, category_ids: Sequence[int] | None = None) -> list[int]:
        """Dataset category id of each instance: ``category_ids[label]``; COCO ids for COCO-labelled models."""
        if category_ids is None and self.names == tuple(COCO_CLASSES):
            category_ids = COCO_CATEGORY_IDS
        labels = _to_numpy(self.labels).tolist()
        if category_ids is None:
            return [int(label) for label in labels]
        if labels and max(labels) >= len(category_ids):
            raise ValueError(f"category_ids has {len(category_ids)} entries but a label is {max(labels)}")
        return [int(category_ids[label]) for label in labels]

    def to_coco(self, image_id: int | str, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO result dicts (``image_id, category_id, segmentation`` RLE, ``bbox`` xywh, ``score``) for COCOeval.

        Category ids are the COCO ids for COCO-labelled models, ``category_ids[label]`` if given, else the label.

        Example:
            >>> import sparseinst_zoo, numpy as np
            >>> r = Results(np.ones((1, 2, 3), bool), np.array([0.9]), np.array([0]), sparseinst_zoo._coco.COCO_CLASSES)
            >>> r.to_coco(7)[0]["category_id"], r.to_coco(7)[0]["bbox"]
            (1, [0.0, 0.0, 3.0, 2.0])
        """
        rles = encode_rle(_to_numpy(self.masks))
        boxes = _to_numpy(self.boxes)
        scores = _to_numpy(self.scores).tolist()
        return [
            {
                "image_id": image_id,
                "category_id": category_id,
                "segmentation": rle,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "score": float(score),
            }
            for rle, (x1, y1, x2, y2), score, category_id in zip(rles, boxes, scores, self.category_ids(category_ids))
        ]

    def to_supervision(self) -> Any:
        """The instances as a ``supervision.Detections`` (``pip install supervision``): ``xyxy`` boxes, bool
        ``mask``, ``confidence``, ``class_id`` and ``data["class_name"]``, for its annotators, trackers and zones.

        Example:
            >>> import supervision as sv  # doctest: +SKIP
            >>> result = model.predict("photo.jpg")[0]  # doctest: +SKIP
            >>> detections = result.to_supervision()  # doctest: +SKIP
            >>> overlay = sv.MaskAnnotator().annotate(result.orig_img.copy(), detections)  # doctest: +SKIP
        """
        try:
            import supervision
        except ImportError:
            raise ImportError(
                "Results.to_supervision needs the supervision package: pip install supervision  "
                "(or: pip install 'sparseinst-zoo[supervision]')"
            ) from None
        masks = _to_numpy(self.masks).astype(bool, copy=False)
        return supervision.Detections(
            xyxy=_to_numpy(self.boxes).astype(np.float32).reshape(len(masks), 4),
            mask=masks,
            confidence=_to_numpy(self.scores).astype(np.float32),
            class_id=_to_numpy(self.labels).astype(np.int64),
            tracker_id=self.track_ids,
            data={"class_name": np.array(self.classes, dtype=str)},
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: path, size and per instance its label, name, score, box, COCO RLE mask (and
        ``track_id`` when tracked)."""
        rles = encode_rle(_to_numpy(self.masks))
        instances = [
            {"label": int(label), "name": name, "score": float(score), "box": [float(v) for v in box], "mask": rle}
            for label, name, score, box, rle in zip(
                _to_numpy(self.labels).tolist(), self.classes, _to_numpy(self.scores).tolist(),
                _to_numpy(self.boxes), rles,
            )
        ]  # fmt: skip
        if self.track_ids is not None:
            for instance, track_id in zip(instances, self.track_ids.tolist()):
                instance["track_id"] = track_id
        out: dict[str, Any] = {"path": self.path, "image_size": list(self.image_size), "instances": instances}
        if self.frame is not None:
            out["frame"] = self.frame
        return out

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent)

    # -- visualisation ---------------------------------------------------------------------------------------
    def plot(self, image: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """An RGB uint8 overlay of the instances on ``image`` (uint8 HxWx3 RGB array or PIL image; default: the
        predicted image). ``kwargs``: ``alpha``, ``outline``, ``labels``, ``show_boxes``, ``show_ids`` of
        :func:`~sparseinst_zoo.inference.visualise.draw_instances`; tracked instances are coloured by track id."""
        from .visualise import draw_instances

        if image is None:
            image = self.orig_img
        if image is None:
            raise ValueError("Results.plot needs the image: this Results has no orig_img, pass plot(image=...)")
        image = np.asarray(image)  # a PIL image works too
        if tuple(image.shape[:2]) != self.image_size:
            raise ValueError(f"Results.plot: image size {image.shape[:2]} differs from the results' {self.image_size}")
        return draw_instances(
            image,
            _to_numpy(self.masks),
            _to_numpy(self.scores),
            self.classes,
            _to_numpy(self.boxes),
            track_ids=self.track_ids,
            **kwargs,
        )

    def save(self, path: str | os.PathLike[str], **kwargs: Any) -> str:
        """Write :meth:`plot` to an image file (format from the extension), atomically. Returns the path."""
        from .visualise import save_image

        return save_image(self.plot(**kwargs), path)
