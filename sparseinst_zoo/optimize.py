"""Deprecated location of :mod:`sparseinst_zoo.inference.optimize` (kept so that old imports keep working)."""

from .inference.optimize import (
    COMPILE_MODES,
    CUDAGraphRunner,
    OptimizedModel,
    fold_batch_norm,
    optimize_for_inference,
    resolve_compile_mode,
)

__all__ = [
    "COMPILE_MODES",
    "CUDAGraphRunner",
    "OptimizedModel",
    "fold_batch_norm",
    "optimize_for_inference",
    "resolve_compile_mode",
]
