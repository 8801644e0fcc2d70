"""What a model name means, decided once: :func:`parse_model_name`, then :func:`create_model` / :func:`from_pretrained`.

A name is a registered ``arch`` / ``arch.tag``, ``hf-hub:org/repo[@revision]``, a folder written by
``save_pretrained``, a ``model.safetensors`` file with its ``config.json`` beside it, or an exported ``.onnx`` /
OpenVINO ``.xml`` file (run by the exported-model backend, not built here).

Example:
    >>> parse_model_name("sparseinst_r50_giam.coco").kind
    'registered'
    >>> parse_model_name("hf-hub:org/repo@v1").revision
    'v1'
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from torch import nn

from ._checkpoint import check_not_program
from ._hub import CONFIG_NAME, REPO_ID, cfg_from_config, hub_folder, read_config
from ._registry import get_pretrained_cfg, is_model, model_entrypoint, split_model_name_tag, unknown_model_error
from .errors import SparseInstError, Words

__all__ = [
    "HF_HUB_PREFIX",
    "EXPORTED_SUFFIXES",
    "ModelSource",
    "parse_model_name",
    "check_weight_options",
    "create_model",
    "from_pretrained",
]


class _Optimizable(Protocol):
    """The part of the models/ facade (``HubMixin``) that ``create_model(optimize=...)`` calls; the model family sits
    above this module, so it is named by its shape, not imported."""

    def optimize_for_inference(self, **options: Any) -> nn.Module: ...


HF_HUB_PREFIX = "hf-hub:"
EXPORTED_SUFFIXES = (".onnx", ".xml")
SourceKind = Literal["registered", "folder", "hub", "exported"]


@dataclass(frozen=True)
class ModelSource:
    """A parsed model name.

    ``kind``: ``'registered'`` (``name`` is ``arch`` or ``arch.tag``), ``'folder'`` (``path``: a save_pretrained
    folder), ``'hub'`` (``repo_id`` + ``revision``) or ``'exported'`` (``path``: an ``.onnx`` / ``.xml`` file).
    """

    kind: SourceKind
    name: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None

    @property
    def carries_weights(self) -> bool:
        """Folders, Hub repositories and exported files come with their weights; registered names do not."""
        return self.kind != "registered"


def _hub_source(name: str) -> ModelSource:
    spec = name.removeprefix(HF_HUB_PREFIX)
    repo_id, _, revision = spec.partition("@")
    if not REPO_ID.match(repo_id):
        example = "hf-hub:sparseinst-zoo/sparseinst_r50_giam.coco"
        raise SparseInstError(f"{name!r} needs a Hub repository id after 'hf-hub:' ('org/name'), e.g. {example}")
    return ModelSource("hub", name, repo_id=repo_id, revision=revision or None)


def _path_source(name: str, path: Path) -> ModelSource:
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(
                f"{path} has no {CONFIG_NAME}; pass a folder written by save_pretrained or `sparseinst convert`, or "
                "use create_model(name, checkpoint_path=...) for bare weights"
            )
        return ModelSource("folder", name, path=path)
    if (path.parent / CONFIG_NAME).is_file() and path.suffix == ".safetensors":
        return ModelSource("folder", name, path=path.parent)
    check_not_program(path)
    raise SparseInstError.naming(
        "{path} is a weights file without a config.json beside it; name the architecture: {how}",
        path=path,
        how=Words(
            f"create_model(name, checkpoint_path={os.fspath(path)!r})",
            f"a registered MODEL name with --checkpoint {shlex.quote(os.fspath(path))}",
        ),
    )


def parse_model_name(name: str) -> ModelSource:
    """What ``name`` refers to; raises a one-line error for names that refer to nothing.

    Raises:
        SparseInstError: an unknown name (with close registered names), ``hf-hub:`` without a repo id.
        FileNotFoundError: a path that does not exist, a folder without config.json.
    """
    if not isinstance(name, str) or not name.strip():
        raise SparseInstError(f"model name must be a non-empty string, got {name!r}")
    if name.startswith(HF_HUB_PREFIX):
        return _hub_source(name)
    path = Path(name).expanduser()
    if path.suffix.lower() in EXPORTED_SUFFIXES:
        if not path.is_file():
            raise FileNotFoundError(f"exported model file {name!r} does not exist")
        return ModelSource("exported", name, path=path)
    arch, _ = split_model_name_tag(name)
    if is_model(arch) and not path.exists():
        get_pretrained_cfg(name)  # unknown tag -> the list of tags
        return ModelSource("registered", name)
    if path.exists():
        return _path_source(name, path)
    if "/" in name or os.sep in name:
        raise FileNotFoundError(
            f"{name!r} is neither a registered model nor an existing folder; for a Hugging Face Hub repository "
            f"write 'hf-hub:{name}', for a save_pretrained folder check the path"
        )
    raise unknown_model_error(name)


def from_pretrained(
    dir_or_repo: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a model from a ``save_pretrained`` folder or a Hub repository (``'org/name'``, optionally ``@revision``).

    The architecture and its arguments come from ``config.json``; ``kwargs`` override them (``num_classes=K``
    re-initialises the class head). Backbone ImageNet weights are never downloaded.

    Example:
        >>> # model = sparseinst_zoo.from_pretrained("hf-hub:sparseinst-zoo/sparseinst_r50_giam.coco")
        >>> # model = sparseinst_zoo.from_pretrained("runs/exp1/best")
    """
    name = os.fspath(dir_or_repo)
    source = parse_model_name(name if name.startswith(HF_HUB_PREFIX) or Path(name).exists() else HF_HUB_PREFIX + name)
    if source.kind == "hub":
        assert source.repo_id
        folder, config = hub_folder(source.repo_id, revision or source.revision, cache_dir)
        origin = f"config.json of Hub repository {source.repo_id}"
    elif source.kind == "folder":
        assert source.path
        folder, origin = source.path, os.fspath(source.path / CONFIG_NAME)
        config = read_config(folder / CONFIG_NAME)
    else:
        raise SparseInstError(f"from_pretrained takes a save_pretrained folder or a Hub repository, not {name!r}")
    args = {**config.get("model_args", {}), **kwargs, "pretrained_backbone": False}
    entrypoint = model_entrypoint(config["model_name"])
    try:
        model = entrypoint(pretrained=False, pretrained_cfg=cfg_from_config(config), checkpoint_path=folder, **args)
    except TypeError as err:
        if any(repr(name) in str(err) for name in kwargs):
            raise  # the caller's own keyword argument, not the folder's config.json
        raise SparseInstError(f"{origin}: model_args do not fit {config['model_name']} ({err})") from None
    if source.kind == "hub":
        model.pretrained_cfg = model.pretrained_cfg.replace(
            hf_hub_id=source.repo_id, revision=revision or source.revision
        )
    return model


