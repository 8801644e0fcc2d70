"""The module every exporter traces: the model with normalisation (and optionally postprocessing) inside.

Also the shared preparation of an export: an eval-mode CPU copy with exportable pooling, size checks, example
inputs, dynamic-shape specs and quiet exporters.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._constants import SIZE_DIVISIBILITY
from ..errors import SparseInstError
from ..inference.backends.metadata import RAW_OUTPUTS, InputDtype
from ..inference.postprocess import instance_scores, mask_quality
from ..inference.transforms import padded_shape
from ..models.decoder import InstanceBranch
from ..models.encoder import adaptive_avg_pool2d_matmul

__all__ = [
    "EXAMPLE_BATCH",
    "ExportWrapper",
    "MatmulAdaptiveAvgPool2d",
    "check_mask_threshold",
    "check_model",
    "check_size",
    "dynamic_shapes",
    "example_input",
    "export_copy",
    "export_shape",
    "exportable_pooling",
    "has_deform_conv",
    "output_target",
    "postprocess_graph",
    "quiet_export",
]

EXAMPLE_BATCH = 2  # a batch of 1 would make torch.export specialise the (dynamic) batch dimension to 1


def postprocess_graph(
    pred_logits: torch.Tensor,
    pred_masks: torch.Tensor,
    pred_scores: torch.Tensor,
    output_size: Sequence[int] | torch.Size,
    mask_threshold: float = 0.45,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed-shape postprocessing for a graph: per-query final scores, labels and mask probabilities.

    ``scores`` are the reference's final scores (``sqrt(class prob * objectness)`` times the mask quality at stride 4,
    the same numbers :func:`~sparseinst_zoo.inference.postprocess.postprocess` returns for its kept queries);
    ``masks`` are the probabilities upsampled bilinearly to ``output_size`` (the padded input size). Thresholding
    (scores > t, masks > mask_threshold), cropping the padding and resizing to the original image are left to the
    runtime, because they give data-dependent shapes.
    """
    scores, labels = instance_scores(pred_logits, pred_scores)
    mask_prob = pred_masks.float().sigmoid()
    masks = F.interpolate(mask_prob, size=output_size, mode="bilinear", align_corners=False)
    return scores * mask_quality(mask_prob, mask_threshold), labels, masks


class ExportWrapper(nn.Module):
    """``model`` with the input normalisation (and optionally the postprocessing) inside, for export.

    Args:
        model: a SparseInst model (its ``forward`` takes a normalised float batch).
        mean / std: per-channel normalisation on 0..255 values (RGB).
        with_postprocess: return ``(scores, labels, masks)`` (see :func:`postprocess_graph`) instead of the heads.
        mask_threshold: the threshold of the mask-quality rescoring (postprocessing only).
        half: run the network in float16 (inputs are normalised in float32 first, outputs are float32 again).

    Example:
        >>> import torch, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> wrapper = ExportWrapper(model, model.pretrained_cfg.mean, model.pretrained_cfg.std)
        >>> [t.shape[1] for t in wrapper(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))]
        [10, 10, 10]
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        with_postprocess: bool = False,
        mask_threshold: float = 0.45,
        half: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.with_postprocess = with_postprocess
        self.mask_threshold = float(mask_threshold)
        self.fp16 = half  # not ``self.half``: that would shadow nn.Module.half()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.float() - self.mean) / self.std
        outputs = self.model(x.half() if self.fp16 else x)
        pred_logits, pred_masks, pred_scores = (outputs[name].float() for name in RAW_OUTPUTS)
        if not self.with_postprocess:
            return pred_logits, pred_masks, pred_scores
        return postprocess_graph(pred_logits, pred_masks, pred_scores, images.shape[-2:], self.mask_threshold)


class MatmulAdaptiveAvgPool2d(nn.Module):
    """:class:`torch.nn.AdaptiveAvgPool2d` computed as averaging-matrix products (exact in every exporter)."""

    def __init__(self, output_size: int | tuple[int, int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool2d_matmul(x, self.output_size)


def exportable_pooling(model: nn.Module) -> nn.Module:
    """Replace (in place) every ``nn.AdaptiveAvgPool2d`` with a fixed output size, e.g. in the attention of PVTv2-Li
    backbones, by :class:`MatmulAdaptiveAvgPool2d`; the dynamo exporter would bake the traced input size into it."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.AdaptiveAvgPool2d):
                size: Any = child.output_size
                sizes = (size, size) if isinstance(size, int) else tuple(size)
                if all(isinstance(s, int) for s in sizes):
                    setattr(parent, name, MatmulAdaptiveAvgPool2d((int(sizes[0]), int(sizes[1]))))
    return model


def export_copy(model: nn.Module, half: bool = False, *, graph: bool = True) -> nn.Module:
    """An eval-mode CPU copy with exportable pooling (the caller's model keeps its device, mode and dtype).

    ``graph`` (what the exporters trace) also normalises the instance activation maps in the log domain (see
    :class:`~sparseinst_zoo.models.decoder.InstanceBranch`), which runtimes compute accurately; ``graph=False`` keeps
    the eager arithmetic, the reference an export is verified against.
    """
    model = exportable_pooling(copy.deepcopy(model).cpu().eval().float())
    for module in model.modules():
        if isinstance(module, InstanceBranch):
            module.log_domain_iam = graph
    return model.half() if half else model


