"""Convert reference SparseInst checkpoints to sparseinst-zoo folders (the ``sparseinst convert`` workflow).

Accepted inputs: detectron2 checkpoints of the reference implementation (the released ``sparse_inst_*.pth``),
MMDetection SparseInst checkpoints, and our own ``model.safetensors`` / ``save_pretrained`` folders. The key renaming
lives with the model family (:mod:`sparseinst_zoo.models.checkpoint_filter`); reading files in
:mod:`sparseinst_zoo._checkpoint`. This module finds the architecture of a file and writes the converted folder.

Example:
    >>> from sparseinst_zoo.convert import rename_key
    >>> rename_key("backbone.res4.2.conv2.norm.running_var")
    'backbone.layer3.2.bn2.running_var'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ._checkpoint import read_checkpoint, read_training_config
from ._factory import create_model
from ._hub import CARD_NAME, CONFIG_NAME
from ._registry import PretrainedCfg, get_pretrained_cfg
from ._save import save_pretrained
from .errors import ConversionError
from .models.checkpoint_filter import (
    UNUSED_PREFIXES,
    ConversionReport,
    checkpoint_filter_fn,
    head_args,
    rename_key,
)
from .models.sparseinst_cfgs import REFERENCE_VARIANTS

__all__ = [
    "ConversionError",
    "ConversionReport",
    "REFERENCE_VARIANTS",
    "rename_key",
    "read_checkpoint",
    "convert_state_dict",
    "convert_checkpoint",
    "detect_model",
    "target_shapes",
]

_logger = logging.getLogger("sparseinst_zoo")
_target_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, tuple[int, ...]]] = {}


def target_shapes(model_name: str, **model_kwargs: Any) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the state dict of ``create_model(model_name, **model_kwargs)`` (built on the meta device)."""
    cache_key = (model_name, tuple(sorted(model_kwargs.items())))
    if cache_key not in _target_cache:
        with torch.device("meta"):
            model = create_model(model_name, **model_kwargs)
        _target_cache[cache_key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _target_cache[cache_key]


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_name: str,
    source_layout: str = "state_dict",
    **model_kwargs: Any,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename ``state_dict`` to our keys and check it against ``model_name`` (class count and queries from the weights).

    Raises:
        ConversionError: naming the source keys that map to nothing, the target keys left unfilled and the shape
            mismatches.

    Example:
        >>> import sparseinst_zoo
        >>> sd = sparseinst_zoo.create_model("sparseinst_tiny_test").state_dict()
        >>> converted, report = convert_state_dict(sd, "sparseinst_tiny_test")
        >>> report.num_tensors == len(sd)
        True
    """
    arch = model_name.partition(".")[0]
    kwargs = {**head_args(state_dict), **model_kwargs}
    report = ConversionReport(model_name=arch, source_layout=source_layout)
    converted = checkpoint_filter_fn(state_dict, target_shapes(arch, **kwargs), report)
    return converted, report


def detect_model(
    state_dict: Mapping[str, torch.Tensor], filename: str | None = None, candidates: list[str] | None = None
) -> str:
    """The reference architecture a checkpoint belongs to.

    Architectures whose key set and shapes fit the weights are candidates; identical architectures (e.g. ``r50_giam``
    and ``r50_giam_aug``) are told apart by the file name (released files start with the reference config name).

    Raises:
        ConversionError: if no architecture fits, or several do and the file name does not decide.
    """
    names = candidates or list(REFERENCE_VARIANTS)
    renamed = {
        rename_key(k): tuple(v.shape)
        for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked") and not k.startswith(UNUSED_PREFIXES)
    }
    kwargs = head_args(state_dict)
    fits = []
    for name in names:
        target = {k: v for k, v in target_shapes(name, **kwargs).items() if not k.endswith("num_batches_tracked")}
        if target == renamed:
            fits.append(name)
    if not fits:
        problem = (
            "could not recognise the architecture of this checkpoint: it fits none of the reference models "
            f"({', '.join(names)}); "
        )
        raise ConversionError(
            problem + "pass the architecture it was trained as (model_name=...) to see which keys differ",
            cli_message=problem + "pass the architecture it was trained as (--model NAME) to see which keys differ",
        )
    if len(fits) == 1:
        return fits[0]
    if filename:
        stem = Path(filename).name
        configs = {name: get_pretrained_cfg(name).reference_config for name in fits}
        matching = sorted(
            (n for n, config in configs.items() if config and stem.startswith(config)), key=lambda n: len(configs[n])
        )
        if matching:
            return matching[-1]
    problem = f"the checkpoint fits several architectures that differ only in their training recipe ({', '.join(fits)})"
    raise ConversionError(
        f"{problem}; pass the one it was trained as: model_name={fits[0]!r} or another of them",
        cli_message=f"{problem}; pass the one it was trained as: --model {fits[0]} or another of them",
    )


def convert_checkpoint(
    src: str | os.PathLike[str],
    model_name: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    **model_kwargs: Any,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert a checkpoint file; with ``out_dir`` also write ``model.safetensors`` + ``config.json`` there.

    The config of our own folders (class names, category ids, test size, ...) is carried over. A ``README.md`` card
    already in ``out_dir`` is rewritten for the new weights, never left describing the old ones.

    Args:
        src: reference ``.pth`` (detectron2 or MMDetection) or our ``.safetensors`` / ``save_pretrained`` folder.
        model_name: target ``arch`` or ``arch.tag``; read from our config.json or detected from the keys when omitted.
        out_dir: folder to write (created; files are written atomically).
        **model_kwargs: extra architecture arguments of the target model.

    Example:
        >>> # state_dict, report = convert_checkpoint("sparse_inst_r50_giam_aug_2b7d68.pth", out_dir="r50_giam_aug")
    """
    state_dict, layout = read_checkpoint(src)
    config = _own_config(src) or read_training_config(src)
    if model_name is None:
        model_name = (config or {}).get("model_name") or detect_model(state_dict, filename=os.fspath(src))
    converted, report = convert_state_dict(state_dict, model_name, source_layout=layout, **model_kwargs)
    report.source = os.fspath(src)
    if out_dir is not None:
        args = {**(config or {}).get("model_args", {}), **head_args(converted), **model_kwargs}
        args.pop("pretrained_backbone", None)
        cfg = config.get("pretrained_cfg") if config else None
        overlay = PretrainedCfg.from_dict(cfg).to_dict() if isinstance(cfg, dict) else None
        model = create_model(model_name, pretrained_cfg_overlay=overlay, **args)
        model.load_state_dict(converted, strict=True)
        card = (Path(out_dir) / CARD_NAME).is_file()
        save_pretrained(model.eval(), out_dir, card=card)
    return converted, report


def _own_config(src: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``config.json`` beside our own weights (``model_name``, ``model_args``, ``pretrained_cfg``), if any."""
    path = Path(src)
    config = (path if path.is_dir() else path.parent) / CONFIG_NAME
    if path.suffix == ".pth" or not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("model_name"), str) else None
