"""The ``sparseinst`` command line.

Each sub-command lives in its own module under :mod:`sparseinst_zoo.commands` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. Heavy imports happen inside ``run`` so that ``sparseinst --help``
stays fast.

Example:
    $ sparseinst list 'sparseinst_r50*' --pretrained
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .version import __version__

# sub-command name -> module in sparseinst_zoo.commands
COMMANDS: dict[str, str] = {
    "list": "list_models",
    "predict": "predict",
    "convert": "convert",
    "train": "train",
    "val": "val",
    "export": "export",
    "benchmark": "benchmark",
    "download": "download",
}

# Errors a user can cause (bad paths, names, arguments, files). They are shown as one clear line, not a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError, PermissionError,
                                                 KeyError, OSError, RuntimeError)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="sparseinst",
        description="SparseInst instance segmentation (list, predict, convert, train, val, export, benchmark).",
    )
    parser.add_argument("--version", action="version", version=f"sparseinst-zoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"sparseinst_zoo.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparseinst`` command. Returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get("SPARSEINST_DEBUG", "") not in ("", "0")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except USER_ERRORS as err:
        if debug:
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"sparseinst {args.command}: error: {message}", file=sys.stderr)
        print("(run with --debug for the full traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
