"""The OpenVINO backend: a ``model.xml``/``.bin`` pair written by :func:`sparseinst_zoo.export.export_openvino`
(metadata in its ``rt_info``), or an ``.onnx`` export read by OpenVINO directly.

Precision: ``precision=None`` keeps OpenVINO's default CPU inference precision (bf16 on CPUs with AVX512-BF16/AMX,
fp32 elsewhere; see :func:`default_precision`); ``'fp32'`` forces exact float32 math, ``'bf16'``/``'fp16'`` ask
for that type. Names follow :mod:`sparseinst_zoo.inference.precision`.

Example:
    >>> backend = OpenVinoBackend.from_path("model.xml", num_threads=2, precision="fp32")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import MissingDependency, SparseInstError, install_hint
from ..precision import PrecisionLike, parse_precision
from .base import ExportedBackend, check_model_file
from .metadata import ExportMetadata, read_onnx_file_metadata

__all__ = [
    "OpenVinoBackend",
    "RT_INFO_KEY",
    "default_precision",
    "openvino_message",
    "read_openvino_metadata",
    "require_openvino",
]

RT_INFO_KEY = "sparseinst_zoo"  # our metadata lives under rt_info[RT_INFO_KEY][key]
_HINTS = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16"}


def require_openvino() -> Any:
    """The ``openvino`` module, or a one-line error that says how to install it."""
    try:
        import openvino
    except ImportError as err:
        raise MissingDependency(f"OpenVINO export and inference need openvino: {install_hint('openvino')}") from err
    return openvino


def default_precision(device: str = "CPU") -> str:
    """OpenVINO's default inference precision on ``device`` as a precision name (``'bf16'`` or ``'fp32'``)."""
    hint = require_openvino().Core().get_property(device, "INFERENCE_PRECISION_HINT")
    name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
    return _NAMES.get(name, "fp32")


def openvino_message(err: BaseException) -> str:
    """The line of an OpenVINO error that says what is wrong.

    OpenVINO's messages start with the C++ source locations that raised them (``Exception from src/...``,
    ``Check '...' failed at src/...``); the reason follows them.

    Example:
        >>> openvino_message(RuntimeError("Exception from src/core.cpp:84:\\nCheck 'x' failed at a.cpp:1:\\nBad!\\n"))
        'Bad!'
    """
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith(("Exception from ", "Check '"))]
    return (reasons or lines or [type(err).__name__])[0]


def _is_onnx(path: str) -> bool:
    return path.lower().endswith(".onnx")


def _read_model(core: Any, path: str) -> Any:
    weights = os.path.splitext(path)[0] + ".bin"
    if not _is_onnx(path) and not os.path.isfile(weights):
        raise SparseInstError(
            f"the OpenVINO model {path!r} has no weights file {weights!r} beside it; an export is NAME.xml + "
            "NAME.bin: move or copy both"
        )
    try:
        return core.read_model(path)
    except Exception as err:  # OpenVINO raises its own RuntimeError subclasses for unreadable files
        raise SparseInstError(
            f"OpenVINO cannot read {path!r}: {openvino_message(err)}; export the model again "
            "(`sparseinst export MODEL --format openvino`)"
        ) from err


def read_openvino_metadata(model_or_path: Any, source: str | None = None) -> ExportMetadata:
    """The sparseinst-zoo metadata of an OpenVINO IR (``.xml``), an ``.onnx`` file or an ``openvino.Model``
    (``source``: how messages name it; default its path, or the model's name)."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = check_model_file(model_or_path, "OpenVINO model")
        if _is_onnx(path):
            return read_onnx_file_metadata(path)
        model_or_path, source = _read_model(require_openvino().Core(), path), source or repr(path)
    source = source or f"the OpenVINO model {model_or_path.get_friendly_name()!r}"
    if not model_or_path.has_rt_info([RT_INFO_KEY]):
        return ExportMetadata.from_props({}, source)
    entries = model_or_path.get_rt_info([RT_INFO_KEY]).astype(dict)
    return ExportMetadata.from_props({key: value.astype(str) for key, value in entries.items()}, source)


class OpenVinoBackend(ExportedBackend):
    """A compiled OpenVINO model behind the SparseInst ``model(batch)`` interface (one infer request per thread).

    Args:
        compiled: an ``openvino.CompiledModel`` of an export.
        metadata: its metadata.
        precision: the inference precision it was compiled with (a precision name).
    """

    def __init__(self, compiled: Any, metadata: ExportMetadata, precision: str) -> None:
        super().__init__(metadata, "openvino")
        self.compiled = compiled
        self.precision = precision
        self._requests = threading.local()
        self._outputs = [compiled.output(name) for name in metadata.output_names]

    @classmethod
    def from_path(
        cls,
        path: str | os.PathLike[str],
        num_threads: int | None = None,
        precision: PrecisionLike = None,
        device: str = "CPU",
    ) -> OpenVinoBackend:
        """Read and compile ``path`` (``.xml`` or ``.onnx``) for ``device`` with latency-oriented settings.

        Args:
            path: the exported model.
            num_threads: inference threads (``INFERENCE_NUM_THREADS``; default: OpenVINO's choice).
            precision: None (OpenVINO's default for the device) or a precision name such as ``'fp32'``.
            device: an OpenVINO device name.
        """
        ov = require_openvino()
        path = check_model_file(path, "OpenVINO model")
        core = ov.Core()
        model = _read_model(core, path)
        metadata = read_onnx_file_metadata(path) if _is_onnx(path) else read_openvino_metadata(model, repr(path))
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(num_threads)
        name = default_precision(device) if precision is None else parse_precision(precision, "cpu")
        config["INFERENCE_PRECISION_HINT"] = _HINTS[name]
        try:
            compiled = core.compile_model(model, device, config)
        except Exception as err:  # a bad setting (num_threads=-1) or device: OpenVINO's multi-line RuntimeError
            raise SparseInstError(f"OpenVINO cannot compile {path!r} for {device}: {openvino_message(err)}") from err
        return cls(compiled, metadata, name)

    def _request(self) -> Any:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        return request

    def run(self, pixels: np.ndarray) -> Sequence[np.ndarray]:
        results = self._request().infer({0: pixels})
        return [np.array(results[output]) for output in self._outputs]
