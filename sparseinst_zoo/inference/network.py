"""Which network a prediction runs: the caller's model is never modified, so predict runs on a cached copy.

:func:`inference_network` returns, for a model and the predictor's options, the module to call:

- ``optimize=None`` (the default): the exact fast path, an :class:`~sparseinst_zoo.inference.optimize.OptimizedModel`
  with BatchNorms folded into the convolutions and channels_last memory (computes the same function as
  ``model.eval()`` up to float rounding; logits within 1e-4);
- ``optimize=False``: the plain eager math; the model itself when it is already in eval mode on the requested
  device (an eval-mode forward under ``torch.inference_mode`` changes nothing), else an eval-mode copy;
- ``optimize=True`` or a dict: :func:`~sparseinst_zoo.inference.optimize.optimize_for_inference` with those options.

A model with 16-bit (or float64) weights is copied to float32 first, whichever the path; :class:`Predictor`
autocasts it at the model's dtype unless given a ``precision``.

An :class:`~sparseinst_zoo.inference.optimize.OptimizedModel`, or a module without convolutions (a runtime wrapper
such as the onnxruntime backend), is used as it is.

Copies are cached per model (dropped with it), one per set of options (the last :data:`MAX_COPIES_PER_MODEL` used:
two Predictors with other options on one model do not rebuild each other's copy), and tied to a fingerprint of
every parameter and buffer: its storage address (``data_ptr``), its in-place version counter (``_version``, bumped by
optimizer steps, ``load_state_dict``, ``copy_`` and BatchNorm statistic updates), dtype, shape and device. Changing the
weights in any of these ways between two ``predict`` calls rebuilds the copy (and drops the copies of the old
weights); the one change it cannot see is writing into a tensor's memory behind autograd's back (e.g. through
``.numpy()``), so call :func:`clear_inference_cache` after such edits.

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    >>> network = inference_network(model)
    >>> network is inference_network(model), network is model
    (True, False)
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from .._device import model_device
from .optimize import OptimizedModel, optimize_for_inference
from .precision import parse_precision

__all__ = ["MAX_COPIES_PER_MODEL", "inference_network", "clear_inference_cache", "weights_fingerprint"]

OptimizeOption = bool | dict[str, Any] | None

MAX_COPIES_PER_MODEL = 4  # option sets kept per model; each copy holds a full set of weights

_lock = threading.Lock()
# per model: options key -> (weights fingerprint, copy), least recently used first
_cache: weakref.WeakKeyDictionary[nn.Module, OrderedDict[Any, tuple[Any, nn.Module]]] = weakref.WeakKeyDictionary()


def weights_fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """What identifies the current weights of ``model``: per tensor its address, version, dtype, shape and device."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape), t.device) for name, t in tensors)


def _options(model: nn.Module, optimize: OptimizeOption, precision: str, device: torch.device) -> dict[str, Any] | None:
    """``optimize_for_inference`` keyword arguments for the options, or None for the eager model."""
    if optimize is False:
        return None
    options: dict[str, Any] = {} if optimize is None or optimize is True else dict(optimize)
    if optimize is None:  # the exact default: fold BatchNorm, NHWC memory (faster convolutions on CPU and GPU)
        options.setdefault("channels_last", device.type in ("cpu", "cuda"))
    options.setdefault("precision", precision)
    options.setdefault("device", device)
    return options


def model_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first floating-point parameter (None for a model without any)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _build(model: nn.Module, options: dict[str, Any] | None, device: torch.device) -> nn.Module:
    source = model
    if model_dtype(model) not in (None, torch.float32):
        # a .half()/.bfloat16() model runs as a float32 copy, autocast at its dtype by default (see Predictor): its
        # weights convert exactly, BatchNorm folds in float32, and CPUs lack fast pure-fp16 convolutions
        model = copy.deepcopy(model).float()
    if options is not None:
        return optimize_for_inference(model, **options)
    if not model.training and model_device(model) == device:
        return model  # eval mode on the right device (or our float32 copy): used as it is, never modified
    work = (model if model is not source else copy.deepcopy(model)).eval().to(device)
    for parameter in work.parameters():
        parameter.requires_grad_(False)
    return work


def inference_network(
    model: nn.Module,
    optimize: OptimizeOption = None,
    precision: str = "fp32",
    device: torch.device | str | None = None,
) -> nn.Module:
    """The module a prediction with these options runs (see the module doc); ``model`` is never modified.

    Args:
        model: the caller's model (any mode, device and ``requires_grad``).
        optimize: None (exact fast path), False (eager math) or ``optimize_for_inference`` options.
        precision: 'fp32', 'fp16' or 'bf16' for the fast path (the eager path leaves autocast to the caller).
        device: where to run (default: where the model is); the copy is moved there, the model is not.
    """
    if isinstance(model, OptimizedModel) or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model  # already optimised, or a runtime wrapper (e.g. onnxruntime): nothing to fold or protect
    device = torch.device(device) if device is not None else model_device(model)
    precision = parse_precision(precision, device)
    options = _options(model, optimize, precision, device)
    key = (repr(sorted((options or {}).items())), options is None, str(device), model.training)
    weights = weights_fingerprint(model)
    with _lock:  # one build per model and key, also when several threads predict at once
        copies = _cache.setdefault(model, OrderedDict())
        cached = copies.get(key)
        if cached is not None and cached[0] == weights:
            copies.move_to_end(key)
            return cached[1]
        network = _build(model, options, device)
        if network is not model:
            _remember(copies, key, weights, network)
        return network


def _remember(copies: OrderedDict[Any, tuple[Any, nn.Module]], key: Any, weights: Any, network: nn.Module) -> None:
    """Keep ``network`` for ``key``; copies of other weights are stale (never used again) and the oldest go first."""
    for stale in [k for k, (fingerprint, _) in copies.items() if fingerprint != weights]:
        del copies[stale]
    copies[key] = (weights, network)
    while len(copies) > MAX_COPIES_PER_MODEL:
        copies.popitem(last=False)


def clear_inference_cache() -> None:
    """Drop every cached inference copy (the next ``predict`` call rebuilds it)."""
    with _lock:
        _cache.clear()
