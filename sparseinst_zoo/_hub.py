"""Where weights come from: Hub downloads, original releases and the cache (saving is :mod:`sparseinst_zoo._save`).

Never builds a model. A saved model is a folder (or Hub repository) with ``config.json`` (``model_name``,
``model_args``, ``pretrained_cfg``), ``model.safetensors`` (our keys) and a ``README.md`` model card.

Sources of ``pretrained=True`` weights, tried in order (:func:`fetch_pretrained`):

1. the cache of a previous download: ``<cache>/converted/<arch.tag>/`` (sha256 checked before use);
2. the Hub repository ``cfg.hf_hub_id`` (safetensors; the blob's sha256, its file name, is checked);
3. the original release: ``cfg.url`` or the Google Drive file ``cfg.google_drive_id`` (``.pth``, converted once by
   the builder and stored in the cache with :func:`sparseinst_zoo._save.store_converted`).

The cache folder is ``cache_dir``, else ``SPARSEINST_CACHE``, else ``$HF_HOME/sparseinst-zoo``. ``HF_HUB_OFFLINE=1``
uses the caches only. ``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME`` are read at call time.

Example:
    >>> import sparseinst_zoo
    >>> cfg = sparseinst_zoo.get_pretrained_cfg("sparseinst_r50_giam")
    >>> [name for name, _ in weight_sources(cfg)]
    ['hub', 'google_drive']
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from filelock import FileLock

from ._cache import cache_root, converted_folder, hf_cache_dir, original_path
from ._constants import WEIGHTS_NAME
from ._download import Downloaded, download_original, download_timeout, file_sha256, no_answer
from ._registry import PretrainedCfg
from .errors import DownloadError, SparseInstError
from .version import __version__

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "LIBRARY_NAME",
    "FORMAT_VERSION",
    "REPO_ID",
    "SOURCE_NAME",
    "hub_endpoint",
    "is_offline",
    "CARD_NAME",
    "FetchedWeights",
    "weight_sources",
    "fetch_pretrained",
    "weights_lock",
    "hub_download",
    "read_config",
    "cfg_from_config",
    "cache_root",
    "offline_if_unreachable",
]

_logger = logging.getLogger("sparseinst_zoo")

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SOURCE_NAME = "source.json"
LIBRARY_NAME = "sparseinst-zoo"
FORMAT_VERSION = 1
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)  # what writing to a read-only or foreign cache folder raises


# ---------------------------------------------------------------------------------------------------------------------
# Environment, read at call time
# ---------------------------------------------------------------------------------------------------------------------
def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (the environment wins over huggingface_hub's import-time value)."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None and value.strip():
        return value.strip().upper() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    from huggingface_hub import constants

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise DownloadError(
            f"HF_ENDPOINT={endpoint!r} is not an http(s) URL; unset it or set e.g. https://huggingface.co"
        )
    return endpoint


def _unresolvable_host(endpoint: str) -> str | None:
    """The endpoint's host name if it does not resolve (no network), else None: a failed lookup is final at once."""
    host = urlsplit(endpoint).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return host
    return None


def _unreachable(endpoint: str) -> str | None:
    """Why the endpoint cannot be reached (no DNS, port refused, no answer), or None if a TCP connection opens.

    huggingface_hub retries failed connections with back-off for about 25 s; one quick probe decides at once.
    Behind a proxy only the name lookup is checked (the proxy opens the connection).
    """
    host = _unresolvable_host(endpoint)
    if host:
        return f"its host name {host!r} does not resolve: no network?"
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return None
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=download_timeout()):
            return None
    except TimeoutError:
        return f"it did not accept a connection within {download_timeout():g} s"
    except OSError as err:
        return f"the connection was refused ({err.strerror or err})"


def _silent_hub(repo_id: str, filename: str, revision: str | None, endpoint: str) -> str | None:
    """One metadata request without retries: a Hub that accepts connections and never answers is given up at once.

    hf_hub_download retries its metadata request five times with back-off (minutes on such a server).
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, filename, revision=revision, endpoint=endpoint), timeout=download_timeout()
        )
    except Exception as err:  # only a transport failure decides here; HTTP answers are hf_hub_download's to report
        if "Timeout" in type(err).__name__:
            return f"it {no_answer(download_timeout())}"
    return None


@contextlib.contextmanager
def offline_if_unreachable() -> Iterator[str | None]:
    """Within the block, huggingface_hub only uses its cache if the Hub's host name does not resolve.

    For downloads made by other libraries (timm's ImageNet weights), which would otherwise retry for up to a minute
    without network. Yields the unresolvable host name, or None when nothing was changed.
    """
    from huggingface_hub import constants

    unresolved = None if is_offline() else _unresolvable_host(hub_endpoint())
    if unresolved is None:
        yield None
        return
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield unresolved
    finally:
        constants.HF_HUB_OFFLINE = previous


# ---------------------------------------------------------------------------------------------------------------------
# Hub downloads
# ---------------------------------------------------------------------------------------------------------------------
def _status(err: BaseException) -> int | str:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", "?")


def _transport_reason(err: BaseException) -> str:
    """What went wrong under huggingface_hub's 'cannot find in cache' error: a timeout, a refusal, a dropped link."""
    cause = err.__cause__ or err.__context__
    name = type(cause).__name__ if cause else ""
    if "Timeout" in name:
        return f"it {no_answer(download_timeout())}"
    if "Connect" in name:
        return "the connection was refused or failed"
    if "Protocol" in name or "ReadError" in name:
        return "the connection dropped"
    return "it could not be reached"


def _hub_error(err: BaseException, where: str, endpoint: str, cache: str) -> DownloadError:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, LocalEntryNotFoundError):
        if is_offline():
            return DownloadError(f"{where}: HF_HUB_OFFLINE is set and it is not in the cache ({cache})")
        if "cannot be reached" in where:
            return DownloadError(f"{where} and it is not in the cache ({cache})")
        return DownloadError(f"{where}: the Hub at {endpoint} was tried and {_transport_reason(err)}")
    if isinstance(err, GatedRepoError):
        return DownloadError(
            f"{where}: the repository is gated or private (HTTP {_status(err)}); log in with "
            "`hf auth login` or set HF_TOKEN"
        )
    if isinstance(err, RepositoryNotFoundError):
        return DownloadError(f"{where}: the repository does not exist at {endpoint} (HTTP {_status(err)})")
    if isinstance(err, RevisionNotFoundError):
        return DownloadError(f"{where}: the revision does not exist (HTTP {_status(err)})")
    if isinstance(err, EntryNotFoundError):
        return DownloadError(f"{where}: the repository has no such file (HTTP {_status(err)})")
    if isinstance(err, HfHubHTTPError):
        status = _status(err)
        kind = " (server error)" if isinstance(status, int) and status >= 500 else ""
        return DownloadError(f"{where}: the Hub at {endpoint} answered HTTP {status}{kind}")
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    return DownloadError(f"{where}: the download from {endpoint} failed ({type(err).__name__}: {first})")


def _blob_is_intact(path: str) -> bool:
    """The Hub cache names LFS blobs by their sha256: True unless the file's content no longer matches its name."""
    blob = Path(os.path.realpath(path))
    if not _SHA256.match(blob.name):
        return True
    return file_sha256(blob) == blob.name


@dataclass(frozen=True)
class _HubFile:
    """One file of a Hub repository to download, and where from: the endpoint, the cache, whether it is reachable."""

    repo_id: str
    filename: str
    revision: str | None
    cache: str
    endpoint: str
    offline: bool  # HF_HUB_OFFLINE is set
    unreachable: str | None  # why the Hub cannot be reached now, or None

    @classmethod
    def probe(
        cls, repo_id: str, filename: str, revision: str | None, cache_dir: str | os.PathLike[str] | None
    ) -> _HubFile:
        """The file, with the Hub probed once (unless offline) so that an unreachable one is given up at once."""
        endpoint = hub_endpoint()
        offline = is_offline()
        cache = hf_cache_dir(cache_dir)
        unreachable = None if offline else _unreachable(endpoint) or _silent_hub(repo_id, filename, revision, endpoint)
        return cls(repo_id, filename, revision, cache, endpoint, offline, unreachable)

    @property
    def cache_only(self) -> bool:
        """Only the Hugging Face cache is read (offline, or the Hub cannot be reached)."""
        return self.offline or self.unreachable is not None

    @property
    def where(self) -> str:
        """The file, for the start of an error message."""
        where = f"{self.filename!r} of Hub repository {self.repo_id!r}"
        if self.unreachable:
            where += f" (the Hub at {self.endpoint} cannot be reached: {self.unreachable})"
        return where

    def error(self, err: BaseException) -> DownloadError:
        return _hub_error(err, self.where, self.endpoint, self.cache)


