"""Inference fast paths: BatchNorm folding, channels_last, fp16/bf16 autocast, ``torch.compile`` and CUDA graphs.

:func:`optimize_for_inference` returns a new :class:`OptimizedModel` (the model you pass is never modified, so the
model you train stays as it was). Its ``forward`` takes the same normalised float batch as :class:`SparseInst` and
returns the same dict of **float32** logits, so the predictor and the postprocessing work unchanged.

Tolerances against the fp32 eager model (checked by ``tests/test_optimize.py``, see ``docs/performance.md``):

* ``fold_bn`` and ``channels_last`` (fp32): the same function up to float rounding; logits within ``1e-4``
  (absolute, for logits of order 1-10; observed ~1e-5).
* ``bf16`` / ``fp16`` autocast: the same instances (same top class), mask IoU >= 0.98 for the stride-4 masks
  thresholded at 0.45, and probabilities (sigmoid of the logits) within 0.02 in bf16 / 0.005 in fp16.
* ``compile``: the same tolerance as the precision it compiles; CUDA graphs replay exactly what was captured.

Example:
    >>> import torch, sparseinst_zoo
    >>> from sparseinst_zoo.inference.optimize import optimize_for_inference
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    >>> fast = optimize_for_inference(model, channels_last=True)
    >>> fast(torch.randn(1, 3, 64, 64))["pred_masks"].shape
    torch.Size([1, 10, 16, 16])
"""

from __future__ import annotations

import copy
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

import torch
import torch.fx
from torch import nn
from torchvision.ops import DeformConv2d
from torchvision.ops.misc import FrozenBatchNorm2d as TorchvisionFrozenBN

from .._device import model_device
from ..errors import Argument, SparseInstError
from ..models._hub_mixin import PredictMixin
from .precision import autocast_dtype, parse_precision

__all__ = [
    "COMPILE_MODES",
    "CUDAGraphRunner",
    "OptimizedModel",
    "fold_batch_norm",
    "optimize_for_inference",
    "resolve_compile_mode",
]

_logger = logging.getLogger("sparseinst_zoo")

COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# torch.compile modes that already capture CUDA graphs themselves (inductor's cudagraph trees).
_COMPILE_MODES_WITH_CUDA_GRAPHS = ("reduce-overhead", "max-autotune")
_CUDA_GRAPHS = Argument("cuda_graphs", True)
DEFAULT_BATCH_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)

try:  # timm's own frozen BN (+ activation) layers; timm.layers.freeze_batch_norm_2d produces torchvision's FrozenBN
    from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
except ImportError:  # pragma: no cover - timm always ships them in the supported versions
    BatchNormAct2d = FrozenBatchNormAct2d = None  # type: ignore[assignment,misc]

_CONV_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, DeformConv2d)
_BN_TYPES: tuple[type[nn.Module], ...] = tuple(
    t for t in (nn.modules.batchnorm._BatchNorm, TorchvisionFrozenBN, FrozenBatchNormAct2d) if t is not None
)


# ----------------------------------------------------------------------------------------------- BatchNorm folding
class _ConvBnTracer(torch.fx.Tracer):
    """An fx tracer that keeps convolutions and every BatchNorm flavour as opaque leaf calls.

    While fx traces, it patches ``nn.Module.__call__`` and ``__getattr__`` for the whole process; module calls from
    any other thread (a prediction running beside the fold of another copy) pass straight through to the module
    instead of being recorded into this graph, which fx refuses with ``NameError``.
    """

    def trace(
        self, root: nn.Module | Callable[..., Any], concrete_args: dict[str, Any] | None = None
    ) -> torch.fx.Graph:
        self._tracing_thread = threading.get_ident()
        return super().trace(root, concrete_args)

    def _other_thread(self) -> bool:
        return threading.get_ident() != getattr(self, "_tracing_thread", None)

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if self._other_thread():
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict[str, Any]) -> Any:
        if self._other_thread():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, _CONV_TYPES + _BN_TYPES) or super().is_leaf_module(m, module_qualified_name)


