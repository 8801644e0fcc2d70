"""Read checkpoint files and load state dicts strictly, with one report of what does not fit.

Formats read: our ``.safetensors``, detectron2 checkpoints (``{"model": state_dict}``), MMDetection / MMEngine
checkpoints (``{"state_dict": ...}``), ``sparseinst train`` checkpoints (their ``"ema"`` weights when trained with
``--ema``, as ``best/`` and ``last/`` hold) and bare state dicts; pickles only with ``weights_only=True``.

Example:
    >>> import torch
    >>> key_problems({"a": (2,), "b": (3,)}, {"a": (2,), "c": (1,)})
    ['1 missing: b', '1 unexpected: c']
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from ._constants import WEIGHTS_NAME
from ._text import listed
from .errors import ConversionError

__all__ = [
    "read_checkpoint",
    "key_problems",
    "load_state_dict_strict",
    "refused_objects",
    "check_not_program",
    "read_training_config",
    "WEIGHTS_NAME",
]

_KEYS_SHOWN = 12  # keys named in an error message before "and N more"


def key_problems(
    expected: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    names: Mapping[str, str] | None = None,
) -> list[str]:
    """The one missing / unexpected / shape-mismatch report: an empty list when ``found`` fits ``expected``.

    Args:
        expected: ``{key: shape}`` the model needs.
        found: ``{key: shape}`` the weights provide (already in the model's names).
        names: the key each found key had in the source file, to name it as the user sees it.
    """
    names = names or {}

    def source(key: str) -> str:
        original = names.get(key, key)
        return original if original == key else f"{original} (-> {key})"

    missing = sorted(k for k in expected if k not in found)
    unexpected = sorted(source(k) for k in found if k not in expected)
    mismatched = sorted(
        f"{names.get(k, k)}: {tuple(found[k])} in the weights, {tuple(v)} in the model"
        for k, v in expected.items()
        if k in found and tuple(found[k]) != tuple(v)
    )
    return [
        f"{len(keys)} {label}: {listed(keys, shown=_KEYS_SHOWN)}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
        if keys
    ]


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model``; missing / unexpected keys and shape mismatches raise a ConversionError."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = key_problems(expected, {k: tuple(v.shape) for k, v in state_dict.items()})
    if problems:
        name = getattr(model, "model_name", type(model).__name__)
        raise ConversionError(
            f"the weights do not fit {name}: " + "; ".join(problems) + ". Load them into the architecture they were "
            "saved from (sparseinst_zoo.from_pretrained(folder) reads it from config.json) or pass the matching "
            "architecture arguments (e.g. num_masks=...)."
        )
    model.load_state_dict(dict(state_dict), strict=True)


def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    raise ConversionError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")


def _unwrap(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint object, and the layout it came in."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    if isinstance(obj.get("state_dict"), Mapping):  # MMDetection / MMEngine
        inner, layout = obj["state_dict"], "mmdetection"
    elif isinstance(obj.get("model"), Mapping) and isinstance(obj.get("ema"), Mapping):
        inner, layout = obj["ema"], "sparseinst train, EMA"  # the weights the run evaluated and saved in best/, last/
    elif isinstance(obj.get("model"), Mapping):  # detectron2, or sparseinst train without --ema
        inner, layout = obj["model"], "sparseinst train" if "model_config" in obj else "detectron2"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner, layout = obj, "state_dict"
    else:
        top = ", ".join(repr(k) for k in list(obj)[:10])
        raise ConversionError(
            f"{path} is not a SparseInst checkpoint: expected {{'model': state_dict}} (detectron2), "
            f"{{'state_dict': ...}} (MMDetection) or a state dict of tensors; its top-level keys are {top}"
        )
    state = {str(k): _as_tensor(str(k), v) for k, v in inner.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, layout


def check_not_program(path: Path) -> None:
    """Refuse a ``torch.export`` program (``.pt2``) where weights or a model are expected, saying what runs it.

    Raises:
        ConversionError: ``path`` ends in ``.pt2``.
    """
    if path.suffix.lower() == ".pt2":
        raise ConversionError(
            f"{path} is a torch.export program (`sparseinst export --format pt2`), not weights or a model folder: "
            "run it with torch.export.load(path).module(); predict, val and benchmark take the folder it was "
            "exported from, or an .onnx / .xml export"
        )


def _looks_like_torch_file(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive (since PyTorch 1.6) or a legacy pickle (protocol 2+)."""
    head = _file_head(path)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _file_head(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(2)


# the global torch names when weights_only refuses one: "Unsupported class x.y" (2.1-2.3), "GLOBAL x.y" (2.4+)
_REFUSED_GLOBAL = re.compile(r"\b(?:GLOBAL|unsupported class)\s+([\w.]+)", re.IGNORECASE)
_TORCH_ADVICE = re.compile(r"weights.only|trusted source|check the documentation", re.IGNORECASE)
_STRING_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING"})


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of a torch file: the ``data.pkl`` of a zip archive, or the whole legacy file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [name for name in archive.namelist() if name.endswith("data.pkl")]
            return archive.read(names[0]) if names else b""
    return path.read_bytes()


def _first_object(path: Path) -> str | None:
    """The first ``module.name`` global in the pickle that torch does not allow, found by parsing, never loading.

    For the pickles torch's weights-only unpickler stops reading before it meets a global (e.g. protocol 4's FRAME).
    """
    allowed: dict[str, Any] = getattr(torch._weights_only_unpickler, "_get_allowed_globals", dict)()
    strings: list[str] = []
    try:
        for opcode, arg, _ in pickletools.genops(_pickle_bytes(path)):
            if opcode.name in _STRING_OPS:
                strings.append(str(arg))
            name = None
            if opcode.name in ("GLOBAL", "INST"):
                name = str(arg).replace(" ", ".")
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                name = ".".join(strings[-2:])
            if name is not None and name not in allowed:
                return name
    except (ValueError, EOFError, OSError, zipfile.BadZipFile, KeyError):  # not (all) a pickle: nothing to name
        return None
    return None


def refused_objects(path: str | os.PathLike[str], err: BaseException) -> str | None:
    """``'<path> holds pickled Python objects (<global>) that sparseinst-zoo does not load (weights_only=True)'``
    when ``err``, raised by ``torch.load(path, weights_only=True)``, refused a Python object; None for any other
    failure (not a pickle, truncated, ...). Callers add what to do."""
    if not isinstance(err, pickle.UnpicklingError):
        return None
    match = _REFUSED_GLOBAL.search(str(err))
    name = match.group(1) if match else _first_object(Path(path))
    if name is None:
        return None
    return (
        f"{os.fspath(path)} holds pickled Python objects ({name}) that sparseinst-zoo does not load (weights_only=True)"
    )


def _torch_reason(err: BaseException) -> str:
    """The line of a ``torch.load`` error that says what was wrong, without torch's advice to unpickle the file."""
    text = str(err).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip() and not _TORCH_ADVICE.search(line)]
    return lines[0] if lines else type(err).__name__


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Load the tensors of a ``.safetensors`` file or a pickled checkpoint (``weights_only=True`` only).

    Returns:
        ``(state_dict, layout)`` where layout is ``'safetensors'``, ``'detectron2'``, ``'mmdetection'``,
        ``'sparseinst train'`` (``', EMA'`` added for its EMA weights) or
        ``'state_dict'``; keys are as stored (not yet renamed).
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    check_not_program(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), "safetensors"
        except (SafetensorError, OSError, ValueError) as err:
            raise ConversionError(
                f"{path} is not a readable safetensors file ({err}); it is probably truncated or corrupt: "
                "download or convert it again"
            ) from err
    if not _looks_like_torch_file(path):
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle); pass the reference "
            ".pth checkpoint, a model.safetensors file or a folder written by save_pretrained / `sparseinst convert`"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; none of them must leak as a deep traceback
        if _file_head(path) == b"PK" and not zipfile.is_zipfile(path):
            raise ConversionError(
                f"{path} is an incomplete zip archive: the checkpoint is truncated or corrupt; download it again"
            ) from err
        objects = refused_objects(path, err)
        if objects is not None:  # e.g. an MMEngine checkpoint with its message hub, or a hostile file
            raise ConversionError(
                f"{objects}; if you trust it, re-save just its weights on a trusted machine: "
                "torch.save(torch.load(f, weights_only=False)['model'], 'clean.pth') (['state_dict'] for "
                "MMDetection / MMEngine)"
            ) from None
        raise ConversionError(
            f"cannot read {path} as a weights-only PyTorch checkpoint ({_torch_reason(err)}); it is truncated or "
            "corrupt, or pickled with a protocol torch's weights-only reader lacks: download it again, or re-save it "
            "with torch.save's default protocol"
        ) from None
    return _unwrap(obj, str(path))


def read_training_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` content (``model_name``, ``model_args``, ``pretrained_cfg``) a ``sparseinst train``
    checkpoint stores, or None for any other file.

    Checkpoints written before ``folder_config`` was stored give the run's model and arguments without the
    pretrained cfg (class names and test size then fall back to the architecture's).
    """
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors" or not zipfile.is_zipfile(path):
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if "folder_config" in state:
            config = json.loads(state["folder_config"])
        else:
            settings, model_args = json.loads(state["config"]), json.loads(state["model_config"])
            config = {"model_name": settings["model"], "model_args": model_args}
    except (KeyError, TypeError, ValueError):  # not a training checkpoint (JSON errors are ValueErrors)
        return None
    valid = isinstance(config, dict) and isinstance(config.get("model_name"), str)
    return config if valid and isinstance(config.get("model_args"), dict) else None
