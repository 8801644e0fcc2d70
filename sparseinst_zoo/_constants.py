"""Numbers fixed by the SparseInst architecture and its reference preprocessing, defined once.

Example:
    >>> from sparseinst_zoo._constants import SIZE_DIVISIBILITY, MASK_STRIDE
    >>> SIZE_DIVISIBILITY, MASK_STRIDE
    (32, 4)
"""

from __future__ import annotations

__all__ = [
    "SIZE_DIVISIBILITY",
    "MASK_STRIDE",
    "DEFAULT_MEAN",
    "DEFAULT_STD",
    "DEFAULT_SCORE_THRESHOLD",
    "EVAL_SCORE_THRESHOLD",
    "DEFAULT_PREDICT_DIR",
    "WEIGHTS_NAME",
]

# Inputs are padded bottom/right to a multiple of the backbone's coarsest stride.
SIZE_DIVISIBILITY = 32
# pred_masks are logits at stride 4 of the padded input.
MASK_STRIDE = 4
# RGB mean / std on 0..255 values, for every reference variant.
DEFAULT_MEAN: tuple[float, float, float] = (123.675, 116.280, 103.530)
DEFAULT_STD: tuple[float, float, float] = (58.395, 57.120, 57.375)
# predict keeps confident instances (Ultralytics' conf default); evaluation keeps the reference's 0.005.
DEFAULT_SCORE_THRESHOLD = 0.25
EVAL_SCORE_THRESHOLD = 0.005
# predict's run folder (a new run takes the next free runs/predict2, ...).
DEFAULT_PREDICT_DIR = "runs/predict"
# The weights file of a saved model folder, a Hub repository and the converted-weights cache.
WEIGHTS_NAME = "model.safetensors"
