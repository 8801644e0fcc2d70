"""Build a registered architecture and load its weights from a resolved source (timm's ``build_model_with_cfg``).

Data flows one way: the factory parses the name, the model file calls :func:`build_model_with_cfg` with its
checkpoint filter (``pretrained_filter_fn``, the key renaming of the family), the weights come from ``_hub`` (cache,
Hub, original release) or a local file, ``_checkpoint`` reads and strictly loads them. An original release is
converted here once and stored in the cache as safetensors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checkpoint import WEIGHTS_NAME, load_state_dict_strict, read_checkpoint, read_training_config
from ._hub import (
    CONFIG_NAME,
    FetchedWeights,
    cfg_from_config,
    fetch_pretrained,
    read_config,
    weights_lock,
)
from ._registry import PretrainedCfg, get_pretrained_cfg, split_model_name_tag
from ._save import store_converted
from .errors import ConversionError, SparseInstError

__all__ = ["build_model_with_cfg", "resolve_pretrained_cfg", "FilterFn"]

_logger = logging.getLogger("sparseinst_zoo")
FilterFn = Callable[[Mapping[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]]
_TUPLE_FIELDS = ("label_names", "mean", "std", "classifier")


def resolve_pretrained_cfg(
    variant: str,
    pretrained_cfg: str | PretrainedCfg | dict[str, Any] | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
) -> PretrainedCfg:
    """The cfg for ``variant``: a tag name, a cfg object/dict, or the default tag; then ``overlay`` on top."""
    if isinstance(pretrained_cfg, PretrainedCfg):
        cfg = pretrained_cfg
    elif isinstance(pretrained_cfg, dict):
        cfg = PretrainedCfg.from_dict(pretrained_cfg)
    else:
        arch, _ = split_model_name_tag(variant)
        name = f"{arch}.{pretrained_cfg}" if pretrained_cfg else variant
        cfg = get_pretrained_cfg(name) or PretrainedCfg(architecture=arch)
    if pretrained_cfg_overlay:
        overlay = dict(pretrained_cfg_overlay)
        unknown = sorted(set(overlay) - set(PretrainedCfg.__dataclass_fields__))
        if unknown:
            raise SparseInstError(f"pretrained_cfg_overlay has unknown field(s) {', '.join(unknown)}")
        for key in _TUPLE_FIELDS:
            if key in overlay and overlay[key] is not None:
                overlay[key] = tuple(overlay[key])
        cfg = cfg.replace(**overlay)
    return cfg


@dataclass
class _Weights:
    """A state dict to load (keys as stored), the cfg saved with it, and the download still to be cached."""

    state_dict: dict[str, torch.Tensor]
    cfg: PretrainedCfg | None = None
    fetched: FetchedWeights | None = None
    saved_from: str | None = None  # a local folder saved from another architecture: its model name and path


def _read_local(checkpoint_path: str | os.PathLike[str], arch: str) -> _Weights:
    """Our ``.safetensors`` (config.json beside it read), a ``save_pretrained`` folder, a ``sparseinst train``
    checkpoint (the config it stores read, as its run's ``last/config.json``) or a reference ``.pth``."""
    path = Path(checkpoint_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint_path {os.fspath(checkpoint_path)!r} does not exist; pass a model.safetensors file, a folder "
            "written by save_pretrained / `sparseinst convert`, or a reference .pth checkpoint"
        )
    if path.is_dir():
        if not (path / WEIGHTS_NAME).is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME} (it holds {found}); pass a folder written by save_pretrained or "
                "`sparseinst convert`, or the checkpoint file itself"
            )
        path = path / WEIGHTS_NAME
    state_dict, _ = read_checkpoint(path)
    config_path = path.parent / CONFIG_NAME
    if path.suffix != ".safetensors":
        config = read_training_config(path)
    else:
        config = read_config(config_path) if config_path.is_file() else None
    if config is None:
        return _Weights(state_dict)
    saved_from = None
    if split_model_name_tag(config["model_name"])[0] != arch:
        _logger.warning("loading weights saved from %s into %s", config["model_name"], arch)
        saved_from = f"{config['model_name']!r} ({os.fspath(path.parent)!r})"
    return _Weights(state_dict, cfg_from_config(config), saved_from=saved_from)


def _fetch(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None) -> _Weights:
    fetched = fetch_pretrained(cfg, cache_dir)
    try:
        state_dict, _ = read_checkpoint(fetched.path)
    except ConversionError as err:
        raise ConversionError(
            f"{err} (from {fetched.origin}); delete that cached file (for the Hub: its models--* folder) and load "
            "again to download a fresh copy"
        ) from None
    saved = cfg_from_config(fetched.config) if fetched.config else None
    if saved is not None:  # the saved cfg knows the classes; where the weights come from stays the caller's
        saved = saved.replace(
            hf_hub_id=cfg.hf_hub_id,
            revision=cfg.revision,
            url=cfg.url,
            google_drive_id=cfg.google_drive_id,
            tag=cfg.tag,
        )
    return _Weights(state_dict, saved, fetched if fetched.kind == "original" else None)


