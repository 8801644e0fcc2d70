"""Where downloaded weights are kept (torch-free, so that listing can say what is cached without importing torch).

* converted original releases: ``<cache_root>/converted/<arch.tag>/`` (``model.safetensors``, ``config.json``,
  ``source.json``), the downloaded originals in ``<cache_root>/originals/``;
* Hub downloads: the Hugging Face cache (``cache_dir``, ``HF_HUB_CACHE`` or ``$HF_HOME/hub``).

A cfg whose overlay names other sources than the registered cfg (another Hub repository, URL or Drive file) is cached
apart, in ``converted/<arch.tag>-<digest>/`` and ``originals/<digest>/``: weights cached from one source are never
served for another.

``cache_root`` is ``cache_dir/sparseinst-zoo`` when a ``cache_dir`` is passed, else ``SPARSEINST_CACHE``, else
``$HF_HOME/sparseinst-zoo`` (``~/.cache/huggingface/sparseinst-zoo`` by default).

Example:
    >>> str(cache_root("/tmp/c"))
    '/tmp/c/sparseinst-zoo'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ._registry import PretrainedCfg, get_pretrained_cfg
from .errors import SparseInstError

__all__ = ["CACHE_ENV", "cache_root", "hf_cache_dir", "converted_folder", "original_path", "cached_where"]

CACHE_ENV = "SPARSEINST_CACHE"
LIBRARY_NAME = "sparseinst-zoo"
WEIGHTS_NAME = "model.safetensors"
_SOURCE_FIELDS = ("hf_hub_id", "revision", "url", "google_drive_id")


def _hf_home() -> str:
    return os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> str:
    """The Hugging Face Hub cache folder used for downloads."""
    if cache_dir is not None:
        return os.fspath(cache_dir)
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    return os.path.join(_hf_home(), "hub")


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of converted original releases: ``cache_dir/sparseinst-zoo``, ``SPARSEINST_CACHE`` or
    ``$HF_HOME/sparseinst-zoo``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser() / LIBRARY_NAME
    if os.environ.get(CACHE_ENV):
        root = Path(os.environ[CACHE_ENV]).expanduser()
        if root.exists() and not root.is_dir():
            raise SparseInstError(f"{CACHE_ENV}={os.environ[CACHE_ENV]} is a file; point it at a folder for the cache")
        return root
    return Path(_hf_home()).expanduser() / LIBRARY_NAME


def source_digest(cfg: PretrainedCfg) -> str:
    """``''`` for the sources of the registered cfg ``cfg.name`` (fields only cleared count as theirs), else a short
    digest of the sources an overlay set to other values."""
    registered = get_pretrained_cfg(cfg.name, allow_unregistered=True) if cfg.architecture else None
    changed = {
        name: value
        for name in _SOURCE_FIELDS
        if (value := getattr(cfg, name)) is not None and value != getattr(registered, name, None)
    }
    return hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:12] if changed else ""


def converted_folder(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder of the converted original release of ``cfg``."""
    digest = source_digest(cfg)
    return cache_root(cache_dir) / "converted" / (f"{cfg.name}-{digest}" if digest else cfg.name)


def original_path(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the downloaded original release of ``cfg`` is kept."""
    return cache_root(cache_dir) / "originals" / source_digest(cfg) / (cfg.original_filename or f"{cfg.name}.pth")


def cached_where(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None) -> str | None:
    """``'converted'`` or ``'hub'`` if weights of ``cfg`` are in a cache (not verified here), else None."""
    if (converted_folder(cfg, cache_dir) / WEIGHTS_NAME).is_file():
        return "converted"
    if cfg.hf_hub_id:
        repo = Path(hf_cache_dir(cache_dir)) / ("models--" + cfg.hf_hub_id.replace("/", "--")) / "snapshots"
        if repo.is_dir() and any((snapshot / cfg.hf_hub_filename).is_file() for snapshot in repo.iterdir()):
            return "hub"
    return None