class _BatchNormLike(Protocol):
    """What folding reads from every BatchNorm flavour of :data:`_BN_TYPES` (torch, torchvision and timm)."""

    eps: float
    running_mean: torch.Tensor | None
    running_var: torch.Tensor | None
    weight: torch.Tensor | None
    bias: torch.Tensor | None


_Conv: TypeAlias = nn.Conv2d | DeformConv2d  # the convolutions a BatchNorm folds into


def _bn_scale_shift(bn: _BatchNormLike) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(scale, shift) in float64 with ``bn(x) == x * scale + shift`` in eval mode, or None if it is not affine-able."""
    running_mean = getattr(bn, "running_mean", None)
    running_var = getattr(bn, "running_var", None)
    if running_mean is None or running_var is None:  # BatchNorm2d(track_running_stats=False) uses batch statistics
        return None
    weight = getattr(bn, "weight", None)
    bias = getattr(bn, "bias", None)
    var = running_var.detach().double()
    scale = torch.rsqrt(var + float(bn.eps))
    if weight is not None:
        scale = scale * weight.detach().double()
    shift = -running_mean.detach().double() * scale
    if bias is not None:
        shift = shift + bias.detach().double()
    return scale, shift


def _foldable_conv(conv: nn.Module, scale: torch.Tensor) -> _Conv | None:
    """``conv`` if ``scale`` (one entry per BatchNorm channel) can be folded into it, else None."""
    # exact types only: subclasses such as timm's StdConv2d / Conv2dSame transform the weight in forward
    if type(conv) not in _CONV_TYPES:
        return None
    plain = cast(_Conv, conv)
    return plain if plain.out_channels == scale.numel() and plain.weight.ndim == 4 else None


def _fold_into_conv(conv: _Conv, scale: torch.Tensor, shift: torch.Tensor) -> None:
    """Rescale ``conv``'s output channels by ``scale`` and add ``shift`` (computed in float64, stored as before)."""
    weight = conv.weight
    folded_weight = weight.detach().double() * scale.to(weight.device).reshape(-1, 1, 1, 1)
    old_bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    folded_bias = old_bias.to(weight.device) * scale.to(weight.device) + shift.to(weight.device)
    conv.weight = nn.Parameter(folded_weight.to(weight.dtype), requires_grad=weight.requires_grad)
    conv.bias = nn.Parameter(folded_bias.to(weight.dtype), requires_grad=weight.requires_grad)


def _bn_replacement(bn: nn.Module) -> nn.Module:
    """What a folded BatchNorm becomes: nothing, or the dropout + activation that timm's ``*NormAct2d`` applied."""
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Module) and isinstance(act, nn.Module):  # timm BatchNormAct2d / FrozenBatchNormAct2d
        return nn.Sequential(drop, act)
    return nn.Identity()


def _set_submodule(root: nn.Module, target: str, module: nn.Module) -> None:
    parent_name, _, child = target.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)


def _module_target(node: object) -> str | None:
    """The submodule path an fx node calls, or None for any other node (for ``call_module`` it is always a str)."""
    if isinstance(node, torch.fx.Node) and node.op == "call_module" and isinstance(node.target, str):
        return node.target
    return None


def _fold_in_traced(root: nn.Module) -> int:
    """Fold every ``conv -> BN`` pair that fx finds in ``root`` (BN the conv output's only user). Returns the count."""
    graph = _ConvBnTracer().trace(root)
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if (target := _module_target(node)) is not None:
            calls[target] = calls.get(target, 0) + 1
    folded = 0
    for node in graph.nodes:
        bn_target = _module_target(node)
        if bn_target is None or not isinstance(bn := root.get_submodule(bn_target), _BN_TYPES):
            continue
        source = node.args[0] if node.args else None
        conv_target = _module_target(source)
        if conv_target is None or len(cast(torch.fx.Node, source).users) != 1:
            continue
        if calls[bn_target] != 1 or calls[conv_target] != 1:  # a shared module cannot be folded for one use
            continue
        scale_shift = _bn_scale_shift(cast(_BatchNormLike, bn))
        conv = None if scale_shift is None else _foldable_conv(root.get_submodule(conv_target), scale_shift[0])
        if conv is None or scale_shift is None:
            continue
        _fold_into_conv(conv, *scale_shift)
        _set_submodule(root, bn_target, _bn_replacement(bn))
        folded += 1
    return folded


