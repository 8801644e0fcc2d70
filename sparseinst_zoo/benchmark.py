"""Measure SparseInst speed: latency percentiles, throughput, peak memory, GFLOPs and the environment.

What is timed:

* ``what="forward"``: the network on a normalised, padded float batch already on the device (``model(x)``).
* ``what="predict"``: the end-to-end :class:`~sparseinst_zoo.inference.predictor.Predictor` path on decoded uint8
  HxWx3 images in host memory: resize, normalise and pad, network, postprocess to masks at the original size.

Each iteration is timed on the host with :func:`time.perf_counter` and, on CUDA, ends with
:func:`torch.cuda.synchronize` so that the time includes all GPU work it launched (CUDA events also give the GPU
time between the first and the last kernel, reported as ``gpu_ms_median``). Warm-up iterations (cuDNN autotuning,
``torch.compile``, CUDA-graph capture) are not timed.

The measuring instruments (FLOP counter, peak memory, timer, environment) live in :mod:`sparseinst_zoo._measure`.

Example:
    >>> from sparseinst_zoo.benchmark import run_benchmark
    >>> result = run_benchmark("sparseinst_tiny_test", image_size=(75, 110), iters=2, warmup=1)
    >>> sorted(result["latency_ms"])
    ['max', 'mean', 'median', 'min', 'p10', 'p90']
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._constants import EVAL_SCORE_THRESHOLD
from ._device import select_device
from ._factory import create_model
from ._io import check_json_path, write_new_json
from ._measure import PeakMemory, count_flops, environment, latency_summary, time_calls
from .errors import Argument, SparseInstError
from .export import export_onnx, export_openvino
from .inference.backends import BACKENDS, ExportedBackend, ExportedPredictor, is_exported_model, load_backend
from .inference.optimize import optimize_for_inference, resolve_compile_mode
from .inference.precision import PrecisionLike, parse_precision
from .inference.predictor import Predictor
from .inference.transforms import get_output_shape, padded_shape

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "RESULT_KEYS",
    "check_result_path",
    "count_flops",
    "environment",
    "format_result",
    "input_size_for",
    "parse_size",
    "run_benchmark",
    "write_json",
]

DEFAULT_IMAGE_SIZE: tuple[int, int] = (640, 853)
WHAT = ("forward", "predict")
# Top-level keys of a result (the JSON written by ``sparseinst benchmark --out``); documented in docs/performance.md.
RESULT_KEYS: tuple[str, ...] = (
    "model",
    "weights",
    "what",
    "device",
    "batch_size",
    "image_size",
    "input_size",
    "min_size",
    "max_size",
    "resize_backend",
    "options",
    "warmup",
    "iters",
    "latency_ms",
    "images_per_s",
    "gpu_ms_median",
    "peak_memory_mb",
    "memory_kind",
    "memory_baseline_mb",
    "gflops_per_image",
    "flops_note",
    "env",
)
FLOPS_NOTE = (
    "torch.utils.flop_counter, fp32 network forward at the input size, per image; convolutions and matmuls only; "
    "deformable convs counted as their equivalent dense conv (the bilinear sampling of DCN is not counted)"
)


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """``'640x853'`` (or ``'640,853'``, or a pair) -> ``(640, 853)`` as (height, width).

    Raises:
        SparseInstError: if it is not two positive integers.
    """
    parts: list[Any]
    if isinstance(text, str):
        parts = text.lower().replace(",", "x").split("x")
    else:
        parts = list(text)
    try:
        height, width = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise SparseInstError(f"size must be HEIGHTxWIDTH such as 640x853, got {text!r}") from None
    if height < 1 or width < 1:
        raise SparseInstError(f"size must be positive, got {height}x{width}")
    return height, width


def input_size_for(image_size: tuple[int, int], min_size: int, max_size: int) -> tuple[int, int]:
    """The padded network input of an image: resized by the test rule (``min_size`` 0: not resized), padded to 32.

    Example:
        >>> input_size_for((640, 853), 640, 853)
        (640, 864)
    """
    height, width = image_size
    if min_size > 0:
        height, width = get_output_shape(height, width, min_size, max_size)
    return padded_shape(height, width)


# ------------------------------------------------------------------------------------------------------- driver
def _load_model(model: nn.Module | str, pretrained: bool, checkpoint_path: str | None) -> tuple[nn.Module, str]:
    if isinstance(model, nn.Module):
        return model, "given"
    built = create_model(model, pretrained=pretrained, checkpoint_path=checkpoint_path)
    weights = checkpoint_path or ("pretrained" if pretrained else "random")
    return built, str(weights)


@dataclass
class _Setup:
    """What one benchmark configuration runs: the network, its weights, sizes and options."""

    runner: nn.Module
    torch_model: nn.Module | None  # for the FLOPs count (None for an exported file given by path)
    weights: str
    min_size: int
    max_size: int
    in_size: tuple[int, int]
    options: dict[str, Any]


def _sizes(
    cfg: Any, image_size: tuple[int, int], min_size: int | None, max_size: int | None, what: str
) -> tuple[int, int, tuple[int, int]]:
    min_size = int(min_size if min_size is not None else getattr(cfg, "min_size", 640))
    max_size = int(max_size if max_size is not None else getattr(cfg, "max_size", 853))
    if min_size < 0 or max_size < 1:
        raise SparseInstError(f"min_size must be >= 0 and max_size >= 1, got {min_size} and {max_size}")
    if what == "predict" and min_size == 0:
        raise SparseInstError.naming(
            "{what} resizes like the predictor; give {min_size} >= 1 (0 is for forward)",
            what=Argument("what", "predict"),
            min_size=Argument("min_size"),
        )
    return min_size, max_size, input_size_for(image_size, min_size, max_size)


def _torch_setup(
    model: nn.Module | str,
    device: torch.device,
    image_size: tuple[int, int],
    what: str,
    sizes: tuple[int | None, int | None],
    speed: dict[str, Any],
    weights: tuple[bool, str | None],
) -> _Setup:
    """The PyTorch backend: the eager model, or an optimised copy when a fast path is asked for."""
    compile_mode = resolve_compile_mode(speed["compile"])
    if speed["cuda_graphs"] and device.type != "cuda":
        raise SparseInstError.naming(
            "{cuda_graphs} needs a CUDA device, got {device}; drop {cuda_graphs} or use {cuda}",
            cuda_graphs=Argument("cuda_graphs", True),
            device=device,
            cuda=Argument("device", "cuda"),
        )
    net, weights_name = _load_model(model, *weights)
    net = net.eval().to(device)
    min_size, max_size, in_size = _sizes(getattr(net, "pretrained_cfg", None), image_size, *sizes, what)
    options = {"backend": "torch", **speed, "compile": compile_mode}
    runner: nn.Module = net
    if (
        speed["precision"] != "fp32"
        or speed["fold_bn"]
        or speed["channels_last"]
        or compile_mode
        or speed["cuda_graphs"]
    ):
        runner = optimize_for_inference(net, **{**speed, "compile": compile_mode}, device=device)
    return _Setup(runner, net, weights_name, min_size, max_size, in_size, options)


def _exported_setup(
    model: nn.Module | str,
    backend: str,
    device: torch.device,
    image_size: tuple[int, int],
    what: str,
    sizes: tuple[int | None, int | None],
    speed: dict[str, Any],
    weights: tuple[bool, str | None],
    threads: int | None,
) -> _Setup:
    """onnxruntime/OpenVINO: an exported file as given, or the model exported at the input size first."""
    if device.type != "cpu":
        raise SparseInstError.naming(
            "{backend} runs on the CPU here; use {cpu}",
            backend=Argument("backend", backend),
            cpu=Argument("device", "cpu"),
        )
    if speed["fold_bn"] or speed["channels_last"] or speed["compile"] or speed["cuda_graphs"]:
        raise SparseInstError.naming(
            "{fold_bn}/{channels_last}/{compile}/{cuda_graphs} are PyTorch fast paths; drop them with {backend}",
            **{name: Argument(name) for name in ("fold_bn", "channels_last", "compile", "cuda_graphs")},
            backend=Argument("backend", backend),
        )
    precision = speed["precision"]
    if backend == "onnxruntime" and precision != "fp32":
        raise SparseInstError.naming(
            "onnxruntime runs the graph's precision: use {fp32} with {backend}",
            fp32=Argument("precision", "fp32"),
            backend=Argument("backend", "onnxruntime"),
        )
    torch_model: nn.Module | None = None
    if is_exported_model(model):
        path, weights_name = str(model), "exported"
    else:
        torch_model, weights_name = _load_model(model, *weights)
        torch_model = torch_model.eval()
        path = _export_for(torch_model, backend, _sizes(torch_model.pretrained_cfg, image_size, *sizes, what)[2])
    runner = load_backend(path, backend, num_threads=threads, precision=precision)
    min_size, max_size, in_size = _sizes(runner.pretrained_cfg, image_size, *sizes, what)
    in_size = runner.input_size or in_size  # a fixed-size export runs every image padded to its one input size
    options = {"backend": backend, "precision": getattr(runner, "precision", "fp32"), "model_file": path}
    return _Setup(runner, torch_model, weights_name, min_size, max_size, in_size, options)


def _export_for(model: nn.Module, backend: str, in_size: tuple[int, int]) -> str:
    """Export ``model`` at the fixed input size into a temporary folder (ONNX, or OpenVINO IR for openvino)."""
    folder = tempfile.mkdtemp(prefix="sparseinst-benchmark-")
    if backend == "openvino":
        return export_openvino(model, os.path.join(folder, "model.xml"), *in_size, verify=False)
    return export_onnx(model, os.path.join(folder, "model.onnx"), *in_size, verify=False)


def _make_call(
    setup: _Setup, what: str, batch_size: int, image_size: tuple[int, int], device: torch.device, resize: str, seed: int
) -> Callable[[], Any]:
    generator = torch.Generator().manual_seed(seed)
    if what == "forward":
        images = torch.randn(batch_size, 3, *setup.in_size, generator=generator).to(device)

        def forward() -> Any:
            with torch.inference_mode():
                return setup.runner(images)

        return forward
    # optimize=False: the runner already is the chosen mode; the evaluation threshold keeps the reference's workload
    options: dict[str, Any] = dict(
        min_size=setup.min_size,
        max_size=setup.max_size,
        batch_size=batch_size,
        resize_backend=resize,
        keep_image=False,
        score_threshold=EVAL_SCORE_THRESHOLD,
    )
    if not isinstance(runner := setup.runner, ExportedBackend):
        options["optimize"] = False
    predictor: Predictor = (
        ExportedPredictor(runner, **options) if isinstance(runner, ExportedBackend) else Predictor(runner, **options)
    )
    rng = np.random.default_rng(seed)
    frames = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(batch_size)]
    return lambda: predictor.predict_images(frames)


def _check_run_options(what: str, backend: str, batch_size: int, threads: int | None) -> None:
    if what not in WHAT:
        raise SparseInstError(f"what must be one of {WHAT}, got {what!r}")
    if backend not in BACKENDS:
        raise SparseInstError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if int(batch_size) < 1:
        raise SparseInstError(f"batch size must be >= 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise SparseInstError(f"threads must be >= 1, got {threads}")


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)`` (None: as it is), restoring the count after it."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_benchmark(
    model: nn.Module | str,
    *,
    backend: str = "torch",
    device: torch.device | str | None = None,
    batch_size: int = 1,
    image_size: tuple[int, int] | str = DEFAULT_IMAGE_SIZE,
    min_size: int | None = None,
    max_size: int | None = None,
    precision: PrecisionLike = "fp32",
    fold_bn: bool = False,
    channels_last: bool = False,
    compile: bool | str | None = None,
    cuda_graphs: bool = False,
    iters: int | None = None,
    warmup: int | None = None,
    what: str = "forward",
    threads: int | None = None,
    flops: bool = True,
    resize_backend: str | None = None,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Benchmark one configuration and return a JSON-serialisable dict with the keys of :data:`RESULT_KEYS`.

    Args:
        model: a model name for :func:`create_model` (random weights unless ``pretrained``/``checkpoint_path``;
            speed does not depend on the weights, except in ``predict`` through the number of kept instances), a
            model instance, or an exported file (``.onnx``, OpenVINO ``.xml``) for the exported backends.
        backend: 'torch' (PyTorch), 'onnxruntime' or 'openvino' (CPU); a model given by name or instance is
            exported at the input size first (into a temporary folder).
        device: 'cuda', 'cpu', ... (default: CUDA when available).
        batch_size: images per call.
        image_size: (height, width) of the decoded image, or 'HxW'.
        min_size / max_size: test resize (default: the model's pretrained cfg); ``min_size=0`` keeps the image
            size (padded to 32) for ``forward``.
        precision: a name of :mod:`sparseinst_zoo.inference.precision` ('fp32', 'fp16', 'bf16'); PyTorch runs
            16-bit under autocast, OpenVINO as its inference precision (its default on AVX512-BF16 CPUs is bf16).
        fold_bn / channels_last / compile / cuda_graphs: PyTorch fast paths, see
            :func:`sparseinst_zoo.inference.optimize.optimize_for_inference`. With none of them the plain eager
            model runs.
        iters / warmup: timed and untimed calls (default 50 / 10 on CUDA, 10 / 2 on CPU).
        what: 'forward' (network only) or 'predict' (end to end on uint8 images).
        threads: CPU threads for the run (``torch.set_num_threads``; the exported runtimes' intra-op threads).
        flops: count GFLOPs (one extra fp32 PyTorch forward at batch 1; not for an exported file).
        resize_backend: predict only: 'pil' (reference) or 'torch' (on the device); default 'torch' on CUDA.
        pretrained / checkpoint_path: weights for a model given by name.
        seed: seed of the random input.

    Raises:
        SparseInstError: for bad options (unknown precision, CUDA-only options on a CPU, ...).
    """
    _check_run_options(what, backend, batch_size, threads)
    speed = {
        "precision": parse_precision(precision),
        "fold_bn": bool(fold_bn),
        "channels_last": bool(channels_last),
        "compile": compile,
        "cuda_graphs": bool(cuda_graphs),
    }
    with _torch_threads(threads):
        return _run(
            model,
            backend=backend,
            device=select_device(device),
            batch_size=int(batch_size),
            image_size=parse_size(image_size),
            sizes=(min_size, max_size),
            speed=speed,
            iters=iters,
            warmup=warmup,
            what=what,
            flops=flops,
            threads=threads,
            resize_backend=resize_backend,
            weights=(pretrained, checkpoint_path),
            seed=seed,
        )


