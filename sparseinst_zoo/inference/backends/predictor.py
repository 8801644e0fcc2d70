"""Predictors for exported models, and the functions that pick a backend from a file name.

:class:`ExportedPredictor` is :class:`~sparseinst_zoo.inference.predictor.Predictor` (sources, batching, resize,
normalise, postprocess, Results) on an :class:`~sparseinst_zoo.inference.backends.base.ExportedBackend`; only the
size policy of fixed-size exports is its own. :func:`create_predictor` is what ``sparseinst predict|val|benchmark``
call for a MODEL that is a file: ``.onnx`` runs with onnxruntime (or OpenVINO with ``backend='openvino'``), ``.xml``
with OpenVINO.

Example:
    >>> predictor = create_predictor("model.onnx", num_threads=2, score_threshold=0.3)  # doctest: +SKIP
    >>> results = predictor("image.jpg")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from torch import nn

from ...errors import Argument, SparseInstError, Words
from ..precision import PrecisionLike, parse_precision
from ..predictor import Predictor
from ..results import Results
from ..sources import SourceItem
from ..transforms import get_output_shape, padded_shape
from .base import ExportedBackend, check_model_file
from .onnxruntime import OnnxRuntimeBackend
from .openvino import OpenVinoBackend

_logger = logging.getLogger("sparseinst_zoo")

# float16 at export time: export_onnx(precision='fp16'), or `sparseinst export --precision fp16`
FP16_EXPORT = Words("precision='fp16'", "--precision fp16")

__all__ = [
    "BACKENDS",
    "EXPORTED_SUFFIXES",
    "ExportedPredictor",
    "OnnxPredictor",
    "OpenVinoPredictor",
    "create_predictor",
    "fit_max_size",
    "is_exported_model",
    "load_backend",
]

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino")
EXPORTED_SUFFIXES: dict[str, str] = {".onnx": "onnxruntime", ".xml": "openvino"}  # suffix -> default runtime


def fit_max_size(height: int, width: int, min_size: int, max_size: int, box: tuple[int, int]) -> int:
    """The largest ``max_size`` (at most the given one) whose resize of a ``height x width`` image fits ``box``.

    The resize rule stays the model's (:func:`~sparseinst_zoo.inference.transforms.get_output_shape`); only the cap
    of the longer side is lowered when the image would not fit the fixed input size of an export.

    Example:
        >>> fit_max_size(480, 640, 640, 853, (640, 864)), fit_max_size(640, 480, 640, 853, (640, 864))
        (853, 640)
    """
    box_h, box_w = box

    def fits(cap: int) -> bool:
        new_h, new_w = get_output_shape(height, width, min_size, cap)
        return new_h <= box_h and new_w <= box_w

    if fits(max_size):
        return max_size
    # longer side limit so that the shorter side also fits, then step down over rounding
    if height >= width:
        cap = min(max_size, box_h, math.floor(box_w * height / width))
    else:
        cap = min(max_size, box_w, math.floor(box_h * width / height))
    cap = max(cap, 1)
    while cap > 1 and not fits(cap):
        cap -= 1
    if not fits(cap):
        raise SparseInstError(
            f"a {height}x{width} image cannot be resized into the {box_h}x{box_w} input of the export"
        )
    return cap


def is_exported_model(model: Any) -> bool:
    """Whether ``model`` names an exported file (``.onnx``, OpenVINO ``.xml``) rather than a model or folder.

    Example:
        >>> is_exported_model("model.onnx"), is_exported_model("sparseinst_r50_giam")
        (True, False)
    """
    return isinstance(model, (str, os.PathLike)) and os.path.splitext(os.fspath(model))[1].lower() in EXPORTED_SUFFIXES


def load_backend(
    path: str | os.PathLike[str],
    backend: str | None = None,
    *,
    num_threads: int | None = None,
    precision: PrecisionLike = None,
    providers: Sequence[Any] | None = None,
) -> ExportedBackend:
    """Open an exported file with its runtime (by suffix unless ``backend`` says otherwise).

    Args:
        path: an ``.onnx`` file (onnxruntime; OpenVINO reads it too) or an OpenVINO ``.xml``.
        backend: ``'onnxruntime'`` or ``'openvino'`` (default: from the suffix).
        num_threads: the runtime's intra-op threads.
        precision: OpenVINO only: None (its default for the CPU) or a precision name (``'fp32'`` is exact).
        providers: onnxruntime only: execution providers (default CPU).
    """
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in EXPORTED_SUFFIXES:
        raise SparseInstError(f"{os.fspath(path)!r} is not an exported model; give an .onnx or OpenVINO .xml file")
    backend = backend or EXPORTED_SUFFIXES[suffix]
    if backend == "openvino":
        if providers is not None:
            raise SparseInstError("providers are onnxruntime execution providers; the OpenVINO backend has none")
        return OpenVinoBackend.from_path(path, num_threads=num_threads, precision=precision)
    if backend != "onnxruntime" or suffix != ".onnx":
        raise SparseInstError(
            f"backend {backend!r} cannot run {os.fspath(path)!r}; onnxruntime runs .onnx files, "
            "openvino runs .onnx and .xml files"
        )
    if parse_precision(precision) != "fp32":  # fp32 in any spelling is what an onnxruntime graph runs at
        raise SparseInstError.naming(
            "onnxruntime runs the precision of the graph; export with {fp16} for float16", fp16=FP16_EXPORT
        )
    return OnnxRuntimeBackend.from_path(path, providers, num_threads)


class ExportedPredictor(Predictor):
    """``model.predict`` on an exported model: the same preprocessing, postprocessing and Results.

    Sizes: a dynamic export sees exactly the batch ``model.predict`` builds (resize, pad to a multiple of 32), so its
    Results equal ``model.predict``'s. A fixed-size export (H, W) resizes with the model's rule too, lowering only the
    longer-side cap where an image would not fit, then pads the batch to exactly H x W. The network's output depends
    on the padded size (coordinate channels and activation-map normalisation span it), so the Results equal
    ``model.predict(image, max_size=...)`` when that pads to H x W as well (e.g. export 640x864 for landscape images
    with the 640/853 rule), and otherwise equal the PyTorch model run on the same H x W padded input.

    Args:
        backend: an exported model opened by :func:`load_backend` (its raw heads, not ``with_postprocess``).
        **kwargs: :class:`~sparseinst_zoo.inference.predictor.Predictor` options (``score_threshold``,
            ``mask_threshold``, ``max_detections``, ``min_size``, ``max_size``, ``sort_by_score``, ``batch_size``,
            ``resize_backend``, ``keep_image``).
    """

    def __init__(self, backend: ExportedBackend, **kwargs: Any) -> None:
        options = {name: kwargs.pop(name, None) for name in ("device", "half", "precision", "optimize")}
        options["precision"] = parse_precision(options["precision"])  # fp32 in any spelling is what the file runs
        for unsupported, value in options.items():
            if value not in (None, False, "fp32"):
                raise SparseInstError.naming(
                    "an exported model has no {unsupported!r} option: its runtime fixes device and precision "
                    "(export with {fp16} for float16, or pick the OpenVINO precision when loading it)",
                    unsupported=unsupported,
                    fp16=FP16_EXPORT,
                )
        if backend.metadata.outputs != "raw":
            raise SparseInstError.naming(
                "this {runtime} model was exported with postprocessing inside the graph (outputs {outputs}); the "
                "predictor needs the raw heads: export again without {with_postprocess}",
                runtime=backend.runtime,
                outputs=list(backend.metadata.output_names),
                with_postprocess=Argument("with_postprocess"),
            )
        self.backend = backend
        self.metadata = backend.metadata
        self._warned_fixed_size = False
        super().__init__(backend, **kwargs)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The fixed (H, W) input of the export, or None if it is dynamic."""
        return self.metadata.input_size

    def predict_images(
        self, images: Sequence[np.ndarray], items: Sequence[SourceItem] | None = None, *, max_size: int | None = None
    ) -> list[Results]:
        """As :meth:`Predictor.predict_images`; for fixed-size exports each image's longer-side cap fits the input."""
        configured = self.max_size if max_size is None else int(max_size)
        if self.input_size is None:
            return super().predict_images(images, items, max_size=configured)
        if items is None:
            items = [SourceItem(image) for image in images]
        groups: dict[int, list[int]] = {}
        for index, image in enumerate(images):
            cap = fit_max_size(int(image.shape[0]), int(image.shape[1]), self.min_size, configured, self.input_size)
            groups.setdefault(cap, []).append(index)
            self._warn_once_if_padded_otherwise(image.shape[:2], configured)
        results: list[Results | None] = [None] * len(images)
        for cap, indices in groups.items():
            chunk = super().predict_images([images[i] for i in indices], [items[i] for i in indices], max_size=cap)
            for i, result in zip(indices, chunk):
                results[i] = result
        return results  # type: ignore[return-value]

    def _warn_once_if_padded_otherwise(self, image_size: tuple[int, ...], max_size: int) -> None:
        """Say once that the fixed input changes this image's results from ``model.predict``'s (see the class doc)."""
        if self._warned_fixed_size or self.input_size is None:
            return
        natural = padded_shape(*get_output_shape(int(image_size[0]), int(image_size[1]), self.min_size, max_size))
        if natural != self.input_size:
            self._warned_fixed_size = True
            _logger.warning(
                "this export has a fixed %dx%d input: a %dx%d image, which model.predict pads to %dx%d, is padded to "
                "it, so its results differ from model.predict's; export with dynamic sizes (the default) for the "
                "same results",
                *self.input_size,
                *image_size[:2],
                *natural,
            )

    def predict(self, source: Any = None, stream: bool = False) -> list[Results] | Iterator[Results]:
        """Predict ``source`` (paths, arrays, tensors, PIL images, videos; see ``model.predict``)."""
        return self(source, stream=stream)


