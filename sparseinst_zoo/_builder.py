"""Build registered models and load their weights (Hub, local files, reference checkpoints)."""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from ._registry import PretrainedCfg, get_pretrained_cfg, is_model, model_entrypoint, split_model_name_tag

__all__ = ["create_model", "build_model_with_cfg", "resolve_pretrained_cfg"]

_logger = logging.getLogger("sparseinst_zoo")
HF_HUB_PREFIX = "hf-hub:"


def resolve_pretrained_cfg(
    variant: str,
    pretrained_cfg: str | PretrainedCfg | dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
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
        for key in ("label_names", "mean", "std", "classifier"):
            if key in overlay and overlay[key] is not None:
                overlay[key] = tuple(overlay[key])
        cfg = cfg.replace(**overlay)
    return cfg


def build_model_with_cfg(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool = False,
    pretrained_cfg: str | PretrainedCfg | dict[str, Any] | None = None,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Instantiate ``model_cls(**kwargs)``, attach its pretrained cfg and load weights.

    The model is first built with the class count of the weights; if ``num_classes`` asks for another count, the
    class head is replaced afterwards (everything else keeps the loaded weights).
    """
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg, pretrained_cfg_overlay)
    num_classes = kwargs.pop("num_classes", None)
    loads_weights = pretrained or checkpoint_path is not None
    if loads_weights:
        from .hub import load_weights  # weights decide the head size they were trained with

        state_dict, weights_cfg = load_weights(
            variant, cfg, pretrained=pretrained, checkpoint_path=checkpoint_path, cache_dir=cache_dir
        )
        if weights_cfg is not None:  # the cfg saved with the weights wins; the caller's overlay still applies on top
            cfg = resolve_pretrained_cfg(variant, weights_cfg, pretrained_cfg_overlay)
        classifier = state_dict.get("decoder.inst_branch.cls_score.weight")
        if classifier is not None:
            build_classes = int(classifier.shape[0])
        else:  # not a SparseInst state dict: load_state_dict_strict below names what is missing
            build_classes = num_classes if num_classes is not None else cfg.num_classes
    else:
        build_classes = num_classes if num_classes is not None else cfg.num_classes
    if kwargs.get("pretrained_backbone") and loads_weights:
        kwargs["pretrained_backbone"] = False  # the full weights replace the backbone's anyway
    model = model_cls(num_classes=build_classes, **kwargs)
    model.model_name = split_model_name_tag(variant)[0]
    if len(cfg.label_names) != build_classes:
        cfg = cfg.replace(label_names=())
    model.pretrained_cfg = cfg.replace(num_classes=build_classes)
    if loads_weights:
        from .hub import load_state_dict_strict

        load_state_dict_strict(model, state_dict)
    if num_classes is not None and num_classes != build_classes:
        model.reset_classifier(num_classes)
        _logger.info(
            "num_classes=%d differs from the weights (%d): dropped %s and re-initialised it",
            num_classes, build_classes, ", ".join(f"{k}.weight/.bias" for k in cfg.classifier),
        )  # fmt: skip
    return model


def create_model(
    model_name: str,
    pretrained: bool = False,
    pretrained_cfg_overlay: dict[str, Any] | None = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    optimize: bool | dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Create a SparseInst model by name, optionally with weights.

    Args:
        model_name: ``arch`` or ``arch.tag`` (see :func:`list_models`), ``hf-hub:org/repo`` or a folder written by
            ``save_pretrained``.
        pretrained: download the tag's weights from the Hugging Face Hub (cached; honours ``HF_HUB_OFFLINE``).
        pretrained_cfg_overlay: fields replacing the pretrained cfg, e.g. ``dict(file="model.safetensors")``.
        checkpoint_path: our safetensors file, a ``save_pretrained`` folder or a reference ``.pth`` checkpoint.
        cache_dir: Hugging Face cache folder to use instead of the default.
        optimize: return an inference-only :class:`~sparseinst_zoo.optimize.OptimizedModel` with these fast paths
            (True: fold BatchNorm; or a dict of :func:`~sparseinst_zoo.optimize.optimize_for_inference` options such
            as ``dict(channels_last=True, precision="bf16", compile=True)``). Leave it unset to train the model.
        **kwargs: architecture overrides, e.g. ``num_classes=3`` (the class head is re-initialised) or
            ``backbone='convnext_tiny'`` for the generic architectures.

    Example:
        >>> import torch, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> model(torch.randn(1, 3, 64, 64))["pred_masks"].shape
        torch.Size([1, 10, 16, 16])
    """
    if not isinstance(model_name, str) or not model_name:
        raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
    if optimize:
        from .optimize import optimize_for_inference

        model = create_model(model_name, pretrained, pretrained_cfg_overlay, checkpoint_path, cache_dir, **kwargs)
        return optimize_for_inference(model.eval(), **({} if optimize is True else dict(optimize)))
    arch, tag = split_model_name_tag(model_name)
    if model_name.startswith(HF_HUB_PREFIX) or (not is_model(arch) and os.path.isdir(model_name)):
        from .hub import from_pretrained

        if pretrained or checkpoint_path is not None:
            raise ValueError(
                f"{model_name!r} already carries its weights; pretrained=True and checkpoint_path= only apply to "
                "registered model names (see list_models())"
            )
        if pretrained_cfg_overlay:
            kwargs["pretrained_cfg_overlay"] = pretrained_cfg_overlay
        return from_pretrained(model_name.removeprefix(HF_HUB_PREFIX), cache_dir=cache_dir, **kwargs)
    if not is_model(arch) and ("/" in model_name or os.sep in model_name):
        raise FileNotFoundError(
            f"{model_name!r} is neither a registered model nor an existing folder; for a Hugging Face Hub repository "
            f"write 'hf-hub:{model_name}', for a save_pretrained folder check the path"
        )
    entrypoint = model_entrypoint(arch)
    if tag:
        get_pretrained_cfg(model_name)  # unknown tag -> clear error before building anything
    return entrypoint(
        pretrained=pretrained,
        pretrained_cfg=tag or None,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        checkpoint_path=checkpoint_path,
        cache_dir=cache_dir,
        **kwargs,
    )
