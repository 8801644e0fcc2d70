"""What a training run reports: the ``metrics.jsonl`` log, TensorBoard, the progress bar and console lines.

Only rank 0 reports. Log lines and warnings go above the progress bar (never glued to it); without a progress bar
the losses are logged every ``log_period`` steps and each evaluation as one line.

Example:
    >>> import tempfile, os, json
    >>> path = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
    >>> log = MetricsLog(path, resume_step=None, tensorboard=False)
    >>> log.write({"type": "train", "step": 1, "loss": 2.5})
    >>> log.close(); json.loads(open(path).read())["loss"]
    2.5
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["MetricsLog", "ProgressBar", "read_metrics", "console_above_bar", "tensorboard_folder", "LOSS_SHORT_NAMES"]

_logger = logging.getLogger("sparseinst_zoo")
LOSS_SHORT_NAMES = {"loss": "loss", "loss_ce": "ce", "loss_mask": "mask", "loss_dice": "dice", "loss_objectness": "obj"}


def read_metrics(path: str, until_step: int | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file; a damaged line (a write cut off by a full disk) is skipped."""
    records = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                _logger.warning("%s line %d is damaged (an interrupted write?); it is skipped", path, number)
                continue
            if isinstance(record, dict) and (until_step is None or record.get("step", 0) <= until_step):
                records.append(record)
    return records


def tensorboard_folder(run: str) -> str:
    """Where a run's TensorBoard events are."""
    return os.path.join(run, "tensorboard")


class MetricsLog:
    """Append-only JSONL metrics log, optionally mirrored to TensorBoard.

    Args:
        path: the ``metrics.jsonl`` file.
        resume_step: None for a new run (the file is started empty); else the checkpoint's step: records after it
            (they will be logged again) and damaged lines are dropped, and TensorBoard hides its events after it.
        tensorboard: also write TensorBoard scalars to ``tensorboard/`` beside ``path`` (when installed); the
            folder is made with the first record, so a run that logs nothing leaves none.

    Attributes:
        records: how many records the file holds.
    """

    def __init__(self, path: str, resume_step: int | None, tensorboard: bool) -> None:
        self.path = path
        kept = read_metrics(path, resume_step) if resume_step is not None and os.path.exists(path) else []
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in kept)
        self.records = len(kept)
        self.resume_step = resume_step
        self.tensorboard = tensorboard
        self.writer: Any = None

    def _tensorboard_writer(self) -> Any:
        """The TensorBoard writer, created on first use (None when off or not installed)."""
        if self.tensorboard and self.writer is None:
            self.tensorboard = False  # one try: without TensorBoard installed the import fails every time
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: the events an interrupted run wrote after the checkpoint are logged again
                purge = None if self.resume_step is None else self.resume_step + 1
                self.writer = SummaryWriter(tensorboard_folder(os.path.dirname(self.path)), purge_step=purge)
            except ImportError:
                pass
        return self.writer

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (a dict with ``step`` and ``type``)."""
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        self.records += 1
        if self._tensorboard_writer() is not None:
            prefix = record.get("type", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ProgressBar:
    """A tqdm bar over the run's steps, or (``enabled=False``) periodic log lines instead."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.total = total
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True)

    def step(self, record: dict[str, Any]) -> None:
        """Advance by one step showing ``record``'s losses and learning rate."""
        if self.bar is not None:
            postfix = {name: f"{record[key]:.3f}" for key, name in LOSS_SHORT_NAMES.items() if key in record}
            self.bar.set_postfix({**postfix, "lr": f"{record['lr']:.2e}"}, refresh=False)
            self.bar.update(1)

    def logged(self, record: dict[str, Any]) -> None:
        """A log-period summary: one line when there is no bar."""
        if self.bar is None:
            losses = ", ".join(f"{name} {record[key]:.4f}" for key, name in LOSS_SHORT_NAMES.items() if key in record)
            _logger.info(
                "step %d/%d: %s, lr %.3g, eta %s",
                record["step"],
                self.total,
                losses,
                record["lr"],
                _duration(record.get("eta_s", 0.0)),
            )

    def message(self, text: str) -> None:
        """A line above the bar (or a log line without one)."""
        if self.bar is not None:
            self.bar.write(text)
        else:
            _logger.info(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextlib.contextmanager
def console_above_bar(enabled: bool) -> Iterator[None]:
    """Route logging records and warnings through ``tqdm.write`` while a progress bar is shown."""
    if not enabled:
        yield
        return
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    original = warnings.showwarning

    def show(
        message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None, line: str | None = None
    ) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
        tqdm.write(text, file=file or sys.stderr)

    warnings.showwarning = show
    try:
        # a logger without handlers propagates to the root's: redirecting both would print twice
        with logging_redirect_tqdm(loggers=[logging.root, *([_logger] if _logger.handlers else [])]):
            yield
    finally:
        warnings.showwarning = original
