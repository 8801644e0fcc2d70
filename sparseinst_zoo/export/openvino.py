"""OpenVINO export: the exact ONNX graph converted by OpenVINO's own converter into ``model.xml`` + ``model.bin``.

The ONNX file of :func:`~sparseinst_zoo.export.onnx.export_onnx` goes through ``openvino.convert_model`` and
``openvino.save_model`` (weights kept in float32: ``compress_to_fp16=False``); the sparseinst-zoo metadata goes into
the model's ``rt_info`` under ``sparseinst_zoo`` so that the OpenVINO backend needs nothing else. The inference
precision is picked when the model is compiled, not here (see :mod:`sparseinst_zoo.inference.backends.openvino`).

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> export_openvino(model, "/tmp/tiny/model.xml")  # doctest: +SKIP
    '/tmp/tiny/model.xml'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .._io import staged_path
from ..errors import SparseInstError
from ..inference.backends.base import check_model_file
from ..inference.backends.metadata import read_onnx_file_metadata
from ..inference.backends.openvino import (
    RT_INFO_KEY,
    OpenVinoBackend,
    default_precision,
    openvino_message,
    require_openvino,
)
from ..inference.precision import parse_precision
from .onnx import export_onnx
from .verify import BF16_TOLERANCE, EXACT_TOLERANCE, HALF_TOLERANCE, Tolerance, verify_export
from .wrapper import check_model, export_shape, output_target

__all__ = [
    "WEIGHTS_SUFFIXES",
    "convert_onnx_to_openvino",
    "export_openvino",
    "precision_tolerance",
    "verified_precisions",
    "verify_openvino",
]

WEIGHTS_SUFFIXES = (".bin",)  # the file beside an OpenVINO model.xml; it moves (and must be free) with it


def verified_precisions() -> tuple[str, ...]:
    """The precisions an OpenVINO export is checked at: fp32 (exact) and this CPU's default, when that differs."""
    return tuple(dict.fromkeys(("fp32", default_precision())))


def precision_tolerance(precision: str) -> Tolerance:
    """The tolerance an OpenVINO model compiled at ``precision`` is held to against float32 PyTorch."""
    return {"fp32": EXACT_TOLERANCE, "bf16": BF16_TOLERANCE, "fp16": HALF_TOLERANCE}[precision]


def convert_onnx_to_openvino(onnx_path: str | os.PathLike[str], path: str | os.PathLike[str]) -> str:
    """Convert an ``.onnx`` export into an OpenVINO ``.xml``/``.bin`` pair at ``path``, metadata kept.

    Both files appear at once (written in a temporary folder beside them, then renamed; the ``.bin`` first).
    """
    ov = require_openvino()
    target = _xml_target(path)
    metadata = read_onnx_file_metadata(check_model_file(onnx_path, "ONNX"))
    try:
        model = ov.convert_model(os.fspath(onnx_path))
    except Exception as err:  # OpenVINO's converter raises its own types
        raise RuntimeError(f"OpenVINO cannot convert {os.fspath(onnx_path)!r}: {openvino_message(err)}") from err
    for key, value in metadata.raw.items():
        model.set_rt_info(value, [RT_INFO_KEY, key])
    with staged_path(target, WEIGHTS_SUFFIXES) as staged:
        ov.save_model(model, staged.path, compress_to_fp16=False)
    return str(target)


def _xml_target(path: str | os.PathLike[str]) -> Path:
    """The ``.xml`` to write (its folder created); OpenVINO saves only a lower-case ``.xml`` suffix."""
    if Path(path).suffix != ".xml":
        raise SparseInstError(f"an OpenVINO model is saved as NAME.xml (+ NAME.bin), got {os.fspath(path)!r}")
    return output_target(path, ".xml")


def verify_openvino(
    model: nn.Module, path: str | os.PathLike[str], precision: str | None = None, **kwargs: Any
) -> dict[str, float]:
    """:func:`~sparseinst_zoo.export.verify.verify_export` of an OpenVINO model compiled at ``precision``
    (None: OpenVINO's default on this CPU), held to :func:`precision_tolerance` unless ``tolerance`` is given."""
    backend = OpenVinoBackend.from_path(path, precision=precision)
    kwargs.setdefault("tolerance", precision_tolerance(backend.precision))
    kwargs["source"] = f"{kwargs.get('source', f'the OpenVINO model {os.fspath(path)!r}')} ({backend.precision})"
    return verify_export(model, backend, **kwargs)


def export_openvino(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    *,
    dynamic: bool | None = None,
    verify: bool = True,
    **onnx_options: Any,
) -> str:
    """Export ``model`` to ONNX (exact), then to OpenVINO ``path`` (``NAME.xml`` + ``NAME.bin``).

    Args:
        model: a SparseInst model (copied; the original is left as it is).
        path: the ``.xml`` file to write; the weights go to the ``.bin`` beside it.
        height / width: a fixed input size, multiples of 32 (with ``dynamic=True`` only the tracing size). Default:
            dynamic, traced and verified at the model's test size (as :func:`~sparseinst_zoo.export.onnx.export_onnx`).
        dynamic: dynamic height and width, the default when no size is given.
        verify: compile it at fp32 and at OpenVINO's default CPU precision and compare both with float32 PyTorch
            before the files are moved into place (raises :class:`~sparseinst_zoo.export.verify.ExportMismatch`
            outside the tolerance, and writes nothing).
        **onnx_options: :func:`~sparseinst_zoo.export.onnx.export_onnx` options (``input_dtype``,
            ``with_postprocess``, ``mask_threshold``, ``opset``); ``precision`` is not one: OpenVINO picks the
            inference precision when it compiles.
    """
    if onnx_options.get("half") or parse_precision(onnx_options.get("precision")) != "fp32":
        raise SparseInstError(
            "OpenVINO picks the precision when it compiles the model; export at fp32 and "
            "load it with precision='fp16' or 'bf16'"
        )
    require_openvino()
    check_model(model)
    height, width, dynamic = export_shape(model, height, width, dynamic)
    target = _xml_target(path)  # before the export, so that the error names the caller's path
    with staged_path(target, WEIGHTS_SUFFIXES) as staged:
        onnx_path = Path(staged.path).with_suffix(".onnx")
        export_onnx(model, onnx_path, height, width, dynamic=dynamic, verify=False, **onnx_options)
        convert_onnx_to_openvino(onnx_path, staged.path)
        os.unlink(onnx_path)
        source = f"the OpenVINO export to {str(target)!r} (not written)"
        for precision in verified_precisions() if verify else ():
            verify_openvino(
                model, staged.path, precision, height=height, width=width, raise_on_mismatch=True, source=source
            )
    return str(target)
