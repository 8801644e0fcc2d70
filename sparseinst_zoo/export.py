"""Export SparseInst to ONNX (exact, static or dynamic shapes, DCN included) and run it with onnxruntime.

The exported graph takes an RGB batch ``(B, 3, H, W)`` of 0..255 pixel values (``float32`` or ``uint8``) and normalises
it inside the graph with the model's mean/std. It returns either the raw heads (``pred_logits``, ``pred_masks``,
``pred_scores``, exactly as ``model(x)``) or, with ``with_postprocess=True``, per-query ``scores`` (class score x mask
quality), ``labels`` and mask probabilities ``masks`` at the input resolution. The file carries its metadata (model
name, labels, mean/std, input size, resize policy) so that :class:`OnnxPredictor` needs nothing else.

Exactness: the pyramid pooling is exported as two averaging-matrix products built from the run-time size, equal to
adaptive average pooling for every input size (see :func:`sparseinst_zoo.models.encoder.adaptive_avg_pool2d_matmul`);
deformable convs (the ``*_dcn_*`` variants) become ONNX ``DeformConv`` (opset >= 19), which onnxruntime implements.

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> path = export_onnx(model, "/tmp/tiny.onnx", height=64, width=96)  # doctest: +SKIP
    >>> results = OnnxPredictor(path).predict("image.jpg")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._io import atomic_save
from ._registry import PretrainedCfg
from .inference.postprocess import MASK_STRIDE, instance_scores, mask_quality
from .inference.predictor import Predictor
from .inference.results import Results
from .inference.sources import SourceItem
from .inference.transforms import SIZE_DIVISIBILITY, get_output_shape
from .models.encoder import adaptive_avg_pool2d_matmul
from .version import __version__

__all__ = [
    "RAW_OUTPUTS",
    "POSTPROCESSED_OUTPUTS",
    "DEFAULT_OPSET",
    "HALF_TOLERANCE",
    "ExportWrapper",
    "MatmulAdaptiveAvgPool2d",
    "exportable_pooling",
    "OnnxRuntimeModel",
    "create_session",
    "fit_max_size",
    "postprocess_graph",
    "OnnxMetadata",
    "OnnxPredictor",
    "export_onnx",
    "export_program",
    "save_program",
    "read_onnx_metadata",
    "verify_onnx",
]

_logger = logging.getLogger("sparseinst_zoo")

RAW_OUTPUTS: tuple[str, ...] = ("pred_logits", "pred_masks", "pred_scores")
POSTPROCESSED_OUTPUTS: tuple[str, ...] = ("scores", "labels", "masks")
INPUT_NAME = "images"
DEFAULT_OPSET = 19  # first opset with DeformConv
MIN_DCN_OPSET = 19
EXAMPLE_BATCH = 2  # a batch of 1 would make torch.export specialise the (dynamic) batch dimension to 1
InputDtype = Literal["float32", "uint8"]
_METADATA_VERSION = "1"
HALF_TOLERANCE = {"atol": 0.25, "rtol": 0.05}  # float16 graph vs float32 PyTorch: catches broken graphs, not fp16 noise


# ---------------------------------------------------------------------------------------------------------------------
# The exported module
# ---------------------------------------------------------------------------------------------------------------------
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
        self.half = half

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (images.float() - self.mean) / self.std
        outputs = self.model(x.half() if self.half else x)
        pred_logits, pred_masks, pred_scores = (outputs[name].float() for name in RAW_OUTPUTS)
        if not self.with_postprocess:
            return pred_logits, pred_masks, pred_scores
        return postprocess_graph(pred_logits, pred_masks, pred_scores, images.shape[-2:], self.mask_threshold)


def _check_model(model: nn.Module) -> None:
    missing = [name for name in ("pretrained_cfg", "config") if not hasattr(model, name)]
    if not isinstance(model, nn.Module) or missing:
        raise ValueError(
            f"export needs a SparseInst model from sparseinst_zoo.create_model(...), got {type(model).__name__}"
        )


def _check_size(height: int, width: int, what: str = "export size") -> tuple[int, int]:
    height, width = int(height), int(width)
    if min(height, width) < SIZE_DIVISIBILITY or height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY:
        raise ValueError(
            f"{what} must be positive multiples of {SIZE_DIVISIBILITY}, got {height}x{width}; e.g. use "
            f"{max(1, math.ceil(height / SIZE_DIVISIBILITY)) * SIZE_DIVISIBILITY}x"
            f"{max(1, math.ceil(width / SIZE_DIVISIBILITY)) * SIZE_DIVISIBILITY} (images are padded up to it)"
        )
    return height, width


def _has_deform_conv(model: nn.Module) -> bool:
    from torchvision.ops import DeformConv2d

    return any(isinstance(module, DeformConv2d) for module in model.modules())


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
                size = child.output_size
                sizes = (size, size) if isinstance(size, int) else tuple(size)
                if all(isinstance(s, int) for s in sizes):
                    setattr(parent, name, MatmulAdaptiveAvgPool2d(sizes))
    return model


def _export_copy(model: nn.Module, half: bool) -> nn.Module:
    """An eval-mode CPU copy with exportable pooling (the caller's model keeps its device, mode and dtype)."""
    model = exportable_pooling(copy.deepcopy(model).cpu().eval().float())
    return model.half() if half else model


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
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


def _dynamic_shapes(dynamic: bool) -> tuple[dict[int, Any]]:
    """Batch is always dynamic; height and width (multiples of 32) too when ``dynamic``."""
    dims: dict[int, Any] = {0: torch.export.Dim("batch", min=1, max=1024)}
    if dynamic:
        dims[2] = SIZE_DIVISIBILITY * torch.export.Dim("height_div32", min=1, max=512)
        dims[3] = SIZE_DIVISIBILITY * torch.export.Dim("width_div32", min=1, max=512)
    return (dims,)


def _example_input(height: int, width: int, batch_size: int, input_dtype: InputDtype, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (batch_size, 3, height, width), generator=generator, dtype=torch.uint8)
    return pixels if input_dtype == "uint8" else pixels.float()


# ---------------------------------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------------------------------
def _deform_conv_translation() -> dict[Any, Any]:
    """Map torchvision's ``deform_conv2d`` to ONNX ``DeformConv`` (same offset layout) for the dynamo exporter."""
    from onnxscript import opset19 as op

    def deform_conv2d(
        input, weight, offset, mask, bias,
        stride_h: int, stride_w: int, pad_h: int, pad_w: int, dil_h: int, dil_w: int,
        n_weight_grps: int, n_offset_grps: int, use_mask: bool,
    ):  # fmt: skip
        return op.DeformConv(
            input, weight, offset, bias, mask if use_mask else None,
            dilations=[dil_h, dil_w], group=n_weight_grps, offset_group=n_offset_grps,
            pads=[pad_h, pad_w, pad_h, pad_w], strides=[stride_h, stride_w],
        )  # fmt: skip

    return {torch.ops.torchvision.deform_conv2d.default: deform_conv2d}


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise RuntimeError(f"ONNX export needs {' and '.join(missing)}: pip install 'sparseinst-zoo[export]'")


def _atomic_target(path: str | os.PathLike[str], suffix: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"output path {str(target)!r} is a directory; give a file name such as model{suffix}")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _metadata(
    model: nn.Module, height: int, width: int, dynamic: bool, input_dtype: str, with_postprocess: bool,
    mask_threshold: float, half: bool, opset: int,
) -> dict[str, str]:  # fmt: skip
    cfg: PretrainedCfg = model.pretrained_cfg
    label_names = list(getattr(model, "label_names", ()) or ())
    return {
        "sparseinst_zoo.metadata_version": _METADATA_VERSION,
        "sparseinst_zoo.version": __version__,
        "model_name": str(getattr(model, "model_name", "sparseinst")),
        "pretrained_tag": cfg.name,
        "label_names": json.dumps(label_names),
        "num_classes": str(int(model.num_classes)),
        "num_masks": str(int(model.num_masks)),
        "mean": json.dumps([float(v) for v in cfg.mean]),
        "std": json.dumps([float(v) for v in cfg.std]),
        "input_name": INPUT_NAME,
        "input_dtype": input_dtype,
        "input_layout": "NCHW RGB, 0..255 pixel values, padded bottom/right to the input size",
        "input_height": "dynamic" if dynamic else str(height),
        "input_width": "dynamic" if dynamic else str(width),
        "dynamic": json.dumps(dynamic),
        "min_size": str(int(cfg.min_size)),
        "max_size": str(int(cfg.max_size)),
        "size_divisibility": str(SIZE_DIVISIBILITY),
        "mask_stride": str(MASK_STRIDE),
        "outputs": "postprocessed" if with_postprocess else "raw",
        "output_names": json.dumps(list(POSTPROCESSED_OUTPUTS if with_postprocess else RAW_OUTPUTS)),
        "mask_threshold": json.dumps(mask_threshold),
        "half": json.dumps(half),
        "opset": str(opset),
        "config": json.dumps(getattr(model, "config", {})),
    }


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int = 640,
    width: int = 640,
    *,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    half: bool = False,
    with_postprocess: bool = False,
    mask_threshold: float = 0.45,
    input_dtype: InputDtype = "float32",
    verify: bool = True,
) -> str:
    """Export ``model`` to an ONNX file with normalisation (and optionally postprocessing) inside the graph.

    Args:
        model: a SparseInst model (any variant; it is copied, the original is left as it is).
        path: the ``.onnx`` file to write (atomically: a temp file beside it, then renamed).
        height / width: input size, multiples of 32; with ``dynamic`` only the example size for tracing.
        dynamic: height and width are dynamic (any multiples of 32); the batch dimension is always dynamic.
        opset: ONNX opset (>= 19 for the DCN variants, whose deformable convs become ``DeformConv``).
        half: float16 weights and activations (for GPU runtimes; inputs/outputs stay float32/uint8).
        with_postprocess: output ``scores`` (B, N), ``labels`` (B, N) int64 and ``masks`` (B, N, H, W) probabilities
            instead of the raw heads (see :func:`postprocess_graph`).
        mask_threshold: rescoring threshold baked into a postprocessed graph.
        input_dtype: ``"float32"`` (default; exact parity with ``model.predict`` through :class:`OnnxPredictor`) or
            ``"uint8"`` (feed camera frames directly).
        verify: run the file with onnxruntime on a random pixel batch and raise a RuntimeError if it differs from
            the float32 PyTorch model (tolerance 1e-3, or :data:`HALF_TOLERANCE` for float16 exports).

    Returns:
        The path written.

    Raises:
        ValueError: bad sizes or options, or a DCN model with ``opset < 19``.

    Example:
        >>> import sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> export_onnx(model, "/tmp/tiny.onnx", height=64, width=96)  # doctest: +SKIP
        '/tmp/tiny.onnx'
    """
    _check_model(model)
    height, width = _check_size(height, width)
    if input_dtype not in ("float32", "uint8"):
        raise ValueError(f"input_dtype must be 'float32' or 'uint8', got {input_dtype!r}")
    if not 0.0 < mask_threshold < 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1), got {mask_threshold}")
    opset = int(opset)
    if opset < 13:
        raise ValueError(f"opset {opset} is too old; use opset >= 17 (default {DEFAULT_OPSET})")
    if opset < MIN_DCN_OPSET and _has_deform_conv(model):
        raise ValueError(
            f"{getattr(model, 'model_name', 'this model')} has deformable convolutions (DCN), which ONNX supports "
            f"from opset {MIN_DCN_OPSET} (DeformConv); export with opset={MIN_DCN_OPSET} or higher, use torch.export "
            "(sparseinst_zoo.export.save_program / `sparseinst export --format pt2`), or pick a non-DCN variant"
        )
    _require_onnx()
    target = _atomic_target(path, ".onnx")
    cfg = model.pretrained_cfg
    wrapper = ExportWrapper(_export_copy(model, half), cfg.mean, cfg.std, with_postprocess, mask_threshold, half)
    example = _example_input(height, width, EXAMPLE_BATCH, input_dtype)
    output_names = list(POSTPROCESSED_OUTPUTS if with_postprocess else RAW_OUTPUTS)
    start = time.perf_counter()
    try:
        with _quiet_export(), torch.no_grad():
            program = torch.onnx.export(
                wrapper, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                output_names=output_names, dynamic_shapes=_dynamic_shapes(dynamic),
                custom_translation_table=_deform_conv_translation(), optimize=True, verbose=False,
            )  # fmt: skip
    except Exception as err:  # the exporters raise many types; say what failed and what to try
        raise RuntimeError(
            f"ONNX export of {getattr(model, 'model_name', 'the model')} failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); try torch.export instead "
            "(`sparseinst export --format pt2`) or report the model and torch version"
        ) from err
    metadata = _metadata(model, height, width, dynamic, input_dtype, with_postprocess, mask_threshold, half, opset)
    program.model.metadata_props.update(metadata)
    atomic_save(target, lambda tmp: program.save(tmp, external_data=False))
    _logger.info("exported %s to %s in %.1f s", metadata["model_name"], target, time.perf_counter() - start)
    if verify:
        verify_onnx(model, target, height, width, raise_on_mismatch=True, **HALF_TOLERANCE if half else {})
    return str(target)


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 1,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    raise_on_mismatch: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Run the ONNX file and the PyTorch model on the same random pixel batch; max abs difference per output.

    Args:
        model: the PyTorch model the file was exported from.
        path: the ONNX file.
        height / width: the size to test (default: the exported size; required for dynamic exports).
        batch_size: images in the test batch.
        atol / rtol: tolerance for ``raise_on_mismatch`` (``|onnx - torch| <= atol + rtol * |torch|``).
        raise_on_mismatch: raise a RuntimeError if an output is outside the tolerance.
        seed: seed of the random batch.

    Example:
        >>> verify_onnx(model, "/tmp/tiny.onnx")  # doctest: +SKIP
        {'pred_logits': 4.8e-07, 'pred_masks': 2.4e-07, 'pred_scores': 1.2e-07}
    """
    meta = read_onnx_metadata(path)
    if meta.input_size is not None:
        height, width = height or meta.input_size[0], width or meta.input_size[1]
    if height is None or width is None:
        raise ValueError("verify_onnx: give height and width for a dynamic-size export")
    height, width = _check_size(height, width, "verification size")
    session = create_session(path)
    example = _example_input(height, width, batch_size, meta.input_dtype, seed)
    wrapper = ExportWrapper(
        _export_copy(model, False), meta.mean, meta.std, meta.outputs == "postprocessed", meta.mask_threshold
    )
    with torch.no_grad():
        expected = wrapper(example)
    got = session.run(None, {meta.input_name: example.numpy()})
    differences: dict[str, float] = {}
    for name, ref, out in zip(meta.output_names, expected, got):
        ref_np = ref.numpy()
        if out.shape != ref_np.shape:
            raise RuntimeError(f"verify_onnx: output {name} has shape {out.shape}, PyTorch gives {ref_np.shape}")
        diff = np.abs(out.astype(np.float64) - ref_np.astype(np.float64))
        differences[name] = float(diff.max()) if diff.size else 0.0
        if raise_on_mismatch and not np.all(diff <= atol + rtol * np.abs(ref_np)):
            raise RuntimeError(
                f"the ONNX file {str(path)!r} differs from PyTorch on {name} by up to {differences[name]:.3g} "
                f"(tolerance {atol} + {rtol} * |value|); please report this with the model name and versions"
            )
    return differences


# ---------------------------------------------------------------------------------------------------------------------
# Metadata and onnxruntime
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OnnxMetadata:
    """What :func:`export_onnx` stores in the file (``metadata_props``), parsed."""

    model_name: str
    label_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_name: str
    input_dtype: InputDtype
    input_size: tuple[int, int] | None  # None: dynamic height and width
    min_size: int
    max_size: int
    size_divisibility: int
    outputs: str  # "raw" or "postprocessed"
    output_names: tuple[str, ...]
    mask_threshold: float
    half: bool
    raw: Mapping[str, str]

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the ONNX file") -> OnnxMetadata:
        if "model_name" not in props or "mean" not in props or "input_dtype" not in props:
            raise ValueError(
                f"{source} has no sparseinst-zoo metadata (model name, mean/std, sizes); export it with "
                "sparseinst_zoo.export_onnx(...) or `sparseinst export`"
            )
        dynamic = json.loads(props.get("dynamic", "false"))
        size = None if dynamic else (int(props["input_height"]), int(props["input_width"]))
        return cls(
            model_name=props["model_name"],
            label_names=tuple(json.loads(props.get("label_names", "[]"))),
            mean=tuple(json.loads(props["mean"])),
            std=tuple(json.loads(props["std"])),
            input_name=props.get("input_name", INPUT_NAME),
            input_dtype=props["input_dtype"],  # type: ignore[arg-type]
            input_size=size,
            min_size=int(props.get("min_size", 640)),
            max_size=int(props.get("max_size", 853)),
            size_divisibility=int(props.get("size_divisibility", SIZE_DIVISIBILITY)),
            outputs=props.get("outputs", "raw"),
            output_names=tuple(json.loads(props.get("output_names", json.dumps(list(RAW_OUTPUTS))))),
            mask_threshold=float(json.loads(props.get("mask_threshold", "0.45"))),
            half=bool(json.loads(props.get("half", "false"))),
            raw=dict(props),
        )


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeError("running ONNX files needs onnxruntime: pip install 'sparseinst-zoo[export]'") from err
    return onnxruntime


def _check_onnx_path(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file not found: {path!r}; create one with `sparseinst export MODEL`")
    return path


def create_session(
    path: str | os.PathLike[str], providers: Sequence[Any] | None = None, num_threads: int | None = None
) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` (CPU by default; ``num_threads`` intra-op threads)."""
    ort = _require_onnxruntime()
    path = _check_onnx_path(path)
    options = ort.SessionOptions()
    if num_threads is not None:
        options.intra_op_num_threads = int(num_threads)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as err:  # onnxruntime raises its own exception types
        raise RuntimeError(f"onnxruntime cannot load {path!r}: {str(err).splitlines()[0]}") from err


