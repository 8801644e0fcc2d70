"""The instruments of :mod:`sparseinst_zoo.benchmark`: FLOP counting, peak memory, timed calls and the environment.

Example:
    >>> sorted(latency_summary([1.0, 2.0, 3.0]))
    ['max', 'mean', 'median', 'min', 'p10', 'p90']
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .version import __version__

__all__ = ["PeakMemory", "count_flops", "environment", "latency_summary", "time_calls"]


# ------------------------------------------------------------------------------------------------------- FLOPs
def _deform_conv2d_flops(input_shape, weight_shape, *args: Any, out_shape=None, **kwargs: Any) -> int:
    """Multiply-adds of a deformable conv counted as 2 FLOPs each, like a dense conv of the same shape."""
    _, in_per_group, kernel_h, kernel_w = weight_shape
    return 2 * int(np.prod(out_shape)) * in_per_group * kernel_h * kernel_w


def count_flops(model: nn.Module, images: torch.Tensor) -> int:
    """FLOPs of one ``model(images)`` call with :class:`torch.utils.flop_counter.FlopCounterMode`.

    Deformable convs (``torchvision::deform_conv2d``) are counted as dense convs (sampling not counted).
    """
    from torch.utils.flop_counter import FlopCounterMode

    mapping: dict[Any, Any] = {}
    deform = getattr(getattr(torch.ops, "torchvision", None), "deform_conv2d", None)
    if deform is not None:
        mapping[deform] = _deform_conv2d_flops
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(images)
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------- environment
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """Versions, device and threading facts that a benchmark figure depends on."""
    import timm
    import torchvision

    device = torch.device(device)
    env: dict[str, Any] = {
        "sparseinst_zoo": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "device_name": _cpu_name(),
        "cuda": torch.version.cuda,
        "cudnn": None,
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
        env["gpu_memory_gb"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return env


# ------------------------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak memory over a block: CUDA ``max_memory_allocated``, or the process's peak RSS (Linux VmHWM) on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.baseline_mb: float | None = None
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss"

    def reset(self) -> None:
        """Start a new peak window and remember the current use as the baseline."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_mb = torch.cuda.memory_allocated(self.device) / 2**20
            return
        self.baseline_mb = self._status_mb("VmRSS:")
        try:  # "5" resets the peak RSS (VmHWM) of this process (Linux >= 4.0)
            with open("/proc/self/clear_refs", "w", encoding="ascii") as file:
                file.write("5")
        except OSError:
            self.kind = "cpu_peak_rss_since_start"

    @staticmethod
    def _status_mb(field: str) -> float | None:
        try:
            with open("/proc/self/status", encoding="ascii") as file:
                for line in file:
                    if line.startswith(field):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def peak_mb(self) -> float | None:
        """Peak since :meth:`reset` (MiB)."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        peak = self._status_mb("VmHWM:")
        if peak is not None:
            return peak
        try:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        except ImportError:  # pragma: no cover - Windows
            return None


# ------------------------------------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[], Any], iters: int, warmup: int, device: torch.device) -> tuple[list[float], list[float]]:
    """Host latencies (ms) of ``iters`` calls after ``warmup`` untimed ones, and CUDA-event GPU times (ms)."""
    cuda = device.type == "cuda"
    # the events record on the current device's stream: make it the measured one (cuda:1, ...)
    with torch.cuda.device(device) if cuda else contextlib.nullcontext():
        for _ in range(warmup):
            fn()
        if cuda:
            torch.cuda.synchronize(device)
        host_ms: list[float] = []
        gpu_ms: list[float] = []
        for _ in range(iters):
            if cuda:
                start_event = torch.cuda.Event(enable_timing=True)
                end_event = torch.cuda.Event(enable_timing=True)
                start_event.record()
            start = time.perf_counter()
            fn()
            if cuda:
                end_event.record()
                torch.cuda.synchronize(device)
            host_ms.append((time.perf_counter() - start) * 1000.0)
            if cuda:
                gpu_ms.append(start_event.elapsed_time(end_event))
    return host_ms, gpu_ms


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 4),
        "p10": round(_percentile(values, 10), 4),
        "p90": round(_percentile(values, 90), 4),
        "mean": round(statistics.fmean(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }
