"""The CLI options several commands share, defined once: one flag name, one help text, one validation each.

Python parameter names and flags match (``--score-threshold`` is ``score_threshold=``, ``--precision`` is
``precision=``, val's ``--data`` is ``evaluate(data=)``); the older spellings (``--threshold``, ``--half``,
``--amp``, val's ``--json``, benchmark's ``--json``) still work as deprecated aliases (:func:`add_deprecated_alias`)
that print one warning and fill the same attribute. ``--quiet`` means the same in every command
(:func:`add_quiet_argument`). This module imports no torch, so that a command's ``--help`` stays fast.

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
from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "PRECISION_CHOICES",
    "PRECISION_SPELLINGS",
    "add_batch_size_argument",
    "add_deprecated_alias",
    "add_device_argument",
    "add_mask_threshold_argument",
    "add_max_detections_argument",
    "add_precision_argument",
    "add_quiet_argument",
    "add_resize_arguments",
    "add_score_threshold_argument",
    "add_speed_arguments",
    "add_threads_argument",
    "add_workers_argument",
    "fraction",
    "mask_probability",
    "non_negative_int",
    "positive_int",
    "probability",
    "warn_deprecated",
    "show_bar",
    "speed_kwargs",
]

# The names of sparseinst_zoo.inference.precision.PRECISIONS plus 'auto' (fp16 on CUDA, bf16 on CPU); repeated here
# so that building a parser does not import torch (tests/test_options.py checks that the two agree).
PRECISION_CHOICES: tuple[str, ...] = ("fp32", "fp16", "bf16", "auto")
_ALIASES = {"none": "fp32", "float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
# every spelling --precision accepts, in lower case
PRECISION_SPELLINGS: frozenset[str] = frozenset((*PRECISION_CHOICES, *_ALIASES))
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _whole_number(minimum: int, rule: str) -> Callable[[str], int]:
    """An argparse ``type=`` for an integer >= ``minimum``; ``rule`` says so in the error ("at least 1").

    Example:
        >>> positive_int("4"), non_negative_int("0")
        (4, 0)
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    return parse


positive_int = _whole_number(1, "at least 1")  # counts, sizes, periods
non_negative_int = _whole_number(0, "0 or more")  # workers, warm-up iterations, frames remembered


def fraction(low_open: bool = False, high_open: bool = True) -> Callable[[str], float]:
    """An argparse ``type=`` for a number between 0 and 1, each end included or not (``open``: excluded).

    Example:
        >>> fraction(high_open=False)("1")
        1.0
    """
    interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        above = value > 0.0 if low_open else value >= 0.0
        below = value < 1.0 if high_open else value <= 1.0
        if not (above and below):  # also rejects nan
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {text}")
        return value

    return parse


probability = fraction()  # [0, 1): a score threshold that still lets something through
mask_probability = fraction(low_open=True)  # (0, 1): a mask threshold of 0 would put every pixel in every mask


def _precision_in(choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse ``type=`` for a precision among ``choices``, in any spelling of :data:`PRECISION_SPELLINGS`."""

    def parse(text: str) -> str:
        name = _ALIASES.get(text.lower(), text.lower())
        if name not in choices:
            raise argparse.ArgumentTypeError(f"expected one of {', '.join(choices)}, got {text!r}")
        return name

    return parse


def warn_deprecated(option: str, replacement: str, value: Any) -> None:
    """Print the one warning of every deprecated flag: ``--old`` is going away, use ``--new VALUE``.

    Printed whatever ``--quiet`` says: it is about the command line, not about the output.
    """
    print(f"warning: {option} is deprecated and will be removed; use {replacement} {value}", file=sys.stderr)


class _DeprecatedAlias(argparse.Action):
    """An old flag that stores into the new flag's attribute and says which flag to use instead (a switch, with
    ``nargs=0``, stores its ``const``)."""

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
        if self.nargs == 0:
            values = self.const
        warn_deprecated(option_string or self.dest, self.replacement, values)
        setattr(namespace, self.dest, values)


def add_deprecated_alias(parser: argparse.ArgumentParser, alias: str, replacement: str, **kwargs: Any) -> None:
    """The old spelling ``alias`` of ``replacement``: same attribute (``dest``), hidden from ``--help``, one warning.

    ``kwargs`` are ``add_argument``'s (``dest``, ``type``; ``nargs=0, const=VALUE`` for a switch meaning a value).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> parser.add_argument("--out")  # doctest: +ELLIPSIS
        _StoreAction(...)
        >>> add_deprecated_alias(parser, "--json", "--out", dest="out")
        >>> parser.parse_args(["--json", "r.json"]).out  # also prints the warning to stderr
        'r.json'
    """
    parser.add_argument(alias, action=_DeprecatedAlias, replacement=replacement, help=argparse.SUPPRESS, **kwargs)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device`` (``args.device``: None means auto; resolve with :func:`sparseinst_zoo._device.select_device`)."""
    parser.add_argument(
        "--device",
        default=None,
        metavar="DEVICE",
        help="cpu, cuda, cuda:1 or auto (default: auto, cuda when available)",
    )


