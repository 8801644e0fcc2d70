"""``sparseinst plot RUN``: redraw a training run's curves (``RUN/results.png``) from ``RUN/metrics.jsonl``.

Example:
    $ sparseinst plot runs/train
    $ sparseinst plot runs/train --out curves.png
"""

from __future__ import annotations

import argparse

from ..errors import SparseInstError

HELP = "draw the training curves of a run (losses, learning rate, mask AP) into RUN/results.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the plot options on ``parser``."""
    parser.add_argument("run", metavar="RUN", help="output folder of `sparseinst train` (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="PNG to write (default: RUN/results.png)")


def run(args: argparse.Namespace) -> int:
    """Draw the curves; print where they are. Returns 0."""
    from ..training.plot import plot_run

    try:
        path = plot_run(args.run, args.out)
    except ImportError:
        raise SparseInstError("drawing curves needs matplotlib: pip install 'sparseinst-zoo[plot]'") from None
    print(path)
    return 0
