"""YOLO-format (Ultralytics) instance segmentation: image lists and per-image polygon label files, read directly.

Each image ``.../images/<name>.<ext>`` has a label file ``.../labels/<name>.txt`` (the last ``images`` folder of the
path replaced by ``labels``, as Ultralytics does); each line is one instance, ``class x1 y1 x2 y2 ...``, a class index
and a polygon normalised to ``0..1`` by the image width and height. A missing or empty label file is an image without
objects. A polygon with fewer than 3 points is dropped with a warning; anything else wrong is a
:class:`~sparseinst_zoo.errors.DataError` naming the file and line.

Example:
    >>> label_path_for("/data/shapes/images/train/0001.png")
    '/data/shapes/labels/train/0001.txt'
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence

from .._text import listed
from ..errors import DataError
from .instances import ImageRecord, InstanceSet, UnreadableImage, image_size

__all__ = ["IMAGE_SUFFIXES", "YoloInstances", "label_path_for", "list_images", "parse_label_file"]

_logger = logging.getLogger("sparseinst_zoo")
IMAGE_SUFFIXES: tuple[str, ...] = (".bmp", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp")
# Ultralytics accepts coordinates up to 1% outside 0..1 (vertices rounded onto the image border by annotation tools);
# the polygon is rasterised as it is, clipped by the image like a COCO polygon that leaves the image.
_TOLERANCE = 0.01


def label_path_for(image_path: str) -> str:
    """The label file of an image: the last ``images`` path component becomes ``labels``, the suffix ``.txt``."""
    marker_images, marker_labels = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    head, sep, tail = image_path.rpartition(marker_images)
    swapped = head + marker_labels + tail if sep else image_path
    return os.path.splitext(swapped)[0] + ".txt"


def _is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_SUFFIXES)


def _read_list_file(path: str) -> list[str]:
    """Image paths of an Ultralytics list file: one per line, relative ones relative to the list file's folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle]
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; an image list file holds one image path per line") from None
    return [os.path.normpath(os.path.join(folder, line)) for line in lines if line]


def list_images(sources: Sequence[str], where: str) -> list[str]:
    """The image files of image folders (searched recursively), ``.txt`` list files and single images, sorted.

    Raises:
        FileNotFoundError: for a source that does not exist, naming ``where`` (the YAML file and split).
    """
    found: list[str] = []
    for source in sources:
        if os.path.isdir(source):
            for folder, _, files in os.walk(source):
                found.extend(os.path.join(folder, name) for name in files if _is_image(name))
        elif os.path.isfile(source) and source.lower().endswith(".txt"):
            found.extend(_read_list_file(source))
        elif os.path.isfile(source) and _is_image(source):
            found.append(source)
        else:
            raise FileNotFoundError(f"{where}: {source} is not an image folder, a .txt list of images or an image")
    missing = [path for path in found if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(f"{where}: image file(s) not found: {listed(missing, shown=1)}")
    return sorted(dict.fromkeys(os.path.normpath(p) for p in found))


def _parse_line(fields: list[str], where: str, category_to_label: dict[int, int]) -> tuple[int, list[float]]:
    """``(label, normalised coordinates)`` of one label line (already split, not empty)."""
    try:
        class_value = float(fields[0])
    except ValueError:
        raise DataError(f"{where}: class {fields[0]!r} is not an integer") from None
    if not class_value.is_integer() or int(class_value) not in category_to_label:
        raise DataError(
            f"{where}: class {fields[0]} is not one of the dataset's class indices "
            f"{sorted(category_to_label)} (see 'names' in the YAML file)"
        )
    try:
        coords = [float(v) for v in fields[1:]]
    except ValueError:
        raise DataError(f"{where}: coordinates must be numbers, got {' '.join(fields[1:])!r}") from None
    if len(coords) % 2:
        raise DataError(
            f"{where}: {len(coords)} coordinates after the class; a polygon is x y pairs (labels written by "
            "predict --save-conf end in a score: write them without --save-conf to train on them)"
        )
    if not all(math.isfinite(v) and -_TOLERANCE <= v <= 1.0 + _TOLERANCE for v in coords):
        raise DataError(f"{where}: coordinates must be normalised to 0..1 by the image width and height")
    return category_to_label[int(class_value)], coords


def parse_label_file(
    path: str, height: int, width: int, category_to_label: dict[int, int]
) -> tuple[list[tuple[int, list[float]]], list[int]]:
    """The instances of one label file as ``(label, pixel polygon)``, and the line numbers of dropped polygons.

    A missing file is an image without objects. Polygons are scaled to pixels (``x * width``, ``y * height``).
    """
    if not os.path.isfile(path):
        return [], []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; a label file holds 'class x1 y1 x2 y2 ...' lines") from None
    instances: list[tuple[int, list[float]]] = []
    dropped: list[int] = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        label, coords = _parse_line(fields, f"{path}:{number}", category_to_label)
        if len(coords) < 6:
            dropped.append(number)
            continue
        scale = (width, height)
        instances.append((label, [v * scale[i % 2] for i, v in enumerate(coords)]))
    return instances, dropped


class YoloInstances(InstanceSet):
    """A YOLO-format segmentation split, validated (images listed, sizes read, every label line checked).

    Args:
        sources: image folders, ``.txt`` list files or image files.
        names: class index -> name (``names`` of the YAML file).
        source: the file named in messages (the YAML file and split).
        root: folder the ground truth's ``file_name`` entries are relative to.

    Images get ids 1.. in sorted path order, annotations 1.. in file and line order; category ids are the class
    indices. An image file that cannot be read (corrupt, truncated) is skipped with one warning naming it.
    """

    yolo_classes = True

    def __init__(self, sources: Sequence[str], names: dict[int, str], source: str, root: str = "") -> None:
        if not names:
            raise DataError(f"{source}: 'names' is empty; list the object classes there")
        super().__init__(source, [], dict(names))
        dropped: list[str] = []
        unreadable: list[str] = []
        next_id = 1
        for path in list_images(sources, source):
            try:
                height, width = image_size(path)
            except UnreadableImage:
                unreadable.append(path)
                continue
            image_id = len(self.images) + 1
            file_name = os.path.relpath(path, root) if root else path
            record = ImageRecord(image_id, file_name, height, width, path)
            label_file = label_path_for(path)
            instances, bad_lines = parse_label_file(label_file, height, width, self.category_to_label)
            dropped.extend(f"{label_file}:{number}" for number in bad_lines)
            for label, polygon in instances:
                record.annotations.append(
                    {"id": next_id, "label": label, "segmentation": [polygon], "iscrowd": 0, "area": None}
                )
                next_id += 1
            self.images.append(record)
        if dropped:
            shown = ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else "")
            _logger.warning(
                "%s: dropped %d polygon(s) with fewer than 3 points (a 'class x y w h' box has no mask): %s",
                source,
                len(dropped),
                shown,
            )
        self.num_dropped = len(dropped)
        self.num_unreadable = len(unreadable)
        if unreadable and not self.images:
            raise DataError(f"{source}: none of its {len(unreadable)} image file(s) can be read, e.g. {unreadable[0]}")
        if unreadable:
            # as Ultralytics does, and as predict skips the files it finds in a folder: one bad file is no reason to
            # stop, but it is counted and named
            shown = ", ".join(unreadable[:5]) + (" ..." if len(unreadable) > 5 else "")
            _logger.warning(
                "%s: skipped %d image(s) that cannot be read (corrupt or truncated) and their labels: %s; "
                "replace or remove them",
                source,
                len(unreadable),
                shown,
            )
