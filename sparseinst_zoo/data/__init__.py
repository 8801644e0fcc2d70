"""Instance-segmentation datasets: COCO JSON and YOLO-format readers, training batches, the synthetic toy set.

Example:
    >>> import tempfile
    >>> from sparseinst_zoo.data import load_instances
    >>> from sparseinst_zoo.data.synthetic import make_shapes_yolo_dataset
    >>> data_yaml = make_shapes_yolo_dataset(tempfile.mkdtemp(), "val", num_images=4)  # or your own data.yaml
    >>> val = load_instances(data_yaml, split="val")
    >>> val.label_names, len(val.images)
    (('square', 'disc', 'triangle'), 4)
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
