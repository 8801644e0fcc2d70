"""``torch.export`` of SparseInst: an ``ExportedProgram`` of the forward or of the pixel-input export wrapper."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .._io import atomic_save
from ..errors import SparseInstError
from ..inference.backends.metadata import InputDtype
from .wrapper import (
    EXAMPLE_BATCH,
    ExportWrapper,
    check_mask_threshold,
    check_model,
    dynamic_shapes,
    example_input,
    export_copy,
    export_shape,
    output_target,
    quiet_export,
)

__all__ = ["export_program", "save_program"]


def export_program(
    model: nn.Module,
    height: int | None = None,
    width: int | None = None,
    *,
    dynamic: bool | None = None,
    with_preprocess: bool = False,
    with_postprocess: bool = False,
    mask_threshold: float = 0.45,
    input_dtype: InputDtype = "float32",
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export`` the model (its forward, or the ONNX-style wrapper) into an ``ExportedProgram``.

    Args:
        model: a SparseInst model (copied to CPU in eval mode; DCN variants included).
        height / width: a fixed input size, multiples of 32 (with ``dynamic=True`` the example size). Default:
            dynamic, traced at the model's test size (:func:`~sparseinst_zoo.export.wrapper.export_shape`).
        dynamic: dynamic height and width (multiples of 32), the default without a size; the batch is always dynamic.
        with_preprocess: take 0..255 pixels and normalise inside (the ``ExportWrapper`` contract, as ONNX);
            otherwise the program is the bare ``model.forward`` on a normalised batch returning the head dict.
        with_postprocess: with ``with_preprocess``, output ``(scores, labels, masks)`` instead of the heads.
        mask_threshold: the threshold of the mask-quality rescoring in the postprocessed ``scores``.
        input_dtype: pixel dtype for ``with_preprocess``.
        strict: torch.export's strict (TorchDynamo) tracing.

    Example:
        >>> import sparseinst_zoo
        >>> program = export_program(sparseinst_zoo.create_model("sparseinst_tiny_test"), 64, 64)  # doctest: +SKIP
        >>> program.module()(torch.randn(1, 3, 64, 64))["pred_masks"].shape  # doctest: +SKIP
        torch.Size([1, 10, 16, 16])
    """
    check_model(model)
    height, width, dynamic = export_shape(model, height, width, dynamic)
    mask_threshold = check_mask_threshold(mask_threshold)
    if with_postprocess and not with_preprocess:
        raise SparseInstError("with_postprocess needs with_preprocess=True (the ONNX-style pixel-input wrapper)")
    module: nn.Module = export_copy(model)
    if with_preprocess:
        cfg: Any = model.pretrained_cfg
        module = ExportWrapper(module, cfg.mean, cfg.std, with_postprocess, mask_threshold)
        example = example_input(height, width, EXAMPLE_BATCH, input_dtype)
    else:
        example = torch.randn(EXAMPLE_BATCH, 3, height, width, generator=torch.Generator().manual_seed(0))
    with quiet_export():
        return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(dynamic), strict=strict)


def save_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    **kwargs: Any,
) -> str:
    """:func:`export_program` then ``torch.export.save`` to ``path`` (``.pt2``, written atomically).

    Load it with ``torch.export.load(path).module()``.

    Example:
        >>> save_program(model, "/tmp/tiny.pt2", 64, 64, dynamic=True)  # doctest: +SKIP
        '/tmp/tiny.pt2'
    """
    target = output_target(path, ".pt2")
    program = export_program(model, height, width, **kwargs)
    atomic_save(target, lambda tmp: torch.export.save(program, tmp))
    return str(target)