def _run(
    model: nn.Module | str,
    *,
    backend: str,
    device: torch.device,
    batch_size: int,
    image_size: tuple[int, int],
    sizes: tuple[int | None, int | None],
    speed: dict[str, Any],
    iters: int | None,
    warmup: int | None,
    what: str,
    flops: bool,
    threads: int | None,
    resize_backend: str | None,
    weights: tuple[bool, str | None],
    seed: int,
) -> dict[str, Any]:
    """One configuration with the options checked, the device and sizes parsed and the threads set."""
    iters, warmup = _iteration_counts(iters, warmup, device)
    if backend == "torch":
        setup = _torch_setup(model, device, image_size, what, sizes, speed, weights)
    else:
        setup = _exported_setup(model, backend, device, image_size, what, sizes, speed, weights, threads)
    gflops = _gflops(setup, device, seed) if flops else None
    resize = (resize_backend or ("torch" if device.type == "cuda" else "pil")) if what == "predict" else None
    call = _make_call(setup, what, batch_size, image_size, device, resize or "pil", seed)
    measured = _measure(call, iters, warmup, device, batch_size)
    name = model if isinstance(model, str) else getattr(setup.runner, "model_name", type(setup.runner).__name__)
    return {
        "model": str(name),
        "weights": setup.weights,
        "what": what,
        "device": str(device),
        "batch_size": batch_size,
        "image_size": list(image_size),
        "input_size": list(setup.in_size),
        "min_size": setup.min_size,
        "max_size": setup.max_size,
        "resize_backend": resize,
        "options": setup.options,
        "warmup": warmup,
        "iters": iters,
        **measured,
        "gflops_per_image": gflops,
        "flops_note": FLOPS_NOTE,
        "env": environment(device),
    }


