"""Download one original-release file (plain URL or Google Drive) safely: lock, resume, timeouts, sha256.

Both kinds go through ``gdown`` (the library torchvision delegates Google Drive downloads to; for a plain URL it is a
streaming HTTP GET): a progress bar, resume of a partial ``.part`` file, connect/read timeouts. Around it: a file
lock, so that two processes never download the same file twice or read it half-written, and the sha256 check when
the pretrained cfg pins one.

Example:
    >>> sha256_matches("ab" * 32, "abababab")
    True
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from filelock import FileLock

from ._io import new_file_mode
from .errors import DownloadError

_logger = logging.getLogger("sparseinst_zoo")

__all__ = [
    "Downloaded",
    "download_bars",
    "download_original",
    "file_sha256",
    "sha256_matches",
    "download_timeout",
    "no_answer",
]

TIMEOUT_ENV = "SPARSEINST_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_S = 30.0
# False inside download_bars(False) (a command's --quiet): no download draws a bar, whatever its progress= says
_SHOW_BARS: contextvars.ContextVar[bool] = contextvars.ContextVar("sparseinst_download_bars", default=True)


@dataclass(frozen=True)
class Downloaded:
    """A file on disk and what it is: where it came from, its size and sha256."""

    path: Path
    source: str
    size: int
    sha256: str


def no_answer(timeout: float) -> str:
    """How a download that timed out is reported, after the name of what did not answer.

    Example:
        >>> no_answer(30.0)
        'did not answer within 30 s (SPARSEINST_DOWNLOAD_TIMEOUT sets the limit)'
    """
    return f"did not answer within {timeout:g} s ({TIMEOUT_ENV} sets the limit)"


def download_timeout() -> float:
    """Seconds to wait for a connection or for the next bytes (``SPARSEINST_DOWNLOAD_TIMEOUT``, default 30)."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if not value:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        raise DownloadError(f"{TIMEOUT_ENV} must be a number of seconds, got {value!r}") from None
    if not seconds > 0:
        raise DownloadError(f"{TIMEOUT_ENV} must be > 0 seconds, got {value!r}")
    return seconds


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_matches(actual: str, pinned: str | None) -> bool:
    """True if ``pinned`` is None, the full digest, or a prefix of >= 8 hex digits of it (MMDetection's names)."""
    return pinned is None or (len(pinned) >= 8 and actual.startswith(pinned.lower()))


@contextlib.contextmanager
def download_bars(show: bool) -> Iterator[None]:
    """With ``show=False``, no download inside draws a progress bar: the original release's nor the Hub's.

    Example:
        >>> with download_bars(False):
        ...     pass
    """
    if show:
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    hub_bars = not are_progress_bars_disabled()
    token = _SHOW_BARS.set(False)
    disable_progress_bars()
    try:
        yield
    finally:
        _SHOW_BARS.reset(token)
        if hub_bars:
            enable_progress_bars()


def _gdown(url: str | None, drive_id: str | None, dest: Path, progress: bool) -> None:
    """Download to ``dest`` with gdown; the file is readable like every cached file (gdown's is 0o600)."""
    _gdown_to(url, drive_id, dest, progress)
    if dest.is_file():
        os.chmod(dest, new_file_mode())


def _gdown_to(url: str | None, drive_id: str | None, dest: Path, progress: bool) -> None:
    import gdown  # heavy (requests, bs4): only when an original really has to be downloaded
    import requests

    timeout = download_timeout()
    where = url or f"Google Drive file {drive_id}"
    try:
        gdown.download(
            url=url,
            id=drive_id,
            output=str(dest),
            quiet=not (progress and _SHOW_BARS.get()),
            resume=True,
            timeout=(timeout, timeout),
        )
    except requests.exceptions.Timeout:
        raise DownloadError(f"{where} {no_answer(timeout)}") from None
    except requests.exceptions.HTTPError as err:
        status = getattr(err.response, "status_code", "?")
        what = "not found" if status == 404 else "server error" if isinstance(status, int) and status >= 500 else ""
        raise DownloadError(f"{where} answered HTTP {status}{f' ({what})' if what else ''}") from None
    except requests.exceptions.ChunkedEncodingError:
        raise DownloadError(f"the connection to {where} dropped mid-download; run again to resume") from None
    except requests.exceptions.ConnectionError as err:
        reason = _first_line(err)
        if "NameResolution" in reason or "Failed to resolve" in reason:
            host = urlsplit(url).hostname if url else "drive.google.com"
            raise DownloadError(
                f"{where} cannot be reached (host name {host!r} does not resolve: no network?)"
            ) from None
        if "IncompleteRead" in reason or "Connection broken" in reason:
            raise DownloadError(f"the connection to {where} dropped mid-download; run again to resume") from None
        raise DownloadError(f"{where} cannot be reached ({reason})") from None
    except (requests.exceptions.RequestException, gdown.exceptions.DownloadError, OSError) as err:
        reason = _first_line(err).rstrip(".")
        if "incomplete" in reason.lower():
            raise DownloadError(
                f"the connection to {where} dropped mid-download ({reason}); run again to resume"
            ) from None
        raise DownloadError(f"downloading {where} failed: {reason}") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__


def download_original(
    dest: str | os.PathLike[str],
    url: str | None = None,
    google_drive_id: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    offline: bool = False,
) -> Downloaded:
    """Download ``url`` (or the Google Drive file ``google_drive_id``) to ``dest`` unless a verified copy is there.

    With ``offline`` (``HF_HUB_OFFLINE``) only a copy already at ``dest`` is used: nothing is downloaded.

    Raises:
        DownloadError: one line saying what failed (timeout, HTTP status, dropped connection, wrong sha256).
    """
    if not (url or google_drive_id):
        raise DownloadError("download_original needs a url or a google_drive_id")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    source = url or f"https://drive.google.com/file/d/{google_drive_id}"
    with FileLock(str(dest) + ".lock"):
        cached = dest.is_file()
        if not cached:
            if offline:
                raise DownloadError(f"{dest} is not cached, and HF_HUB_OFFLINE is set: nothing is downloaded")
            _gdown(url, None if url else google_drive_id, dest, progress)
        if not dest.is_file():
            raise DownloadError(f"downloading {source} produced no file at {dest}")
        digest = file_sha256(dest)
        if cached and not sha256_matches(digest, sha256):  # a cached copy gone bad (cut copy, disk): fetch it anew
            if offline:
                raise DownloadError(
                    f"cached {dest} fails its pinned sha256 (corrupt), and HF_HUB_OFFLINE is set: nothing is "
                    "downloaded; run again online to replace it"
                )
            _logger.warning("cached %s fails its pinned sha256 (corrupt): deleted, downloading it again", dest)
            dest.unlink()
            _gdown(url, None if url else google_drive_id, dest, progress)
            digest = file_sha256(dest) if dest.is_file() else "none (no file)"
        if not sha256_matches(digest, sha256):
            dest.unlink(missing_ok=True)
            raise DownloadError(
                f"{source} has sha256 {digest}, but {sha256} is pinned: the file is corrupt or was replaced "
                "(deleted it; run again to re-download)"
            )
        return Downloaded(dest, source, dest.stat().st_size, digest)