def read_onnx_metadata(path_or_session: str | os.PathLike[str] | Any) -> OnnxMetadata:
    """The sparseinst-zoo metadata of an exported file (or of an open onnxruntime session).

    Example:
        >>> read_onnx_metadata("/tmp/tiny.onnx").input_size  # doctest: +SKIP
        (64, 96)
    """
    if isinstance(path_or_session, (str, os.PathLike)):
        path = _check_onnx_path(path_or_session)
        try:
            import onnx

            props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
        except ImportError:
            props = dict(create_session(path).get_modelmeta().custom_metadata_map)
        except Exception as err:  # onnx raises DecodeError and others for non-ONNX files
            raise ValueError(f"{path!r} is not a readable ONNX file: {str(err).splitlines()[0]}") from err
        return OnnxMetadata.from_props(props, repr(path))
    return OnnxMetadata.from_props(dict(path_or_session.get_modelmeta().custom_metadata_map))


def fit_max_size(height: int, width: int, min_size: int, max_size: int, box: tuple[int, int]) -> int:
    """The largest ``max_size`` (at most the given one) whose resize of a ``height x width`` image fits ``box``.

    The resize rule stays the model's (:func:`~sparseinst_zoo.inference.transforms.get_output_shape`); only the cap
    of the longer side is lowered when the image would not fit the fixed input size of an export.

    Example:
        >>> fit_max_size(480, 640, 640, 853, (640, 864)), fit_max_size(640, 480, 640, 853, (640, 864))
        (853, 640)
    """
    box_h, box_w = box

    def fits(cap: int) -> bool:
        new_h, new_w = get_output_shape(height, width, min_size, cap)
        return new_h <= box_h and new_w <= box_w

    if fits(max_size):
        return max_size
    # longer side limit so that the shorter side also fits, then step down over rounding
    if height >= width:
        cap = min(max_size, box_h, math.floor(box_w * height / width))
    else:
        cap = min(max_size, box_w, math.floor(box_h * width / height))
    cap = max(cap, 1)
    while cap > 1 and not fits(cap):
        cap -= 1
    if not fits(cap):
        raise ValueError(f"a {height}x{width} image cannot be resized into the {box_h}x{box_w} input of the export")
    return cap