def _iteration_counts(iters: int | None, warmup: int | None, device: torch.device) -> tuple[int, int]:
    """``(iters, warmup)``, by default 50 / 10 on CUDA and 10 / 2 elsewhere."""
    iters = int(iters if iters is not None else (50 if device.type == "cuda" else 10))
    warmup = int(warmup if warmup is not None else (10 if device.type == "cuda" else 2))
    if iters < 1 or warmup < 0:
        raise SparseInstError(f"iters must be >= 1 and warmup >= 0, got {iters} and {warmup}")
    return iters, warmup


def _gflops(setup: _Setup, device: torch.device, seed: int) -> float | None:
    """GFLOPs of one fp32 forward at the input size, per image (None for an exported file given by path)."""
    if setup.torch_model is None:
        return None
    probe = torch.randn(1, 3, *setup.in_size, generator=torch.Generator().manual_seed(seed)).to(device)
    return round(count_flops(setup.torch_model, probe) / 1e9, 3)


def _measure(call: Callable[[], Any], iters: int, warmup: int, device: torch.device, batch_size: int) -> dict[str, Any]:
    """Warm ``call`` up, then time ``iters`` calls: the latency, throughput and memory keys of a result."""
    time_calls(call, 0, warmup, device)
    memory = PeakMemory(device)
    memory.reset()  # after the warm-up: cuDNN's algorithm search and graph capture are one-off, not steady state
    host_ms, gpu_ms = time_calls(call, iters, 0, device)
    peak = memory.peak_mb()
    latency = latency_summary(host_ms)
    return {
        "latency_ms": latency,
        "images_per_s": round(batch_size * 1000.0 / latency["median"], 3),
        "gpu_ms_median": round(statistics.median(gpu_ms), 4) if gpu_ms else None,
        "peak_memory_mb": round(peak, 1) if peak is not None else None,
        "memory_kind": memory.kind,
        "memory_baseline_mb": round(memory.baseline_mb, 1) if memory.baseline_mb is not None else None,
    }


