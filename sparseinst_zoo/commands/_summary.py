"""How commands name what they wrote in their closing lines: the first few, then a count.

Example:
    >>> listed(["a.png", "b.png", "c.png", "d.png", "e.png"])
    'a.png, b.png, c.png and 2 more'
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["listed"]


def listed(names: Sequence[str], shown: int = 3) -> str:
    """The first ``shown`` of ``names``, comma-separated, and how many more there are ('' for none)."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
