"""sparseinst-zoo: SparseInst real-time instance segmentation as a timm-style model zoo.

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> sorted(sparseinst_zoo.list_models("sparseinst_r50_giam*"))
    ['sparseinst_r50_giam', 'sparseinst_r50_giam_aug', 'sparseinst_r50_giam_soft']
"""

from ._factory import create_model, from_pretrained, parse_model_name
from ._registry import (
    PretrainedCfg,
    get_pretrained_cfg,
    is_model,
    list_models,
    list_pretrained,
    register_model,
)
from .models import SparseInst
from .version import __version__

__all__ = [
    "PretrainedCfg",
    "SparseInst",
    "__version__",
    "create_model",
    "from_pretrained",
    "parse_model_name",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "register_model",
]

# Submodule APIs, imported on first use so that `import sparseinst_zoo` stays light.
_LAZY_EXPORTS: dict[str, str] = {
    "Results": "sparseinst_zoo.inference.results",
    "Predictor": "sparseinst_zoo.inference.predictor",
    "export_onnx": "sparseinst_zoo.export",
    "OnnxPredictor": "sparseinst_zoo.export",
    "train": "sparseinst_zoo.training.engine",
    "Trainer": "sparseinst_zoo.training.engine",
    "evaluate": "sparseinst_zoo.training.evaluate",
}
__all__ += list(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        import importlib

        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparseinst_zoo' has no attribute {name!r}")
