"""sparseinst-zoo: SparseInst real-time instance segmentation as a timm-style model zoo.

The registry (``list_models``, ``get_pretrained_cfg``, ...) is imported eagerly and needs no torch; everything that
builds or runs a model is imported on first use, so that ``sparseinst list`` stays instant.

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> sorted(sparseinst_zoo.list_models("sparseinst_r50_giam*"))
    ['sparseinst_r50_giam', 'sparseinst_r50_giam_aug', 'sparseinst_r50_giam_soft']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._registry import (
    PretrainedCfg,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    register_model,
)
from .version import __version__

if TYPE_CHECKING:  # for type checkers and API docs; at run time these load on first use (below)
    from ._factory import create_model, from_pretrained, parse_model_name
    from .models.sparseinst import SparseInst

__all__ = [
    "OnnxPredictor",
    "PretrainedCfg",
    "Predictor",
    "Results",
    "SparseInst",
    "Trainer",
    "__version__",
    "create_model",
    "create_predictor",
    "evaluate",
    "export_onnx",
    "export_openvino",
    "from_pretrained",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "parse_model_name",
    "register_model",
    "train",
]

# Names imported on first use (module that defines them).
_LAZY_EXPORTS: dict[str, str] = {
    "create_model": "sparseinst_zoo._factory",
    "from_pretrained": "sparseinst_zoo._factory",
    "parse_model_name": "sparseinst_zoo._factory",
    "SparseInst": "sparseinst_zoo.models.sparseinst",
    "Results": "sparseinst_zoo.inference.results",
    "Predictor": "sparseinst_zoo.inference.predictor",
    "export_onnx": "sparseinst_zoo.export",
    "export_openvino": "sparseinst_zoo.export",
    "OnnxPredictor": "sparseinst_zoo.inference.backends",
    "create_predictor": "sparseinst_zoo.inference.backends",
    "train": "sparseinst_zoo.training.engine",
    "Trainer": "sparseinst_zoo.training.engine",
    "evaluate": "sparseinst_zoo.evaluation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparseinst_zoo' has no attribute {name!r}")
