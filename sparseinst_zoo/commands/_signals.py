"""SIGTERM handled as Ctrl-C by the long-running commands (predict, track, train).

``kill``, ``timeout``, ``docker stop`` and batch schedulers end a process with SIGTERM, whose default action kills
it on the spot: the overlay videos and ``tracks.jsonl`` of a long run, written under temporary names and moved into
place when the run ends, stayed hidden temporary files, and a preempted training ended without saying how to resume.
Raised as KeyboardInterrupt, SIGTERM finishes and publishes the frames done so far, or prints the command that
continues the training from its last checkpoint, as Ctrl-C does, and the command exits with 130.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["terminate_as_interrupt"]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt (only the main thread can set a signal handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