def add_precision_argument(
    parser: argparse.ArgumentParser,
    default: str | None = "fp32",
    aliases: Sequence[str] = ("--half",),
    default_help: str | None = None,
    choices: Sequence[str] = PRECISION_CHOICES,
    alias_means: str | None = None,
) -> None:
    """``--precision {fp32,fp16,bf16,auto}`` (``args.precision``, one of ``choices``) and its deprecated ``aliases``.

    An alias takes a value, and without one means ``auto``; ``none`` means fp32 (so ``--amp none`` keeps working);
    with ``alias_means`` the aliases are switches meaning that precision (export's ``--half``: fp16). ``default_help``
    says what the default means where ``default`` alone does not (None: the model's or the runtime's own).

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_precision_argument(parser, aliases=("--half", "--amp"))
        >>> parser.parse_args([]).precision, parser.parse_args(["--half"]).precision
        ('fp32', 'auto')
    """
    kind = _precision_in(choices)
    what = "fp32, or fp16/bf16 autocast; auto: fp16 on CUDA, bf16 on CPU" if "auto" in choices else "/".join(choices)
    parser.add_argument(
        "--precision",
        type=kind,
        default=default,
        metavar="{" + ",".join(choices) + "}",
        help=f"{what} (default: {default_help or default})",
    )
    value: dict[str, Any] = (
        dict(nargs=0, const=alias_means) if alias_means else dict(type=kind, nargs="?", const="auto")
    )
    for alias in aliases:
        add_deprecated_alias(parser, alias, "--precision", dest="precision", **value)


def add_score_threshold_argument(
    parser: argparse.ArgumentParser, default: float, note: str = "", alias: bool = True
) -> None:
    """``--score-threshold`` (``args.score_threshold``), with ``--threshold`` as its deprecated alias.

    ``note`` is added to the help text; ``alias=False`` leaves out ``--threshold`` (a command that never had it).
    """
    parser.add_argument(
        "--score-threshold",
        type=probability,
        default=default,
        metavar="SCORE",
        help=f"keep instances whose score is above this, in [0, 1) (default: {default}{'; ' + note if note else ''})",
    )
    if alias:
        add_deprecated_alias(parser, "--threshold", "--score-threshold", dest="score_threshold", type=probability)


def add_mask_threshold_argument(parser: argparse.ArgumentParser, default: float = 0.45, note: str = "") -> None:
    """``--mask-threshold`` (``args.mask_threshold``): the mask probability above which a pixel belongs to it."""
    parser.add_argument(
        "--mask-threshold",
        type=mask_probability,
        default=default,
        metavar="PROB",
        help=f"mask probability above which a pixel is in the mask (default: {default}{'; ' + note if note else ''})",
    )


def add_max_detections_argument(parser: argparse.ArgumentParser, default: int = 100) -> None:
    """``--max-detections`` (``args.max_detections``), an integer >= 1."""
    parser.add_argument(
        "--max-detections",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"at most N instances per image, the highest scores (default: {default})",
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
        type=non_negative_int,
        default=default,
        metavar="N",
        help=f"image-decoding processes, 0 for none (default: {default})",
    )


def add_resize_arguments(
    parser: argparse.ArgumentParser, test_size_alias: bool = False, no_resize: bool = False
) -> None:
    """``--min-size`` and ``--max-size`` of the test resize (``args.min_size``, ``args.max_size``; None: the model's).

    ``test_size_alias=True`` also accepts ``--test-size`` for ``--min-size`` (the name ``val`` and ``train`` use);
    ``no_resize=True`` accepts ``--min-size 0`` for "no resize" (``benchmark``'s forward pass).
    """
    names = ("--min-size", "--test-size") if test_size_alias else ("--min-size",)
    parser.add_argument(
        *names,
        dest="min_size",
        type=non_negative_int if no_resize else positive_int,
        default=None,
        metavar="PIXELS",
        help="shorter side of the test resize (default: the model's"
        + ("; 0: no resize, forward only)" if no_resize else ")"),
    )
    parser.add_argument(
        "--max-size",
        type=positive_int,
        default=None,
        metavar="PIXELS",
        help="cap of the longer side (default: the model's)",
    )


class _DefaultAlready(argparse.Action):
    """A flag naming what the command does anyway: accepted (scripts have it), hidden from --help, said once."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        print(
            f"warning: {self.option_strings[0]} is what {parser.prog} does by default; drop it (--no-optimize runs "
            "the plain eager model)",
            file=sys.stderr,
        )
        setattr(namespace, self.dest, True)


def add_speed_arguments(parser: argparse.ArgumentParser, fold_and_nhwc_by_default: bool = False) -> None:
    """The exact fast inference paths (read by :func:`speed_kwargs`); combine with :func:`add_precision_argument`.

    ``fold_and_nhwc_by_default``: the command folds BatchNorms and runs NHWC anyway (``predict``): ``--fold-bn`` and
    ``--channels-last`` are accepted with a warning but not listed, as they change nothing.
    """
    if fold_and_nhwc_by_default:
        for flag in ("--fold-bn", "--channels-last"):
            parser.add_argument(flag, action=_DefaultAlready, default=False, help=argparse.SUPPRESS)
    else:
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


QUIET_HELP = "no progress bars or info lines; warnings, errors and the results asked for (JSON, tables) still print"


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` (``args.quiet``), the same in every command: no progress bar (:func:`show_bar`), no info or summary
    lines; warnings and errors still go to stderr, and what the user asked to see (``--json`` output, val's metrics,
    benchmark's table) to stdout."""
    parser.add_argument("--quiet", action="store_true", help=QUIET_HELP)


def show_bar(quiet: bool = False) -> bool:
    """Whether a command draws a progress bar: not with ``--quiet``, and only on a terminal.

    A bar redraws itself with carriage returns: piped or redirected, it leaves its frames in the log, and the next
    line (an error, a summary) is written onto the last of them.
    """
    return not quiet and sys.stderr.isatty()
