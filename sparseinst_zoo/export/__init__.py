"""Export SparseInst: ONNX (:mod:`.onnx`), OpenVINO (:mod:`.openvino`), torch.export (:mod:`.program`), checked
against PyTorch by :mod:`.verify`; :mod:`.wrapper` is the module they all trace. Running the exported files is an
inference concern: see :mod:`sparseinst_zoo.inference.backends`.

Example:
    >>> import sparseinst_zoo
    >>> from sparseinst_zoo.export import export_onnx
    >>> from sparseinst_zoo.inference.backends import OnnxPredictor
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> path = export_onnx(model, "/tmp/tiny.onnx")  # dynamic H and W, traced at the test size  # doctest: +SKIP
    >>> results = OnnxPredictor(path).predict("image.jpg")  # doctest: +SKIP
"""

from __future__ import annotations

from ..inference.backends import OnnxPredictor  # its home is inference.backends; kept here for existing imports
from ..inference.backends.metadata import POSTPROCESSED_OUTPUTS, RAW_OUTPUTS
from .onnx import DEFAULT_OPSET, export_onnx
from .openvino import convert_onnx_to_openvino, export_openvino, verified_precisions, verify_openvino
from .program import export_program, save_program
from .verify import (
    BF16_TOLERANCE,
    EXACT_TOLERANCE,
    HALF_TOLERANCE,
    ExportMismatch,
    Tolerance,
    compare_outputs,
    verify_export,
    verify_onnx,
)
from .wrapper import ExportWrapper, MatmulAdaptiveAvgPool2d, exportable_pooling, postprocess_graph

__all__ = [
    "BF16_TOLERANCE",
    "DEFAULT_OPSET",
    "EXACT_TOLERANCE",
    "HALF_TOLERANCE",
    "POSTPROCESSED_OUTPUTS",
    "RAW_OUTPUTS",
    "ExportMismatch",
    "ExportWrapper",
    "MatmulAdaptiveAvgPool2d",
    "OnnxPredictor",
    "Tolerance",
    "compare_outputs",
    "convert_onnx_to_openvino",
    "export_onnx",
    "export_openvino",
    "export_program",
    "exportable_pooling",
    "postprocess_graph",
    "save_program",
    "verify_export",
    "verify_onnx",
    "verified_precisions",
    "verify_openvino",
]
