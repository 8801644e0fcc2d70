"""The resumable training state: RNG state as plain types, the atomic ``checkpoints/last.pt`` and its checks.

A checkpoint loads with ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only. Writes go
to a temporary file that replaces the old checkpoint only when complete; a write that fails (a full disk) leaves the
previous checkpoint intact and says so in one line, and the temporaries of a killed process are removed on the next
start.

Example:
    >>> state = rng_state()
    >>> import random; before = random.random()
    >>> set_rng_state(state); random.random() == before
    True
"""

from __future__ import annotations

import errno
import glob
import json
import logging
import os
import pickle
import random
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np
import torch

from .._checkpoint import refused_objects
from .._constants import WEIGHTS_NAME
from .._io import atomic_save
from ..errors import Argument, SparseInstError, Words

__all__ = [
    "CHECKPOINT_NAME",
    "rng_state",
    "set_rng_state",
    "seed_everything",
    "save_checkpoint",
    "load_checkpoint",
    "remove_stale_temporaries",
    "write_failure",
    "guard_write",
]

_logger = logging.getLogger("sparseinst_zoo")
CHECKPOINT_NAME = os.path.join("checkpoints", "last.pt")
REQUIRED_KEYS = ("step", "model", "optimizer", "scheduler", "scaler", "best_ap", "rng", "config")
# What a full disk (or a file size limit) says through Python, safetensors' Rust writer and torch.save's C++ one
# (the last only reports a short write: "unexpected pos", "file write failed").
_FULL_DISK_MARKERS = ("no space left", "storagefull", "code: 28", "file too large", "disk quota")
_SHORT_WRITE_MARKERS = ("inline_container", "unexpected pos", "file write failed")


def rng_state() -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA) random states as tensors and plain types."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    assert isinstance(keys, np.ndarray)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (also after a round trip through a weights-only checkpoint)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state["numpy"]
    keys = saved["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, saved["pos"], saved["has_gauss"], saved["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def write_failure(err: BaseException) -> str | None:
    """``'full'`` if ``err`` says the disk (or a size limit) is full, ``'short'`` for a short write, else None."""
    text = str(err).lower()
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return "full"
    if any(marker in text for marker in _FULL_DISK_MARKERS):
        return "full"
    return "short" if any(marker in text for marker in _SHORT_WRITE_MARKERS) else None


def guard_write(write: Callable[[], Any], what: str, path: str, advice: str) -> Any:
    """Run ``write()``; a full disk becomes one ``OSError`` line naming ``what``, ``path`` and ``advice``."""
    try:
        return write()
    except Exception as err:  # torch raises RuntimeError, safetensors its own error type
        kind = write_failure(err)
        if kind is None:
            raise
        cause = "the disk is full" if kind == "full" else "the write stopped short: the disk is probably full"
        raise OSError(errno.ENOSPC, f"{cause}: could not write {what} {path}; {advice}") from None


def save_checkpoint(path: str, state: dict[str, Any], resume_command: str) -> str:
    """Write ``state`` to ``path`` atomically (the previous checkpoint stays until the new one is complete)."""
    advice = f"free some space, then continue with `{resume_command}` (the previous checkpoint is intact)"
    return guard_write(lambda: atomic_save(path, lambda tmp: torch.save(state, tmp)), "the checkpoint", path, advice)


def load_checkpoint(path: str) -> dict[str, Any]:
    """Load and check a training checkpoint written by :func:`save_checkpoint`.

    Raises:
        FileNotFoundError: no file at ``path``.
        SparseInstError: the file is not a (weights-only) training checkpoint of this package, or ``path`` is the
            ``best/`` or ``last/`` model folder of a run.
    """
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, WEIGHTS_NAME)):
        _refuse_model_folder(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no checkpoint to resume from at {path}; start a new run without resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        objects = refused_objects(path, err)
        if objects is None:  # no refused Python object: not a pickle at all (a JSON file, an image ...)
            raise SparseInstError(
                f"{path} is not a training checkpoint (it is not a torch file); resume from the "
                "checkpoints/last.pt that `sparseinst train` wrote"
            ) from None
        raise SparseInstError.naming(
            "{objects}: it is not a weights-only training checkpoint of sparseinst-zoo; resume from the "
            "checkpoints/last.pt that training wrote, or start from weights with {checkpoint}",
            objects=objects,
            checkpoint=Argument("checkpoint"),
        ) from None
    except (RuntimeError, EOFError) as err:
        first_line = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SparseInstError(
            f"{path} cannot be read as a training checkpoint ({first_line}); it may be truncated: "
            "resume from an intact checkpoints/last.pt"
        ) from None
    missing = [key for key in REQUIRED_KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise SparseInstError.naming(
            "{path} is not a training checkpoint of sparseinst-zoo (it has no {missing}); to start from model weights "
            "use {checkpoint} instead of {resume}",
            path=path,
            missing=", ".join(map(repr, missing)),
            checkpoint=Argument("checkpoint"),
            resume=Argument("resume"),
        )
    try:
        json.loads(state["config"])
    except (TypeError, ValueError):
        raise SparseInstError(
            f"{path}: the saved settings ('config') are not valid JSON; the checkpoint is damaged"
        ) from None
    return state


def _refuse_model_folder(folder: str) -> NoReturn:
    """Raise the error for ``resume`` given a model folder: the resume of its run (an unfinished run's ``best/``),
    and the start of a new run from the folder's weights.

    Raises:
        SparseInstError: always.
    """
    run = os.path.dirname(os.path.normpath(folder)) or "."
    resumable = os.path.basename(os.path.normpath(folder)) in ("best", "last")
    resumable = resumable and os.path.isfile(os.path.join(run, CHECKPOINT_NAME))
    resumable = resumable and not os.path.isfile(os.path.join(run, "last", WEIGHTS_NAME))  # a finished run
    resume, out = Argument("resume", True), Argument("out", run)
    raise SparseInstError.naming(
        "{folder} is a model folder, not a training checkpoint; "
        + ("continue its run with {resume}, or " if resumable else "")
        + "start a new run from its weights with {checkpoint}",
        folder=folder,
        resume=Words(f"{resume.python}, {out.python}", f"{resume.cli} {out.cli}"),
        checkpoint=Argument("checkpoint", folder),
    )


def remove_stale_temporaries(out: str) -> list[str]:
    """Delete the ``.tmp-*`` files a killed process left in ``out`` and its model/checkpoint folders."""
    stale = []
    for folder in (out, os.path.join(out, "checkpoints"), os.path.join(out, "best"), os.path.join(out, "last")):
        for path in glob.glob(os.path.join(glob.escape(folder), ".tmp-*")):
            if os.path.isfile(path):
                os.unlink(path)
                stale.append(path)
    if stale:
        _logger.info(
            "removed %d unfinished temporary file(s) of an interrupted write: %s", len(stale), ", ".join(stale)
        )
    return stale
