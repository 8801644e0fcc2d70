"""A synthetic COCO-format "shapes" dataset (squares, discs, triangles on noise) for smoke tests and demos.

Squares and triangles are stored as polygons, discs as compressed RLE, so both mask formats are exercised.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, ImageDraw

__all__ = ["SHAPE_CLASSES", "make_shapes_dataset"]

SHAPE_CLASSES: tuple[str, ...] = ("square", "disc", "triangle")
_CATEGORY_IDS = (3, 7, 11)  # deliberately not contiguous


def _shape_polygon(kind: str, cx: float, cy: float, r: float) -> list[float]:
    if kind == "square":
        return [cx - r, cy - r, cx + r, cy - r, cx + r, cy + r, cx - r, cy + r]
    return [cx, cy - r, cx + r, cy + r * 0.8, cx - r, cy + r * 0.8]


def make_shapes_dataset(
    out_dir: str | os.PathLike[str],
    num_images: int = 32,
    size: tuple[int, int] = (64, 64),
    max_shapes: int = 3,
    radius: tuple[float, float] = (0.12, 0.22),
    seed: int = 0,
    json_name: str = "annotations.json",
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
    height, width = size
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        background = (rng.random((height, width, 3)) * 90 + 20).astype(np.uint8)
        canvas = Image.fromarray(background)
        draw = ImageDraw.Draw(canvas)
        occupied = np.zeros((height, width), dtype=bool)
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            for _attempt in range(20):
                half = float(rng.uniform(*radius) * min(height, width))
                cx = float(rng.uniform(half + 1, width - half - 1))
                cy = float(rng.uniform(half + 1, height - half - 1))
                label = int(rng.integers(len(SHAPE_CLASSES)))
                kind = SHAPE_CLASSES[label]
                layer = Image.new("L", (width, height), 0)
                layer_draw = ImageDraw.Draw(layer)
                if kind == "disc":
                    layer_draw.ellipse([cx - half, cy - half, cx + half, cy + half], fill=1)
                else:
                    layer_draw.polygon(_shape_polygon(kind, cx, cy, half), fill=1)
                mask = np.asarray(layer, dtype=bool)
                if not (mask & occupied).any() and mask.sum() > 4:
                    break
            else:
                continue
            occupied |= mask
            colour = tuple(int(c) for c in rng.integers(130, 256, size=3))
            draw.bitmap((0, 0), Image.fromarray(mask.astype(np.uint8) * 255), fill=colour)
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            if kind == "disc":
                segmentation = {"size": [height, width], "counts": rle["counts"].decode("ascii")}
            else:
                segmentation = [[round(v, 2) for v in _shape_polygon(kind, cx, cy, half)]]
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": _CATEGORY_IDS[label],
                "segmentation": segmentation, "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": 0,
            })  # fmt: skip
        file_name = f"{image_id:05d}.png"
        canvas.save(os.path.join(out_dir, file_name))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in zip(_CATEGORY_IDS, SHAPE_CLASSES)]
    path = os.path.join(out_dir, json_name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, handle)
    return path
