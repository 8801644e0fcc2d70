"""``model.predict``: images in, :class:`~sparseinst_zoo.inference.results.Results` out.

Batching rule: an image is only batched with images of the same padded size. The network's output for an image
depends on the size of the padded tensor it sees: the decoder's coordinate channels span the padded width and
height, and the instance activation maps are normalised over every padded position, so padding an image further
to match a larger batch-mate shifts its scores and masks (the reference's own outputs shift the same way). Grouping
by padded size keeps every result identical to predicting the image alone.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._constants import DEFAULT_MEAN, DEFAULT_STD
from .postprocess import postprocess
from .precision import PRECISIONS, parse_precision
from .results import Results
from .sources import SourceItem, flatten_sources, has_video, iter_items, prefetch
from .transforms import ResizeBackend, normalize_and_pad, padded_shape, resize_images

__all__ = ["Predictor", "predict"]

Precision = bool | str


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class Predictor:
    """A model plus prediction options; call it on any source. Reusable by export/benchmark helpers.

    Args:
        model: a SparseInst model (or any module with the same forward outputs, ``pretrained_cfg`` and
            ``label_names``).
        score_threshold: class-score threshold before mask rescoring (the reference's 0.005 keeps evaluation exact;
            use ~0.3-0.5 for display, and filter final scores with ``r[r.scores > t]``).
        mask_threshold: mask probability threshold (0.45).
        max_detections: at most this many instances per image (highest final scores).
        min_size: target shorter side; default from ``model.pretrained_cfg``.
        max_size: cap of the longer side; default from ``model.pretrained_cfg``.
        device: move the model there first (default: where the model is).
        half: autocast the network: False (fp32), True (fp16 on CUDA, bf16 on CPU), 'fp16' or 'bf16'.
        sort_by_score: order instances by descending score (default: query order, as the reference).
        batch_size: images per forward pass (only images with the same padded size share a batch).
        resize_backend: 'pil' (exact reference) or 'torch' (resize on the device, within 1 grey level).
        keep_image: keep each input image on its Results (``orig_img``) so that ``plot()`` works.
        background_decode: decode files and video frames in a background thread, a few images ahead, so that
            decoding overlaps the network (on for more than one file, and for videos).
        optimize: inference fast paths of :func:`sparseinst_zoo.optimize.optimize_for_inference`, applied to a copy
            of the model: True (fold BatchNorm into the convs, exact) or a dict of its options, e.g.
            ``dict(channels_last=True, precision="bf16", compile=True, cuda_graphs=True)``. Keep the Predictor to
            reuse compiled code and CUDA graphs across calls.

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> predictor = Predictor(model, score_threshold=0.01, sort_by_score=True)
        >>> results = predictor(sparseinst_zoo.inference.sources.sample_image_path())
        >>> results[0].image_size
        (300, 451)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        score_threshold: float = 0.005,
        mask_threshold: float = 0.45,
        max_detections: int | None = 100,
        min_size: int | None = None,
        max_size: int | None = None,
        device: torch.device | str | None = None,
        half: Precision = False,
        sort_by_score: bool = False,
        batch_size: int = 1,
        resize_backend: ResizeBackend = "pil",
        keep_image: bool = True,
        background_decode: bool = True,
        optimize: bool | dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"Predictor needs a torch model, got {type(model).__name__}")
        if not 0.0 <= score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
        if max_detections is not None and max_detections < 1:
            raise ValueError(f"max_detections must be >= 1 or None, got {max_detections}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if resize_backend not in ("pil", "torch"):
            raise ValueError(f"resize_backend must be 'pil' or 'torch', got {resize_backend!r}")
        cfg = getattr(model, "pretrained_cfg", None)
        # `is None`, not `or`: an explicit 0 is a mistake to report, not a request for the default
        self.min_size = int(getattr(cfg, "min_size", 640) if min_size is None else min_size)
        self.max_size = int(getattr(cfg, "max_size", 853) if max_size is None else max_size)
        if self.min_size < 1 or self.max_size < 1:
            raise ValueError(f"min_size and max_size must be >= 1, got {self.min_size} and {self.max_size}")
        self.mean = tuple(getattr(cfg, "mean", DEFAULT_MEAN))
        self.std = tuple(getattr(cfg, "std", DEFAULT_STD))
        if device is not None:
            device = torch.device(device)
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"device {str(device)!r} was requested but CUDA is not available; use device='cpu'")
            model.to(device)
        if optimize:
            from ..optimize import optimize_for_inference

            options = {} if optimize is True else dict(optimize)
            if "precision" not in options:  # the optimised copy runs the autocast itself
                options["precision"] = parse_precision(half, next(model.parameters()).device, name="half")
                half = False
            model = optimize_for_inference(model, **options)
        self.model = model
        self.device = next(model.parameters()).device
        self.autocast_dtype = PRECISIONS[parse_precision(half, self.device, name="half")]
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_detections = max_detections
        self.sort_by_score = bool(sort_by_score)
        self.batch_size = int(batch_size)
        self.resize_backend: ResizeBackend = resize_backend
        self.keep_image = keep_image
        self.background_decode = background_decode
        names = getattr(model, "label_names", None)
        self.names: tuple[str, ...] = tuple(names) if names else ()

    # -- the three stages (override or reuse individually) ---------------------------------------------------
    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network on a normalised, padded batch (under autocast if ``half``)."""
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            return self.model(batch)

    def postprocess(
        self, outputs: dict[str, torch.Tensor], resized_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:  # fmt: skip
        """:func:`~sparseinst_zoo.inference.postprocess.postprocess` with this predictor's options."""
        return postprocess(
            outputs, resized_sizes, original_sizes, self.score_threshold, self.mask_threshold,
            self.max_detections, self.sort_by_score,
        )  # fmt: skip

    def predict_images(
        self, images: Sequence[np.ndarray], items: Sequence[SourceItem] | None = None, *, max_size: int | None = None
    ) -> list[Results]:
        """Predict uint8 HxWx3 RGB images, batching those with equal padded sizes; results in input order.

        ``max_size`` caps the longer side for this call only (default: the predictor's), so one predictor can be
        shared between threads.
        """
        if items is None:
            items = [SourceItem(image) for image in images]
        cap = self.max_size if max_size is None else int(max_size)
        with torch.inference_mode(), _eval_mode(self.model):
            resized, original_sizes = resize_images(images, self.min_size, cap, self.device, self.resize_backend)
            groups: dict[tuple[int, int], list[int]] = {}
            for index, image in enumerate(resized):
                groups.setdefault(padded_shape(image.shape[-2], image.shape[-1]), []).append(index)
            results: list[Results | None] = [None] * len(resized)
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    batch, resized_sizes = normalize_and_pad([resized[i] for i in chunk], self.mean, self.std)
                    outputs = self.forward(batch)
                    instances = self.postprocess(outputs, resized_sizes, [original_sizes[i] for i in chunk])
                    for i, inst in zip(chunk, instances):
                        results[i] = self._results(inst, original_sizes[i], items[i])
        return results  # type: ignore[return-value]

    def _results(self, inst: dict[str, torch.Tensor], size: tuple[int, int], item: SourceItem) -> Results:
        return Results(
            inst["masks"], inst["scores"], inst["labels"], self.names, size, item.path,
            item.image if self.keep_image else None, item.frame,
        )  # fmt: skip

    # -- sources ---------------------------------------------------------------------------------------------
    def stream(self, source: Any = None) -> Iterator[Results]:
        """Yield one Results per image or video frame of ``source``, decoding lazily, ``batch_size`` at a time."""
        return self._stream(flatten_sources(source))

    def _stream(self, flat: list[Any]) -> Iterator[Results]:
        items = iter_items(flat)
        if self.background_decode and (len(flat) > 1 or has_video(flat)):
            items = prefetch(items, depth=2 * self.batch_size)
        while chunk := list(itertools.islice(items, self.batch_size)):
            yield from self.predict_images([item.image for item in chunk], chunk)

    def __call__(self, source: Any = None, stream: bool = False) -> list[Results] | Iterator[Results]:
        """Predict ``source``; a list of Results, or a generator if ``stream`` or if the source holds a video."""
        flat = flatten_sources(source)
        if stream or has_video(flat):
            return self._stream(flat)
        return list(self._stream(flat))


