"""COCO-format instance segmentation files: parsing and validation.

A dataset is a standard COCO instances JSON file (``images``, ``annotations``, ``categories``) plus the folder holding
the images. Masks may be polygons, compressed RLE or uncompressed RLE. Category ids are mapped to contiguous labels in
increasing id order; crowd annotations are dropped for training. Every problem is reported at load time as one
:class:`~sparseinst_zoo.errors.DataError` line naming the file and the entry (image, annotation or category id).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

from .._text import listed
from ..errors import DataError
from .instances import ImageRecord, InstanceSet, UnreadableImage, compressed_rle_counts, image_header

__all__ = ["CocoInstances", "parse_integer"]

_logger = logging.getLogger("sparseinst_zoo")


def parse_integer(value: Any) -> int | None:
    """``value`` as an int when it is an integer (``3`` or ``3.0``, not ``3.9``, ``True``, ``"3"`` or a list).

    Example:
        >>> parse_integer(3), parse_integer(3.0), parse_integer(3.9), parse_integer([3])
        (3, 3, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _require(record: Any, keys: Sequence[str], what: str, path: str) -> None:
    if not isinstance(record, dict):
        raise DataError(f"{path}: every entry of {what}s must be an object, got {type(record).__name__}")
    missing = [k for k in keys if k not in record]
    if missing:
        ident = f" id {record['id']!r}" if "id" in record else ""
        raise DataError(f"{path}: {what}{ident} is missing key(s) {missing}; a COCO {what} needs {list(keys)}")


def _int_field(record: dict[str, Any], key: str, what: str, path: str) -> int:
    value = parse_integer(record[key])
    if value is None:
        ident = f" id {record['id']!r}" if key != "id" and "id" in record else ""
        raise DataError(f"{path}: {what}{ident} has {key} {record[key]!r}; expected an integer")
    return value


def _check_rle(segm: dict[str, Any], image: ImageRecord, where: str) -> dict[str, Any]:
    if "counts" not in segm or "size" not in segm:
        raise DataError(f"{where}: an RLE segmentation needs 'counts' and 'size', got keys {sorted(segm)}")
    size = segm["size"]
    if not isinstance(size, (list, tuple)) or len(size) != 2 or any(parse_integer(s) is None for s in size):
        raise DataError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
    if [int(s) for s in size] != [image.height, image.width]:
        raise DataError(
            f"{where}: RLE size {list(size)} differs from the image size "
            f"[{image.height}, {image.width}] (height, width)"
        )
    counts = segm["counts"]
    pixels = image.height * image.width
    if isinstance(counts, list):  # uncompressed: the run lengths cover the image exactly
        if not all(parse_integer(c) is not None and c >= 0 for c in counts) or sum(counts) != pixels:
            raise DataError(
                f"{where}: uncompressed RLE 'counts' must be non-negative integers summing to height x width = {pixels}"
            )
    elif isinstance(counts, (str, bytes)):
        runs = compressed_rle_counts(counts)
        if runs is None or sum(runs) != pixels:
            covered = "is not a valid COCO encoding" if runs is None else f"covers {sum(runs)} pixels"
            raise DataError(f"{where}: compressed RLE 'counts' {covered}; the image has height x width = {pixels}")
    else:
        raise DataError(f"{where}: RLE 'counts' must be a string or a list of integers")
    return segm


def _check_polygons(segm: list[Any], where: str) -> list[list[float]] | None:
    polygons = []
    for polygon in segm:
        if not isinstance(polygon, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon
        ):
            raise DataError(f"{where}: a polygon must be a flat list of numbers [x1, y1, x2, y2, ...]")
        if len(polygon) % 2:
            raise DataError(f"{where}: polygon has an odd number of coordinates ({len(polygon)}); expected x, y pairs")
        if not all(math.isfinite(v) for v in polygon):
            raise DataError(f"{where}: polygon has non-finite coordinates")
        if len(polygon) >= 6:
            polygons.append(polygon)
    return polygons or None


def _check_segmentation(segm: Any, image: ImageRecord, where: str) -> list[list[float]] | dict[str, Any] | None:
    """Validate one annotation's segmentation; returns it cleaned (degenerate polygon parts removed) or None."""
    if isinstance(segm, dict):
        return _check_rle(segm, image, where)
    if not isinstance(segm, list):
        kind = type(segm).__name__
        raise DataError(f"{where}: segmentation must be a list of polygons or an RLE object, got {kind}")
    return _check_polygons(segm, where)


def _check_area(ann: dict[str, Any], where: str) -> float | None:
    area = ann.get("area")
    if area is None:
        return None
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area) or area < 0:
        raise DataError(f"{where}: 'area' must be a non-negative number, got {area!r}")
    return float(area)


