"""What every dataset format reads into: images with instance annotations, and the mask conversions written once.

A reader (:mod:`.coco`, :mod:`.yolo`) validates its files and fills an :class:`InstanceSet`: the images in a fixed
order, each an :class:`ImageRecord` with its annotations (``id``, contiguous ``label``, COCO ``segmentation`` in pixel
coordinates, ``iscrowd``, ``area`` or None), plus the dataset's category ids and names. Training
(:class:`~sparseinst_zoo.data.loader.InstanceDataset`) and evaluation
(:func:`~sparseinst_zoo.evaluation.coco_ground_truth`) only see this interface, so they work on every format.

Example:
    >>> import numpy as np
    >>> mask = decode_segmentation([[0, 0, 4, 0, 4, 4, 0, 4]], 6, 6)
    >>> mask.shape, int(mask.sum()) > 0
    ((6, 6), True)
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..inference.sources import load_image

__all__ = [
    "ImageRecord",
    "InstanceSet",
    "UnreadableImage",
    "read_image",
    "image_size",
    "image_header",
    "segmentation_to_rle",
    "decode_segmentation",
    "segmentation_area",
    "compressed_rle_counts",
]

Segmentation = list[list[float]] | dict[str, Any]
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap
_END_MARKERS = {"JPEG": b"\xff\xd9", "PNG": b"\x00\x00\x00\x00IEND\xaeB`\x82"}  # EOI; the empty IEND chunk


class UnreadableImage(DataError):
    """An image file that cannot be decoded (not an image, corrupt or truncated); ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} cannot be read as an image ({reason}); remove it or replace it")
        self.path, self.reason = path, reason


@dataclass
class ImageRecord:
    """One image of a dataset and its annotations (non-crowd unless the reader was asked to keep crowd ones).

    Attributes:
        id: the image id (from the COCO file, or 1.. in file order for YOLO datasets).
        file_name: the name written into ground truth files (relative to the image folder for COCO).
        height / width: the image size after EXIF orientation.
        path: where the image file is.
        annotations: dicts with ``id``, ``label``, ``segmentation``, ``iscrowd`` and ``area`` (None: compute it).
    """

    id: int
    file_name: str
    height: int
    width: int
    path: str = ""
    annotations: list[dict[str, Any]] = field(default_factory=list)


class InstanceSet:
    """A validated instance-segmentation dataset, whatever its file format.

    Attributes:
        source: the file the dataset was read from (named in every message).
        images: all images in a fixed order, each with its annotations.
        category_ids: dataset category ids, sorted; label ``i`` is ``category_ids[i]``.
        label_names: category names in label order.
        num_dropped: annotations dropped because their polygons had fewer than 3 points.
        num_crowd: crowd annotations seen (kept only when asked).
        num_unreadable: image files skipped because they cannot be read (YOLO folders only; COCO refuses them).
        yolo_classes: the category ids are the class indices of YOLO label files (a data.yaml's ``names`` keys).
    """

    yolo_classes = False

    def __init__(self, source: str, images: list[ImageRecord], categories: dict[int, str]) -> None:
        self.source = source
        self.images = images
        self.category_ids: tuple[int, ...] = tuple(sorted(categories))
        self.label_names: tuple[str, ...] = tuple(categories[c] for c in self.category_ids)
        self.category_to_label: dict[int, int] = {c: i for i, c in enumerate(self.category_ids)}
        self.num_dropped = 0
        self.num_crowd = 0
        self.num_unreadable = 0

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def training_images(self) -> list[ImageRecord]:
        """Images with at least one annotation (images without any are skipped in training)."""
        return [img for img in self.images if img.annotations]

    def image_path(self, image: ImageRecord) -> str:
        return image.path

    def load_image(self, image: ImageRecord) -> np.ndarray:
        """The image as ``(H, W, 3)`` uint8 RGB, checked against the size the dataset gives."""
        array = read_image(image.path)
        if array.shape[:2] == (image.width, image.height) and _turned_by_late_exif(image.path):
            raise DataError(
                f"{image.path} is {array.shape[0]}x{array.shape[1]} (HxW) once its EXIF orientation (stored after the "
                f"pixels, unseen when the dataset was read) is applied, but {image.height}x{image.width} for "
                f"{self.source}; save it with the orientation applied (or the EXIF at the start of the file)"
            )
        if array.shape[:2] != (image.height, image.width):
            raise DataError(
                f"{image.path} is {array.shape[0]}x{array.shape[1]} (HxW) but "
                f"{self.source} says {image.height}x{image.width} for image id {image.id}"
            )
        return array

    def load_targets(self, image: ImageRecord) -> tuple[np.ndarray, np.ndarray]:
        """``(labels (K,) int64, masks (K, H, W) uint8)`` of an image's annotations."""
        labels = np.array([a["label"] for a in image.annotations], dtype=np.int64)
        if not image.annotations:
            return labels, np.zeros((0, image.height, image.width), dtype=np.uint8)
        masks = np.stack([decode_segmentation(a["segmentation"], image.height, image.width) for a in image.annotations])
        return labels, masks


