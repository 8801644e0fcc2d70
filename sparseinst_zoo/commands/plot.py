"""``sparseinst plot RUN``: redraw a training run's curves (``RUN/results.png``) from ``RUN/metrics.jsonl``.

Example:
    $ sparseinst plot runs/train
    $ sparseinst plot runs/train --out curves.png
"""

from __future__ import annotations

import argparse

HELP = "draw the training curves of a run (losses, learning rate, mask AP) into RUN/results.png"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the plot options on ``parser``."""
    parser.add_argument("run", metavar="RUN", help="output folder of `sparseinst train` (holds metrics.jsonl)")
    parser.add_argument(
        "--out",
        default=None,
        help="image to write (.png, .jpg, .pdf, .svg ...; a folder: FOLDER/results.png; default: RUN/results.png)",
    )


def run(args: argparse.Namespace) -> int:
    """Draw the curves; print where they are. Returns 0."""
    from ..training.plot import plot_run

    print(plot_run(args.run, args.out))  # without matplotlib: a MissingDependency, one line saying what to install
    return 0