def _count_batch_norms(module: nn.Module) -> int:
    return sum(isinstance(m, _BN_TYPES) for m in module.modules())


def fold_batch_norm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Fold every BatchNorm (frozen or not, used in eval mode) into the convolution that feeds it.

    Works for ``nn.Conv2d`` and torchvision's ``DeformConv2d`` (the DCN backbones: the BN follows the deformable
    conv, whose output channels it rescales), for ``nn.BatchNorm2d`` (eval statistics, e.g. CSPDarkNet), torchvision /
    timm ``FrozenBatchNorm2d`` and timm ``BatchNormAct2d`` (the activation is kept). The result computes the same
    function as ``model.eval()`` up to float rounding (~1e-6 relative). BatchNorms not directly after a conv
    (or whose conv output is also used elsewhere) are left as they are.

    Args:
        model: the model; each child with BatchNorms (``model.backbone`` for SparseInst) is traced with ``torch.fx``.
        inplace: modify ``model`` itself; by default a deep copy is folded and returned, so a model you keep
            training is never changed (a folded model has no BatchNorm left to train).

    Returns:
        The folded model (in eval mode).

    Example:
        >>> import torch, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> folded = fold_batch_norm(model)
        >>> x = torch.randn(1, 3, 64, 64)
        >>> torch.allclose(folded(x)["pred_logits"], model(x)["pred_logits"], atol=1e-5)
        True
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    total_bn = _count_batch_norms(model)
    if total_bn == 0:
        return model
    folded = 0
    # trace the smallest sub-trees holding BatchNorms (SparseInst's forward validates real tensors, fx gives proxies)
    roots = [model] if not hasattr(model, "backbone") else [m for m in model.children() if _count_batch_norms(m)]
    for root in roots:
        try:
            folded += _fold_in_traced(root)
        except Exception as err:  # noqa: BLE001 - any fx failure only means "not folded", never a wrong model
            warnings.warn(
                f"could not trace {type(root).__name__} to fold its BatchNorms ({type(err).__name__}: {err}); "
                "they are kept (outputs unchanged, inference a little slower)",
                stacklevel=2,
            )
    left = total_bn - folded
    _logger.debug("folded %d BatchNorm layers into convolutions (%d left as they were)", folded, left)
    return model