class OnnxPredictor(ExportedPredictor):
    """:class:`ExportedPredictor` on an ``.onnx`` file with onnxruntime.

    Args:
        path: a file written by :func:`sparseinst_zoo.export.export_onnx` with the raw heads.
        providers: onnxruntime execution providers (default CPU), e.g. ``["CUDAExecutionProvider"]``.
        num_threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        **kwargs: :class:`~sparseinst_zoo.inference.predictor.Predictor` options.

    Example:
        >>> predictor = OnnxPredictor("sparseinst_r50_giam.onnx", num_threads=2)  # doctest: +SKIP
        >>> results = predictor.predict("image.jpg")  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[Any] | None = None,
        num_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.path = check_model_file(path, "ONNX")
        backend = OnnxRuntimeBackend.from_path(self.path, providers, num_threads)
        self.session = backend.session
        super().__init__(backend, **kwargs)


class OpenVinoPredictor(ExportedPredictor):
    """:class:`ExportedPredictor` on an OpenVINO ``.xml`` (or ``.onnx``) file.

    Args:
        path: a file written by :func:`sparseinst_zoo.export.export_openvino` (or :func:`~sparseinst_zoo.export.
            export_onnx`).
        num_threads: OpenVINO inference threads.
        precision: None (OpenVINO's default on this CPU, often bf16) or a precision name (``'fp32'`` is exact).
        **kwargs: :class:`~sparseinst_zoo.inference.predictor.Predictor` options.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        num_threads: int | None = None,
        precision: PrecisionLike = None,
        **kwargs: Any,
    ) -> None:
        self.path = check_model_file(path, "OpenVINO model")
        super().__init__(OpenVinoBackend.from_path(self.path, num_threads=num_threads, precision=precision), **kwargs)


