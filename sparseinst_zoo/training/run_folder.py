"""Choosing the output folder of a new run so that it never touches an earlier run (as Ultralytics does).

A folder "holds a run" when it has any of :data:`RUN_MARKERS`. A new run into such a folder goes to the next free
sibling (``runs/train`` -> ``runs/train2``, ``runs/train3`` ...) unless ``exist_ok``; resuming uses the folder as it is.

Example:
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> first = claim_run_folder(os.path.join(root, "train"), exist_ok=False)
    >>> open(os.path.join(first, "metrics.jsonl"), "w").close()
    >>> os.path.basename(claim_run_folder(first, exist_ok=False))
    'train2'
"""

from __future__ import annotations

import logging
import os
import shutil

from .._io import next_run_dir
from .checkpoint import CHECKPOINT_NAME

__all__ = ["RUN_MARKERS", "holds_run", "claim_run_folder"]

_logger = logging.getLogger("sparseinst_zoo")
RUN_MARKERS = ("train_config.json", "metrics.jsonl", CHECKPOINT_NAME, "best", "last", "results.png")
_MODEL_FOLDER_FILES = ("config.json", "model.safetensors")


def holds_run(folder: str) -> bool:
    """Whether ``folder`` has the outputs of a training run."""
    return any(os.path.exists(os.path.join(folder, marker)) for marker in RUN_MARKERS)


def _clear_previous_outputs(folder: str) -> None:
    """With ``exist_ok``: drop the earlier run's models and checkpoint so none is mistaken for the new run's."""
    for name in ("best", "last"):
        path = os.path.join(folder, name)
        if all(os.path.isfile(os.path.join(path, f)) for f in _MODEL_FOLDER_FILES):
            shutil.rmtree(path)
    for name in (CHECKPOINT_NAME, "results.png"):
        if os.path.isfile(os.path.join(folder, name)):
            os.unlink(os.path.join(folder, name))


def claim_run_folder(out: str, exist_ok: bool) -> str:
    """The folder a new run writes to (created): ``out``, or its next free sibling when ``out`` holds a run."""
    if holds_run(out):
        if exist_ok:
            _logger.warning("%s holds a previous run; its results are replaced (exist_ok)", out)
            _clear_previous_outputs(out)
        else:
            chosen = next_run_dir(out, in_use=holds_run)
            _logger.warning(
                "%s holds a previous run, so this one writes to %s (--exist-ok reuses %s, --resume continues it)",
                out,
                chosen,
                out,
            )
            out = chosen
    os.makedirs(out, exist_ok=True)
    return out
