"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A crash or an error half-way never leaves a truncated file where the user expects a checkpoint or a result, and
never destroys the previous version of that file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["atomic_save", "atomic_write", "atomic_write_json", "temporary_path", "publish"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_path(path: str | os.PathLike[str]) -> str:
    """Create (and create the folder of) an empty temporary file beside ``path``, same extension; returns its path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=os.path.splitext(path)[1], dir=directory, prefix=".tmp-")
    os.close(fd)
    return tmp


def publish(tmp: str, path: str | os.PathLike[str]) -> str:
    """Give ``tmp`` the usual permissions (0666 minus umask) and move it to ``path``; returns ``path``."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    return os.fspath(path)


def atomic_save(path: str | os.PathLike[str], save: Callable[[str], Any]) -> str:
    """Call ``save(tmp_path)`` (e.g. ``torch.save``, ``safetensors.torch.save_file``) and move the file to ``path``."""
    tmp = temporary_path(path)
    try:
        save(tmp)
        return publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], mode: str = "wb") -> str:
    """Call ``write(handle)`` on a temporary file and move it to ``path`` only if it succeeded."""

    def save(tmp: str) -> None:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as handle:
            write(handle)

    return atomic_save(path, save)


def atomic_write_json(path: str | os.PathLike[str], data: Any, indent: int | None = 2, **json_kwargs: Any) -> str:
    """Write ``data`` as JSON (plus a final newline) to ``path`` atomically."""

    def write(handle: IO[str]) -> None:
        json.dump(data, handle, indent=indent, **json_kwargs)
        handle.write("\n")

    return atomic_write(path, write, mode="w")
