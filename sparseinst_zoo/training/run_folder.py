"""Choosing the output folder of a new run so that it never touches an earlier run (as Ultralytics does).

A folder "holds a run" when it has any of :data:`RUN_MARKERS`. A new run into such a folder goes to the next free
sibling (``runs/train`` -> ``runs/train2``, ``runs/train3`` ...) unless ``exist_ok``; resuming uses the folder as it is.
A new run that stops before it produced anything (no log record, no checkpoint) is taken back with
:func:`discard_unstarted_run`, so it neither leaves an empty run behind nor pushes the next run to ``runs/train3``.

Example:
    >>> import tempfile, os
    >>> root = tempfile.mkdtemp()
    >>> first, created = claim_run_folder(os.path.join(root, "train"), exist_ok=False)
    >>> open(os.path.join(first, "metrics.jsonl"), "w").close()
    >>> os.path.basename(claim_run_folder(first, exist_ok=False)[0])
    'train2'
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil

from .._io import make_dirs, next_run_dir, remove_empty_dirs
from ..errors import Argument, caller_words
from .checkpoint import CHECKPOINT_NAME
from .metrics_log import tensorboard_folder

__all__ = ["RUN_MARKERS", "holds_run", "claim_run_folder", "discard_unstarted_run", "TRAIN_CONFIG_NAME", "METRICS_NAME"]

_logger = logging.getLogger("sparseinst_zoo")
_EXIST_OK = Argument("exist_ok", True)
TRAIN_CONFIG_NAME = "train_config.json"
METRICS_NAME = "metrics.jsonl"
RUN_MARKERS = (TRAIN_CONFIG_NAME, METRICS_NAME, CHECKPOINT_NAME, "best", "last", "results.png")
_MODEL_FOLDER_FILES = ("config.json", "model.safetensors")
# what `sparseinst export RUN/best` (or last) writes beside the folder by default: best.onnx, best_2.onnx, the OpenVINO
# best.xml + best.bin, best.pt2, a fixed size in the name (best_640x864.onnx); left there, `sparseinst val
# RUN/best.onnx` would measure the previous run's model
_EXPORT_OF_A_MODEL_FOLDER = re.compile(r"(best|last)(_\d+x\d+)?(_\d+)?\.(onnx|xml|bin|pt2)")


def holds_run(folder: str) -> bool:
    """Whether ``folder`` has the outputs of a training run."""
    return any(os.path.exists(os.path.join(folder, marker)) for marker in RUN_MARKERS)


def _clear_previous_outputs(folder: str) -> None:
    """With ``exist_ok``: drop the earlier run's models (and their exports beside them), checkpoint, curves and
    TensorBoard events so none is mistaken for the new run's."""
    for name in ("best", "last"):
        path = os.path.join(folder, name)
        if all(os.path.isfile(os.path.join(path, f)) for f in _MODEL_FOLDER_FILES):
            shutil.rmtree(path)
    for name in (CHECKPOINT_NAME, "results.png"):
        if os.path.isfile(os.path.join(folder, name)):
            os.unlink(os.path.join(folder, name))
    for events in glob.glob(os.path.join(glob.escape(tensorboard_folder(folder)), "events.out.tfevents.*")):
        os.unlink(events)  # else TensorBoard draws the earlier run's curves as the new run's
    stale = sorted(name for name in os.listdir(folder) if _EXPORT_OF_A_MODEL_FOLDER.fullmatch(name))
    for name in stale:
        os.unlink(os.path.join(folder, name))
    if stale:
        _logger.info("removed the exports of the previous run's models: %s", ", ".join(stale))


def _reserve(folder: str) -> list[str] | None:
    """Create ``folder`` with an empty :data:`TRAIN_CONFIG_NAME` in it, made with ``O_EXCL`` so that of two runs
    started at once only one gets the folder; None when another run holds it already (the folders this call
    created, which the other run now uses too, are left)."""
    created = make_dirs(folder)
    try:
        os.close(os.open(os.path.join(folder, TRAIN_CONFIG_NAME), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    return created


def claim_run_folder(out: str, exist_ok: bool) -> tuple[str, list[str]]:
    """The folder a new run writes to (created): ``out``, or its next free sibling when ``out`` holds a run.

    The folder is reserved by creating its ``train_config.json`` exclusively, so two trainings started at the same
    moment (a parallel sweep into ``runs/train``) never share one; :func:`discard_unstarted_run` releases it.

    Returns:
        The folder and the folders created for it (see :func:`~sparseinst_zoo._io.make_dirs`).
    """
    if exist_ok:
        if holds_run(out):
            _logger.warning(
                "%s",
                caller_words(
                    "{out} holds a previous run; its results are replaced ({exist_ok})", out=out, exist_ok=_EXIST_OK
                ),
            )
            _clear_previous_outputs(out)
        return out, make_dirs(out)
    while True:  # a name another run reserved between the check and the reservation sends this one further
        chosen = next_run_dir(out, in_use=holds_run)
        created = _reserve(chosen)
        if created is not None:
            break
    if chosen != out:
        message = (
            "{out} holds a previous run, so this one writes to {chosen} "
            "({exist_ok} reuses {out}, {resume} continues it)"
        )
        _logger.warning(
            "%s", caller_words(message, out=out, chosen=chosen, exist_ok=_EXIST_OK, resume=Argument("resume", True))
        )
    return chosen, created


def discard_unstarted_run(folder: str, created: list[str]) -> None:
    """Take back a new run that stopped before its first result: its settings, its still empty log, then the
    folders :func:`claim_run_folder` created while they are empty (anything else in them stays)."""
    log = os.path.join(folder, METRICS_NAME)
    if os.path.isfile(log) and os.path.getsize(log) == 0:
        os.unlink(log)
    config = os.path.join(folder, TRAIN_CONFIG_NAME)
    if os.path.isfile(config):
        os.unlink(config)
    remove_empty_dirs(created)
