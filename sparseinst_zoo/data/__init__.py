"""Instance-segmentation datasets: COCO JSON and YOLO-format readers, training batches, the synthetic toy set.

Example:
    >>> from sparseinst_zoo.data import load_instances  # doctest: +SKIP
    >>> val = load_instances("data.yaml", split="val")  # doctest: +SKIP
    >>> val.label_names, len(val.images)  # doctest: +SKIP
    (('cat', 'dog'), 412)
"""

from __future__ import annotations

from .augment import REFERENCE_MIN_SIZES, Augmentation, AugmentConfig
from .coco import CocoInstances
from .instances import ImageRecord, InstanceSet, decode_segmentation, read_image, segmentation_to_rle
from .loader import Collator, InstanceDataset, TrainSampler
from .spec import DatasetSpec, SplitSpec, build_dataset, load_dataset_spec, load_instances
from .yolo import YoloInstances

__all__ = [
    "REFERENCE_MIN_SIZES",
    "Augmentation",
    "AugmentConfig",
    "CocoInstances",
    "YoloInstances",
    "ImageRecord",
    "InstanceSet",
    "decode_segmentation",
    "read_image",
    "segmentation_to_rle",
    "Collator",
    "InstanceDataset",
    "TrainSampler",
    "DatasetSpec",
    "SplitSpec",
    "build_dataset",
    "load_dataset_spec",
    "load_instances",
]
