"""Where weights go: ``save_pretrained`` folders, the converted-weights cache and Hub uploads.

A saved model is a folder (or Hub repository) with ``config.json`` (``model_name``, ``model_args``,
``pretrained_cfg``), ``model.safetensors`` (our keys) and a ``README.md`` model card. Reading them back is
:mod:`sparseinst_zoo._hub` (downloads, cache) and :mod:`sparseinst_zoo._factory` (``from_pretrained``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from ._cache import converted_folder
from ._constants import WEIGHTS_NAME
from ._download import file_sha256
from ._hub import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT_VERSION,
    LIBRARY_NAME,
    REPO_ID,
    SOURCE_NAME,
    FetchedWeights,
    hub_endpoint,
    is_offline,
)
from ._io import atomic_save
from ._model_card import model_card
from ._registry import PretrainedCfg
from .errors import SparseInstError
from .version import __version__

__all__ = ["model_config", "push_to_hub", "save_pretrained", "store_converted"]

_logger = logging.getLogger("sparseinst_zoo")
_CARD_HEAD = 1000  # characters of a README searched for our front matter (it is a few lines long)


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
        raise SparseInstError(
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


def save_pretrained(
    model: nn.Module,
    save_directory: str | os.PathLike[str],
    metrics: Mapping[str, Any] | None = None,
    repo_id: str | None = None,
    card: bool = True,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and (``card=True``) a ``README.md`` model card to a folder.

    Each file is written atomically. Frozen-BN buffers, DCN offsets and every other state-dict entry are saved. A
    ``README.md`` already there that is not a sparseinst-zoo model card (your own notes) is kept, with a warning.

    Example:
        >>> import tempfile, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> folder = model.save_pretrained(tempfile.mkdtemp())
        >>> sorted(p.name for p in folder.iterdir())
        ['README.md', 'config.json', 'model.safetensors']
    """
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
    if card and _foreign_card(folder / CARD_NAME):
        _logger.warning(
            "kept the README.md in %s (it is not a sparseinst-zoo model card); move it away to get one written", folder
        )
    elif card:
        readme = model_card(config, sum(p.numel() for p in model.parameters()), repo_id, metrics)
        atomic_save(folder / CARD_NAME, lambda tmp: Path(tmp).write_text(readme, encoding="utf-8"))
    return folder


def _foreign_card(path: Path) -> bool:
    """True if ``path`` is a README someone else wrote (ours name the library in their front matter)."""
    try:
        head = path.read_text(encoding="utf-8", errors="replace")[:_CARD_HEAD]
    except FileNotFoundError:
        return False
    return not (head.startswith("---") and f"library_name: {LIBRARY_NAME}" in head)


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
    """
    from huggingface_hub import HfApi

    if not REPO_ID.match(repo_id):
        raise SparseInstError(f"repo_id must look like 'org/name', got {repo_id!r}")
    if is_offline():
        raise OSError("push_to_hub needs network access, but HF_HUB_OFFLINE is set; unset it to upload")
    api = HfApi(endpoint=hub_endpoint(), token=token, library_name=LIBRARY_NAME, library_version=__version__)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory(prefix="sparseinst-push-") as tmp:
        save_pretrained(model, tmp, metrics=metrics, repo_id=repo_id)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=tmp, commit_message=commit_message, revision=revision, create_pr=create_pr
        )
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))


def store_converted(
    cfg: PretrainedCfg,
    model: nn.Module,
    fetched: FetchedWeights,
    cache_dir: str | os.PathLike[str] | None = None,
    keep_original: bool = True,
) -> Path:
    """Write the converted ``model`` as ``model.safetensors`` + ``config.json`` in the cache (atomically).

    Returns:
        The cached ``model.safetensors``.
    """
    folder = converted_folder(cfg, cache_dir)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{cfg.name}-", dir=folder.parent))
    try:
        save_pretrained(model, staging, card=False)
        download = fetched.download
        record = {
            "origin": fetched.origin,
            "sha256": file_sha256(staging / WEIGHTS_NAME),
            "original_sha256": download.sha256 if download else None,
            "original_size": download.size if download else None,
        }
        (staging / SOURCE_NAME).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not keep_original and fetched.download is not None:
        fetched.download.path.unlink(missing_ok=True)
    return folder / WEIGHTS_NAME