def predict(
    model: nn.Module,
    source: Any = None,
    *,
    batch_size: int = 1,
    score_threshold: float = 0.005,
    mask_threshold: float = 0.45,
    max_detections: int | None = 100,
    min_size: int | None = None,
    max_size: int | None = None,
    device: torch.device | str | None = None,
    half: Precision = False,
    stream: bool = False,
    sort_by_score: bool = False,
    resize_backend: ResizeBackend = "pil",
    keep_image: bool = True,
    background_decode: bool = True,
    optimize: bool | dict[str, Any] | None = None,
) -> list[Results] | Iterator[Results]:
    """Segment the instances in ``source`` with ``model`` (what ``model.predict(source, ...)`` calls).

    Sources: a path, folder, glob, PIL image, numpy HxWx3 uint8 RGB array (HxW grayscale replicated, RGBA alpha
    dropped), torch CxHxW uint8 or [0, 1] float tensor (or a BxCxHxW batch), a video file, or a list of these;
    ``None`` is the bundled sample image. Returns one Results per image (per frame for videos) in order: a list, or
    a generator when ``stream=True`` or the source contains a video. See :class:`Predictor` for the options.

    Example:
        >>> import numpy as np, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> results = model.predict(np.zeros((75, 110, 3), np.uint8), sort_by_score=True)
        >>> results[0].masks.shape[1:]
        torch.Size([75, 110])
    """
    predictor = Predictor(
        model, score_threshold=score_threshold, mask_threshold=mask_threshold, max_detections=max_detections,
        min_size=min_size, max_size=max_size, device=device, half=half, sort_by_score=sort_by_score,
        batch_size=batch_size, resize_backend=resize_backend, keep_image=keep_image,
        background_decode=background_decode, optimize=optimize,
    )  # fmt: skip
    return predictor(source, stream=stream)
