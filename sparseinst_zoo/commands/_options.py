"""The CLI options several commands share, defined once: one flag name, one help text, one validation each.

Python parameter names and flags match (``--score-threshold`` is ``score_threshold=``, ``--precision`` is
``precision=``); the older spellings (``--threshold``, ``--half``, ``--amp``) still work as deprecated aliases that
print a warning and fill the same attribute. This module imports no torch, so that a command's ``--help`` stays fast.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_device_argument(parser)
    >>> add_precision_argument(parser)
    >>> add_score_threshold_argument(parser, default=0.25)
    >>> args = parser.parse_args(["--device", "cpu", "--precision", "bf16"])
    >>> args.device, args.precision, args.score_threshold
    ('cpu', 'bf16', 0.25)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

__all__ = [
    "PRECISION_CHOICES",
    "add_batch_size_argument",
    "add_device_argument",
    "add_mask_threshold_argument",
    "add_precision_argument",
    "add_resize_arguments",
    "add_score_threshold_argument",
    "add_speed_arguments",
    "add_threads_argument",
    "add_workers_argument",
    "positive_int",
    "probability",
    "warn_deprecated",
    "speed_kwargs",
]

# The names of sparseinst_zoo.inference.precision.PRECISIONS plus 'auto' (fp16 on CUDA, bf16 on CPU); repeated here
# so that building a parser does not import torch (tests/test_options.py checks that the two agree).
PRECISION_CHOICES: tuple[str, ...] = ("fp32", "fp16", "bf16", "auto")
_PRECISION_SPELLINGS = {"none": "fp32", "float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse ``type=``).

    Example:
        >>> positive_int("4")
        4
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1) (argparse ``type=``): a score or mask threshold that still lets something through.

    Example:
        >>> probability("0.25")
        0.25
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _precision(text: str) -> str:
    name = _PRECISION_SPELLINGS.get(text.lower(), text.lower())
    if name not in PRECISION_CHOICES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(PRECISION_CHOICES)}, got {text!r}")
    return name


def warn_deprecated(option: str, replacement: str, value: Any) -> None:
    """Print the one warning of every deprecated flag: ``--old`` is going away, use ``--new VALUE``.

    Printed whatever ``--quiet`` says: it is about the command line, not about the output.
    """
    print(f"warning: {option} is deprecated and will be removed; use {replacement} {value}", file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """An old flag that stores into the new flag's attribute and says which flag to use instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.replacement = replacement

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        warn_deprecated(option_string or self.dest, self.replacement, values)
        setattr(namespace, self.dest, values)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (``args.device``: None means auto; resolve with :func:`sparseinst_zoo._device.select_device`)."""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="cpu, cuda, cuda:1 or auto (default: auto, cuda when available)",
    )


def add_precision_argument(
    parser: argparse.ArgumentParser, default: str = "fp32", aliases: Sequence[str] = ("--half",)
) -> None:
    """``--precision {fp32,fp16,bf16,auto}`` (``args.precision``) and its deprecated ``aliases``.

    An alias without a value means ``auto``; ``none`` means fp32 (so ``--amp none`` keeps working).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_precision_argument(parser, aliases=("--half", "--amp"))
        >>> parser.parse_args([]).precision, parser.parse_args(["--half"]).precision
        ('fp32', 'auto')
    """
    parser.add_argument(
        "--precision",
        type=_precision,
        default=default,
        metavar="{fp32,fp16,bf16,auto}",
        help=f"fp32, or fp16/bf16 autocast; auto: fp16 on CUDA, bf16 on CPU (default: {default})",
    )
    for alias in aliases:
        parser.add_argument(
            alias,
            dest="precision",
            type=_precision,
            nargs="?",
            const="auto",
            action=_DeprecatedAlias,
            replacement="--precision",
            help=argparse.SUPPRESS,
        )


def add_score_threshold_argument(parser: argparse.ArgumentParser, default: float) -> None:
    """``--score-threshold`` (``args.score_threshold``), with ``--threshold`` as its deprecated alias."""
    parser.add_argument(
        "--score-threshold",
        type=probability,
        default=default,
        metavar="SCORE",
        help=f"keep instances whose score is above this, in [0, 1) (default: {default})",
    )
    parser.add_argument(
        "--threshold",
        dest="score_threshold",
        type=probability,
        action=_DeprecatedAlias,
        replacement="--score-threshold",
        help=argparse.SUPPRESS,
    )


def add_mask_threshold_argument(parser: argparse.ArgumentParser, default: float = 0.45) -> None:
    """``--mask-threshold`` (``args.mask_threshold``): the mask probability above which a pixel belongs to it."""
    parser.add_argument(
        "--mask-threshold",
        type=probability,
        default=default,
        metavar="PROB",
        help=f"mask probability threshold (default: {default})",
    )


def add_batch_size_argument(parser: argparse.ArgumentParser, default: int) -> None:
    """``--batch-size`` (``args.batch_size``), an integer >= 1."""
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"images per forward pass (default: {default})",
    )


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads`` (``args.threads``: None keeps PyTorch's default; apply with ``torch.set_num_threads``)."""
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads for PyTorch (default: PyTorch's choice)",
    )


def add_workers_argument(parser: argparse.ArgumentParser, default: int = 2) -> None:
    """``--workers`` (``args.workers``): image-decoding processes; 0 decodes in the main process."""
    parser.add_argument(
        "--workers",
        type=int,
        default=default,
        metavar="N",
        help=f"image-decoding processes, 0 for none (default: {default})",
    )


def add_resize_arguments(parser: argparse.ArgumentParser, test_size_alias: bool = False) -> None:
    """``--min-size`` and ``--max-size`` of the test resize (``args.min_size``, ``args.max_size``; None: the model's).

    ``test_size_alias=True`` also accepts ``--test-size`` for ``--min-size`` (the name ``val`` and ``train`` use).
    The values are checked where they are used (``benchmark`` reads ``--min-size 0`` as "no resize").
    """
    names = ("--min-size", "--test-size") if test_size_alias else ("--min-size",)
    parser.add_argument(
        *names,
        dest="min_size",
        type=int,
        default=None,
        metavar="PIXELS",
        help="shorter side of the test resize (default: the model's)",
    )
    parser.add_argument(
        "--max-size", type=int, default=None, metavar="PIXELS", help="cap of the longer side (default: the model's)"
    )


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    """The exact fast inference paths (read by :func:`speed_kwargs`); combine with :func:`add_precision_argument`."""
    parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorms into the convolutions")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        choices=COMPILE_MODES,
        help=f"torch.compile the network (MODE: {', '.join(COMPILE_MODES)}; default: default)",
    )
    parser.add_argument(
        "--cuda-graphs", action="store_true", help="capture and replay CUDA graphs per input shape (CUDA only)"
    )


def speed_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of ``optimize_for_inference`` from :func:`add_speed_arguments` (and ``--precision``).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_speed_arguments(parser)
        >>> speed_kwargs(parser.parse_args(["--fold-bn"]))["fold_bn"]
        True
    """
    options = {
        "fold_bn": args.fold_bn,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "cuda_graphs": args.cuda_graphs,
    }
    if hasattr(args, "precision"):
        options["precision"] = args.precision
    return options