def _turned_by_late_exif(path: str) -> bool:
    """Whether a PNG's EXIF orientation, stored after its pixels (which :func:`image_header` does not read, to avoid
    decoding every image), turns it by 90 degrees."""
    with Image.open(path) as image:
        late = image.format == "PNG" and "exif" not in image.info
        return late and image.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED_ORIENTATIONS


def read_image(path: str) -> np.ndarray:
    """Read an image file as ``(H, W, 3)`` uint8 RGB, applying its EXIF orientation (as ``predict`` decodes it)."""
    try:
        return load_image(path)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (check the image folder of the dataset and its file names)") from None


def image_header(path: str) -> tuple[tuple[int, int], bool]:
    """``(height, width)`` of an image file after its EXIF orientation, and whether that orientation turns it by 90
    degrees (the stored pixels are then ``width x height``); from the header only.

    Raises:
        UnreadableImage: if the file cannot be read as an image (header, or a JPEG or PNG cut short).
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            # a PNG's getexif() decodes the whole image to look for a late eXIf chunk: read the header's only
            header_only = image.format == "PNG" and "exif" not in image.info
            orientation = None if header_only else image.getexif().get(_EXIF_ORIENTATION)
            if not _ends_as_complete(path, image.format):
                image.load()  # a file cut short (an interrupted download or copy) fails here, not mid-training
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImage(path, str(err)) from None
    turned = orientation in _TRANSPOSED_ORIENTATIONS
    return ((width, height) if turned else (height, width)), turned


def _ends_as_complete(path: str, image_format: str | None) -> bool:
    """Whether a JPEG or PNG file ends with its end marker (other formats: True); a cheap test for a truncated file.

    A JPEG with data after its end marker (some phones append a video) is not truncated: it is decoded to find out.
    """
    tail = _END_MARKERS.get(image_format or "")
    if tail is None:
        return True
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(handle.tell() - len(tail), 0))
        return handle.read() == tail


def image_size(path: str) -> tuple[int, int]:
    """``(height, width)`` of an image file after its EXIF orientation (as :func:`read_image` decodes it)."""
    return image_header(path)[0]


def segmentation_to_rle(segm: Segmentation, height: int, width: int) -> dict[str, Any]:
    """A polygon list, compressed RLE or uncompressed RLE -> one compressed RLE (``counts`` as bytes)."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    counts = segm["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segm, height, width)
    return {"size": list(segm["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode_segmentation(segm: Segmentation, height: int, width: int) -> np.ndarray:
    """A polygon list, compressed RLE or uncompressed RLE -> ``(H, W)`` uint8 mask."""
    rle = segmentation_to_rle(segm, height, width)
    with warnings.catch_warnings():  # pycocotools' numpy-2 copy-keyword DeprecationWarning, once per mask
        warnings.simplefilter("ignore", DeprecationWarning)
        return np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)


def segmentation_area(segm: Segmentation, height: int, width: int) -> float:
    """The number of mask pixels of a segmentation (what COCO's ``area`` field holds)."""
    return float(mask_utils.area(segmentation_to_rle(segm, height, width)))


def compressed_rle_counts(counts: str | bytes) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string, or None when the string is not a valid encoding.

    Decodes the format pycocotools writes (6-bit groups from ``'0'``, continuation bit 0x20, sign bit 0x10, runs
    after the second stored as differences), so that a corrupt string is caught at load time, not mid-training.

    Example:
        >>> compressed_rle_counts(mask_utils.encode(np.asfortranarray(np.eye(3, dtype=np.uint8)))["counts"])
        [0, 1, 3, 1, 3, 1]
        >>> compressed_rle_counts("~~") is None
        True
    """
    text = counts.decode("ascii", errors="replace") if isinstance(counts, bytes) else counts
    runs: list[int] = []
    value, shift = 0, 0
    for char in text:
        code = ord(char) - 48
        if not 0 <= code < 64:
            return None
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            return None
        runs.append(value)
        value, shift = 0, 0
    return None if shift else runs
