"""ONNX export: exact, static or dynamic shapes, DCN as ``DeformConv``, metadata inside the file.

The graph takes an RGB batch ``(B, 3, H, W)`` of 0..255 pixel values (``float32`` or ``uint8``) and normalises it
with the model's mean/std. It returns the raw heads (``pred_logits``, ``pred_masks``, ``pred_scores``, exactly as
``model(x)``) or, with ``with_postprocess=True``, per-query ``scores``, ``labels`` and mask probabilities ``masks``
at the input resolution. The file carries its metadata (model name, labels, mean/std, input size, resize policy)
so that :class:`~sparseinst_zoo.inference.backends.OnnxPredictor` needs nothing else.

Exactness: the pyramid pooling is exported as two averaging-matrix products built from the run-time size, equal to
adaptive average pooling for every input size (see :func:`sparseinst_zoo.models.encoder.adaptive_avg_pool2d_matmul`);
deformable convs become ONNX ``DeformConv`` (opset >= 19), which onnxruntime implements.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import staged_path
from ..errors import MissingDependency, SparseInstError, install_hint
from ..inference.backends.metadata import INPUT_NAME, POSTPROCESSED_OUTPUTS, RAW_OUTPUTS, InputDtype, build_metadata
from ..inference.precision import PrecisionLike, parse_precision, precision_from_alias
from .verify import EXACT_TOLERANCE, HALF_TOLERANCE, Tolerance, verify_onnx
from .wrapper import (
    EXAMPLE_BATCH,
    ExportWrapper,
    check_mask_threshold,
    check_model,
    dynamic_shapes,
    example_input,
    export_copy,
    export_shape,
    has_deform_conv,
    output_target,
    quiet_export,
)

__all__ = ["DEFAULT_OPSET", "MIN_DCN_OPSET", "MIN_OPSET", "export_onnx"]

_logger = logging.getLogger("sparseinst_zoo")

DEFAULT_OPSET = 19  # first opset with DeformConv
MIN_DCN_OPSET = 19
MIN_OPSET = 18  # torch's dynamo exporter's own opsets; lower ones go through a converter


def _deform_conv_translation() -> dict[Any, Any]:
    """Map torchvision's ``deform_conv2d`` to ONNX ``DeformConv`` (same offset layout) for the dynamo exporter."""
    from onnxscript import opset19 as op

    def deform_conv2d(
        input,
        weight,
        offset,
        mask,
        bias,
        stride_h: int,
        stride_w: int,
        pad_h: int,
        pad_w: int,
        dil_h: int,
        dil_w: int,
        n_weight_grps: int,
        n_offset_grps: int,
        use_mask: bool,
    ):
        return op.DeformConv(
            input,
            weight,
            offset,
            bias,
            mask if use_mask else None,
            dilations=[dil_h, dil_w],
            group=n_weight_grps,
            offset_group=n_offset_grps,
            pads=[pad_h, pad_w, pad_h, pad_w],
            strides=[stride_h, stride_w],
        )

    return {torch.ops.torchvision.deform_conv2d.default: deform_conv2d}


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise MissingDependency(f"ONNX export needs {' and '.join(missing)}: {install_hint('export')}")


def _check_options(model: nn.Module, input_dtype: str, mask_threshold: float, opset: int) -> None:
    if input_dtype not in ("float32", "uint8"):
        raise SparseInstError(f"input_dtype must be 'float32' or 'uint8', got {input_dtype!r}")
    check_mask_threshold(mask_threshold)
    if opset < MIN_DCN_OPSET and has_deform_conv(model):
        raise SparseInstError(
            f"{getattr(model, 'model_name', 'this model')} has deformable convolutions (DCN), which ONNX supports "
            f"from opset {MIN_DCN_OPSET} (DeformConv); export with opset={MIN_DCN_OPSET} or higher, use torch.export "
            "(sparseinst_zoo.export.save_program / `sparseinst export --format pt2`), or pick a non-DCN variant"
        )
    if opset < MIN_OPSET:
        # below 18 torch's exporter falls back to onnx's version converter, whose graphs onnxruntime rejects
        # (ReduceLogSumExp keeps an attribute of opset 18)
        raise SparseInstError(
            f"opset {opset} is not supported: the ONNX exporter writes opset {MIN_OPSET} or later; use opset >= "
            f"{MIN_OPSET} (default {DEFAULT_OPSET})"
        )


def _onnx_program(wrapper: nn.Module, example: torch.Tensor, opset: int, names: list[str], dynamic: bool) -> Any:
    """``torch.onnx.export`` (dynamo) of ``wrapper``; exporter failures become one line with what to try."""
    try:
        with quiet_export(), torch.no_grad():
            return torch.onnx.export(
                wrapper,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes=dynamic_shapes(dynamic),
                custom_translation_table=_deform_conv_translation(),
                optimize=True,
                verbose=False,
            )
    except Exception as err:  # the exporters raise many types; say what failed and what to try
        raise RuntimeError(
            f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); try "
            "torch.export instead (`sparseinst export --format pt2`) or report the model and torch version"
        ) from err