def _build_and_load(
    model_cls: type[nn.Module],
    variant: str,
    cfg: PretrainedCfg,
    weights: _Weights | None,
    pretrained_filter_fn: FilterFn | None,
    kwargs: dict[str, Any],
) -> Any:
    """The model built with the class count of the weights (or ``num_classes``), weights loaded strictly."""
    num_classes = kwargs.pop("num_classes", None)
    classifier = weights.state_dict.get(cfg.classifier[0] + ".weight") if weights else None
    if classifier is not None:
        build_classes = int(classifier.shape[0])
    else:
        build_classes = num_classes if num_classes is not None else cfg.num_classes
    if weights is not None and kwargs.get("pretrained_backbone"):
        kwargs["pretrained_backbone"] = False  # the full weights replace the backbone's anyway
    model: Any = model_cls(num_classes=build_classes, **kwargs)
    model.model_name = split_model_name_tag(variant)[0]
    if len(cfg.label_names) != build_classes:
        cfg = cfg.replace(label_names=())
    model.pretrained_cfg = cfg.replace(num_classes=build_classes)
    if weights is not None:
        state_dict = weights.state_dict
        try:
            if pretrained_filter_fn is not None:
                state_dict = pretrained_filter_fn(state_dict, model)
            load_state_dict_strict(model, state_dict)
        except ConversionError as err:
            if weights.saved_from is None:
                raise
            raise ConversionError(
                f"{err} The weights were saved from {weights.saved_from}: to load them with their own architecture, "
                "pass the folder as the model name, create_model(folder)."
            ) from None
    return model


def _reset_head(model: Any, num_classes: int | None) -> Any:
    """Replace the class head when ``num_classes`` differs from the weights' (everything else keeps its weights)."""
    if num_classes is not None and num_classes != model.num_classes:
        loaded = model.num_classes
        model.reset_classifier(num_classes)
        classifier = ", ".join(f"{k}.weight/.bias" for k in model.pretrained_cfg.classifier)
        _logger.info(
            "num_classes=%d differs from the weights (%d): dropped %s and re-initialised it",
            num_classes,
            loaded,
            classifier,
        )
    return model


def build_model_with_cfg(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool = False,
    pretrained_cfg: str | PretrainedCfg | dict[str, Any] | None = None,
    pretrained_cfg_overlay: Mapping[str, Any] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    pretrained_filter_fn: FilterFn | None = None,
    keep_original: bool = True,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate ``model_cls(**kwargs)``, attach its pretrained cfg and load weights.

    Args:
        pretrained: fetch the cfg's weights: cache, then Hub, then the original release (converted once, cached).
        checkpoint_path: local weights instead (our safetensors / folder, or a reference ``.pth``).
        cache_dir: cache folder (Hub downloads and converted originals).
        pretrained_filter_fn: ``(state_dict, model) -> state_dict`` renaming the keys of other formats.
        keep_original: keep the downloaded original ``.pth`` beside the converted safetensors.

    The model is first built with the class count of the weights; if ``num_classes`` asks for another count, the
    class head is replaced afterwards (everything else keeps the loaded weights).
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    num_classes = kwargs.pop("num_classes", None)
    if not pretrained or checkpoint_path is not None or cfg.file:
        weights = None
        if checkpoint_path is not None or (pretrained and cfg.file):
            weights = _read_local(checkpoint_path or cfg.file or "", split_model_name_tag(variant)[0])
        if weights is not None and weights.cfg is not None:  # the cfg saved with the weights wins, overlay on top
            cfg = resolve_pretrained_cfg(variant, weights.cfg, pretrained_cfg_overlay)
        kwargs["num_classes"] = None if weights is not None else num_classes
        return _reset_head(_build_and_load(model_cls, variant, cfg, weights, pretrained_filter_fn, kwargs), num_classes)
    if not cfg.has_weights:
        raise SparseInstError(
            f"{cfg.name!r} has no pretrained weights (its cfg names no hf_hub_id, url, google_drive_id or file); "
            "sparseinst_zoo.list_pretrained() lists the names that have some, or pass checkpoint_path="
        )
    with weights_lock(cfg, cache_dir):
        weights = _fetch(cfg, cache_dir)
        if weights.cfg is not None:
            cfg = resolve_pretrained_cfg(variant, weights.cfg, pretrained_cfg_overlay)
        model = _build_and_load(model_cls, variant, cfg, weights, pretrained_filter_fn, kwargs)
        if weights.fetched is not None:
            store_converted(cfg, model, weights.fetched, cache_dir, keep_original)
    return _reset_head(model, num_classes)
