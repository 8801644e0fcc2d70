"""Weights on disk and on the Hugging Face Hub: load, save, publish.

A saved model is a folder (or Hub repository) with three files:

* ``config.json``: ``model_name`` (registered architecture), ``model_args`` (constructor arguments) and
  ``pretrained_cfg`` (class names, preprocessing sizes, reference metrics, ...);
* ``model.safetensors``: the state dict in our key format;
* ``README.md``: the model card.

Downloads go through :func:`huggingface_hub.hf_hub_download` and its cache. ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE`` and ``HF_HOME`` are read when a model is loaded, so they can be changed at run time.

Example:
    >>> import tempfile, torch, sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    >>> folder = tempfile.mkdtemp()
    >>> _ = model.save_pretrained(folder)
    >>> again = sparseinst_zoo.from_pretrained(folder).eval()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> torch.equal(model(x)["pred_masks"], again(x)["pred_masks"])
    True
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import string
import tempfile
from collections.abc import Iterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import atomic_save
from ._registry import PretrainedCfg, model_entrypoint, split_model_name_tag
from .convert import ConversionError, convert_state_dict, download_hint, read_checkpoint
from .version import __version__

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "load_weights",
    "load_checkpoint",
    "load_state_dict_strict",
    "from_pretrained",
    "save_pretrained",
    "push_to_hub",
    "model_card",
]

_logger = logging.getLogger("sparseinst_zoo")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
LIBRARY_NAME = "sparseinst-zoo"
FORMAT_VERSION = 1
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_TRUE = {"1", "ON", "YES", "TRUE"}

CITATION = """@inproceedings{Cheng2022SparseInst,
  title     = {Sparse Instance Activation for Real-Time Instance Segmentation},
  author    = {Cheng, Tianheng and Wang, Xinggang and Chen, Shaoyu and Zhang, Wenqiang and Zhang, Qian and
               Huang, Chang and Zhang, Zhaoxiang and Liu, Wenyu},
  booktitle = {Proc. IEEE Conf. Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""


# ---------------------------------------------------------------------------------------------------------------------
# Hub environment, read at call time
# ---------------------------------------------------------------------------------------------------------------------
def _offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None and value.strip():
        return value.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def _unresolvable_host(endpoint: str) -> str | None:
    """The endpoint's host name if it does not resolve (no network, no DNS), else None.

    huggingface_hub retries unreachable hosts with back-off for about half a minute; a failed name lookup is final
    at once, so we go straight to the cache instead.
    """
    from urllib.parse import urlsplit

    host = urlsplit(endpoint).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return host
    return None


@contextlib.contextmanager
def offline_if_unreachable() -> Iterator[str | None]:
    """Within the block, huggingface_hub only uses its cache if the Hub's host name does not resolve.

    For downloads made by other libraries (timm's ImageNet weights), which would otherwise retry for up to a minute
    without network. Yields the unresolvable host name, or None when nothing was changed.
    """
    from huggingface_hub import constants

    unresolved = None if _offline() else _unresolvable_host(_endpoint())
    if unresolved is None:
        yield None
        return
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield unresolved
    finally:
        constants.HF_HUB_OFFLINE = previous


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    model_name: str | None = None,
    optional: bool = False,
) -> str | None:
    """Download (or find in the cache) one file of a Hub repository, with errors that say what to do.

    Args:
        repo_id: ``org/name``.
        filename: file in the repository.
        revision: branch, tag or commit (default ``main``).
        cache_dir: cache folder instead of ``HF_HUB_CACHE``.
        model_name: the model being loaded, to suggest where its original weights are.
        optional: return None instead of raising when the file does not exist (or is not cached while offline).

    Returns:
        The local path of the file (inside the Hugging Face cache).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = _offline()
    endpoint = _endpoint()
    cache = _cache_dir(cache_dir)
    unresolved = None if offline else _unresolvable_host(endpoint)
    where = f"{filename!r} of Hub repository {repo_id!r} (revision {revision or 'main'})"
    hint = download_hint(model_name) if model_name else "load a local copy: from_pretrained('path/to/folder')."
    try:
        return hf_hub_download(
            repo_id, filename, revision=revision, cache_dir=cache, endpoint=endpoint,
            local_files_only=offline or unresolved is not None, library_name=LIBRARY_NAME, library_version=__version__,
        )  # fmt: skip
    except LocalEntryNotFoundError as err:
        if optional:
            return None
        if offline:
            reason = f"HF_HUB_OFFLINE is set and the file is not in the cache ({cache})"
            todo = "Run once with network access (unset HF_HUB_OFFLINE) to fill the cache, or: " + hint
        else:
            if unresolved:
                reason = (f"the Hub at {endpoint} cannot be reached (its host name {unresolved!r} does not resolve: "
                          f"no network?) and the file is not in the cache ({cache})")  # fmt: skip
            else:
                reason = f"the Hub at {endpoint} could not be reached and the file is not in the cache ({cache}): {err}"
            todo = "Check your connection (or HF_ENDPOINT), or: " + hint
        raise OSError(f"Cannot load {where}: {reason}. {todo}") from None
    except GatedRepoError as err:
        raise OSError(
            f"Cannot load {where}: the repository is gated or private (HTTP {_status(err)}); log in with "
            "`hf auth login` or set HF_TOKEN with access to it."
        ) from None
    except RepositoryNotFoundError as err:
        raise OSError(
            f"Cannot load {where}: the repository does not exist at {endpoint} (HTTP {_status(err)}). The weights of "
            "this model are probably not published on the Hub yet (docs/weights.md lists the published ones). "
            + _sentence(hint)
        ) from None
    except RevisionNotFoundError as err:
        raise OSError(
            f"Cannot load {where}: revision {revision!r} does not exist in the repository (HTTP {_status(err)}); "
            "pass an existing branch, tag or commit."
        ) from None
    except EntryNotFoundError:
        if optional:
            return None
        raise OSError(f"Cannot load {where}: the repository has no such file. " + _sentence(hint)) from None
    except HfHubHTTPError as err:
        raise OSError(f"Cannot load {where}: the Hub at {endpoint} answered HTTP {_status(err)}: {err}") from None


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _status(err: Exception) -> str:
    response = getattr(err, "response", None)
    return str(getattr(response, "status_code", "?"))


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
def _read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable JSON config ({err}); save the model again") from err
    if not isinstance(config, dict) or "model_name" not in config:
        raise ValueError(f"{path} is not a sparseinst-zoo config.json (it has no 'model_name')")
    return config


def _cfg_from_config(config: Mapping[str, Any]) -> PretrainedCfg | None:
    data = config.get("pretrained_cfg")
    return PretrainedCfg.from_dict(data).replace(file=None) if isinstance(data, dict) else None


def _read_weights(path: str | os.PathLike[str], origin: str = "") -> dict[str, torch.Tensor]:
    try:
        state_dict, _ = read_checkpoint(path)
    except ConversionError as err:
        where = f" ({origin})" if origin else ""
        raise ValueError(
            f"{err}{where}. If it came from the Hugging Face cache, delete that cached file (or the whole "
            "models--* folder) and load again to download a fresh copy."
        ) from None
    return state_dict


def load_checkpoint(
    checkpoint_path: str | os.PathLike[str], model_name: str
) -> tuple[dict[str, torch.Tensor], PretrainedCfg | None]:
    """Load weights from our ``.safetensors``, a ``save_pretrained`` folder or a reference ``.pth`` (converted).

    Returns:
        ``(state_dict in our keys, pretrained cfg from a config.json beside the weights or None)``.
    """
    path = Path(checkpoint_path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint_path {os.fspath(checkpoint_path)!r} does not exist; pass a model.safetensors file, a folder "
            "written by save_pretrained / `sparseinst convert`, or a reference .pth checkpoint"
        )
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
            raise FileNotFoundError(
                f"{path} has no {WEIGHTS_NAME} (it holds {found}); pass a folder written by save_pretrained or "
                "`sparseinst convert`, or the checkpoint file itself"
            )
        path = weights
    if path.suffix == ".safetensors":
        config_path = path.parent / CONFIG_NAME
        config = _read_config(config_path) if config_path.is_file() else None
        arch = split_model_name_tag(model_name)[0]
        if config is not None and config["model_name"] != arch:
            _logger.warning("loading weights saved from %s into %s", config["model_name"], arch)
        return _read_weights(path), (_cfg_from_config(config) if config else None)
    state_dict, layout = read_checkpoint(path)
    converted, report = convert_state_dict(state_dict, model_name, source_layout=layout)
    _logger.info("converted %s (%s layout): %d tensors", path, layout, report.num_tensors)
    return converted, None


def load_weights(
    variant: str,
    cfg: PretrainedCfg,
    pretrained: bool = True,
    checkpoint_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, torch.Tensor], PretrainedCfg | None]:
    """The weights to load into ``variant``: from ``checkpoint_path``, ``cfg.file`` or the Hub (``cfg.hf_hub_id``).

    Returns:
        ``(state_dict in our keys, the pretrained cfg stored with the weights or None)``.

    Raises:
        OSError: a file or Hub repository cannot be reached / found; the message says which and what to do.
        ValueError: a file is corrupt or does not fit the model.
    """
    if checkpoint_path is not None:
        return load_checkpoint(checkpoint_path, variant)
    if not pretrained:
        raise ValueError("load_weights needs pretrained=True or a checkpoint_path")
    if cfg.file:
        return load_checkpoint(cfg.file, variant)
    if not cfg.hf_hub_id:
        raise ValueError(
            f"{variant!r} has no pretrained weights (its cfg names no hf_hub_id or file); use "
            "sparseinst_zoo.list_pretrained() for the names that have some, or pass checkpoint_path=. "
            + download_hint(variant)
        )
    weights = hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cfg.revision, cache_dir, model_name=variant)
    assert weights is not None
    config_path = hub_download(cfg.hf_hub_id, CONFIG_NAME, cfg.revision, cache_dir, model_name=variant, optional=True)
    origin = f"{cfg.hf_hub_filename} of {cfg.hf_hub_id}, cached at {weights}"
    state_dict = _read_weights(weights, origin)
    weights_cfg = _cfg_from_config(_read_config(config_path)) if config_path else None
    if weights_cfg is not None:
        weights_cfg = weights_cfg.replace(hf_hub_id=cfg.hf_hub_id, revision=cfg.revision)
    return state_dict, weights_cfg


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` into ``model``; missing / unexpected keys and shape mismatches raise a ValueError."""
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in expected)
    mismatched = sorted(
        f"{k}: {tuple(state_dict[k].shape)} in the weights, {tuple(v.shape)} in the model"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
        if keys:
            shown = ", ".join(keys[:10]) + (f" ... and {len(keys) - 10} more" if len(keys) > 10 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        name = getattr(model, "model_name", type(model).__name__)
        raise ValueError(
            f"the weights do not fit {name}: " + "; ".join(problems) + ". Load them into the architecture they were "
            "saved from (sparseinst_zoo.from_pretrained(folder) reads it from config.json) or pass the matching "
            "architecture arguments (e.g. num_masks=...)."
        )
    model.load_state_dict(dict(state_dict), strict=True)


def _resolve_source(
    dir_or_repo: str, cache_dir: str | os.PathLike[str] | None, revision: str | None
) -> tuple[Path, dict[str, Any], str | None, str | None]:
    """``(local folder with config.json + model.safetensors, config, Hub repo id or None, revision)``."""
    path = Path(dir_or_repo).expanduser()
    if path.is_file():
        raise FileNotFoundError(
            f"{path} is a file; from_pretrained takes the folder written by save_pretrained or `sparseinst convert` "
            f"(from_pretrained({os.fspath(path.parent)!r})), or load the file itself with "
            f"create_model(name, checkpoint_path={os.fspath(path)!r})"
        )
    if path.is_dir():
        config_path = path / CONFIG_NAME
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{path} has no {CONFIG_NAME}; pass a folder written by save_pretrained or `sparseinst convert`, or "
                "use create_model(name, checkpoint_path=...) for bare weights"
            )
        return path, _read_config(config_path), None, None
    repo_id, _, at_revision = dir_or_repo.partition("@")
    if not _REPO_ID.match(repo_id):
        raise FileNotFoundError(
            f"{dir_or_repo!r} is neither a folder nor a Hugging Face Hub repo id ('org/name'); pass a folder written "
            "by save_pretrained or a repo id such as 'sparseinst-zoo/sparseinst_r50_giam.coco'"
        )
    revision = revision or at_revision or None
    config_path = hub_download(repo_id, CONFIG_NAME, revision, cache_dir)
    assert config_path is not None
    config = _read_config(config_path)
    hub_download(repo_id, WEIGHTS_NAME, revision, cache_dir, model_name=config["model_name"])
    return Path(config_path).parent, config, repo_id, revision


def from_pretrained(
    dir_or_repo: str, cache_dir: str | os.PathLike[str] | None = None, revision: str | None = None, **kwargs: Any
) -> nn.Module:
    """Build a model from a ``save_pretrained`` folder or a Hub repository (``'org/name'``, optionally ``@revision``).

    The architecture and its arguments come from ``config.json``; ``kwargs`` override them (``num_classes=K``
    re-initialises the class head). Backbone ImageNet weights are never downloaded.

    Example:
        >>> import sparseinst_zoo
        >>> # model = sparseinst_zoo.from_pretrained("sparseinst-zoo/sparseinst_r50_giam.coco")
        >>> # model = sparseinst_zoo.from_pretrained("runs/exp1/best")
    """
    folder, config, repo_id, revision = _resolve_source(os.fspath(dir_or_repo), cache_dir, revision)
    args = dict(config.get("model_args") or {})
    args.update(kwargs)
    args["pretrained_backbone"] = False
    entrypoint = model_entrypoint(config["model_name"])
    model = entrypoint(pretrained=False, pretrained_cfg=_cfg_from_config(config), checkpoint_path=folder, **args)
    if repo_id is not None:
        model.pretrained_cfg = model.pretrained_cfg.replace(hf_hub_id=repo_id, revision=revision)
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------------------------------
def _saved_cfg(model: nn.Module, repo_id: str | None) -> PretrainedCfg:
    cfg: PretrainedCfg = getattr(model, "pretrained_cfg", None) or PretrainedCfg()
    num_classes = int(getattr(model, "num_classes", cfg.num_classes))
    label_names = tuple(getattr(model, "label_names", cfg.label_names))
    return cfg.replace(
        architecture=getattr(model, "model_name", cfg.architecture),
        num_classes=num_classes,
        label_names=label_names if len(label_names) == num_classes else (),
        file=None,
        hf_hub_id=repo_id or cfg.hf_hub_id,
    )


def model_config(model: nn.Module, repo_id: str | None = None) -> dict[str, Any]:
    """The ``config.json`` content of ``model``."""
    model_name = getattr(model, "model_name", None)
    args = getattr(model, "config", None)
    if not model_name or not isinstance(args, dict):
        raise ValueError(
            "save_pretrained needs a SparseInst model built by sparseinst_zoo.create_model (with .model_name and "
            f".config), got {type(model).__name__}"
        )
    return {
        "library_name": LIBRARY_NAME,
        "library_version": __version__,
        "format_version": FORMAT_VERSION,
        "model_name": model_name,
        "model_args": {**args, "pretrained_backbone": False},
        "pretrained_cfg": _saved_cfg(model, repo_id).to_dict(),
    }


def _metrics_table(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return "No evaluation was recorded with these weights."
    rows = ["| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        rows.append(f"| {key} | {text} |")
    return "\n".join(rows)


def _reference_table(cfg: PretrainedCfg) -> str:
    if cfg.reference_ap is None:
        return ""
    fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
    return "\n".join([
        "Reported for the original checkpoint of this architecture (SparseInst model zoo, detectron2 implementation):",
        "",
        "| reference config | test size (shorter side) | mask AP val2017 | mask AP test-dev | FPS (RTX 2080 Ti) |",
        "| --- | --- | --- | --- | --- |",
        f"| {cfg.reference_config or '-'} | {cfg.min_size} | {fmt(cfg.reference_ap)} | "
        f"{fmt(cfg.reference_ap_test_dev)} | {fmt(cfg.reference_fps)} |",
    ])  # fmt: skip


def model_card(model: nn.Module, repo_id: str | None = None, metrics: Mapping[str, Any] | None = None) -> str:
    """The README.md model card of ``model`` (YAML front matter + usage, metrics, dataset, licence, citation)."""
    config = model_config(model, repo_id)
    cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    model_name = config["model_name"]
    if repo_id:
        load = f'model = sparseinst_zoo.create_model("hf-hub:{repo_id}")'
    else:
        load = 'model = sparseinst_zoo.from_pretrained("path/to/this/folder")'
    names = cfg.label_names or tuple(f"class_{i}" for i in range(cfg.num_classes))
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    datasets = "datasets:\n- detection-datasets/coco\n" if cfg.dataset.startswith("coco") else ""
    template = string.Template(
        resources.files("sparseinst_zoo").joinpath("assets/model_card_template.md").read_text(encoding="utf-8")
    )
    return template.substitute(
        license=cfg.license or "mit",
        datasets=datasets,
        title=repo_id or model_name,
        model_name=model_name,
        backbone=config["model_args"].get("backbone", "?"),
        decoder=config["model_args"].get("decoder", "?"),
        num_params=f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}",
        num_classes=cfg.num_classes,
        dataset=cfg.dataset or "not recorded",
        label_names=shown,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        load=load,
        metrics=_metrics_table(metrics),
        reference=_reference_table(cfg),
        citation=CITATION,
        version=__version__,
    )


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    metrics: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    card: bool = True,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (``card=True``) a ``README.md`` model card to a folder.

    Each file is written atomically. Frozen-BN buffers, DCN offsets and every other state-dict entry are saved.

    Args:
        model: a model from :func:`sparseinst_zoo.create_model`.
        save_directory: folder (created if needed).
        metrics: evaluation results for the card, e.g. ``{"mask AP (COCO val2017)": 33.2}``.
        repo_id: the Hub repository the folder is meant for (card usage snippet, ``hf_hub_id`` in the config).
        card: also write the model card.

    Returns:
        The folder.

    Example:
        >>> import tempfile, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> folder = model.save_pretrained(tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
    from safetensors.torch import save_file

    folder = Path(save_directory).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {folder} is a file")
    folder.mkdir(parents=True, exist_ok=True)
    config = model_config(model, repo_id)
    state_dict = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "library_name": LIBRARY_NAME, "model_name": config["model_name"]}
    atomic_save(folder / WEIGHTS_NAME, lambda tmp: save_file(state_dict, tmp, metadata=metadata))
    text = json.dumps(config, indent=2) + "\n"
    atomic_save(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    if card:
        readme = model_card(model, repo_id, metrics)
        atomic_save(folder / CARD_NAME, lambda tmp: Path(tmp).write_text(readme, encoding="utf-8"))
    return folder


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    metrics: Mapping[str, Any] | None = None,
    token: str | None = None,
    private: bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload SparseInst weights (sparseinst-zoo)",
    create_pr: bool = False,
) -> str:
    """Upload ``model`` (config.json, model.safetensors, README.md) to a Hub repository, creating it if needed.

    Returns:
        The URL of the commit (or pull request).

    Example:
        >>> # model.push_to_hub("my-org/sparseinst_r50_giam-cityscapes", metrics={"mask AP": 30.1})
    """
    from huggingface_hub import HfApi

    if not _REPO_ID.match(repo_id):
        raise ValueError(f"repo_id must look like 'org/name', got {repo_id!r}")
    if _offline():
        raise OSError("push_to_hub needs network access, but HF_HUB_OFFLINE is set; unset it to upload")
    api = HfApi(endpoint=_endpoint(), token=token, library_name=LIBRARY_NAME, library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="sparseinst-push-") as tmp:
        save_pretrained(model, tmp, metrics=metrics, repo_id=repo_id)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=tmp, commit_message=commit_message, revision=revision, create_pr=create_pr
        )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