def _check_crowd(ann: dict[str, Any], where: str) -> int:
    crowd = ann.get("iscrowd", 0)
    if parse_integer(crowd) not in (0, 1):
        raise DataError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
    return int(crowd)


def _read_json(path: str) -> Any:
    """The parsed JSON file; whatever the parser rejects (syntax, encoding, limits) is a DataError naming ``path``."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except UnicodeDecodeError as err:  # a ValueError too: first
        raise DataError(f"{path} is not UTF-8 text (byte {err.start}); save the JSON file as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON: {err}") from None
    except (ValueError, RecursionError) as err:  # e.g. an integer of more than 4300 digits, nesting too deep
        reason = str(err).split(";")[0] or type(err).__name__
        raise DataError(f"{path} cannot be read as COCO JSON ({reason}); check how the file was written") from None


class CocoInstances(InstanceSet):
    """A parsed and validated COCO instances file.

    Args:
        json_path: the annotation file.
        image_dir: folder the ``file_name`` entries are relative to.
        keep_crowd: keep ``iscrowd=1`` annotations (dropped by default, as for training).

    Attributes:
        json_path / image_dir: as given (``source`` is ``json_path``).
        images, category_ids, label_names: see :class:`~sparseinst_zoo.data.instances.InstanceSet`.

    Raises:
        FileNotFoundError: if the JSON file, the image folder or an image file it lists does not exist.
        DataError: for a malformed file, naming the offending annotation/image/category id.

    Example:
        >>> import tempfile
        >>> from sparseinst_zoo.data.synthetic import make_shapes_dataset
        >>> folder = tempfile.mkdtemp()
        >>> coco = CocoInstances(make_shapes_dataset(folder, num_images=3), folder)  # JSON file, image folder
        >>> coco.label_names[:2], len(coco.training_images())
        (('square', 'disc'), 3)
    """

    def __init__(self, json_path: str | os.PathLike[str], image_dir: str | os.PathLike[str], keep_crowd: bool = False):
        self.json_path = os.fspath(json_path)
        self.image_dir = os.fspath(image_dir)
        if not os.path.isfile(self.json_path):
            raise FileNotFoundError(f"COCO annotation file not found: {self.json_path}")
        if not os.path.isdir(self.image_dir):
            raise FileNotFoundError(f"image folder not found: {self.image_dir}")
        data = _read_json(self.json_path)
        self._check_layout(data)
        categories = self._parse_categories(data["categories"])
        super().__init__(self.json_path, [], self._drop_grouping_categories(categories, data))
        by_id = self._parse_images(data["images"])
        self._parse_annotations(data["annotations"], by_id, keep_crowd)
        self._check_files()

    def _check_layout(self, data: Any) -> None:
        path = self.json_path
        if not isinstance(data, dict):
            raise DataError(f"{path}: a COCO instances file is a JSON object, got {type(data).__name__}")
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise DataError(f"{path} is not a COCO instances file: missing top-level key(s) {missing}")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data[key], list):
                raise DataError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")

    def _parse_categories(self, entries: list[Any]) -> dict[int, str]:
        categories: dict[int, str] = {}
        for cat in entries:
            _require(cat, ("id", "name"), "category", self.json_path)
            cat_id = _int_field(cat, "id", "category", self.json_path)
            if cat_id in categories:
                raise DataError(f"{self.json_path}: category id {cat_id} appears twice")
            categories[cat_id] = str(cat["name"])
        if not categories:
            raise DataError(f"{self.json_path}: 'categories' is empty; list the object classes there")
        return categories

    def _drop_grouping_categories(self, categories: dict[int, str], data: dict[str, Any]) -> dict[int, str]:
        """The categories less those that only group others: the supercategory of another category, without any
        annotation of their own (Roboflow's exports start with such a root named after the dataset; its YOLO export
        of the same data leaves it out). They would add a class that is never trained on."""
        parents = {
            str(cat.get("supercategory"))
            for cat in data["categories"]
            if isinstance(cat, dict) and cat.get("supercategory") != cat.get("name")  # COCO's person is person's
        }
        used = {parse_integer(ann.get("category_id")) for ann in data["annotations"] if isinstance(ann, dict)}
        grouping = [c for c, name in categories.items() if name in parents and c not in used]
        if not grouping or len(grouping) == len(categories):
            return categories
        _logger.warning(
            "%s: ignoring %d category(ies) that only group others and have no annotation: %s",
            self.json_path,
            len(grouping),
            ", ".join(f"id {c} '{categories[c]}'" for c in grouping),
        )
        return {c: name for c, name in categories.items() if c not in grouping}

    def _parse_images(self, entries: list[Any]) -> dict[int, ImageRecord]:
        path = self.json_path
        by_id: dict[int, ImageRecord] = {}
        for img in entries:
            _require(img, ("id", "file_name", "height", "width"), "image", path)
            img_id = _int_field(img, "id", "image", path)
            if img_id in by_id:
                raise DataError(f"{path}: image id {img_id} appears twice")
            height, width = (_int_field(img, key, "image", path) for key in ("height", "width"))
            if height < 1 or width < 1:
                raise DataError(f"{path}: image id {img_id} has a non-positive size {height}x{width}")
            file_name = str(img["file_name"])
            record = ImageRecord(img_id, file_name, height, width, os.path.join(self.image_dir, file_name))
            by_id[img_id] = record
            self.images.append(record)
        return by_id

    def _parse_annotations(self, entries: list[Any], by_id: dict[int, ImageRecord], keep_crowd: bool) -> None:
        path = self.json_path
        seen: set[int] = set()
        dropped: list[int] = []
        for ann in entries:
            _require(ann, ("id", "image_id", "category_id"), "annotation", path)
            ann_id = _int_field(ann, "id", "annotation", path)
            if ann_id in seen:
                raise DataError(f"{path}: annotation id {ann_id} appears twice")
            seen.add(ann_id)
            image = by_id.get(_int_field(ann, "image_id", "annotation", path))
            if image is None:
                raise DataError(f"{path}: annotation id {ann_id} refers to unknown image id {ann['image_id']}")
            category_id = _int_field(ann, "category_id", "annotation", path)
            if category_id not in self.category_to_label:
                raise DataError(
                    f"{path}: annotation id {ann_id} has category id {category_id}, which is not in "
                    f"'categories' (known ids: {list(self.category_ids)})"
                )
            where = f"{path}: annotation id {ann_id} (image id {image.id})"
            crowd, area = _check_crowd(ann, where), _check_area(ann, where)
            if crowd:
                self.num_crowd += 1
                if not keep_crowd:
                    continue
            if "segmentation" not in ann:
                raise DataError(
                    f"{path}: annotation id {ann_id} has no 'segmentation'; instance segmentation "
                    "needs a polygon or RLE mask for every annotation"
                )
            segm = _check_segmentation(ann["segmentation"], image, where)
            if segm is None:
                dropped.append(ann_id)
                continue
            image.annotations.append(
                {
                    "id": ann_id,
                    "label": self.category_to_label[category_id],
                    "segmentation": segm,
                    "iscrowd": crowd,
                    "area": area,
                }
            )
        if dropped:
            shown = listed(dropped, shown=10)
            _logger.warning(
                "%s: dropped %d annotation(s) without a mask (an empty segmentation, as a box-only annotation has, or "
                "polygons with fewer than 3 points): ids %s",
                path,
                len(dropped),
                shown,
            )
        self.num_dropped = len(dropped)

    def _check_files(self) -> None:
        """Fail before any work when image files are missing (instead of hours into training)."""
        missing = [img for img in self.images if not os.path.isfile(img.path)]
        if missing:
            shown = listed(f"{img.file_name} (image id {img.id})" for img in missing)
            raise FileNotFoundError(
                f"{self.json_path}: {len(missing)} of {len(self.images)} image file(s) not found in {self.image_dir}: "
                f"{shown}; check the image folder and the file_name entries"
            )
        self._check_sizes()

    def _header(self, img: ImageRecord) -> tuple[tuple[int, int], bool]:
        try:
            return image_header(img.path)
        except UnreadableImage as err:  # the JSON names the file: an error, where a YOLO folder's bad file is skipped
            raise DataError(
                f"{self.json_path}: {img.file_name} (image id {img.id}) cannot be read as an image ({err.reason}); "
                "replace the file, or remove the image and its annotations from the JSON"
            ) from None

    def _check_sizes(self) -> None:
        """Fail at load time, not at the first batch or evaluation that reads it, when an image is not the size the
        JSON gives it (from the image headers, EXIF orientation applied as when the pixels are read)."""
        wrong = [(img, *self._header(img)) for img in self.images]
        wrong = [(img, size, turned) for img, size, turned in wrong if size != (img.height, img.width)]
        if not wrong:
            return
        img, (height, width), turned = wrong[0]
        more = f" ({len(wrong)} of {len(self.images)} images differ)" if len(wrong) > 1 else ""
        if turned and (width, height) == (img.height, img.width):
            fix = (
                "its EXIF orientation turns it by 90 degrees and the JSON gives the stored size, so the annotations "
                "are likely on the stored pixels: remove the orientation tag (e.g. exiftool -Orientation= FILE) or "
                "annotate the image as it is displayed"
            )
        else:
            fix = "correct the JSON's height and width or replace the image"
        raise DataError(
            f"{self.json_path}: {img.file_name} (image id {img.id}) is {height}x{width} (HxW) but the JSON says "
            f"{img.height}x{img.width}{more}; {fix}"
        )