def check_model(model: nn.Module) -> None:
    """Raise a clear error unless ``model`` is a SparseInst model (it has ``pretrained_cfg`` and ``config``)."""
    missing = [name for name in ("pretrained_cfg", "config") if not hasattr(model, name)]
    if not isinstance(model, nn.Module) or missing:
        raise SparseInstError(
            f"export needs a SparseInst model from sparseinst_zoo.create_model(...), got {type(model).__name__}"
        )


def check_mask_threshold(mask_threshold: float) -> float:
    """``mask_threshold`` as a float if it is a probability strictly between 0 and 1, else a one-line error."""
    if not 0.0 < float(mask_threshold) < 1.0:
        raise SparseInstError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
    return float(mask_threshold)


def check_size(height: int, width: int, what: str = "export size") -> tuple[int, int]:
    """``(height, width)`` as ints if both are positive multiples of 32, else an error suggesting the next ones."""
    height, width = int(height), int(width)
    if min(height, width) < SIZE_DIVISIBILITY or height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY:
        raise SparseInstError(
            f"{what} must be positive multiples of {SIZE_DIVISIBILITY}, got {height}x{width}; e.g. use "
            f"{max(1, math.ceil(height / SIZE_DIVISIBILITY)) * SIZE_DIVISIBILITY}x"
            f"{max(1, math.ceil(width / SIZE_DIVISIBILITY)) * SIZE_DIVISIBILITY} (images are padded up to it)"
        )
    return height, width


def export_shape(
    model: nn.Module, height: int | None = None, width: int | None = None, dynamic: bool | None = None
) -> tuple[int, int, bool]:
    """``(height, width, dynamic)`` of an export: the size traced and verified at, and whether H and W are dynamic.

    With neither ``height`` nor ``width`` the export is dynamic (unless ``dynamic=False``) at the model's test size
    in multiples of 32: SparseInst's outputs depend on the padded size, so only a dynamic graph gives
    ``model.predict``'s results for every image. A given size is fixed unless ``dynamic=True``.

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> export_shape(model), export_shape(model, 64, 96)
        ((64, 96, True), (64, 96, False))
    """
    if (height is None) != (width is None):
        raise SparseInstError("height and width go together: give both for a fixed input size, or neither (dynamic)")
    if height is None or width is None:
        cfg: Any = getattr(model, "pretrained_cfg", None)
        height, width = padded_shape(int(cfg.min_size), int(cfg.max_size))
        return height, width, dynamic is not False
    return (*check_size(height, width), bool(dynamic))


def has_deform_conv(model: nn.Module) -> bool:
    """Whether ``model`` holds torchvision deformable convolutions (the ``*_dcn_*`` variants)."""
    from torchvision.ops import DeformConv2d

    return any(isinstance(module, DeformConv2d) for module in model.modules())


#: which exporter writes each file kind: a file is loaded by its suffix, so each export keeps its own
_WRITERS = {".onnx": "export_onnx", ".xml": "export_openvino", ".pt2": "save_program"}


def output_target(path: str | os.PathLike[str], suffix: str) -> Path:
    """The file to write (its folder created); a folder, or a name without ``suffix``, is an error.

    Example:
        >>> output_target("m.xml", ".onnx")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparseinst_zoo.errors.SparseInstError: 'm.xml' does not end in .onnx, ... 'm.onnx' (export_openvino writes ...)
    """
    target = Path(path)
    if target.is_dir():
        raise SparseInstError(f"output path {str(target)!r} is a directory; give a file name such as model{suffix}")
    given = target.suffix.lower()
    if given != suffix:  # predict and the loaders pick the runtime by suffix: m.xml holding ONNX would fail later
        writer = f" ({_WRITERS[given]} writes {given} files)" if given in _WRITERS else ""
        raise SparseInstError(
            f"{str(target)!r} does not end in {suffix}, the file this export writes; name it e.g. "
            f"{str(target.with_suffix(suffix) if writer else Path(f'{target}{suffix}'))!r}{writer}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the exporters' progress prints and known-harmless warnings (errors still propagate)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_logger = logging.getLogger("torch.onnx")
        level = onnx_logger.level
        onnx_logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            onnx_logger.setLevel(level)


def dynamic_shapes(dynamic: bool) -> tuple[dict[int, Any]]:
    """Batch is always dynamic; height and width (multiples of 32) too when ``dynamic``."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic:
        dims[2] = SIZE_DIVISIBILITY * torch.export.Dim("height_div32", min=1, max=512)
        dims[3] = SIZE_DIVISIBILITY * torch.export.Dim("width_div32", min=1, max=512)
    return (dims,)


def example_input(height: int, width: int, batch_size: int, input_dtype: InputDtype, seed: int = 0) -> torch.Tensor:
    """A seeded random pixel batch ``(B, 3, H, W)`` of 0..255 values in ``input_dtype``."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch_size, 3, height, width), generator=generator, dtype=torch.uint8)
    return pixels if input_dtype == "uint8" else pixels.float()