def check_weight_options(model_name: str, source: ModelSource, given: str | None, runner: str) -> None:
    """Refuse weights options that cannot apply to ``source``, in the caller's own words.

    One rule for :func:`create_model` and the CLI: an exported file is not built here, and a folder or Hub
    repository already carries its weights.

    Args:
        model_name: the name as the user wrote it.
        source: ``parse_model_name(model_name)``.
        given: the weights options the user gave, in their vocabulary (``"--checkpoint"``), or None for none.
        runner: who builds PyTorch models only (``"create_model builds"``, ``"this command runs"``).

    Example:
        >>> check_weight_options("sparseinst_tiny_test", parse_model_name("sparseinst_tiny_test"), "--checkpoint",
        ...                      runner="this command runs")
    """
    if source.kind == "exported":
        raise SparseInstError(
            f"{model_name!r} is an exported model: run it with the exported-model backend "
            f"(`sparseinst predict/val/benchmark FILE`); {runner} PyTorch models only"
        )
    if source.carries_weights and given:
        raise SparseInstError(
            f"{model_name!r} already carries its weights; {given} only apply to registered model names "
            "(see `sparseinst list` or list_models())"
        )


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
        pretrained: load the tag's weights: from the cache, else the Hugging Face Hub, else the original release
            (downloaded once, converted, cached as safetensors). ``HF_HUB_OFFLINE=1`` uses the cache only.
        pretrained_cfg_overlay: fields replacing the pretrained cfg for this call, e.g. ``dict(url=...)``,
            ``dict(hf_hub_id=...)`` or ``dict(file="model.safetensors")``.
        checkpoint_path: our safetensors file, a ``save_pretrained`` folder or a reference ``.pth`` checkpoint.
        cache_dir: cache folder to use instead of the default (``SPARSEINST_CACHE`` / ``HF_HOME``).
        optimize: return an inference-only ``OptimizedModel`` with these fast paths (True: fold BatchNorm; or a dict
            of ``optimize_for_inference`` options such as ``dict(channels_last=True, precision="bf16")``).
        **kwargs: architecture overrides, e.g. ``num_classes=3`` (the class head is re-initialised) or
            ``backbone='convnext_tiny'`` for the generic architectures.

    Example:
        >>> import torch, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> model(torch.randn(1, 3, 64, 64))["pred_masks"].shape
        torch.Size([1, 10, 16, 16])
    """
    if optimize:
        model = create_model(model_name, pretrained, pretrained_cfg_overlay, checkpoint_path, cache_dir, **kwargs)
        optimizable = cast(_Optimizable, model.eval())  # every registered model carries the models/ facade
        return optimizable.optimize_for_inference(**({} if optimize is True else dict(optimize)))
    source = parse_model_name(model_name)
    given = "pretrained=True and checkpoint_path=" if pretrained or checkpoint_path is not None else None
    check_weight_options(model_name, source, given, runner="create_model builds")
    if source.carries_weights:
        if pretrained_cfg_overlay:
            kwargs["pretrained_cfg_overlay"] = pretrained_cfg_overlay
        hub_name = f"{HF_HUB_PREFIX}{source.repo_id}" if source.kind == "hub" else os.fspath(source.path or "")
        return from_pretrained(hub_name, cache_dir=cache_dir, revision=source.revision, **kwargs)
    arch, tag = split_model_name_tag(model_name)
    return model_entrypoint(arch)(
        pretrained=pretrained,
        pretrained_cfg=tag or None,
        pretrained_cfg_overlay=pretrained_cfg_overlay,
        checkpoint_path=checkpoint_path,
        cache_dir=cache_dir,
        **kwargs,
    )
