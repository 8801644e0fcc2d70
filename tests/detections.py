"""Detections made from a dataset's own ground truth, for tests of COCO scoring."""

from __future__ import annotations

from typing import Any

import numpy as np

from sparseinst_zoo.data.instances import InstanceSet
from sparseinst_zoo.inference.masks import encode_rle

__all__ = ["perturbed_detections"]


def perturbed_detections(dataset: InstanceSet, seed: int = 0) -> list[dict[str, Any]]:
    """Ground-truth masks shifted by up to 2 px, some relabelled, random scores: metrics well inside (0, 100)."""
    rng = np.random.default_rng(seed)
    detections = []
    for image in dataset.images:
        labels, masks = dataset.load_targets(image)
        for label, mask in zip(labels, masks):
            mask = np.roll(mask, int(rng.integers(-2, 3)), axis=int(rng.integers(2)))
            label = (label + 1) % dataset.num_classes if rng.random() < 0.2 else label
            detections.append(
                {
                    "image_id": image.id,
                    "category_id": dataset.category_ids[label],
                    "segmentation": encode_rle(mask[None])[0],
                    "score": float(rng.random()),
                }
            )
    return detections
