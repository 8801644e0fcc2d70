"""Runtimes behind one interface: the PyTorch model itself, onnxruntime and OpenVINO for exported files.

Example:
    >>> from sparseinst_zoo.inference.backends import BACKENDS, is_exported_model
    >>> BACKENDS, is_exported_model("model.xml")
    (('torch', 'onnxruntime', 'openvino'), True)
"""

from __future__ import annotations

from .base import Backend, ExportedBackend
from .metadata import POSTPROCESSED_OUTPUTS, RAW_OUTPUTS, ExportMetadata, build_metadata
from .onnxruntime import OnnxMetadata, OnnxRuntimeBackend, create_session, read_onnx_metadata
from .openvino import OpenVinoBackend, default_precision, read_openvino_metadata, require_openvino
from .predictor import (
    BACKENDS,
    EXPORTED_SUFFIXES,
    ExportedPredictor,
    OnnxPredictor,
    OpenVinoPredictor,
    create_predictor,
    fit_max_size,
    is_exported_model,
    load_backend,
)

__all__ = [
    "BACKENDS",
    "EXPORTED_SUFFIXES",
    "POSTPROCESSED_OUTPUTS",
    "RAW_OUTPUTS",
    "Backend",
    "ExportMetadata",
    "ExportedBackend",
    "ExportedPredictor",
    "OnnxMetadata",
    "OnnxPredictor",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "OpenVinoPredictor",
    "build_metadata",
    "create_predictor",
    "create_session",
    "default_precision",
    "fit_max_size",
    "is_exported_model",
    "load_backend",
    "read_onnx_metadata",
    "read_openvino_metadata",
    "require_openvino",
]