class OnnxRuntimeModel(nn.Module):
    """An exported file behind the ``model(normalised batch) -> dict of heads`` interface of a SparseInst model.

    It lets :class:`~sparseinst_zoo.inference.predictor.Predictor` drive onnxruntime with its own preprocessing and
    postprocessing. The normalised batch is turned back into pixel values (rounded to the exact uint8 levels the
    resize produced; padding becomes exactly the mean colour, which the graph normalises to 0 as PyTorch pads), padded
    to the fixed input size of the export if it has one, and run.

    Args:
        session: an onnxruntime session of a raw-output export.
        metadata: its :class:`OnnxMetadata`.
    """

    def __init__(self, session: Any, metadata: OnnxMetadata) -> None:
        super().__init__()
        self.session = session
        self.metadata = metadata
        self._device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # Predictor reads the device from it
        self.model_name = metadata.model_name
        self.num_classes = len(metadata.label_names)
        self.pretrained_cfg = PretrainedCfg(
            architecture=metadata.model_name, label_names=metadata.label_names, num_classes=len(metadata.label_names),
            mean=tuple(metadata.mean), std=tuple(metadata.std), min_size=metadata.min_size, max_size=metadata.max_size,
        )  # fmt: skip
        self.register_buffer("mean", torch.tensor(metadata.mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(metadata.std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.metadata.label_names

    def pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Normalised batch -> the pixel batch the graph expects (exact levels, mean-colour padding)."""
        values = batch.float() * self.std + self.mean
        levels = values.round()
        exact = torch.where((values - levels).abs() < 1e-2, levels, values)  # undo float rounding of pixel levels
        if self.metadata.input_dtype == "uint8":
            return levels.clamp(0, 255).to(torch.uint8).numpy()
        return exact.numpy()

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = batch.detach().cpu()
        size = self.metadata.input_size
        if size is not None:
            height, width = batch.shape[-2:]
            if height > size[0] or width > size[1]:
                raise ValueError(
                    f"a {height}x{width} batch does not fit the {size[0]}x{size[1]} input of this ONNX file; "
                    "export with a larger size or --dynamic"
                )
            batch = F.pad(batch, (0, size[1] - width, 0, size[0] - height))
        outputs = self.session.run(None, {self.metadata.input_name: self.pixels(batch)})
        return {name: torch.from_numpy(np.asarray(out)) for name, out in zip(self.metadata.output_names, outputs)}


class OnnxPredictor(Predictor):
    """``model.predict`` on an exported ONNX file with onnxruntime: same preprocessing, postprocessing, Results.

    Sizes: a dynamic export sees exactly the batch ``model.predict`` builds (resize, pad to a multiple of 32), so its
    Results equal ``model.predict``'s. A fixed-size export (H, W) resizes with the model's rule too, lowering only the
    longer-side cap where an image would not fit, then pads the batch to exactly H x W. The network's output depends
    on the padded size (coordinate channels and activation-map normalisation span it), so the Results equal
    ``model.predict(image, max_size=...)`` when that pads to H x W as well (e.g. export 640x864 for landscape images
    with the 640/853 rule), and otherwise equal the PyTorch model run on the same H x W padded input.

    Args:
        path: a file written by :func:`export_onnx` with the raw heads (not ``with_postprocess``).
        providers: onnxruntime execution providers (default CPU), e.g. ``["CUDAExecutionProvider"]``.
        num_threads: onnxruntime intra-op threads (default: onnxruntime's choice).
        **kwargs: :class:`~sparseinst_zoo.inference.predictor.Predictor` options (``score_threshold``,
            ``mask_threshold``, ``max_detections``, ``min_size``, ``max_size``, ``sort_by_score``, ``batch_size``,
            ``resize_backend``, ``keep_image``).

    Example:
        >>> predictor = OnnxPredictor("sparseinst_r50_giam.onnx", num_threads=2)  # doctest: +SKIP
        >>> results = predictor.predict("image.jpg")  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        providers: Sequence[Any] | None = None,
        num_threads: int | None = None,
        **kwargs: Any,
    ) -> None:
        for unsupported in ("device", "half"):
            if kwargs.pop(unsupported, None) not in (None, False):
                raise ValueError(
                    f"OnnxPredictor has no {unsupported!r} option: pick onnxruntime providers instead, and export "
                    "with half=True for float16"
                )
        self.path = _check_onnx_path(path)
        metadata = read_onnx_metadata(self.path)
        if metadata.outputs != "raw":
            raise ValueError(
                f"{self.path!r} was exported with postprocessing inside the graph (outputs "
                f"{list(metadata.output_names)}); OnnxPredictor needs the raw heads: export again without "
                "--with-postprocess"
            )
        self.session = create_session(self.path, providers, num_threads)
        self.metadata = metadata
        super().__init__(OnnxRuntimeModel(self.session, metadata), **kwargs)

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The fixed (H, W) input of the export, or None if it is dynamic."""
        return self.metadata.input_size

    def predict_images(
        self, images: Sequence[np.ndarray], items: Sequence[SourceItem] | None = None, *, max_size: int | None = None
    ) -> list[Results]:
        """As :meth:`Predictor.predict_images`; for fixed-size exports each image's longer-side cap fits the input."""
        configured = self.max_size if max_size is None else int(max_size)
        if self.input_size is None:
            return super().predict_images(images, items, max_size=configured)
        if items is None:
            items = [SourceItem(image) for image in images]
        groups: dict[int, list[int]] = {}
        for index, image in enumerate(images):
            cap = fit_max_size(int(image.shape[0]), int(image.shape[1]), self.min_size, configured, self.input_size)
            groups.setdefault(cap, []).append(index)
        results: list[Results | None] = [None] * len(images)
        for cap, indices in groups.items():
            chunk = super().predict_images([images[i] for i in indices], [items[i] for i in indices], max_size=cap)
            for i, result in zip(indices, chunk):
                results[i] = result
        return results  # type: ignore[return-value]

    def predict(self, source: Any = None, stream: bool = False) -> list[Results] | Iterator[Results]:
        """Predict ``source`` (paths, arrays, tensors, PIL images, videos; see ``model.predict``)."""
        return self(source, stream=stream)


# ---------------------------------------------------------------------------------------------------------------------
# torch.export
# ---------------------------------------------------------------------------------------------------------------------
def export_program(
    model: nn.Module,
    height: int = 640,
    width: int = 640,
    *,
    dynamic: bool = False,
    with_preprocess: bool = False,
    with_postprocess: bool = False,
    input_dtype: InputDtype = "float32",
    strict: bool = False,
) -> torch.export.ExportedProgram:
    """``torch.export`` the model (its forward, or the ONNX-style wrapper) into an ``ExportedProgram``.

    Args:
        model: a SparseInst model (copied to CPU in eval mode; DCN variants included).
        height / width: example input size (multiples of 32).
        dynamic: dynamic height and width (multiples of 32); the batch dimension is always dynamic.
        with_preprocess: take 0..255 pixels and normalise inside (the :class:`ExportWrapper` contract, as ONNX);
            otherwise the program is the bare ``model.forward`` on a normalised batch returning the head dict.
        with_postprocess: with ``with_preprocess``, output ``(scores, labels, masks)`` instead of the heads.
        input_dtype: pixel dtype for ``with_preprocess``.
        strict: torch.export's strict (TorchDynamo) tracing.

    Example:
        >>> import sparseinst_zoo
        >>> program = export_program(sparseinst_zoo.create_model("sparseinst_tiny_test"), 64, 64)  # doctest: +SKIP
        >>> program.module()(torch.randn(1, 3, 64, 64))["pred_masks"].shape  # doctest: +SKIP
        torch.Size([1, 10, 16, 16])
    """
    _check_model(model)
    height, width = _check_size(height, width)
    if with_postprocess and not with_preprocess:
        raise ValueError("with_postprocess needs with_preprocess=True (the ONNX-style pixel-input wrapper)")
    module: nn.Module = _export_copy(model, False)
    if with_preprocess:
        cfg = model.pretrained_cfg
        module = ExportWrapper(module, cfg.mean, cfg.std, with_postprocess)
        example = _example_input(height, width, EXAMPLE_BATCH, input_dtype)
    else:
        example = torch.randn(EXAMPLE_BATCH, 3, height, width, generator=torch.Generator().manual_seed(0))
    with _quiet_export():
        return torch.export.export(module, (example,), dynamic_shapes=_dynamic_shapes(dynamic), strict=strict)


def save_program(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int = 640,
    width: int = 640,
    **kwargs: Any,
) -> str:
    """:func:`export_program` then ``torch.export.save`` to ``path`` (``.pt2``, written atomically).

    Load it with ``torch.export.load(path).module()``.

    Example:
        >>> save_program(model, "/tmp/tiny.pt2", 64, 64, dynamic=True)  # doctest: +SKIP
        '/tmp/tiny.pt2'
    """
    target = _atomic_target(path, ".pt2")
    program = export_program(model, height, width, **kwargs)
    atomic_save(target, lambda tmp: torch.export.save(program, tmp))
    return str(target)