# ------------------------------------------------------------------------------------------------ option parsing
def resolve_compile_mode(compile: bool | str | None) -> str | None:
    """Normalise the ``compile`` option: None/False -> None, True -> 'default', else one of :data:`COMPILE_MODES`."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return "default"
    if compile not in COMPILE_MODES:
        raise SparseInstError(f"compile must be a bool or one of {COMPILE_MODES}, got {compile!r}")
    return compile


# ---------------------------------------------------------------------------------------------------- CUDA graphs
@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    static_input: torch.Tensor
    static_output: dict[str, torch.Tensor]


class CUDAGraphRunner:
    """Replay a captured CUDA graph of ``fn`` for each input shape, with the batch padded up to a bucket.

    A video or camera stream has one padded frame size, so after the first frame every call is one graph replay
    (no Python or kernel-launch overhead). Batches are padded with the previous content up to the next size in
    ``batch_buckets`` (SparseInst has no cross-image operations, so the padding rows never change the real ones), so
    the last, smaller batch of a folder reuses a graph too. Spatial sizes are not padded further: the coordinate
    channels and the activation-map normalisation depend on the padded size, so a larger pad would change results.

    Args:
        fn: the network (eager or compiled) taking a CUDA tensor and returning a dict of tensors.
        batch_buckets: batch sizes graphs are captured for (a larger batch is captured at its own size).
        max_graphs: graphs kept (least recently used are released; each holds its own memory pool).
        warmup_iters: eager runs on a side stream before a capture (lets cuDNN / compile pick their kernels).
        clone_outputs: return copies; with False the tensors are the graph's buffers, overwritten by the next call.

    Calls from several threads take turns (a lock around copy-in, replay and copy-out): every Predictor on one model
    and options shares this runner, and its graphs have one input and one output buffer each.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
        max_graphs: int = 8,
        warmup_iters: int = 3,
        clone_outputs: bool = True,
    ) -> None:
        if max_graphs < 1:
            raise SparseInstError(f"max_graphs must be >= 1, got {max_graphs}")
        self.fn = fn
        self.batch_buckets = tuple(sorted(int(b) for b in batch_buckets))
        self.max_graphs = max_graphs
        self.warmup_iters = warmup_iters
        self.clone_outputs = clone_outputs
        self._graphs: OrderedDict[tuple[Any, ...], _Graph] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def num_graphs(self) -> int:
        """Graphs currently captured."""
        return len(self._graphs)

    def bucket(self, batch_size: int) -> int:
        """The batch size a graph is captured for when ``batch_size`` images come in."""
        return next((b for b in self.batch_buckets if b >= batch_size), batch_size)

    def _capture(self, example: torch.Tensor) -> _Graph:
        with torch.cuda.device(example.device):  # torch.cuda.graph captures on the current device
            static_input = example.clone()
            side = torch.cuda.Stream(device=example.device)
            side.wait_stream(torch.cuda.current_stream(example.device))
            with torch.cuda.stream(side):
                for _ in range(self.warmup_iters):
                    self.fn(static_input)
            torch.cuda.current_stream(example.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_output = self.fn(static_input)
        return _Graph(graph, static_input, static_output)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not images.is_cuda:
            raise SparseInstError(f"CUDA graphs need the input on a CUDA device, got a tensor on {images.device}")
        with self._lock:  # another thread's copy-in between this copy-in and replay would swap the results
            return self._replay(images)

    def _replay(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = images.shape[0]
        bucket = self.bucket(batch)
        channels_last = images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last)
        key = (bucket, *images.shape[1:], images.dtype, images.device, channels_last)
        entry = self._graphs.get(key)
        if entry is None:
            example = images
            if bucket > batch:
                pad = images[-1:].expand(bucket - batch, *images.shape[1:])
                example = torch.cat([images, pad])
                if channels_last:
                    example = example.contiguous(memory_format=torch.channels_last)
            entry = self._capture(example)
            self._graphs[key] = entry
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            entry.static_input[:batch].copy_(images)
        entry.graph.replay()
        if self.clone_outputs:
            return {k: v[:batch].clone() for k, v in entry.static_output.items()}
        return {k: v[:batch] for k, v in entry.static_output.items()}

    def reset(self) -> None:
        """Release every captured graph (and its memory pool)."""
        self._graphs.clear()


# ----------------------------------------------------------------------------------------------- optimised model
class _AutocastSafeDeformConv2d(DeformConv2d):
    """DeformConv2d that always runs in float32: torchvision's CPU kernel has no bf16/fp16 and CUDA autocasts it."""

    def forward(self, input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.weight.dtype
        with torch.autocast(input.device.type, enabled=False):
            return super().forward(input.to(dtype), offset.to(dtype), None if mask is None else mask.to(dtype))


def _make_deform_convs_autocast_safe(model: nn.Module) -> None:
    for module in model.modules():
        if type(module) is DeformConv2d:
            module.__class__ = _AutocastSafeDeformConv2d


class _Network(nn.Module):
    """The network under autocast, with channels_last inputs, returning float32 outputs (what gets compiled)."""

    def __init__(self, model: nn.Module, autocast_dtype: torch.dtype | None, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.autocast_dtype = autocast_dtype
        self.channels_last = channels_last

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            return self.model(images)
        # cache_enabled=False: cached weight casts must not outlive a CUDA-graph capture
        with torch.autocast(images.device.type, dtype=self.autocast_dtype, cache_enabled=False):
            outputs = self.model(images)
        return {k: v.float() for k, v in outputs.items()}


class OptimizedModel(PredictMixin, nn.Module):
    """An inference-only SparseInst: same inputs and float32 outputs, faster. Build it with
    :func:`optimize_for_inference`.

    ``model`` is the (folded, converted) eager model, ``options`` the choices made. Attributes the predictor reads
    (``pretrained_cfg``, ``label_names``, ``num_classes``, ``config``, ``model_name``, ``check_input``) come from
    ``model``, and :meth:`predict` runs the normal predictor on this optimised network.
    """

    def __init__(
        self,
        model: nn.Module,
        options: dict[str, Any],
        network: nn.Module,
        runner: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    ) -> None:
        super().__init__()
        self.model = model
        self.options = dict(options)
        # not registered as sub-modules: they share ``model``'s parameters, which must appear once in state_dict()
        self.__dict__["_network"] = network
        self.__dict__["_runner"] = runner

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("pretrained_cfg", "label_names", "num_classes", "num_masks", "config", "model_name"):
                return getattr(super().__getattr__("model"), name)
            raise

    def check_input(self, images: torch.Tensor) -> None:
        """Validate a batch like :meth:`SparseInst.check_input`."""
        check = getattr(self.model, "check_input", None)
        if check is not None:
            check(images)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(images)
        device = next(self.model.parameters()).device
        if images.device != device:
            raise SparseInstError(
                f"input is on {images.device} but the optimised model is on {device}; "
                "move the batch (or optimise the model for that device)"
            )
        with torch.inference_mode():
            return self._runner(images)

    def train(self, mode: bool = True) -> OptimizedModel:
        if mode:
            raise RuntimeError(
                "an OptimizedModel is for inference only (BatchNorms are folded, weights frozen); "
                "train the original model and call optimize_for_inference again"
            )
        return super().train(False)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


def optimize_for_inference(
    model: nn.Module,
    *,
    fold_bn: bool = True,
    channels_last: bool = False,
    precision: str = "fp32",
    compile: bool | str | None = None,
    cuda_graphs: bool = False,
    device: torch.device | str | None = None,
    batch_buckets: Sequence[int] = DEFAULT_BATCH_BUCKETS,
    max_graphs: int = 8,
    cudnn_benchmark: bool = True,
) -> OptimizedModel:
    """Make an inference-only copy of ``model`` with the chosen fast paths; ``model`` itself is left untouched.

    Args:
        model: a :class:`SparseInst` (any module with the same forward contract).
        fold_bn: fold BatchNorms into the preceding convolutions (exact up to float rounding).
        channels_last: NHWC weights and inputs (faster convolutions on tensor-core GPUs and oneDNN CPUs).
        precision: 'fp32', 'fp16' or 'bf16'; the reduced ones run the network under autocast (matmuls and convs in
            16 bit; softmax, sums and normalisations stay in float32) and return float32 outputs.
        compile: ``torch.compile`` the network: True / 'default', 'reduce-overhead', 'max-autotune' or
            'max-autotune-no-cudagraphs'. The first call per input shape compiles (seconds to minutes).
        cuda_graphs: capture a CUDA graph per input shape (batch padded to ``batch_buckets``) and replay it; needs
            a CUDA device. Do not combine with compile modes that capture graphs themselves ('reduce-overhead',
            'max-autotune'): use 'max-autotune-no-cudagraphs' or 'default' with it.
        device: move the copy there first (default: where ``model`` is).
        batch_buckets: batch sizes CUDA graphs are captured for.
        max_graphs: CUDA graphs kept at once.
        cudnn_benchmark: on CUDA, set ``torch.backends.cudnn.benchmark = True`` (a process-wide setting: cuDNN
            times its algorithms once per input shape and keeps the fastest; good for fixed-size streams).

    Returns:
        An :class:`OptimizedModel` in eval mode.

    Raises:
        SparseInstError: for unknown options, or options the device cannot run (e.g. ``cuda_graphs`` on a CPU).

    Example:
        >>> import torch, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
        >>> fast = optimize_for_inference(model, channels_last=True, precision="bf16")
        >>> fast(torch.randn(2, 3, 64, 96))["pred_logits"].dtype
        torch.float32
    """
    _check_optimizable(model)
    device = torch.device(model_device(model) if device is None else device)
    autocast = autocast_dtype(precision, device)
    compile_mode = resolve_compile_mode(compile)
    if cuda_graphs:
        _check_cuda_graphs(device, compile_mode)
    if cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    options = {
        "fold_bn": bool(fold_bn),
        "channels_last": bool(channels_last),
        "precision": parse_precision(precision, device),
        "compile": compile_mode,
        "cuda_graphs": bool(cuda_graphs),
        "device": str(device),
    }
    work = fold_batch_norm(model) if fold_bn else copy.deepcopy(model).eval()
    work = _frozen_copy_on(work, device, channels_last, autocast is not None)
    network = _Network(work, autocast, channels_last).eval()
    runner = _fast_runner(network, compile_mode, cuda_graphs, batch_buckets, max_graphs)
    return OptimizedModel(work, options, network, runner).eval()


def _check_optimizable(model: object) -> None:
    """Refuse what :func:`optimize_for_inference` cannot copy: an already optimised model, or no module at all."""
    if isinstance(model, OptimizedModel):
        raise SparseInstError("the model is already optimised; call optimize_for_inference on the original model")
    if not isinstance(model, nn.Module):
        raise SparseInstError(f"optimize_for_inference expects a torch.nn.Module, got {type(model).__name__}")


def _check_cuda_graphs(device: torch.device, compile_mode: str | None) -> None:
    """Refuse CUDA graphs off CUDA, or with a compile mode that captures its own graphs."""
    if device.type != "cuda":
        raise SparseInstError.naming(
            "{cuda_graphs} needs a CUDA device, but the model is on {device}; run it on CUDA ({cuda}), or drop "
            "{cuda_graphs}",
            cuda_graphs=_CUDA_GRAPHS,
            device=device,
            cuda=Argument("device", "cuda"),
        )
    if compile_mode in _COMPILE_MODES_WITH_CUDA_GRAPHS:
        raise SparseInstError.naming(
            "compile mode {mode!r} already captures CUDA graphs; with {cuda_graphs} use {no_graphs} or {default} "
            "(or drop {cuda_graphs})",
            mode=compile_mode,
            cuda_graphs=_CUDA_GRAPHS,
            no_graphs=Argument("compile", "max-autotune-no-cudagraphs"),
            default=Argument("compile", "default"),
        )


def _frozen_copy_on(work: nn.Module, device: torch.device, channels_last: bool, under_autocast: bool) -> nn.Module:
    """``work`` (already a copy) on ``device``, in NHWC memory if asked, with no gradients, autocast-safe DCNs."""
    work = work.to(device)
    if channels_last:
        work = work.to(memory_format=torch.channels_last)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    if under_autocast:
        _make_deform_convs_autocast_safe(work)
    return work


def _fast_runner(
    network: _Network,
    compile_mode: str | None,
    cuda_graphs: bool,
    batch_buckets: Sequence[int],
    max_graphs: int,
) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
    """What an :class:`OptimizedModel` calls: ``network``, compiled if asked, replayed from CUDA graphs if asked."""
    runner: Callable[[torch.Tensor], dict[str, torch.Tensor]] = network
    if compile_mode is not None:
        runner = torch.compile(network, mode=compile_mode)
    if cuda_graphs:
        runner = CUDAGraphRunner(runner, batch_buckets=batch_buckets, max_graphs=max_graphs)
    return runner
