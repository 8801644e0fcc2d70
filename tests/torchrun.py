"""Launching ``torchrun`` (``python -m torch.distributed.run``) on 127.0.0.1 for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

__all__ = ["TORCHRUN_ENV", "free_port", "torchrun_command", "run_torchrun"]

# one thread per process (2 cores shared by the processes) and no library warnings in the captured stderr
TORCHRUN_ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun_command(*args: str, nproc: int = 2) -> list[str]:
    """``torchrun --nproc-per-node NPROC`` on one node at 127.0.0.1 (a fresh port), then ``args``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1",
        f"--master-port={free_port()}",
        *args,
    ]


def run_torchrun(
    *args: str, nproc: int = 2, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run :func:`torchrun_command` and assert it succeeded (its stderr tail is the message otherwise).

    ``env`` adds to (or replaces entries of) :data:`TORCHRUN_ENV`.
    """
    proc = subprocess.run(
        torchrun_command(*args, nproc=nproc),
        env={**TORCHRUN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
