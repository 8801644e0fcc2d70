"""The onnxruntime backend: an ``.onnx`` file written by :func:`sparseinst_zoo.export.export_onnx`.

Example:
    >>> backend = OnnxRuntimeBackend.from_path("/tmp/tiny.onnx", num_threads=2)  # doctest: +SKIP
    >>> backend.input_size  # doctest: +SKIP
    (64, 96)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import MissingDependency, SparseInstError, install_hint
from .base import ExportedBackend, check_model_file
from .metadata import ExportMetadata, read_onnx_file_metadata

__all__ = ["OnnxRuntimeBackend", "OnnxMetadata", "create_session", "read_onnx_metadata"]

OnnxMetadata = ExportMetadata  # the name of the metadata class before other runtimes read the same format


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise MissingDependency(f"running ONNX files needs onnxruntime: {install_hint('export')}") from err
    return onnxruntime


def create_session(
    path: str | os.PathLike[str], providers: Sequence[Any] | None = None, num_threads: int | None = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` (CPU by default; ``num_threads`` intra-op threads)."""
    ort = _require_onnxruntime()
    path = check_model_file(path, "ONNX")
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # onnxruntime raises its own exception types
        raise SparseInstError(f"onnxruntime cannot load {path!r}: {str(err).splitlines()[0]}") from err


def read_onnx_metadata(path_or_session: str | os.PathLike[str] | Any) -> ExportMetadata:
    """The sparseinst-zoo metadata of an exported file (or of an open onnxruntime session).

    Example:
        >>> read_onnx_metadata("/tmp/tiny.onnx").input_size  # doctest: +SKIP
        (64, 96)
    """
    if not isinstance(path_or_session, (str, os.PathLike)):
        return ExportMetadata.from_props(dict(path_or_session.get_modelmeta().custom_metadata_map))
    path = check_model_file(path_or_session, "ONNX")
    try:
        return read_onnx_file_metadata(path)
    except ImportError:  # no onnx package: the session reads the same properties
        props = dict(create_session(path).get_modelmeta().custom_metadata_map)
        return ExportMetadata.from_props(props, repr(path))


class OnnxRuntimeBackend(ExportedBackend):
    """An onnxruntime session of an export behind the SparseInst ``model(batch)`` interface.

    Args:
        session: an ``onnxruntime.InferenceSession`` (see :func:`create_session`).
        metadata: its metadata (default: read from the session).
    """

    def __init__(self, session: Any, metadata: ExportMetadata | None = None) -> None:
        super().__init__(metadata or read_onnx_metadata(session), "onnxruntime")
        self.session = session

    @classmethod
    def from_path(
        cls, path: str | os.PathLike[str], providers: Sequence[Any] | None = None, num_threads: int | None = None
    ) -> OnnxRuntimeBackend:
        """Open ``path`` with the given execution providers (default CPU) and intra-op threads."""
        metadata = read_onnx_metadata(path)
        return cls(create_session(path, providers, num_threads), metadata)

    def run(self, pixels: np.ndarray) -> Sequence[np.ndarray]:
        return self.session.run(None, {self.metadata.input_name: pixels})
