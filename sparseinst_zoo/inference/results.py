"""``Results``: the instances found in one image, with boxes, polygons, COCO and YOLO label export, an overlay plot."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .._coco import COCO_CATEGORY_IDS, COCO_CLASSES
from .._io import write_lines
from ..errors import MissingDependency, SparseInstError, install_hint
from .masks import encode_rle, mask_to_polygons, mask_to_segment, masks_to_boxes
from .sources import to_rgb_uint8
from .visualise import draw_instances, save_image

__all__ = ["Results", "masks_to_boxes", "mask_to_polygons", "encode_rle"]  # the geometry is re-exported from .masks

ArrayLike = Any  # torch.Tensor or np.ndarray


def model_category_ids(model: Any, names: Sequence[str] = ()) -> tuple[int, ...] | None:
    """The dataset category id of each label of ``model``: the ids training stored with the weights
    (``pretrained_cfg.extra["category_ids"]``), COCO's ids for COCO-labelled models, else None (ids = labels).

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
        >>> model.pretrained_cfg = model.pretrained_cfg.replace(extra={"category_ids": [1, 2, 5]})
        >>> model_category_ids(model)
        (1, 2, 5)
    """
    cfg = getattr(model, "pretrained_cfg", None)
    stored = getattr(cfg, "category_ids", None) or (getattr(cfg, "extra", None) or {}).get("category_ids")
    if stored:
        return tuple(int(c) for c in stored)
    names = tuple(names) or tuple(getattr(model, "label_names", ()) or ())
    if names == tuple(COCO_CLASSES):
        return tuple(COCO_CATEGORY_IDS)
    return None


YOLO_CLASSES = "yolo_classes"
"""``pretrained_cfg.extra`` key: True when the stored ``category_ids`` are YOLO class indices (a data.yaml's)."""


def model_yolo_classes(model: Any) -> tuple[int, ...] | None:
    """The YOLO class index of each label of ``model``: for a model trained on a data.yaml, that file's class
    indices (``names`` may skip numbers: ``{0: cat, 2: dog}``); else None, the label is the class (as for COCO's 80).

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=2)
        >>> model.pretrained_cfg = model.pretrained_cfg.replace(extra=trained_labels_extra({}, (0, 2), True))
        >>> model_yolo_classes(model), model_category_ids(model)
        ((0, 2), (0, 2))
    """
    cfg = getattr(model, "pretrained_cfg", None)
    return model_category_ids(model) if (getattr(cfg, "extra", None) or {}).get(YOLO_CLASSES) else None


def trained_labels_extra(extra: Mapping[str, Any], category_ids: Sequence[int], yolo_classes: bool) -> dict[str, Any]:
    """``extra`` of a model trained on a dataset with these category ids (YOLO class indices, or not)."""
    kept = {key: value for key, value in extra.items() if key != YOLO_CLASSES}  # a COCO fine-tune of a YOLO model
    return {**kept, "category_ids": [int(c) for c in category_ids], **({YOLO_CLASSES: True} if yolo_classes else {})}


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


def _decimal(value: float) -> str:
    """``value`` with 6 decimals, trailing zeros dropped (``0.25``, ``1``, ``0``)."""
    return f"{value:.6f}".rstrip("0").rstrip(".")


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
        category_ids: the dataset category id of each label (the model's stored ids; None: ids are the labels).
        yolo_classes: the YOLO class index of each label, for :meth:`yolo_lines` (a model trained on a data.yaml:
            its ``names`` keys; None: the label is the class).
        save_dir: the run folder a :class:`~sparseinst_zoo.inference.writer.ResultsWriter` wrote this image to.
        track_ids: (N,) int64 numpy array of the instances' ids across video frames, set by ``model.track``
            (-1 for an instance the tracker kept without a match), or None when not tracked.

    Index a Results with a bool mask, indices or a slice to keep some instances, e.g. ``r[r.scores > 0.5]``.

    Example:
        >>> import sparseinst_zoo
        >>> from sparseinst_zoo.inference.sources import sample_image_path
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> r = model.predict(sample_image_path())[0]
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
        *,
        category_ids: Sequence[int] | None = None,
        yolo_classes: Sequence[int] | None = None,
    ) -> None:
        if masks.ndim != 3 or not (len(masks) == len(scores) == len(labels)):
            raise SparseInstError(
                f"Results: masks must be (N, H, W) with N scores and labels, got masks {tuple(masks.shape)}, "
                f"{len(scores)} scores, {len(labels)} labels"
            )
        self.masks = masks
        self.scores = scores
        self.labels = labels
        self.names = tuple(names)
        height, width = (int(s) for s in (image_size or masks.shape[-2:]))
        self.image_size: tuple[int, int] = (height, width)
        self.path = path
        self.orig_img = orig_img
        self.frame = frame
        self.category_id_map: tuple[int, ...] | None = tuple(category_ids) if category_ids is not None else None
        self.yolo_classes: tuple[int, ...] | None = tuple(yolo_classes) if yolo_classes is not None else None
        self.save_dir: str | None = None
        self.track_ids = None if track_ids is None else _to_numpy(track_ids).astype(np.int64).reshape(-1)
        if self.track_ids is not None and len(self.track_ids) != len(scores):
            raise SparseInstError(f"Results: {len(self.track_ids)} track_ids for {len(scores)} instances")
        self._boxes: ArrayLike | None = None

    # -- containers ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(len(self.scores))

    def __getitem__(self, index: Any) -> Results:
        if _is_integer_scalar(index):  # one instance (e.g. ``r[r.scores.argmax()]``) stays a Results of length 1
            index = [int(index)]
        elif isinstance(index, (list, tuple)) and not index:  # nothing kept, e.g. by a list comprehension
            index = np.zeros(0, np.int64)  # an empty list would become a float tensor, which cannot index
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
            masks,
            scores,
            labels,
            self.names,
            self.image_size,
            self.path,
            self.orig_img,
            self.frame,
            track_ids,
            category_ids=self.category_id_map,
            yolo_classes=self.yolo_classes,
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

    def summary(self, scores_per_class: int = 3) -> str:
        """One line: each class with its count and best scores, the most confident class first ('' when empty).

        Example:
            >>> import torch
            >>> masks = torch.ones(4, 2, 2, dtype=torch.bool)
            >>> r = Results(masks, torch.tensor([0.9, 0.5, 0.8, 0.3]), torch.tensor([1, 0, 1, 1]), ["cat", "dog"])
            >>> r.summary(scores_per_class=2)
            '3 dog (0.90, 0.80, ...), 1 cat (0.50)'
        """
        by_class: dict[str, list[float]] = {}
        for name, score in zip(self.classes, _to_numpy(self.scores).tolist()):
            by_class.setdefault(name, []).append(score)
        parts = []
        for name, scores in sorted(by_class.items(), key=lambda item: -max(item[1])):
            scores.sort(reverse=True)
            shown = ", ".join(f"{score:.2f}" for score in scores[:scores_per_class])
            parts.append(f"{len(scores)} {name} ({shown}{', ...' if len(scores) > scores_per_class else ''})")
        return ", ".join(parts)

    def polygons(self, include_holes: bool = False) -> list[list[np.ndarray]]:
        """Per instance, its outline polygons as (P, 2) ``x, y`` arrays (see :func:`mask_to_polygons`)."""
        return [mask_to_polygons(m, include_holes) for m in _to_numpy(self.masks)]

    def yolo_lines(self, save_conf: bool = False) -> list[str]:
        """One YOLO segmentation label line per instance: ``class x1 y1 x2 y2 ...`` (and the score with
        ``save_conf``), as Ultralytics' ``save_txt`` writes them.

        ``class`` is the label (the index into ``names``), or its class index in the data.yaml the model was trained
        on (:attr:`yolo_classes`), so the files read back with that YAML; the polygon is normalised to ``0..1`` by
        the image width and height, 6 decimals. A mask of several parts, or with holes, stays one instance on one
        line: its outlines are joined by bridges of width 0 (:func:`~sparseinst_zoo.inference.masks.mask_to_segment`),
        so filling the polygon, as the YOLO reader does, gives the mask back. An empty mask has no outline and gets
        no line.

        Example:
            >>> m = np.zeros((1, 4, 8), bool); m[0, 1:3, 2:6] = True
            >>> Results(m, np.array([0.875]), np.array([1]), ["a", "b"]).yolo_lines(save_conf=True)
            ['1 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75 0.875']
        """
        height, width = self.image_size
        lines = []
        for mask, label, score in zip(_to_numpy(self.masks), _to_numpy(self.labels).tolist(), _to_numpy(self.scores)):
            segment = mask_to_segment(mask)
            if not len(segment):
                continue
            values = (segment / np.array([width, height], np.float64)).reshape(-1).tolist()
            values += [float(score)] if save_conf else []
            yolo_class = self.yolo_classes[label] if self.yolo_classes is not None else label
            lines.append(" ".join([str(int(yolo_class)), *(_decimal(v) for v in values)]))
        return lines

    def save_txt(self, path: str | os.PathLike[str], save_conf: bool = False) -> str:
        """Write :meth:`yolo_lines` to a YOLO label file (one line per instance; no instances: an empty file, a
        background image to a YOLO dataset), atomically. Returns the path written.

        An existing file is never replaced, as by :meth:`save`: when ``path`` exists, the next free ``<stem>_2.txt``,
        ``_3``, ... is written instead, and returned.
        """
        return write_lines(path, self.yolo_lines(save_conf), replace=False)

    def category_ids(self, category_ids: Sequence[int] | None = None) -> list[int]:
        """Dataset category id of each instance: ``category_ids[label]`` (default: the model's stored ids, COCO ids
        for COCO-labelled models, else the label itself)."""
        if category_ids is None:
            category_ids = self.category_id_map
        if category_ids is None and self.names == tuple(COCO_CLASSES):
            category_ids = COCO_CATEGORY_IDS
        labels = _to_numpy(self.labels).tolist()
        if category_ids is None:
            return [int(label) for label in labels]
        if labels and max(labels) >= len(category_ids):
            raise SparseInstError(f"category_ids has {len(category_ids)} entries but a label is {max(labels)}")
        return [int(category_ids[label]) for label in labels]

    def to_coco(self, image_id: int | str, category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """COCO result dicts (``image_id, category_id, segmentation`` RLE, ``bbox`` xywh, ``score``) for COCOeval.

        Category ids are ``category_ids[label]`` if given, else the model's stored dataset ids (see
        :func:`model_category_ids`), else the label.

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
        """The instances as a ``supervision.Detections``: ``xyxy`` boxes, bool ``mask``, ``confidence``, ``class_id``
        and ``data["class_name"]``, for its annotators and trackers (``pip install "sparseinst-zoo[supervision]"``).

        Example:
            >>> import supervision as sv  # doctest: +SKIP
            >>> result = model.predict("photo.jpg")[0]  # doctest: +SKIP
            >>> detections = result.to_supervision()  # doctest: +SKIP
            >>> overlay = sv.MaskAnnotator().annotate(result.orig_img.copy(), detections)  # doctest: +SKIP
        """
        try:
            import supervision
        except ImportError:
            raise MissingDependency(
                f"Results.to_supervision needs the supervision package: {install_hint('supervision')}"
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
                _to_numpy(self.labels).tolist(),
                self.classes,
                _to_numpy(self.scores).tolist(),
                _to_numpy(self.boxes),
                rles,
            )
        ]
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
        """An RGB uint8 overlay of the instances on ``image`` (default: the predicted image; else any image
        ``predict`` takes in memory: a PIL image of any mode, a uint8 RGB or grayscale array, a CHW tensor).
        ``kwargs``: ``alpha``, ``outline``, ``labels``, ``show_boxes``, ``show_ids`` of
        :func:`~sparseinst_zoo.inference.visualise.draw_instances`; tracked instances are coloured by track id."""
        if image is None:
            image = self.orig_img
        if image is None:
            raise SparseInstError("Results.plot needs the image: this Results has no orig_img, pass plot(image=...)")
        image = to_rgb_uint8(image, "Results.plot image")  # converted as predict converts its sources
        if tuple(image.shape[:2]) != self.image_size:
            raise SparseInstError(
                f"Results.plot: image size {image.shape[:2]} differs from the results' {self.image_size}"
            )
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
        """Write :meth:`plot` (``kwargs``: its options) to an image file (format from the extension), atomically.
        Returns the path written.

        An existing file (the photo itself, an earlier overlay) is never replaced: when ``path`` exists, the next
        free ``<stem>_2.png``, ``_3``, ... is written instead (as the predict writer names its files), and returned.

        Example:
            >>> import tempfile, os, numpy as np
            >>> masks, image = np.ones((1, 4, 6), bool), np.zeros((4, 6, 3), np.uint8)
            >>> r = Results(masks, np.array([0.9]), np.array([0]), ["a"], orig_img=image)
            >>> path = os.path.join(tempfile.mkdtemp(), "a.png")
            >>> [os.path.basename(r.save(path)) for _ in range(2)]
            ['a.png', 'a_2.png']
        """
        return save_image(self.plot(**kwargs), path, replace=False)
