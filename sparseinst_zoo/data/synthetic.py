"""A synthetic "shapes" dataset (squares, discs, triangles on noise) for smoke tests and demos, COCO or YOLO format.

In COCO format squares and triangles are stored as polygons, discs as compressed RLE, so both mask formats are
exercised. :func:`make_shapes_yolo_dataset` writes the same kind of data in the Ultralytics layout (discs as
polygons) together with a COCO JSON of exactly the same polygons, so that both readers can be compared.
"""

from __future__ import annotations

import json
import math
import os
from typing import NamedTuple

import numpy as np
import pycocotools.mask as mask_utils
import yaml
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "make_shapes_dataset", "make_shapes_yolo_dataset"]

SHAPE_CLASSES: tuple[str, ...] = ("square", "disc", "triangle")
_CATEGORY_IDS = (3, 7, 11)  # deliberately not contiguous


def _shape_polygon(kind: str, cx: float, cy: float, r: float) -> list[float]:
    if kind == "square":
        return [cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r]
    if kind == "disc":
        angles = [2 * math.pi * i / 24 for i in range(24)]
        return [v for a in angles for v in (cx + r * math.cos(a), cy + r * math.sin(a))]
    return [cx, cy - r, cx + r, cy + r * 0.8, cx - r, cy + r * 0.8]


class _Shape(NamedTuple):
    """One shape drawn on an image: its class, outline, pixels and how its mask is stored."""

    label: int
    polygon: list[float]
    mask: np.ndarray
    as_rle: bool  # a disc drawn as an ellipse, stored as RLE (its polygon only approximates it)


def _place_shape(
    rng: np.random.Generator, occupied: np.ndarray, radius: tuple[float, float], disc_polygons: bool
) -> _Shape | None:
    """A random shape that overlaps none of the ``occupied`` pixels, or None when 20 tries all overlap."""
    height, width = occupied.shape
    for _attempt in range(20):
        half = float(rng.uniform(*radius) * min(height, width))
        cx = float(rng.uniform(half + 1, width - half - 1))
        cy = float(rng.uniform(half + 1, height - half - 1))
        label = int(rng.integers(len(SHAPE_CLASSES)))
        kind = SHAPE_CLASSES[label]
        polygon = _shape_polygon(kind, cx, cy, half)
        as_rle = kind == "disc" and not disc_polygons
        layer = Image.new("L", (width, height), 0)
        if as_rle:
            ImageDraw.Draw(layer).ellipse([cx - half, cy - half, cx + half, cy + half], fill=1)
        else:
            ImageDraw.Draw(layer).polygon(polygon, fill=1)
        mask = np.asarray(layer, dtype=bool)
        if not (mask & occupied).any() and mask.sum() > 4:
            return _Shape(label, polygon, mask, as_rle)
    return None


def _draw_image(
    rng: np.random.Generator,
    size: tuple[int, int],
    max_shapes: int,
    radius: tuple[float, float],
    disc_polygons: bool,
) -> tuple[Image.Image, list[_Shape]]:
    """A noisy background with 1..``max_shapes`` non-overlapping shapes in random colours, and those shapes."""
    height, width = size
    background = (rng.random((height, width, 3)) * 90 + 20).astype(np.uint8)
    canvas = Image.fromarray(background)
    draw = ImageDraw.Draw(canvas)
    occupied = np.zeros((height, width), dtype=bool)
    shapes: list[_Shape] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        shape = _place_shape(rng, occupied, radius, disc_polygons)
        if shape is None:
            continue
        occupied |= shape.mask
        colour = tuple(int(c) for c in rng.integers(130, 256, size=3))
        draw.bitmap((0, 0), Image.fromarray(shape.mask.astype(np.uint8) * 255), fill=colour)
        shapes.append(shape)
    return canvas, shapes


def _annotation(ann_id: int, image_id: int, shape: _Shape) -> dict:
    """The COCO annotation of a drawn shape (polygon, or RLE for a disc drawn as an ellipse)."""
    rle = mask_utils.encode(np.asfortranarray(shape.mask.astype(np.uint8)))
    segmentation: list | dict
    if shape.as_rle:
        segmentation = {"size": list(shape.mask.shape), "counts": rle["counts"].decode("ascii")}
    else:
        segmentation = [[round(v, 2) for v in shape.polygon]]
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": _CATEGORY_IDS[shape.label],
        "segmentation": segmentation,
        "area": float(shape.mask.sum()),
        "bbox": [x, y, w, h],
        "iscrowd": 0,
    }


