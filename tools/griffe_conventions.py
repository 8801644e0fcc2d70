"""Griffe extension for the API reference: reads the project's two docstring habits as Google style.

- ``Example:`` (singular, as the package writes it) is Google's ``Examples:`` section, so its ``>>>`` lines render
  as code rather than as Markdown prose (where ``x[0]["bbox"]`` would read as a link).
- ``height / width: text`` in an ``Args:`` section documents two parameters with one text; it becomes one entry per
  parameter, so griffe can match each against the signature (and still warns about names that do not exist).

Loaded by ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
_PAIR = re.compile(r"^(\s+)([A-Za-z_]\w*) / ([A-Za-z_]\w*)(:.*)$")


def split_pairs(text: str) -> str:
    """``a / b: text`` (plus its indented continuation lines) -> one ``a: text`` and one ``b: text`` entry."""
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    while index < len(lines):
        match = _PAIR.match(lines[index])
        if match is None:
            out.append(lines[index])
            index += 1
            continue
        indent, first, second, rest = match.groups()
        end = index + 1
        while end < len(lines) and lines[end].strip() and len(lines[end]) - len(lines[end].lstrip()) > len(indent):
            end += 1
        for name in (first, second):
            out.extend([f"{indent}{name}{rest}", *lines[index + 1 : end]])
        index = end
    return "\n".join(out)


def google_style(text: str) -> str:
    """The docstring ``text`` with both habits rewritten (see the module docstring).

    Example:
        >>> print(google_style("Args:\\n    h / w: size,\\n        in pixels.\\nExample:\\n    f(1)"))
        Args:
            h: size,
                in pixels.
            w: size,
                in pixels.
        Examples:
            f(1)
    """
    return split_pairs(_EXAMPLE.sub(r"\1Examples:", text))


class ProjectDocstrings(griffe.Extension):
    """Rewrites each docstring once the object tree is complete (before mkdocstrings parses it)."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = google_style(obj.docstring.value)
