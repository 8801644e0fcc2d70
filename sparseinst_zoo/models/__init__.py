"""SparseInst model family: building blocks, the registered variants (``sparseinst``), their pretrained cfgs
(``sparseinst_cfgs``, torch-free) and the checkpoint filter (``checkpoint_filter``).

Submodules are imported on first use, so that reading the cfgs does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DeformableBottleneck": "backbones",
    "create_backbone": "backbones",
    "SparseInstDecoder": "decoder",
    "InstanceContextEncoder": "encoder",
    "SparseInst": "sparseinst",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
