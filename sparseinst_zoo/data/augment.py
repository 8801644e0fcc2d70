"""Training augmentation of the SparseInst recipe: horizontal flip, multi-scale resize and the ``aug`` crop.

Every operation takes and returns an ``(H, W, 3)`` uint8 RGB image and ``(K, H, W)`` uint8 instance masks (the
reference uses bitmask targets: masks are resized with nearest neighbour, images bilinearly with PIL). Sizes follow the
same shortest-edge rule as inference (:func:`~sparseinst_zoo.inference.transforms.get_output_shape`). Randomness comes
from an explicit :class:`numpy.random.Generator` so that a sample's augmentation is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import SparseInstError
from ..inference.transforms import get_output_shape

__all__ = ["AugmentConfig", "Augmentation", "resize", "hflip", "crop"]

REFERENCE_MIN_SIZES: tuple[int, ...] = tuple(range(416, 641, 32))


def resize(image: np.ndarray, masks: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Image bilinear (PIL, as the reference), masks nearest neighbour."""
    if image.shape[:2] == (height, width):
        return image, masks
    image = np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))
    if masks.shape[0]:
        masks = np.stack(
            [np.asarray(Image.fromarray(m).resize((width, height), Image.Resampling.NEAREST)) for m in masks]
        )
    else:
        masks = np.zeros((0, height, width), dtype=np.uint8)
    return image, masks


def hflip(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right."""
    return np.ascontiguousarray(image[:, ::-1]), np.ascontiguousarray(masks[:, :, ::-1])


def crop(
    image: np.ndarray, masks: np.ndarray, top: int, left: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the window ``[top:top+height, left:left+width]``."""
    window = (slice(top, top + height), slice(left, left + width))
    return np.ascontiguousarray(image[window]), np.ascontiguousarray(masks[:, window[0], window[1]])


@dataclass
class AugmentConfig:
    """Parameters of the training augmentation (defaults: the reference recipe).

    Attributes:
        min_sizes: shorter sides to pick from, uniformly (416..640 step 32).
        max_size: cap of the longer side.
        flip_prob: probability of a horizontal flip.
        crop: enable the ``aug`` recipe: with probability ``crop_prob``, resize the shorter side to one of
            ``crop_resize_sizes``, crop a random ``h, w`` in ``crop_size`` range, then do the multi-scale resize.
        crop_prob: probability of the crop path when ``crop`` is on.
        crop_resize_sizes: shorter sides before cropping.
        crop_size: ``(min, max)`` of the crop height and width ("absolute_range").
    """

    min_sizes: Sequence[int] = REFERENCE_MIN_SIZES
    max_size: int = 853
    flip_prob: float = 0.5
    crop: bool = False
    crop_prob: float = 0.5
    crop_resize_sizes: Sequence[int] = (400, 500, 600)
    crop_size: tuple[int, int] = (384, 600)

    def __post_init__(self) -> None:
        self.min_sizes = tuple(int(s) for s in self.min_sizes)
        if not self.min_sizes or min(self.min_sizes) < 1:
            raise SparseInstError(f"min_sizes must be positive integers, got {self.min_sizes}")
        if self.max_size < max(self.min_sizes):
            raise SparseInstError(f"max_size ({self.max_size}) must be >= the largest min size ({max(self.min_sizes)})")
        if not 0 <= self.flip_prob <= 1 or not 0 <= self.crop_prob <= 1:
            raise SparseInstError("flip_prob and crop_prob must be probabilities in [0, 1]")
        low, high = self.crop_size
        if not 0 < low <= high:
            raise SparseInstError(f"crop_size must be (min, max) with 0 < min <= max, got {self.crop_size}")


class Augmentation:
    """Applies :class:`AugmentConfig` to one sample; ``train=False`` only resizes to the largest min size.

    Example:
        >>> import numpy as np
        >>> aug = Augmentation(AugmentConfig(min_sizes=(64,), max_size=96))
        >>> image, masks = aug(np.zeros((50, 100, 3), np.uint8), np.zeros((1, 50, 100), np.uint8),
        ...                    np.random.default_rng(0))
        >>> image.shape, masks.shape
        ((48, 96, 3), (1, 48, 96))
    """

    def __init__(self, config: AugmentConfig | None = None, train: bool = True) -> None:
        self.config = config or AugmentConfig()
        self.train = train

    def __call__(self, image: np.ndarray, masks: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if not self.train:
            height, width = get_output_shape(image.shape[0], image.shape[1], max(cfg.min_sizes), cfg.max_size)
            return resize(image, masks, height, width)
        if rng.random() < cfg.flip_prob:
            image, masks = hflip(image, masks)
        if cfg.crop and rng.random() < cfg.crop_prob:
            short = int(rng.choice(cfg.crop_resize_sizes))
            height, width = get_output_shape(image.shape[0], image.shape[1], short, 10**9)
            image, masks = resize(image, masks, height, width)
            low, high = cfg.crop_size
            crop_h = int(rng.integers(min(height, low), min(height, high) + 1))
            crop_w = int(rng.integers(min(width, low), min(width, high) + 1))
            top = int(rng.integers(height - crop_h + 1))
            left = int(rng.integers(width - crop_w + 1))
            image, masks = crop(image, masks, top, left, crop_h, crop_w)
        short = int(rng.choice(cfg.min_sizes))
        height, width = get_output_shape(image.shape[0], image.shape[1], short, cfg.max_size)
        return resize(image, masks, height, width)
