"""``model.predict``: images in, :class:`~sparseinst_zoo.inference.results.Results` out.

Batching rule: an image is only batched with images of the same padded size. The network's output for an image
depends on the size of the padded tensor it sees: the decoder's coordinate channels span the padded width and
height, and the instance activation maps are normalised over every padded position, so padding an image further
to match a larger batch-mate shifts its scores and masks (the reference's own outputs shift the same way). Grouping
by padded size keeps every result identical to predicting the image alone.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._constants import DEFAULT_MEAN, DEFAULT_SCORE_THRESHOLD, DEFAULT_STD
from .._device import model_device, select_device
from .._distributed import join_process_group, world_size
from .._distributed import rank as current_rank
from ..errors import DataError, SparseInstError, unknown_keywords_error
from .network import OptimizeOption, inference_network, model_dtype
from .optimize import OptimizedModel
from .postprocess import postprocess
from .precision import PRECISIONS, PrecisionLike, parse_precision, precision_from_alias
from .results import Results, model_category_ids, model_yolo_classes
from .sharding import shard_sources
from .sources import SourceItem, flatten_sources, has_video, iter_items, prefetch
from .transforms import ResizeBackend, get_output_shape, normalize_and_pad, padded_shape, resize_images
from .writer import DEFAULT_RUN_DIR, ResultsWriter, check_label_options

__all__ = ["Predictor", "predict", "DEFAULT_SCORE_THRESHOLD", "SkipCallback", "check_score_threshold"]


SkipCallback = Callable[[str, Exception], None]
_logger = logging.getLogger("sparseinst_zoo")


def _log_skip(path: str, error: Exception) -> None:
    _logger.warning("skipped %s: %s", path, error)


class Predictor:
    """A model plus prediction options; call it on any source. Safe to share between threads.

    The model you pass is never modified (weights, mode, device, ``requires_grad``): by default predictions run on
    a cached inference copy with BatchNorms folded into the convolutions and channels_last memory (exact up to float
    rounding, faster than the plain model; see :mod:`sparseinst_zoo.inference.network`).

    Args:
        model: a SparseInst model (or any module with the same forward outputs, ``pretrained_cfg`` and
            ``label_names``), in any mode: predictions always use the eval-mode (running-statistics) math.
        score_threshold: keep queries whose class score (before mask rescoring, as the reference) is above this.
            The default 0.25 shows confident instances (Ultralytics' default); evaluation uses the reference's
            0.005, which keeps nearly every query.
        mask_threshold: mask probability threshold (0.45).
        max_detections: at most this many instances per image (highest final scores).
        min_size: target shorter side; default from ``model.pretrained_cfg``.
        max_size: cap of the longer side; default from ``model.pretrained_cfg``.
        device: run there (default: where the model is); a copy of the model is moved, not the model.
        precision: 'fp32', 'fp16', 'bf16' or 'auto' (fp16 on CUDA, bf16 on CPU): autocast the network. Default:
            the model's dtype ('fp32'; 'fp16' for a ``model.half()``, 'bf16' for a ``model.bfloat16()``, which run
            as a float32 copy under autocast).
        sort_by_score: order instances by descending score (default: query order, as the reference).
        batch_size: images per forward pass (only images with the same padded size share a batch).
        resize_backend: 'pil' (exact reference) or 'torch' (resize on the device, within 1 grey level).
        keep_image: keep each input image on its Results (``orig_img``) so that ``plot()`` works.
        background_decode: decode files and video frames in a background thread, a few images ahead, so that
            decoding overlaps the network (on for more than one file, and for videos).
        optimize: None (default): the exact fast path (BatchNorm folded, channels_last); False: the plain eager
            model; True or a dict of :func:`~sparseinst_zoo.inference.optimize.optimize_for_inference` options,
            e.g. ``dict(precision="bf16", compile=True, cuda_graphs=True)``. Keep the Predictor to reuse compiled
            code and CUDA graphs across calls.
        on_skip: called as ``on_skip(path, error)`` for each file found in a folder or by a glob that cannot be
            used (unreadable, or an image too elongated to resize); default: log a warning.
        half: deprecated alias of ``precision``.

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
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        mask_threshold: float = 0.45,
        max_detections: int | None = 100,
        min_size: int | None = None,
        max_size: int | None = None,
        device: torch.device | str | None = None,
        precision: PrecisionLike = None,
        sort_by_score: bool = False,
        batch_size: int = 1,
        resize_backend: ResizeBackend = "pil",
        keep_image: bool = True,
        background_decode: bool = True,
        optimize: OptimizeOption = None,
        on_skip: SkipCallback | None = None,
        half: PrecisionLike = None,
    ) -> None:
        _check_options(model, score_threshold, mask_threshold, max_detections, batch_size, resize_backend)
        precision = precision_from_alias(precision, half, "Predictor")
        cfg = getattr(model, "pretrained_cfg", None)
        # `is None`, not `or`: an explicit 0 is a mistake to report, not a request for the default
        self.min_size = int(getattr(cfg, "min_size", 640) if min_size is None else min_size)
        self.max_size = int(getattr(cfg, "max_size", 853) if max_size is None else max_size)
        if self.min_size < 1 or self.max_size < 1:
            raise SparseInstError(f"min_size and max_size must be >= 1, got {self.min_size} and {self.max_size}")
        self.mean = tuple(getattr(cfg, "mean", DEFAULT_MEAN))
        self.std = tuple(getattr(cfg, "std", DEFAULT_STD))
        self.device = _resolve_device(model, device)
        if precision is None:
            precision = next((name for name, dtype in PRECISIONS.items() if dtype is model_dtype(model)), None)
        self.precision = parse_precision(precision, self.device)
        self.optimize = optimize
        self.source_model = model
        self.score_threshold = float(score_threshold)
        self.mask_threshold = float(mask_threshold)
        self.max_detections = max_detections
        self.sort_by_score = bool(sort_by_score)
        self.batch_size = int(batch_size)
        self.resize_backend: ResizeBackend = resize_backend
        self.keep_image = keep_image
        self.background_decode = background_decode
        self.on_skip: SkipCallback = on_skip or _log_skip
        names = getattr(model, "label_names", None)
        self.names: tuple[str, ...] = tuple(names) if names else ()
        self.category_ids = model_category_ids(model, self.names)
        self.yolo_classes = model_yolo_classes(model)
        self.model = self.network()  # built now: option errors surface here, and the first call is not slower
        # an optimised network runs its own autocast; the eager model (or a runtime wrapper) is autocast here
        self.autocast_dtype = None if isinstance(self.model, OptimizedModel) else PRECISIONS[self.precision]

    def network(self) -> nn.Module:
        """The module predictions run on now: the cached inference copy, rebuilt if the model's weights changed."""
        precision = "fp32" if self.optimize is False else self.precision
        return inference_network(self.source_model, self.optimize, precision, self.device)

    # -- the three stages (override or reuse individually) ---------------------------------------------------
    def forward(self, batch: torch.Tensor, network: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Run the network on a normalised, padded batch (under autocast for the eager path's ``precision``)."""
        network = self.model if network is None else network
        autocast = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with autocast:
            return network(batch)

    def postprocess(
        self,
        outputs: dict[str, torch.Tensor],
        resized_sizes: Sequence[tuple[int, int]],
        original_sizes: Sequence[tuple[int, int]],
    ) -> list[dict[str, torch.Tensor]]:
        """:func:`~sparseinst_zoo.inference.postprocess.postprocess` with this predictor's options."""
        return postprocess(
            outputs,
            resized_sizes,
            original_sizes,
            self.score_threshold,
            self.mask_threshold,
            self.max_detections,
            self.sort_by_score,
        )

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
        network = self.network()  # the same cached copy unless the weights changed since the last call
        with torch.inference_mode():
            resized, original_sizes = resize_images(images, self.min_size, cap, self.device, self.resize_backend)
            groups: dict[tuple[int, int], list[int]] = {}
            for index, image in enumerate(resized):
                groups.setdefault(padded_shape(image.shape[-2], image.shape[-1]), []).append(index)
            results: list[Results | None] = [None] * len(resized)
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    batch, resized_sizes = normalize_and_pad([resized[i] for i in chunk], self.mean, self.std)
                    outputs = self.forward(batch, network)
                    instances = self.postprocess(outputs, resized_sizes, [original_sizes[i] for i in chunk])
                    for i, inst in zip(chunk, instances):
                        results[i] = self._results(inst, original_sizes[i], items[i])
        return results  # type: ignore[return-value]

    def _results(self, inst: dict[str, torch.Tensor], size: tuple[int, int], item: SourceItem) -> Results:
        return Results(
            inst["masks"],
            inst["scores"],
            inst["labels"],
            self.names,
            size,
            item.path,
            item.image if self.keep_image else None,
            item.frame,
            category_ids=self.category_ids,
            yolo_classes=self.yolo_classes,
        )

    # -- sources ---------------------------------------------------------------------------------------------
    def stream(self, source: Any = None) -> Iterator[Results]:
        """Yield one Results per image or video frame of ``source``, decoding lazily, ``batch_size`` at a time."""
        return self._stream(flatten_sources(source))

    def stream_items(self, items: list[Any]) -> Iterator[Results]:
        """:meth:`stream` for sources already flattened (:func:`flatten_sources`); an empty list yields nothing.

        For one process's block of a shared source list (:func:`~sparseinst_zoo.inference.sharding.shard_sources`),
        which is empty when there are more processes than sources.
        """
        return self._stream(list(items))

    def _usable(self, items: Iterator[SourceItem]) -> Iterator[SourceItem]:
        """The items that can be resized; a found file that cannot is reported to ``on_skip``, a named one raises."""
        for item in items:
            height, width = item.image.shape[:2]
            try:
                get_output_shape(height, width, self.min_size, self.max_size)
            except DataError as err:
                error = DataError(f"{item.path or item.name or 'image'}: {err}")
                if not item.found:
                    raise error from None
                self.on_skip(str(item.path), error)
                continue
            yield item

    def _stream(self, flat: list[Any]) -> Iterator[Results]:
        items = self._usable(iter_items(flat, on_skip=self.on_skip))
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


def _check_options(
    model: Any,
    score_threshold: float,
    mask_threshold: float,
    max_detections: int | None,
    batch_size: int,
    resize_backend: str,
) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"Predictor needs a torch model, got {type(model).__name__}")
    if any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise SparseInstError(
            "the model's weights are on the meta device (shapes without values); give them values first, e.g. "
            "model.to_empty(device='cpu') and then model.load_state_dict(...)"
        )
    check_score_threshold(score_threshold)
    if not 0.0 < mask_threshold < 1.0:
        raise SparseInstError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
    if max_detections is not None and max_detections < 1:
        raise SparseInstError(f"max_detections must be >= 1 or None, got {max_detections}")
    if int(batch_size) < 1:
        raise SparseInstError(f"batch_size must be >= 1, got {batch_size}")
    if resize_backend not in ("pil", "torch"):
        raise SparseInstError(f"resize_backend must be 'pil' or 'torch', got {resize_backend!r}")


def check_score_threshold(score_threshold: float) -> None:
    """Refuse a ``score_threshold`` outside [0, 1) (the Predictor's and ``track``'s, which checks it up front)."""
    if not 0.0 <= score_threshold < 1.0:
        raise SparseInstError(f"score_threshold must be in [0, 1), got {score_threshold}")


def _resolve_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """Where the model already is when no device is asked for, else the requested device, checked to exist."""
    return model_device(model) if device is None else select_device(device)


_PREDICTOR_OPTIONS = [
    name for name in inspect.signature(Predictor.__init__).parameters if name not in {"self", "model"}
]
_PREDICT_ONLY = ("stream", "save", "save_json", "save_txt", "save_conf", "out", "exist_ok", "distributed")
# Ultralytics' names for the same options, which its users type first
_ULTRALYTICS_NAMES = {
    "conf": "score_threshold",
    "threshold": "score_threshold",
    "imgsz": "min_size",
    "max_det": "max_detections",
    "batch": "batch_size",
    "project": "out",
}


def _write_when_iterated(writer: Callable[[], ResultsWriter], results: Iterator[Results]) -> Iterator[Results]:
    """``results``, written as they come by ``writer()``, made at the first frame asked for: a returned generator
    that is never iterated (a video) makes no run folder."""
    yield from writer().write_all(results)


def predict(
    model: nn.Module,
    source: Any = None,
    *,
    stream: bool = False,
    save: bool = False,
    save_json: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    out: str | os.PathLike[str] = DEFAULT_RUN_DIR,
    exist_ok: bool = False,
    distributed: bool = False,
    **options: Any,
) -> list[Results] | Iterator[Results]:
    """Segment the instances in ``source`` with ``model`` (what ``model.predict(source, ...)`` calls).

    Sources: a path, folder, glob, PIL image, numpy HxWx3 uint8 RGB array (HxW grayscale replicated, RGBA alpha
    dropped), torch CxHxW uint8 or [0, 1] float tensor (or a BxCxHxW batch), a video file, or a list of these;
    ``None`` is the bundled sample image. Returns one Results per image (per frame for videos) in order: a list, or
    a generator when ``stream=True`` or the source contains a video.

    By default only confident instances are kept (``score_threshold=0.25``; pass 0.005 for what COCO evaluation
    keeps) and the network is the exact fast path (``optimize=False`` for the plain eager math); ``model`` is never
    modified. ``options`` are those of :class:`Predictor` (``score_threshold``, ``precision``, ``device``, ...).

    Args:
        save: write an overlay per image (a video per video) into a new run folder (see
            :class:`~sparseinst_zoo.inference.writer.ResultsWriter`); each Results' ``save_dir`` names it.
        save_json: write ``predictions.json`` (COCO results with the model's category ids) there.
        save_txt: write a YOLO segmentation label file per image there, ``labels/<stem>.txt`` (per video frame
            ``labels/<stem>_<frame>.txt``), as Ultralytics' ``save_txt``: pseudo-labels to correct and train on.
        save_conf: add the score as the last column of each label line (needs ``save_txt``).
        out: the run folder; a new run never touches an old one: ``runs/predict`` is taken, so ``runs/predict2``.
        exist_ok: write into ``out`` even if it exists (files already there are never replaced).
        distributed: under ``torchrun``, share the sources among the processes (the process group is joined from
            the environment if needed): this process predicts its contiguous block of them
            (:mod:`~sparseinst_zoo.inference.sharding`) and returns its Results; with ``save``/``save_json`` all
            ranks write into one run folder and rank 0 writes the merged ``predictions.json``. Every rank must call
            this with the same sources (and consume a returned generator). No effect in a single process.

    Example:
        >>> import numpy as np, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> results = model.predict(np.zeros((75, 110, 3), np.uint8), score_threshold=0.0, sort_by_score=True)
        >>> results[0].masks.shape[1:]
        torch.Size([75, 110])
    """
    unknown = [name for name in options if name not in _PREDICTOR_OPTIONS]
    if unknown:
        raise unknown_keywords_error("predict", unknown, [*_PREDICTOR_OPTIONS, *_PREDICT_ONLY], _ULTRALYTICS_NAMES)
    check_label_options(save_txt, save_conf)
    if distributed:
        join_process_group(options.get("device"))  # before the Predictor: it puts this process on its own GPU
    predictor = Predictor(model, **options)
    flat = flatten_sources(source)
    share = shard_sources(flat, current_rank(), world_size()) if distributed else flat
    results = predictor.stream_items(share)
    if save or save_json or save_txt:
        writer = functools.partial(
            ResultsWriter,
            out,
            overlays=save,
            save_json=save_json,
            save_txt=save_txt,
            save_conf=save_conf,
            exist_ok=exist_ok,
            names=predictor.names,
            category_ids=predictor.category_ids,
            sources=flat,
            distributed=distributed,
        )
        results = _write_when_iterated(writer, results)
    if stream or has_video(flat):  # the whole list: every rank returns the same kind
        return results
    return list(results)