def _download_once(file: _HubFile, force: bool, optional: bool) -> str | None:
    """``hf_hub_download`` of ``file``: its local path, or None if ``optional`` and absent; failures in one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    try:
        return hf_hub_download(
            file.repo_id,
            file.filename,
            revision=file.revision,
            cache_dir=file.cache,
            endpoint=file.endpoint,
            local_files_only=file.cache_only,
            force_download=force,
            etag_timeout=download_timeout(),
            library_name=LIBRARY_NAME,
            library_version=__version__,
        )
    except LocalEntryNotFoundError as err:  # a subclass of EntryNotFoundError: first
        if optional and file.offline:
            return None
        raise file.error(err) from None
    except EntryNotFoundError as err:
        if optional:
            return None
        raise file.error(err) from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        raise file.error(err) from None
    except Exception as err:  # httpx2 transport errors (dropped connection, bad URL) must not leak 400 lines
        if type(err).__module__.split(".")[0] not in ("httpx", "httpx2", "httpcore", "h11"):
            raise
        raise file.error(err) from None


def hub_download(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    optional: bool = False,
) -> str | None:
    """Download (or find in the cache) one file of a Hub repository; a corrupt cached blob is fetched again.

    Returns:
        The local path (inside the Hugging Face cache), or None if ``optional`` and the file does not exist.

    Raises:
        DownloadError: one line saying what failed (absent, unreachable, timed out, HTTP status, offline).
    """
    file = _HubFile.probe(repo_id, filename, revision, cache_dir)
    for force in (False, True):
        path = _download_once(file, force, optional)
        if path is None or _blob_is_intact(path):
            return path
        _logger.warning("%s in the Hugging Face cache fails its sha256 (corrupt): fetching it again", path)
        os.remove(os.path.realpath(path))
        if file.cache_only:
            break
    raise DownloadError(
        f"{file.where}: the cached copy is corrupt (sha256 differs from its name) and could not be fetched "
        "again; delete the models--* folder in the Hugging Face cache and retry with network access"
    )


# ---------------------------------------------------------------------------------------------------------------------
# config.json
# ---------------------------------------------------------------------------------------------------------------------
def read_config(path: str | os.PathLike[str], origin: str = "") -> dict[str, Any]:
    """A ``config.json`` of a saved model, checked: ``model_name`` a string, ``model_args`` a dict."""
    where = origin or os.fspath(path)
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        advice = "" if origin else "; save the model again"
        raise SparseInstError(f"{where} is not a readable JSON config ({type(err).__name__}: {err}){advice}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_name"), str):
        raise SparseInstError(f"{where} is not a sparseinst-zoo config.json (it has no 'model_name' string)")
    args = config.get("model_args", {})
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise SparseInstError(f"{where}: 'model_args' must be an object of constructor arguments, got {args!r:.80}")
    if not isinstance(config.get("pretrained_cfg", {}), dict):
        raise SparseInstError(f"{where}: 'pretrained_cfg' must be an object")
    return config


def cfg_from_config(config: Mapping[str, Any]) -> PretrainedCfg | None:
    """The pretrained cfg saved in a ``config.json`` (its ``file`` cleared), or None."""
    data = config.get("pretrained_cfg")
    return PretrainedCfg.from_dict(data).replace(file=None) if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------------------------------
# Sources of pretrained weights
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FetchedWeights:
    """Weights found by :func:`fetch_pretrained`.

    ``kind`` is ``'cache'`` or ``'hub'`` (``path`` is a ``model.safetensors`` in our keys, ``config`` its
    config.json or None) or ``'original'`` (``path`` is the released ``.pth``, still to be converted).
    """

    kind: str
    path: Path
    origin: str
    config: dict[str, Any] | None = None
    download: Downloaded | None = None


def weight_sources(cfg: PretrainedCfg) -> list[tuple[str, str]]:
    """``(kind, where)`` of every download source of ``cfg`` in the order tried (the cache comes first)."""
    sources = []
    if cfg.hf_hub_id:
        sources.append(("hub", cfg.hf_hub_id))
    if cfg.url:
        sources.append(("url", cfg.url))
    if cfg.google_drive_id:
        sources.append(("google_drive", cfg.google_drive_id))
    return sources


@contextlib.contextmanager
def weights_lock(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """A lock held while the weights of ``cfg`` are fetched and converted, so two processes do it once.

    A read-only cache (shared, or copied to an air-gapped machine) takes no lock: nobody can write there, and its
    entries, written atomically, are safe to read. What would have to be written there fails in one line.
    """
    root = cache_root(cache_dir)
    lock: FileLock | None = None
    try:
        (root / "locks").mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(root / "locks" / f"{cfg.name}.lock"))
        lock.acquire()
    except OSError as err:
        if err.errno not in _READ_ONLY:
            raise
        lock = None
    try:
        yield
    except OSError as err:
        if lock is not None or err.errno not in _READ_ONLY:
            raise
        raise OSError(
            err.errno,
            f"the weights cache {root} is read-only and does not hold the weights of {cfg.name} ({err.strerror}: "
            f"{err.filename}); point SPARSEINST_CACHE (or cache_dir=) at a writable folder",
        ) from None
    finally:
        if lock is not None:
            lock.release()


def _from_cache(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None) -> tuple[FetchedWeights | None, str]:
    folder = converted_folder(cfg, cache_dir)
    weights, record_path = folder / WEIGHTS_NAME, folder / SOURCE_NAME
    if not weights.is_file() or not record_path.is_file():
        return None, f"not cached at {folder}"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        intact = file_sha256(weights) == record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        intact = False
    if not intact:
        _logger.warning("cached weights %s fail their sha256 check (corrupt): deleted, fetching them again", weights)
        shutil.rmtree(folder, ignore_errors=True)
        return None, f"the cached copy at {folder} failed its sha256 check and was deleted"
    config = read_config(folder / CONFIG_NAME) if (folder / CONFIG_NAME).is_file() else None
    return FetchedWeights("cache", weights, f"cache ({record.get('origin', '?')})", config), ""


def _from_hub(cfg: PretrainedCfg, cache_dir: str | os.PathLike[str] | None) -> FetchedWeights:
    assert cfg.hf_hub_id
    weights = hub_download(cfg.hf_hub_id, cfg.hf_hub_filename, cfg.revision, cache_dir)
    config_path = hub_download(cfg.hf_hub_id, CONFIG_NAME, cfg.revision, cache_dir, optional=True)
    config = read_config(config_path, f"config.json of Hub repository {cfg.hf_hub_id}") if config_path else None
    assert weights is not None
    return FetchedWeights("hub", Path(weights), f"Hub repository {cfg.hf_hub_id}", config)


def _from_original(
    cfg: PretrainedCfg, kind: str, cache_dir: str | os.PathLike[str] | None, progress: bool
) -> FetchedWeights:
    url, drive_id = (cfg.url, None) if kind == "url" else (None, cfg.google_drive_id)
    download = download_original(
        original_path(cfg, cache_dir), url, drive_id, cfg.original_sha256, progress, offline=is_offline()
    )
    return FetchedWeights("original", download.path, download.source, download=download)


def manual_route(cfg: PretrainedCfg) -> str:
    """How to get the weights by hand, for the end of an error message."""
    where = cfg.original_source
    if not where:
        return "Pass checkpoint_path= with weights of your own (or train them: `sparseinst train`)."
    return (
        f"By hand: download {cfg.original_filename or 'the original checkpoint'} from {where} and load it with "
        f"checkpoint_path='FILE.pth' (or `sparseinst convert FILE.pth --model {cfg.architecture} --out DIR`)."
    )


def fetch_pretrained(
    cfg: PretrainedCfg,
    cache_dir: str | os.PathLike[str] | None = None,
    sources: tuple[str, ...] = ("hub", "original"),
    progress: bool = True,
) -> FetchedWeights:
    """The weights of ``cfg`` from the first source that has them: cache, Hub, original release (url, Drive).

    Hold :func:`weights_lock` around this and the conversion. Absent or unreachable sources move on to the next.

    Raises:
        DownloadError: listing every source tried and why it failed, then the manual route.
    """
    fetched, reason = _from_cache(cfg, cache_dir)
    if fetched is not None:
        return fetched
    tried = [f"cache: {reason}"]
    for kind, where in weight_sources(cfg):
        wanted = "hub" if kind == "hub" else "original"
        if wanted not in sources:
            continue
        if wanted == "original" and is_offline() and not original_path(cfg, cache_dir).is_file():
            # a cached original is converted offline too: only a download needs the network
            tried.append(f"{kind} {where}: skipped, HF_HUB_OFFLINE is set (offline mode uses the cache only)")
            continue
        try:
            if kind == "hub":
                return _from_hub(cfg, cache_dir)
            return _from_original(cfg, kind, cache_dir, progress)
        except DownloadError as err:
            tried.append(f"{kind}: {str(err).rstrip('.')}")
    if not weight_sources(cfg):
        tried.append("no download source is configured (no hf_hub_id, url or google_drive_id)")
    offline = " (HF_HUB_OFFLINE is set: only the cache was used)" if is_offline() else ""
    raise DownloadError(
        f"cannot get the weights of {cfg.name}{offline}; tried "
        + "; ".join(f"({i}) {t}" for i, t in enumerate(tried, 1))
        + ". "
        + manual_route(cfg)
    )


def hub_folder(
    repo_id: str, revision: str | None, cache_dir: str | os.PathLike[str] | None
) -> tuple[Path, dict[str, Any]]:
    """``(local folder, config)`` of a Hub repository written by :func:`sparseinst_zoo._save.push_to_hub`."""
    config_path = hub_download(repo_id, CONFIG_NAME, revision, cache_dir)
    assert config_path is not None
    config = read_config(config_path, f"config.json of Hub repository {repo_id}")
    hub_download(repo_id, WEIGHTS_NAME, revision, cache_dir)
    return Path(config_path).parent, config
