"""Training curves: ``results.png`` (losses, learning rate, mask AP / AP50 over steps) from ``metrics.jsonl``.

Drawn with matplotlib (the optional ``plot`` extra). :func:`plot_run` is what ``sparseinst train`` calls after each
evaluation and at the end, and what ``sparseinst plot RUN`` calls to redraw a run.

Example:
    >>> import json, os, tempfile
    >>> run = tempfile.mkdtemp()
    >>> with open(os.path.join(run, "metrics.jsonl"), "w") as f:
    ...     for step in (1, 2):
    ...         _ = f.write(json.dumps({"type": "train", "step": step, "loss": 3.0 / step, "lr": 1e-4}) + "\\n")
    ...     _ = f.write(json.dumps({"type": "eval", "step": 2, "AP": 10.0, "AP50": 20.0}) + "\\n")
    >>> os.path.basename(plot_run(run))
    'results.png'
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..errors import MissingDependency, SparseInstError, install_hint
from .metrics_log import read_metrics

__all__ = ["plot_run", "plot_metrics", "try_plot_run", "RESULTS_NAME"]

_logger = logging.getLogger("sparseinst_zoo")
RESULTS_NAME = "results.png"
LOSS_KEYS = ("loss", "loss_ce", "loss_mask", "loss_dice", "loss_objectness")
AP_KEYS = ("AP", "AP50")
_warned_missing = False


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in records if r.get("type", "train") == kind and r.get(key) is not None]
    return [s for s, _ in points], [v for _, v in points]


def _image_path(path: str, formats: dict[str, str]) -> str:
    """The file matplotlib writes for ``path``: ``results.png`` in a folder, ``.png`` added without an extension.

    Raises:
        SparseInstError: the extension is not one of ``formats`` (it would fail after the figure is drawn).
    """
    if os.path.isdir(path):
        return os.path.join(path, RESULTS_NAME)
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    if not extension:
        return path + ".png"
    if extension not in formats:
        raise SparseInstError(
            f"{path}: not an image format matplotlib writes (use .png, .jpg, .pdf, .svg or another of "
            f"{', '.join(sorted(formats))})"
        )
    return path


def plot_metrics(records: list[dict[str, Any]], out_path: str, title: str = "") -> str:
    """Draw the curves of ``records`` (``metrics.jsonl`` records) into the image ``out_path``; returns its path
    (``out_path/results.png`` for a folder, ``out_path.png`` without an extension).

    Raises:
        MissingDependency: matplotlib is not installed (``pip install "sparseinst-zoo[plot]"``).
        SparseInstError: ``out_path`` has an extension matplotlib cannot write.
    """
    try:
        from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched
    except ImportError:
        raise MissingDependency(f"drawing curves needs matplotlib: {install_hint('plot')}") from None

    figure = Figure(figsize=(15, 4.2), layout="constrained")
    out_path = _image_path(out_path, figure.canvas.get_supported_filetypes())
    losses, lr, ap = figure.subplots(1, 3)
    for key in LOSS_KEYS:
        steps, values = _series(records, "train", key)
        if steps:
            losses.plot(steps, values, label=key, linewidth=1.8 if key == "loss" else 1.0)
    steps, values = _series(records, "train", "lr")
    lr.plot(steps, values, color="tab:purple")
    for key in AP_KEYS:
        steps, values = _series(records, "eval", key)
        if steps:
            ap.plot(steps, values, marker="o", label=f"mask {key}")
    for axes, name in ((losses, "training losses (weighted)"), (lr, "learning rate"), (ap, "validation mask AP (%)")):
        axes.set_title(name)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if not _series(records, "eval", "AP")[0]:
        ap.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ap.transAxes, color="gray")
    if title:
        figure.suptitle(title)
    figure.savefig(out_path, dpi=100)
    return out_path


def plot_run(run: str, out_path: str | None = None) -> str:
    """Redraw ``RUN/results.png`` (or ``out_path``) from ``RUN/metrics.jsonl``; returns the image's path.

    Raises:
        FileNotFoundError: ``run`` has no ``metrics.jsonl``.
        MissingDependency: matplotlib is not installed.
    """
    metrics = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(metrics):
        raise FileNotFoundError(f"{metrics} does not exist; give the output folder of a `sparseinst train` run")
    title = os.path.basename(os.path.normpath(run))
    return plot_metrics(read_metrics(metrics), out_path or os.path.join(run, RESULTS_NAME), title=title)


def try_plot_run(run: str) -> str | None:
    """:func:`plot_run` during training: without matplotlib, warn once and skip."""
    global _warned_missing
    try:
        return plot_run(run)
    except ImportError:  # MissingDependency included
        if not _warned_missing:
            _logger.warning("matplotlib is not installed, so no %s is drawn (%s)", RESULTS_NAME, install_hint("plot"))
            _warned_missing = True
        return None