def format_result(result: dict[str, Any]) -> str:
    """A few human-readable lines for a benchmark result."""
    lat = result["latency_ms"]
    opts = ", ".join(f"{k}={v}" for k, v in result["options"].items() if v not in (False, None) and k != "model_file")
    lines = [
        f"{result['model']} {result['what']} on {result['env']['device_name']} ({result['device']}, "
        f"{result['env']['threads']} threads), batch {result['batch_size']}, image "
        f"{'x'.join(map(str, result['image_size']))} -> input {'x'.join(map(str, result['input_size']))}, {opts}",
        f"latency ms: median {lat['median']:.2f}  p10 {lat['p10']:.2f}  p90 {lat['p90']:.2f}  "
        f"({result['iters']} iters after {result['warmup']} warm-up)",
        f"throughput: {result['images_per_s']:.2f} images/s",
    ]
    if result["gpu_ms_median"] is not None:
        lines.append(f"GPU time (CUDA events): median {result['gpu_ms_median']:.3f} ms")
    if result["peak_memory_mb"] is not None:
        base = result["memory_baseline_mb"]
        extra = f", {base:.1f} MiB before the timed calls" if base is not None else ""
        lines.append(f"peak memory: {result['peak_memory_mb']:.1f} MiB ({result['memory_kind']}{extra})")
    if result["gflops_per_image"] is not None:
        lines.append(f"GFLOPs per image: {result['gflops_per_image']:.2f}")
    return "\n".join(lines)


def check_result_path(path: str | os.PathLike[str]) -> str:
    """``path`` if it can name a new ``.json`` result file, else a one-line SparseInstError (check it before a run)."""
    return check_json_path(path, "the benchmark results", "result.json")


def write_json(result: dict[str, Any] | list[dict[str, Any]], path: str | os.PathLike[str]) -> str:
    """Write ``result`` as indented JSON, atomically, to ``path`` or, when that exists, the next free ``<stem>_2.json``
    (an earlier result is never replaced). Returns the path written."""
    return write_new_json(check_result_path(path), result)