def create_predictor(
    model: nn.Module | str | os.PathLike[str],
    *,
    backend: str | None = None,
    num_threads: int | None = None,
    precision: PrecisionLike = None,
    providers: Sequence[Any] | None = None,
    **kwargs: Any,
) -> Predictor:
    """A predictor for a PyTorch model or an exported file (``.onnx``, OpenVINO ``.xml``), with Predictor options.

    Args:
        model: a SparseInst model (the PyTorch backend) or the path of an exported model.
        backend: for files: ``'onnxruntime'`` or ``'openvino'`` (default: by suffix); for a model: None or 'torch'.
        num_threads / precision / providers: runtime options of exported files (see :func:`load_backend`).
        **kwargs: :class:`~sparseinst_zoo.inference.predictor.Predictor` options.

    Example:
        >>> import sparseinst_zoo
        >>> predictor = create_predictor(sparseinst_zoo.create_model("sparseinst_tiny_test"))
        >>> type(predictor).__name__
        'Predictor'
    """
    if isinstance(model, nn.Module):
        if backend not in (None, "torch"):
            raise SparseInstError(
                f"backend {backend!r} runs exported files; export the model first "
                "(`sparseinst export MODEL`) or use backend='torch'"
            )
        return Predictor(model, **kwargs)
    if backend == "torch":
        raise SparseInstError(f"{os.fspath(model)!r} is an exported file; pick backend 'onnxruntime' or 'openvino'")
    runtime = load_backend(model, backend, num_threads=num_threads, precision=precision, providers=providers)
    return ExportedPredictor(runtime, **kwargs)
