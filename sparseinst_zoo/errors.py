"""The exceptions a user of sparseinst-zoo can cause and may want to catch.

Every error the package raises for bad input derives from :class:`SparseInstError` (itself a ``ValueError``, so
existing ``except ValueError`` code keeps working): a bad name, size or argument, and also a user's file that a
third-party parser rejects (JSON, YAML, export metadata), which is re-raised as a :class:`DataError` or
:class:`SparseInstError` naming the file. The CLI prints these, and ``OSError``, as one line; anything else, a plain
``ValueError`` included, is a bug and is shown with its traceback and where to report it.

Example:
    >>> from sparseinst_zoo.errors import DownloadError, SparseInstError
    >>> issubclass(DownloadError, SparseInstError) and issubclass(SparseInstError, ValueError)
    True
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import shlex
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = [
    "SparseInstError",
    "ConversionError",
    "DownloadError",
    "DataError",
    "TrainingDiverged",
    "MissingDependency",
    "Argument",
    "Words",
    "argument_words",
    "caller_words",
    "command_line_words",
    "on_command_line",
    "install_hint",
]

_E = TypeVar("_E", bound="SparseInstError")
# True while the `sparseinst` command line runs a command: caller_words() then speaks in flags
_COMMAND_LINE: contextvars.ContextVar[bool] = contextvars.ContextVar("sparseinst_command_line", default=False)
_BARE = object()


@dataclasses.dataclass(frozen=True)
class Words:
    """A phrase that differs between the two readers (``half=True`` in Python is ``--precision fp16`` for export)."""

    python: str
    cli: str


@dataclasses.dataclass(frozen=True)
class Argument:
    """An argument a message tells its reader to pass, in the reader's words: Python's or the command line's.

    A ``value`` of True is a switch (``resume=True`` / ``--resume``), False its ``--no-`` form; a sequence is written
    comma-separated on the command line; without a value the bare name is meant.

    Example:
        >>> Argument("clip_grad", 1.0).python, Argument("clip_grad", 1.0).cli
        ('clip_grad=1.0', '--clip-grad 1.0')
        >>> Argument("resume", True).cli, Argument("lr").python, Argument("checkpoint", "my run/last").cli
        ('--resume', 'lr', "--checkpoint 'my run/last'")
    """

    name: str
    value: Any = _BARE

    @property
    def python(self) -> str:
        return self.name if self.value is _BARE else f"{self.name}={self.value!r}"

    @property
    def cli(self) -> str:
        flag = "--" + self.name.replace("_", "-")
        if self.value is _BARE or self.value is True:
            return flag
        if self.value is False:
            return "--no-" + flag[2:]
        text = ",".join(map(str, self.value)) if isinstance(self.value, (list, tuple)) else str(self.value)
        return f"{flag} {shlex.quote(text)}"


class SparseInstError(ValueError):
    """Base of every error caused by what the user passed in (a name, a file, an argument, a dataset).

    Args:
        cli_message: the same error in the words of the ``sparseinst`` command line, where the fix it names is an
            argument (``--model NAME`` instead of ``model_name=``); the CLI prints it instead of the message.

    Example:
        >>> err = SparseInstError("pass model_name=...", cli_message="pass --model NAME")
        >>> str(err), err.cli_message
        ('pass model_name=...', 'pass --model NAME')
    """

    def __init__(self, *args: object, cli_message: str | None = None) -> None:
        super().__init__(*args)
        self.cli_message = cli_message

    @classmethod
    def naming(cls: type[_E], template: str, **fields: Any) -> _E:
        """The error whose message names arguments: Python's words, and the command line's as ``cli_message``.

        Example:
            >>> err = SparseInstError.naming("lower {lr}", lr=Argument("lr"))
            >>> str(err), err.cli_message
            ('lower lr', 'lower --lr')
        """
        python, cli = argument_words(template, **fields)
        return cls(python, cli_message=cli)


class ConversionError(SparseInstError):
    """A checkpoint does not map onto the target model (keys left over, missing or of the wrong shape)."""


class DownloadError(SparseInstError):
    """Weights could not be fetched from any source (Hub, original release, cache)."""


class DataError(SparseInstError):
    """A dataset, annotation file or image cannot be used as it is."""


class TrainingDiverged(SparseInstError):
    """The loss became NaN or infinite; lower the learning rate or check the data."""


class MissingDependency(SparseInstError, ImportError):
    """An optional package a feature needs is not installed; the message says what to ``pip install``.

    Also an ``ImportError``, so ``except ImportError`` around optional features keeps working.
    """


def unknown_keywords_error(
    caller: str, unknown: Iterable[str], known: Iterable[str], aliases: Mapping[str, str] | None = None
) -> TypeError:
    """The one-line TypeError for keyword arguments ``caller`` does not take, with the close known names.

    ``aliases`` maps other libraries' names to ours (Ultralytics' ``conf`` is our ``score_threshold``).

    Example:
        >>> str(unknown_keywords_error("predict", ["conf"], ["score_threshold"], {"conf": "score_threshold"}))
        "predict got an unexpected argument 'conf' (did you mean score_threshold?); it takes: score_threshold"
    """
    known, aliases = sorted(known), aliases or {}
    hints = []
    for name in unknown:
        close = [aliases[name]] if name in aliases else difflib.get_close_matches(name, known, n=2, cutoff=0.6)
        hints.append(f"{name!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    what = "unexpected arguments" if len(hints) > 1 else "an unexpected argument"
    return TypeError(f"{caller} got {what} {', '.join(hints)}; it takes: {', '.join(known)}")


def argument_words(template: str, **fields: Any) -> tuple[str, str]:
    """``template`` filled in twice, in Python's words and in the command line's: an :class:`Argument` field
    becomes ``name=value`` in the first and ``--name value`` in the second (a :class:`Words` field its ``python``
    and ``cli``); any other field is formatted as it is.

    One message, written once, for both readers (``str.format`` fields, so literal braces are doubled).

    Example:
        >>> argument_words("{path} is done; pass {resume}", path="runs/a", resume=Argument("resume", True))
        ('runs/a is done; pass resume=True', 'runs/a is done; pass --resume')
    """
    worded = (Argument, Words)
    python = template.format(**{k: v.python if isinstance(v, worded) else v for k, v in fields.items()})
    cli = template.format(**{k: v.cli if isinstance(v, worded) else v for k, v in fields.items()})
    return python, cli


@contextlib.contextmanager
def command_line_words() -> Iterator[None]:
    """Inside it :func:`caller_words` speaks the command line's words; the ``sparseinst`` CLI runs its commands in it.

    Example:
        >>> with command_line_words():
        ...     caller_words("pass {resume}", resume=Argument("resume", True))
        'pass --resume'
    """
    token = _COMMAND_LINE.set(True)
    try:
        yield
    finally:
        _COMMAND_LINE.reset(token)


def on_command_line() -> bool:
    """Whether the library runs for the ``sparseinst`` command line (inside :func:`command_line_words`)."""
    return _COMMAND_LINE.get()


def caller_words(template: str, **fields: Any) -> str:
    """``template`` in the words of whoever called the library (see :func:`argument_words`): for a log line or a
    warning, which carries one text (an error carries both: :meth:`SparseInstError.naming`).

    Example:
        >>> caller_words("pass {resume}", resume=Argument("resume", True))
        'pass resume=True'
    """
    python, cli = argument_words(template, **fields)
    return cli if on_command_line() else python


def install_hint(extra: str) -> str:
    """The command that installs the optional ``extra`` of pyproject.toml (double quotes: bash, zsh, cmd, PowerShell).

    Example:
        >>> install_hint("export")
        'pip install "sparseinst-zoo[export]"'
    """
    return f'pip install "sparseinst-zoo[{extra}]"'