def _float16_graph(precision: PrecisionLike) -> bool:
    """Whether an ONNX export at ``precision`` is a float16 graph (bf16 refused: onnxruntime runs none)."""
    name = parse_precision(precision, device="cuda")  # True/'auto': the 16-bit type of the GPU runtimes, fp16
    if name == "bf16":
        raise SparseInstError(
            "an ONNX export is fp32 or fp16 (its runtimes run no bfloat16 graph); for bfloat16 on a CPU export fp32 "
            "to OpenVINO and load it with precision='bf16'"
        )
    return name == "fp16"


def _save_verified(
    program: Any,
    target: Path,
    model: nn.Module,
    size: tuple[int, int],
    tolerance: Tolerance | None,
    started: float,
) -> None:
    """Save ``program`` at ``target`` atomically, first checked against ``model`` within ``tolerance`` (None: not
    checked); on a mismatch nothing is written. ``started`` is when the export began, for the log line."""
    with staged_path(target) as staged:
        program.save(staged.path, external_data=False)
        model_name = program.model.metadata_props["model_name"]
        _logger.info("exported %s to %s in %.1f s", model_name, target, time.perf_counter() - started)
        if tolerance is not None:
            source = f"the ONNX export to {str(target)!r} (not written)"
            verify_onnx(model, staged.path, *size, tolerance=tolerance, raise_on_mismatch=True, source=source)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    *,
    dynamic: bool | None = None,
    opset: int = DEFAULT_OPSET,
    precision: PrecisionLike = None,
    half: bool | None = None,
    with_postprocess: bool = False,
    mask_threshold: float = 0.45,
    input_dtype: InputDtype = "float32",
    verify: bool = True,
) -> str:
    """Export ``model`` to an ONNX file with normalisation (and optionally postprocessing) inside the graph.

    Args:
        model: a SparseInst model (any variant; it is copied, the original is left as it is).
        path: the ``.onnx`` file to write (atomically: written and verified in a temporary folder beside it, then
            renamed; an existing file of that name is replaced, as by ``torch.save``).
        height / width: a fixed input size, multiples of 32 (with ``dynamic=True`` only the size traced and verified
            at). Default: none, the export is dynamic, traced at the model's test size.
        dynamic: height and width are dynamic (any multiples of 32); the default when no size is given. The batch
            dimension is always dynamic. Prefer it: a fixed size pads every image to it, and SparseInst's outputs
            depend on the padding (the activation maps are normalised over every position).
        opset: ONNX opset, >= 18 (>= 19 for the DCN variants, whose deformable convs become ``DeformConv``).
        precision: ``'fp32'`` (default, exact) or ``'fp16'``: float16 weights and activations, for GPU runtimes
            (inputs/outputs stay float32/uint8; ``True``/``'auto'`` mean fp16 here). ONNX has no bfloat16 path:
            export fp32 to OpenVINO for bfloat16 on a CPU. ``half=True`` is the deprecated spelling of ``'fp16'``.
        with_postprocess: output ``scores`` (B, N), ``labels`` (B, N) int64 and ``masks`` (B, N, H, W) probabilities
            instead of the raw heads (see :func:`~sparseinst_zoo.export.wrapper.postprocess_graph`).
        mask_threshold: rescoring threshold baked into a postprocessed graph.
        input_dtype: ``"float32"`` (default; exact parity with ``model.predict``) or ``"uint8"`` (camera frames).
        verify: run the file with onnxruntime on a random pixel batch before moving it into place and raise
            :class:`~sparseinst_zoo.export.verify.ExportMismatch` (nothing written) if it differs from the float32
            PyTorch model (:data:`~sparseinst_zoo.export.verify.EXACT_TOLERANCE`, or ``HALF_TOLERANCE`` for float16).

    Returns:
        The path written.

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> export_onnx(model, "/tmp/tiny.onnx")  # doctest: +SKIP
        '/tmp/tiny.onnx'
    """
    check_model(model)
    half = _float16_graph(precision_from_alias(precision, half, "export_onnx"))
    height, width, dynamic = export_shape(model, height, width, dynamic)
    opset = int(opset)
    _check_options(model, input_dtype, mask_threshold, opset)
    _require_onnx()
    target = output_target(path, ".onnx")
    cfg: Any = model.pretrained_cfg
    wrapper = ExportWrapper(export_copy(model, half), cfg.mean, cfg.std, with_postprocess, mask_threshold, half)
    example = example_input(height, width, EXAMPLE_BATCH, input_dtype)
    names = list(POSTPROCESSED_OUTPUTS if with_postprocess else RAW_OUTPUTS)
    start = time.perf_counter()
    program = _onnx_program(wrapper, example, opset, names, dynamic)
    metadata = build_metadata(
        model,
        height,
        width,
        dynamic=dynamic,
        input_dtype=input_dtype,
        with_postprocess=with_postprocess,
        mask_threshold=mask_threshold,
        half=half,
        opset=opset,
    )
    program.model.metadata_props.update(metadata)
    tolerance = (HALF_TOLERANCE if half else EXACT_TOLERANCE) if verify else None
    _save_verified(program, target, model, (height, width), tolerance, start)
    return str(target)
