"""From an :class:`~sparseinst_zoo.data.instances.InstanceSet` to training batches: dataset, collate and sampler."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from .._constants import SIZE_DIVISIBILITY
from ..errors import DataError, SparseInstError
from ..inference.transforms import normalize_and_pad
from .augment import Augmentation
from .instances import InstanceSet

__all__ = ["InstanceDataset", "Collator", "TrainSampler", "sample_seed"]


class InstanceDataset(Dataset):
    """Training samples of an :class:`InstanceSet` (any format): images without annotations skipped, augmented on the
    fly.

    Items are indexed by ``index`` or ``(index, seed)``; the seed drives the augmentation so a sample is reproducible
    no matter which worker loads it. Each item is a dict with ``image`` (3, H, W) uint8, ``labels`` (K,) int64,
    ``masks`` (K, H, W) uint8 and ``image_id``. Instances that augmentation leaves empty are removed.
    """

    def __init__(self, instances: InstanceSet, augmentation: Augmentation) -> None:
        self.instances = instances
        self.records = instances.training_images()
        if not self.records:
            raise DataError(f"{instances.source} has no image with a (non-crowd) annotation to train on")
        self.augmentation = augmentation

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, seed = item if isinstance(item, tuple) else (item, item)
        record = self.records[index]
        image = self.instances.load_image(record)
        labels, masks = self.instances.load_targets(record)
        image, masks = self.augmentation(image, masks, np.random.default_rng(seed))
        keep = masks.reshape(masks.shape[0], -1).any(1)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "labels": torch.from_numpy(labels[keep]),
            "masks": torch.from_numpy(masks[keep]),
            "image_id": record.id,
        }


class Collator:
    """Normalise images, pad images (with 0 after normalisation) and masks bottom/right to a multiple of
    ``size_divisibility`` (the architecture's 32 by default).

    Returns a dict with ``images`` (B, 3, Hp, Wp) float32, ``targets`` (per image ``labels`` and ``masks``
    (K, Hp, Wp) uint8), ``image_sizes`` and ``image_ids``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], size_divisibility: int = SIZE_DIVISIBILITY) -> None:
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
        return {
            "images": images,
            "targets": targets,
            "image_sizes": sizes,
            "image_ids": [s["image_id"] for s in samples],
        }


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

    def __init__(
        self,
        size: int,
        batch_size: int,
        max_iters: int,
        start_iter: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if size < 1 or batch_size < 1:
            raise SparseInstError(f"need a non-empty dataset and batch_size >= 1, got {size} and {batch_size}")
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