def make_shapes_dataset(
    out_dir: str | os.PathLike[str],
    num_images: int = 32,
    size: tuple[int, int] = (64, 64),
    max_shapes: int = 3,
    radius: tuple[float, float] = (0.12, 0.22),
    seed: int = 0,
    json_name: str = "annotations.json",
    disc_polygons: bool = False,
) -> str:
    """Write ``num_images`` PNG images and a COCO instances JSON to ``out_dir``.

    Shapes do not overlap; each image has 1..``max_shapes`` of them in random colours on a noisy background.

    Args:
        out_dir: folder for the images and the JSON file (created).
        num_images: number of images.
        size: ``(height, width)`` of every image.
        max_shapes: most shapes per image.
        radius: range of the shapes' half-size, as a fraction of the shorter image side.
        seed: random seed.
        json_name: name of the annotation file.
        disc_polygons: store discs as 24-sided polygons (drawn as such) instead of RLE.

    Returns:
        Path of the JSON file; the images are in ``out_dir``.

    Example:
        >>> import tempfile
        >>> path = make_shapes_dataset(tempfile.mkdtemp(), num_images=2)
        >>> sorted(json.load(open(path)))
        ['annotations', 'categories', 'images']
    """
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    images: list[dict] = []
    annotations: list[dict] = []
    for image_id in range(1, num_images + 1):
        canvas, shapes = _draw_image(rng, size, max_shapes, radius, disc_polygons)
        for ann_id, shape in enumerate(shapes, len(annotations) + 1):
            annotations.append(_annotation(ann_id, image_id, shape))
        file_name = f"{image_id:05d}.png"
        canvas.save(os.path.join(out_dir, file_name))
        images.append({"id": image_id, "file_name": file_name, "height": size[0], "width": size[1]})
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in zip(_CATEGORY_IDS, SHAPE_CLASSES)]
    path = os.path.join(out_dir, json_name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
    return path


def _write_yolo_labels(json_path: str, label_dir: str) -> None:
    """One ``class x1 y1 ...`` file per image of a polygon-only COCO file (coordinates normalised, exact repr)."""
    with open(json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    class_index = {c["id"]: i for i, c in enumerate(sorted(data["categories"], key=lambda c: c["id"]))}
    lines: dict[int, list[str]] = {image["id"]: [] for image in data["images"]}
    sizes = {image["id"]: (image["width"], image["height"]) for image in data["images"]}
    for ann in data["annotations"]:
        scale = sizes[ann["image_id"]]
        coords = " ".join(repr(v / scale[i % 2]) for i, v in enumerate(ann["segmentation"][0]))
        lines[ann["image_id"]].append(f"{class_index[ann['category_id']]} {coords}")
    os.makedirs(label_dir, exist_ok=True)
    for image in data["images"]:
        stem = os.path.splitext(image["file_name"])[0]
        with open(os.path.join(label_dir, stem + ".txt"), "w", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines[image["id"]]))


def make_shapes_yolo_dataset(
    out_dir: str | os.PathLike[str],
    split: str = "val",
    num_images: int = 32,
    size: tuple[int, int] = (64, 64),
    seed: int = 0,
) -> str:
    """Write a shapes split in the Ultralytics layout (``images/<split>``, ``labels/<split>``, ``data.yaml``).

    The same polygons are also written as a COCO file, ``images/<split>/annotations.json``, so the two formats can
    be compared. Calling it again for another split adds that split to ``data.yaml``. Power-of-two image sizes keep
    the normalised coordinates exact.

    Returns:
        Path of ``data.yaml``.

    Example:
        >>> import tempfile
        >>> path = make_shapes_yolo_dataset(tempfile.mkdtemp(), num_images=2)
        >>> sorted(yaml.safe_load(open(path)))
        ['names', 'path', 'val']
    """
    out_dir = os.fspath(out_dir)
    image_dir = os.path.join(out_dir, "images", split)
    json_path = make_shapes_dataset(image_dir, num_images, size, seed=seed, disc_polygons=True)
    _write_yolo_labels(json_path, os.path.join(out_dir, "labels", split))
    yaml_path = os.path.join(out_dir, "data.yaml")
    spec: dict = {"path": ".", "names": list(SHAPE_CLASSES)}
    if os.path.isfile(yaml_path):
        with open(yaml_path, encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    spec[split] = f"images/{split}"
    with open(yaml_path, "w", encoding="utf-8") as handle:
        yaml.safe_dump(spec, handle, sort_keys=False)
    return yaml_path
