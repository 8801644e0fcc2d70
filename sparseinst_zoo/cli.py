"""The ``sparseinst`` command line.

Each sub-command lives in its own module under :mod:`sparseinst_zoo.commands` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. The table :data:`COMMANDS` names the module and repeats the one
line of help, so that ``sparseinst --help`` and ``--version`` import no command module (and no torch): a command's
module is imported only when that command runs or its own ``--help`` is asked for.

Errors: a :class:`~sparseinst_zoo.errors.SparseInstError` or an ``OSError`` (a user's mistake or the environment)
prints one line (the error's ``cli_message`` where it has one; ``--debug`` shows the traceback); anything else is a
bug and prints its traceback and where to report it. A command runs inside
:func:`~sparseinst_zoo.errors.command_line_words`, so that the library's log lines and warnings name flags too. A
command may set ``resume_hint`` on its arguments (``parser.set_defaults(resume_hint=...)`` or
``args.resume_hint = ...`` in ``run``), printed after Ctrl-C.

Example:
    $ sparseinst list 'sparseinst_r50*' --pretrained
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback
from collections.abc import Sequence
from types import ModuleType
from typing import NamedTuple, TextIO

from ._download import download_bars
from .errors import SparseInstError, command_line_words
from .version import __version__

__all__ = ["COMMANDS", "ISSUES_URL", "USER_ERRORS", "Command", "build_parser", "examples", "import_command", "main"]

ISSUES_URL = "https://github.com/sparseinst-zoo/sparseinst-zoo/issues"


class Command(NamedTuple):
    """A sub-command: its module under :mod:`sparseinst_zoo.commands` and its one line of help (the module's HELP)."""

    module: str
    help: str


COMMANDS: dict[str, Command] = {
    "list": Command(
        "list_models",
        "list the models (name pattern, e.g. 'r50' or 'sparseinst_*giam*') with reference COCO AP and FPS",
    ),
    "predict": Command(
        "predict",
        "segment instances in images, folders, globs or videos; write overlays, COCO-style JSON or YOLO label files",
    ),
    "convert": Command(
        "convert",
        "convert a reference SparseInst checkpoint (detectron2 or MMDetection .pth) to safetensors + config.json",
    ),
    "train": Command(
        "train",
        "fine-tune or train a model on a data.yaml or COCO dataset (mixed precision, EMA, resume, DDP via torchrun)",
    ),
    "val": Command(
        "val", "evaluate COCO mask AP (AP, AP50, AP75, APs, APm, APl, per class) on a COCO JSON or data.yaml dataset"
    ),
    "export": Command(
        "export",
        "export a model to ONNX (normalisation inside, exact pyramid pooling, DCN as DeformConv), OpenVINO (from that "
        "ONNX graph) or torch.export .pt2",
    ),
    "benchmark": Command(
        "benchmark",
        "measure latency (median/p10/p90), images/s, peak memory and GFLOPs of a model and its fast inference paths",
    ),
    "track": Command(
        "track", "segment and track instances through videos (ByteTrack ids); write overlay videos and tracks.jsonl"
    ),
    "download": Command(
        "download",
        "download pretrained weights into the cache (Hub or original release) and print their origin and sha256",
    ),
    "plot": Command("plot", "draw the training curves of a run (losses, learning rate, mask AP) into RUN/results.png"),
}

# Errors a user (or the machine) causes: shown as one line, not a traceback. Every mistake the library can blame on
# its input raises a SparseInstError (third-party parse errors of a user's file are turned into DataError where the
# file is read); anything else, a plain ValueError, RuntimeError or KeyError included, is a bug.
USER_ERRORS: tuple[type[Exception], ...] = (SparseInstError, OSError)


def import_command(name: str) -> ModuleType:
    """The module of sub-command ``name`` (imported now, not before: it may pull heavy dependencies)."""
    return importlib.import_module(f"sparseinst_zoo.commands.{COMMANDS[name].module}")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: every sub-command by name and help, with the options of ``command`` only.

    Args:
        command: the sub-command whose module is imported and whose options are registered; None registers none
            (enough for ``sparseinst --help`` and ``--version``).

    Example:
        >>> parser = build_parser()
        >>> parser.parse_args(["--debug"]).debug
        True
    """
    parser = argparse.ArgumentParser(
        prog="sparseinst",
        description=f"SparseInst instance segmentation ({', '.join(COMMANDS)}).",
        epilog="Run `sparseinst COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"sparseinst-zoo {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        sub = subparsers.add_parser(name, help=entry.help, description=entry.help)
        if name == command:
            module = import_command(name)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run, _parser=sub)
            _add_examples(sub, module)
    return parser


def examples(module: ModuleType) -> list[str]:
    """The command lines of the ``Example:`` section of a command module's docstring (``$`` and indent removed).

    Example:
        >>> examples(import_command("list"))
        ['sparseinst list r50 --pretrained']
    """
    section = (module.__doc__ or "").partition("\nExample:\n")[2].split("\n\n", 1)[0]
    # a backslash-newline in a docstring joins the lines: collapse the indent it leaves inside the command
    return [" ".join(line.split()[1:]) for line in section.splitlines() if line.strip().startswith("$ ")]


def _add_examples(parser: argparse.ArgumentParser, module: ModuleType) -> None:
    """Show the module's examples under the options of ``COMMAND --help`` (after the command's own epilog)."""
    lines = examples(module)
    if lines:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the examples' line breaks
        parts = [parser.epilog, "examples:\n" + "\n".join(f"  {line}" for line in lines)]
        parser.epilog = "\n\n".join(part for part in parts if part)


def _command_in(argv: Sequence[str]) -> str | None:
    """The sub-command named in ``argv``: the first word that is not an option (the top-level options take no value)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)``, but an option the command does not know is the command's error and usage.

    argparse reports leftovers of a sub-command with the top-level usage (``usage: sparseinst [-h] ...``), which
    does not show the options the user got wrong.
    """
    args, extras = parser.parse_known_args(argv)
    if extras:
        owner = parser
        if args.command is not None and extras[0] not in argv[: argv.index(args.command)]:
            owner = getattr(args, "_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparseinst`` command. Returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # what is known before parsing, for a Ctrl-C or an error while the command's module is imported
    args = argparse.Namespace(command=_command_in(argv), debug="--debug" in argv)
    try:
        parser = build_parser(args.command)
        args = _parse(parser, argv)
        if args.command is None:
            parser.print_help()
            return 2
        # the library's messages name flags, not Python arguments; --quiet also hides download bars
        with command_line_words(), download_bars(not getattr(args, "quiet", False)):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        _report_interrupt(args, sys.stderr)
        return 130
    except BrokenPipeError as err:
        if not _stdout_closed():
            return _report_user_error(args, err)
        return 141  # `sparseinst list | head`: the reader has what it wanted; exit quietly, as with SIGPIPE
    except USER_ERRORS as err:
        return _report_user_error(args, err)
    except Exception:
        traceback.print_exc()
        _report_bug(args, sys.stderr)
        return 1


def _report_user_error(args: argparse.Namespace, err: Exception) -> int:
    """The one-line error (the traceback with --debug or SPARSEINST_DEBUG=1); returns the exit code, 1."""
    if args.debug or os.environ.get("SPARSEINST_DEBUG", "") not in ("", "0"):
        raise err
    message = getattr(err, "cli_message", None) or str(err) or type(err).__name__
    print(f"{_prog(args)}: error: {message}", file=sys.stderr)
    return 1


def _stdout_closed() -> bool:
    """Whether standard output is a pipe its reader closed (poll reports an error on it); if so it is pointed at
    /dev/null, so that Python's final flush does not print a second error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        closed = any(event & select.POLLERR for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows), or no real stdout
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return closed


def _prog(args: argparse.Namespace) -> str:
    return f"sparseinst {args.command}" if args.command else "sparseinst"


def _report_interrupt(args: argparse.Namespace, stream: TextIO) -> None:
    """'interrupted' on its own line (a progress bar or the terminal's ^C may hold the cursor mid-line)."""
    if stream.isatty():
        stream.write("\n")
    hint = getattr(args, "resume_hint", None)
    print(f"{_prog(args)}: interrupted" + (f"; {hint}" if hint else ""), file=stream)


def _report_bug(args: argparse.Namespace, stream: TextIO) -> None:
    print(
        f"{_prog(args)}: this is a bug in sparseinst-zoo {__version__}, not something you did wrong. Please "
        f"report it at {ISSUES_URL} with the command you ran and the traceback above.",
        file=stream,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
