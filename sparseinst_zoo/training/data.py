"""COCO-format instance segmentation data: parsing and validation, the training dataset, sampler and collate.

A dataset is a standard COCO instances JSON file (``images``, ``annotations``, ``categories``) plus the folder holding
the images. Masks may be polygons, compressed RLE or uncompressed RLE. Category ids are mapped to contiguous labels in
increasing id order; crowd annotations are dropped for training.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from ..inference.sources import load_image
from ..inference.transforms import normalize_and_pad
from .augment import Augmentation

__all__ = ["CocoImage", "CocoInstances", "CocoDataset", "Collator", "TrainSampler", "read_image", "decode_segmentation"]

_logger = logging.getLogger("sparseinst_zoo")


@dataclass
class CocoImage:
    """One image of a COCO file and its (non-crowd unless asked) annotations."""

    id: int
    file_name: str
    height: int
    width: int
    annotations: list[dict[str, Any]] = field(default_factory=list)


def _require(record: Any, keys: Sequence[str], what: str, path: str) -> None:
    if not isinstance(record, dict):
        raise ValueError(f"{path}: every entry of {what}s must be an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        ident = f" id {record['id']}" if "id" in record else ""
        raise ValueError(f"{path}: {what}{ident} is missing key(s) {missing}; a COCO {what} needs {list(keys)}")


def _int_field(record: dict[str, Any], key: str, what: str, path: str) -> int:
    try:
        return int(record[key])
    except (TypeError, ValueError):
        ident = f" id {record['id']}" if key != "id" and "id" in record else ""
        raise ValueError(f"{path}: {what}{ident} has {key} {record[key]!r}; expected an integer") from None


def _check_segmentation(segm: Any, ann_id: Any, image: CocoImage, path: str) -> list | dict | None:
    """Validate one annotation's segmentation; returns it cleaned (degenerate polygon parts removed) or None."""
    where = f"{path}: annotation id {ann_id} (image id {image.id})"
    if isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise ValueError(f"{where}: an RLE segmentation needs 'counts' and 'size', got keys {sorted(segm)}")
        if [int(s) for s in segm["size"]] != [image.height, image.width]:
            raise ValueError(f"{where}: RLE size {list(segm['size'])} differs from the image size "
                             f"[{image.height}, {image.width}] (height, width)")  # fmt: skip
        if not isinstance(segm["counts"], (str, bytes, list)):
            raise ValueError(f"{where}: RLE 'counts' must be a string or a list of integers")
        if isinstance(segm["counts"], list):  # uncompressed: the run lengths cover the image exactly
            counts = segm["counts"]
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != image.height * image.width:
                raise ValueError(f"{where}: uncompressed RLE 'counts' must be non-negative integers summing to "
                                 f"height x width = {image.height * image.width}")  # fmt: skip
        return segm
    if not isinstance(segm, list):
        kind = type(segm).__name__
        raise ValueError(f"{where}: segmentation must be a list of polygons or an RLE object, got {kind}")
    polygons = []
    for polygon in segm:
        if not isinstance(polygon, list) or not all(isinstance(v, (int, float)) for v in polygon):
            raise ValueError(f"{where}: a polygon must be a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(polygon) % 2:
            raise ValueError(f"{where}: polygon has an odd number of coordinates ({len(polygon)}); "
                             "expected x, y pairs")  # fmt: skip
        if not all(math.isfinite(v) for v in polygon):
            raise ValueError(f"{where}: polygon has non-finite coordinates")
        if len(polygon) >= 6:
            polygons.append(polygon)
    if not polygons:
        return None
    return polygons


class CocoInstances:
    """A parsed and validated COCO instances file.

    Args:
        json_path: the annotation file.
        image_dir: folder the ``file_name`` entries are relative to.
        keep_crowd: keep ``iscrowd=1`` annotations (dropped by default, as for training).

    Attributes:
        images: all images in file order, each with its annotations.
        category_ids: dataset category ids, sorted; label ``i`` is ``category_ids[i]``.
        label_names: category names in label order.

    Raises:
        FileNotFoundError: if the JSON file, the image folder or an image file it lists does not exist.
        ValueError: for a malformed file, naming the offending annotation/image id.

    Example:
        >>> coco = CocoInstances("annotations/instances_val.json", "images/val")  # doctest: +SKIP
        >>> coco.label_names[:2], len(coco.training_images())  # doctest: +SKIP
        (('cat', 'dog'), 412)
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], keep_crowd: bool = False):
        self.json_path = os.fspath(json_path)
        self.image_dir = os.fspath(image_dir)
        if not os.path.isfile(self.json_path):
            raise FileNotFoundError(f"COCO annotation file not found: {self.json_path}")
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        try:
            with open(self.json_path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.json_path} is not valid JSON: {err}") from err
        self._parse(data, keep_crowd)

    def _parse(self, data: Any, keep_crowd: bool) -> None:
        path = self.json_path
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a COCO instances file is a JSON object, got {type(data).__name__}")
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(f"{path} is not a COCO instances file: missing top-level key(s) {missing}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
        categories: dict[int, str] = {}
        for cat in data["categories"]:
            _require(cat, ("id", "name"), "category", path)
            cat_id = _int_field(cat, "id", "category", path)
            if cat_id in categories:
                raise ValueError(f"{path}: category id {cat['id']} appears twice")
            categories[cat_id] = str(cat["name"])
        if not categories:
            raise ValueError(f"{path}: 'categories' is empty; list the object classes there")
        self.category_ids: tuple[int, ...] = tuple(sorted(categories))
        self.label_names: tuple[str, ...] = tuple(categories[c] for c in self.category_ids)
        self.category_to_label: dict[int, int] = {c: i for i, c in enumerate(self.category_ids)}

        self.images: list[CocoImage] = []
        by_id: dict[int, CocoImage] = {}
        for img in data["images"]:
            _require(img, ("id", "file_name", "height", "width"), "image", path)
            img_id = _int_field(img, "id", "image", path)
            if img_id in by_id:
                raise ValueError(f"{path}: image id {img['id']} appears twice")
            size = [_int_field(img, key, "image", path) for key in ("height", "width")]
            record = CocoImage(img_id, str(img["file_name"]), *size)
            if record.height < 1 or record.width < 1:
                raise ValueError(f"{path}: image id {record.id} has a non-positive size {record.height}x{record.width}")
            by_id[record.id] = record
            self.images.append(record)

        seen: set[Any] = set()
        dropped: list[Any] = []
        self.num_crowd = 0
        for ann in data["annotations"]:
            _require(ann, ("id", "image_id", "category_id"), "annotation", path)
            ann_id = ann["id"]
            if ann_id in seen:
                raise ValueError(f"{path}: annotation id {ann_id} appears twice")
            seen.add(ann_id)
            image = by_id.get(_int_field(ann, "image_id", "annotation", path))
            if image is None:
                raise ValueError(f"{path}: annotation id {ann_id} refers to unknown image id {ann['image_id']}")
            if _int_field(ann, "category_id", "annotation", path) not in self.category_to_label:
                raise ValueError(f"{path}: annotation id {ann_id} has category id {ann['category_id']}, which is not "
                                 f"in 'categories' (known ids: {list(self.category_ids)})")  # fmt: skip
            crowd = bool(ann.get("iscrowd", 0))
            if crowd:
                self.num_crowd += 1
                if not keep_crowd:
                    continue
            if "segmentation" not in ann:
                raise ValueError(f"{path}: annotation id {ann_id} has no 'segmentation'; instance segmentation "
                                 "needs a polygon or RLE mask for every annotation")  # fmt: skip
            segm = _check_segmentation(ann["segmentation"], ann_id, image, path)
            if segm is None:
                dropped.append(ann_id)
                continue
            label = self.category_to_label[int(ann["category_id"])]
            image.annotations.append({"id": ann_id, "label": label, "segmentation": segm, "iscrowd": int(crowd),
                                      "area": ann.get("area")})  # fmt: skip
        if dropped:
            shown = ", ".join(str(i) for i in dropped[:10]) + (" ..." if len(dropped) > 10 else "")
            _logger.warning("%s: dropped %d annotation(s) without a valid polygon (fewer than 3 points): ids %s",
                            path, len(dropped), shown)  # fmt: skip
        self.num_dropped = len(dropped)
        self._check_files()

    def _check_files(self) -> None:
        """Fail before any work when image files are missing (instead of hours into training)."""
        missing = [img for img in self.images if not os.path.isfile(self.image_path(img))]
        if missing:
            shown = ", ".join(f"{img.file_name} (image id {img.id})" for img in missing[:3])
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise FileNotFoundError(
                f"{self.json_path}: {len(missing)} of {len(self.images)} image file(s) not found in {self.image_dir}: "
                f"{shown}{more}; check the image folder and the file_name entries"
            )

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def training_images(self) -> list[CocoImage]:
        """Images with at least one annotation (images without any are skipped in training)."""
        return [img for img in self.images if img.annotations]

    def image_path(self, image: CocoImage) -> str:
        return os.path.join(self.image_dir, image.file_name)

    def load_image(self, image: CocoImage) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8 RGB, checked against the size in the JSON."""
        array = read_image(self.image_path(image))
        if array.shape[:2] != (image.height, image.width):
            raise ValueError(f"{self.image_path(image)} is {array.shape[0]}x{array.shape[1]} (HxW) but "
                             f"{self.json_path} says {image.height}x{image.width} for image id {image.id}")  # fmt: skip
        return array

    def load_targets(self, image: CocoImage) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (K,) int64, masks (K, H, W) uint8)`` of an image's annotations."""
        labels = np.array([a["label"] for a in image.annotations], dtype=np.int64)
        if not image.annotations:
            return labels, np.zeros((0, image.height, image.width), dtype=np.uint8)
        masks = np.stack([decode_segmentation(a["segmentation"], image.height, image.width) for a in image.annotations])
        return labels, masks


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying its EXIF orientation (as ``predict`` decodes it)."""
    try:
        return load_image(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"{err} (check --train-images/--val-images and the file_name entries of the JSON)"
        ) from None


def decode_segmentation(segm: list | dict, height: int, width: int) -> np.ndarray:
    """A polygon list, compressed RLE or uncompressed RLE -> ``(H, W)`` uint8 mask."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        counts = segm["counts"]
        rle = {"size": segm["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning, once per mask
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


class CocoDataset(Dataset):
    """Training samples of a :class:`CocoInstances`: images without annotations skipped, augmented on the fly.

    Items are indexed by ``index`` or ``(index, seed)``; the seed drives the augmentation so a sample is reproducible
    no matter which worker loads it. Each item is a dict with ``image`` (3, H, W) uint8, ``labels`` (K,) int64,
    ``masks`` (K, H, W) uint8 and ``image_id``. Instances that augmentation leaves empty are removed.
    """

    def __init__(self, coco: CocoInstances, augmentation: Augmentation) -> None:
        self.coco = coco
        self.records = coco.training_images()
        if not self.records:
            raise ValueError(f"{coco.json_path} has no image with a (non-crowd) annotation to train on")
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, item)
        record = self.records[index]
        image = self.coco.load_image(record)
        labels, masks = self.coco.load_targets(record)
        image, masks = self.augmentation(image, masks, np.random.default_rng(seed))
        keep = masks.reshape(masks.shape[0], -1).any(1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(masks[keep]),
            "image_id": record.id,
        }


class Collator:
    """Normalise images, pad images (with 0 after normalisation) and masks bottom/right to a multiple of 32.

    Returns a dict with ``images`` (B, 3, Hp, Wp) float32, ``targets`` (per image ``labels`` and ``masks``
    (K, Hp, Wp) uint8), ``image_sizes`` and ``image_ids``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size_divisibility: int = 32) -> None:
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.size_divisibility = size_divisibility

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        images, sizes = normalize_and_pad([s["image"] for s in samples], self.mean, self.std, self.size_divisibility)
        height, width = images.shape[-2:]
        targets = [
            {"labels": s["labels"], "masks": F.pad(s["masks"], (0, width - w, 0, height - h))}
            for s, (h, w) in zip(samples, sizes)
        ]
        return {"images": images, "targets": targets, "image_sizes": sizes,
                "image_ids": [s["image_id"] for s in samples]}  # fmt: skip


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 32-bit augmentation seed for the ``position``-th sample of ``epoch``."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class TrainSampler(Sampler):
    """Batches of ``(index, augmentation seed)`` for iterations ``start_iter .. max_iters - 1``.

    Each epoch is a seeded permutation of the dataset cut into global batches of ``batch_size * world_size``
    (incomplete last batches are dropped; a dataset smaller than one global batch is repeated); rank ``r`` takes the
    ``r``-th slice. The stream depends only on ``seed`` and the iteration, so a resumed run sees exactly the batches
    the interrupted run would have, and ``world_size`` processes together see what one process sees with a
    ``world_size`` times larger batch.
    """

    def __init__(self, size: int, batch_size: int, max_iters: int, start_iter: int = 0, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        if size < 1 or batch_size < 1:
            raise ValueError(f"need a non-empty dataset and batch_size >= 1, got {size} and {batch_size}")
        self.size, self.batch_size, self.max_iters = size, batch_size, max_iters
        self.start_iter, self.seed, self.rank, self.world_size = start_iter, seed, rank, world_size
        self.global_batch = batch_size * world_size
        self.iters_per_epoch = max(size // self.global_batch, 1)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(self.size)
        while len(order) < self.global_batch:
            order = np.concatenate([order, rng.permutation(self.size)])
        return order

    def __len__(self) -> int:
        return max(self.max_iters - self.start_iter, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, np.zeros(0, dtype=np.int64)
        for iteration in range(self.start_iter, self.max_iters):
            this_epoch, step = divmod(iteration, self.iters_per_epoch)
            if this_epoch != epoch:
                epoch, order = this_epoch, self._epoch_order(this_epoch)
            start = step * self.global_batch + self.rank * self.batch_size
            yield [(int(order[p]), sample_seed(self.seed, epoch, p)) for p in range(start, start + self.batch_size)]
