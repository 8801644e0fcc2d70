"""How messages name many things: the first few, then a count (80 COCO names made one warning 1,800 characters long).

Example:
    >>> listed(["a.png", "b.png", "c.png", "d.png", "e.png"])
    'a.png, b.png, c.png and 2 more'
    >>> listed(["a.png", "b.png", "c.png", "d.png"])
    'a.png, b.png, c.png, d.png'
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["listed"]


def listed(names: Iterable[object], shown: int = 3) -> str:
    """The first ``shown`` of ``names`` comma-separated, then how many more there are; all when one more would be cut.

    Args:
        names: what to name (each written with ``str``).
        shown: how many to write before the count.

    Returns:
        ``'a, b, c and N more'``, or ``'a, b, c, d'`` when ``names`` holds at most ``shown + 1`` (naming the last one
        is no longer than "and 1 more"); ``''`` for none.
    """
    words = [str(name) for name in names]
    if len(words) <= shown + 1:
        return ", ".join(words)
    return ", ".join(words[:shown]) + f" and {len(words) - shown} more"
