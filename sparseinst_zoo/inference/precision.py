"""One precision vocabulary for predict, optimize, benchmark, evaluate, export and training.

A precision is one of :data:`PRECISIONS`: ``'fp32'`` (the reference's math), ``'fp16'`` or ``'bf16'`` (autocast).
:func:`parse_precision` accepts the spellings users type (``True``/``'auto'`` pick the device's fast 16-bit type,
``'float16'``/``'half'``, ``'bfloat16'``, ``'none'``/``False`` for fp32) and returns the canonical name;
:func:`autocast_dtype` checks that the device supports it and gives the dtype for :func:`torch.autocast`.

Example:
    >>> from sparseinst_zoo.inference.precision import parse_precision, autocast_dtype
    >>> parse_precision(True, "cpu"), parse_precision("float16", "cpu"), parse_precision(None, "cpu")
    ('bf16', 'fp16', 'fp32')
    >>> autocast_dtype("fp32", "cpu") is None
    True
"""

from __future__ import annotations

import warnings
from typing import Literal, TypeAlias

import torch

from ..errors import SparseInstError

__all__ = [
    "PRECISIONS",
    "PrecisionName",
    "PrecisionLike",
    "parse_precision",
    "precision_from_alias",
    "autocast_dtype",
    "cpu_supports",
]

PrecisionName: TypeAlias = Literal["fp32", "fp16", "bf16"]
PrecisionLike: TypeAlias = "str | bool | None"

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_ALIASES: dict[str, str] = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "none": "fp32",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "bf16": "bf16",
    "bfloat16": "bf16",
}


def parse_precision(value: PrecisionLike, device: torch.device | str = "cpu", name: str = "precision") -> str:
    """The canonical precision name for ``value``.

    Args:
        value: a name or alias (see the module docstring); ``True`` or ``'auto'`` mean fp16 on CUDA and bf16
            elsewhere; ``False``/``None`` mean fp32.
        device: the device the model runs on (only used for ``True``/``'auto'``).
        name: the parameter name used in the error message (``'half'`` for the deprecated alias).

    Raises:
        SparseInstError: for anything else.
    """
    if value is None or value is False:
        return "fp32"
    if value is True or (isinstance(value, str) and value.lower() == "auto"):
        return "fp16" if torch.device(device).type == "cuda" else "bf16"
    if isinstance(value, str) and value.lower() in _ALIASES:
        return _ALIASES[value.lower()]
    raise SparseInstError(
        f"{name} must be one of {tuple(PRECISIONS)} (or True/'auto' for the device's 16-bit type), got {value!r}"
    )


def precision_from_alias(precision: PrecisionLike, half: PrecisionLike, caller: str) -> PrecisionLike:
    """``precision``, or the deprecated ``half=`` alias of ``caller`` (with a FutureWarning); both at once is an error.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     precision_from_alias(None, "fp16", "evaluate"), str(caught[0].message)
        ('fp16', "evaluate(half=...) is deprecated; use precision= ('fp32', 'fp16', 'bf16' or 'auto')")
    """
    if half is None:
        return precision
    warnings.warn(
        f"{caller}(half=...) is deprecated; use precision= ('fp32', 'fp16', 'bf16' or 'auto')",
        FutureWarning,
        stacklevel=3,
    )
    if precision is not None:
        raise SparseInstError(f"pass precision= only to {caller} (half= is its deprecated alias)")
    parse_precision(half, name="half")
    return half


def cpu_supports(dtype: torch.dtype) -> bool:
    """Whether this CPU has native matrix instructions for ``dtype`` (bf16: AVX512-BF16/AMX, fp16: AVX512-FP16/AMX)."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    try:
        if dtype is torch.bfloat16:
            return bool(mkldnn._is_mkldnn_bf16_supported())  # type: ignore[union-attr]
        return bool(mkldnn._is_mkldnn_fp16_supported())  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(precision: PrecisionLike, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` (None for fp32) after checking that ``device`` supports it.

    Warns when a CPU runs the 16-bit type emulated (usually slower than fp32).

    Raises:
        SparseInstError: for an unknown precision, bf16 on a GPU without it, or 16-bit on a device other than
            CPU/CUDA.
    """
    device = torch.device(device)
    name = parse_precision(precision, device)
    dtype = PRECISIONS[name]
    if dtype is None:
        return None
    if device.type not in ("cuda", "cpu"):
        raise SparseInstError(f"precision={name!r} is supported on 'cuda' and 'cpu' devices, got {device.type!r}")
    if dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SparseInstError(
            f"precision='bf16' needs a GPU with bfloat16 support "
            f"({torch.cuda.get_device_name(device)} has none); use precision='fp16'"
        )
    if device.type == "cpu" and not cpu_supports(dtype):
        warnings.warn(
            f"this CPU has no native {name} matrix instructions; {name} runs emulated and is usually slower than "
            "fp32 here (see docs/performance.md)",
            stacklevel=2,
        )
    return dtype
