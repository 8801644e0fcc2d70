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

import difflib
from collections.abc import Iterable, Mapping

__all__ = [
    "SparseInstError",
    "ConversionError",
    "DownloadError",
    "DataError",
    "TrainingDiverged",
    "MissingDependency",
    "install_hint",
]


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


def install_hint(extra: str) -> str:
    """The command that installs the optional ``extra`` of pyproject.toml (double quotes: bash, zsh, cmd, PowerShell).

    Example:
        >>> install_hint("export")
        'pip install "sparseinst-zoo[export]"'
    """
    return f'pip install "sparseinst-zoo[{extra}]"'
