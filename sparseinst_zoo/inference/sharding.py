"""Sharing prediction among processes: which sources a rank predicts, and the merge of their ``predictions.json``.

The flattened source list (see :func:`~sparseinst_zoo.inference.sources.flatten_sources`) is split into contiguous
blocks in rank order: rank 0 gets the first sources, rank 1 the next ones, and so on, the block sizes differing by at
most one. A source is never split, so a video (all of its frames) goes to one rank. Concatenating the ranks' results
in rank order therefore gives the global source order back, which is what :func:`merge_predictions` does.

Example:
    >>> [shard_sources(["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"], rank, 2) for rank in (0, 1)]
    [['a.jpg', 'b.jpg', 'c.jpg'], ['d.jpg', 'e.jpg']]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from ..errors import SparseInstError

__all__ = ["shard_bounds", "shard_sources", "merge_predictions"]

T = TypeVar("T")


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of the contiguous block of ``count`` sources that ``rank`` of ``world`` processes predicts.

    Example:
        >>> [shard_bounds(5, rank, 3) for rank in range(3)]
        [(0, 2), (2, 4), (4, 5)]
    """
    if world < 1 or not 0 <= rank < world:
        raise SparseInstError(f"rank must be in [0, world) and world >= 1, got rank {rank} of {world}")
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_sources(sources: Sequence[T], rank: int, world: int) -> list[T]:
    """The sources ``rank`` of ``world`` processes predicts (a contiguous block; empty when there are fewer sources)."""
    start, stop = shard_bounds(len(sources), rank, world)
    return list(sources[start:stop])


def merge_predictions(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One COCO ``predictions.json`` from the parts the ranks wrote for their blocks, given in rank order.

    Images keep their order and are numbered 1, 2, ... across the parts, each annotation's ``image_id`` follows its
    image, and annotations are numbered 1, 2, ... in the same order; ``info`` and ``categories`` come from the first
    part. The result equals what one process writes for all the sources.

    Example:
        >>> part = lambda name, n: {"info": {}, "images": [{"id": 1, "file_name": name}],
        ...                         "annotations": [{"id": i + 1, "image_id": 1} for i in range(n)]}
        >>> merged = merge_predictions([part("a.jpg", 2), part("b.jpg", 1)])
        >>> [(a["id"], a["image_id"]) for a in merged["annotations"]], [i["id"] for i in merged["images"]]
        ([(1, 1), (2, 1), (3, 2)], [1, 2])
    """
    if not parts:
        raise SparseInstError("merge_predictions needs at least one part")
    merged = {key: value for key, value in parts[0].items() if key not in ("images", "annotations")}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for part in parts:
        new_ids: dict[int, int] = {}
        for image in part.get("images", []):
            new_ids[image["id"]] = len(images) + 1
            images.append({**image, "id": len(images) + 1})
        for annotation in part.get("annotations", []):
            annotations.append({**annotation, "id": len(annotations) + 1, "image_id": new_ids[annotation["image_id"]]})
    merged["images"], merged["annotations"] = images, annotations
    return merged
