"""Compare inference modes in one process, interleaving their calls, and write a Markdown table.

Use it on machines where other work competes for the CPU/GPU: every round runs each mode once (in a rotating
order), so slow periods hit all modes alike, and the per-round ratio to the first mode ("paired speed-up", the
median over rounds) stays meaningful even when absolute latencies drift. ``run_matrix.py`` measures absolute
figures (one fresh process per configuration) on a quiet machine.

Example (the CPU figures of docs/performance.md):
    python benchmarks/compare_modes.py sparseinst_r50_giam --device cpu --threads 2 --size 640x853 \
        --min-size 640 --modes fp32 fp32-fold fp32-fold-cl bf16-fold bf16-cl --rounds 8 --out cpu_compare.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_matrix import MODES, write_text  # noqa: E402

ONNXRUNTIME = "onnxruntime"  # export to ONNX, run with onnxruntime's CPU provider (CPU only)

import sparseinst_zoo  # noqa: E402
from sparseinst_zoo.benchmark import environment, input_size_for, parse_size  # noqa: E402
from sparseinst_zoo.inference.predictor import Predictor  # noqa: E402
from sparseinst_zoo.optimize import optimize_for_inference  # noqa: E402


def build_calls(model: torch.nn.Module, modes: Sequence[str], what: str, batch: int, image_size: tuple[int, int],
                min_size: int, max_size: int, device: torch.device) -> dict[str, Callable[[], Any]]:  # fmt: skip
    """One zero-argument callable per mode running the forward or the end-to-end predict path."""
    in_size = input_size_for(image_size, min_size, max_size)
    images = torch.randn(batch, 3, *in_size, generator=torch.Generator().manual_seed(0)).to(device)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(batch)]
    calls: dict[str, Callable[[], Any]] = {}
    for mode in modes:
        if mode == ONNXRUNTIME:
            calls[mode] = _onnxruntime_call(model, what, in_size, images, frames, min_size, max_size, batch)
            continue
        options = MODES[mode]
        net = optimize_for_inference(model, **{"fold_bn": False, **options}) if options else model
        if what == "forward":
            calls[mode] = (lambda net=net: net(images)) if options else (lambda: _eager(model, images))
        else:
            predictor = Predictor(net, min_size=min_size, max_size=max_size, batch_size=batch, keep_image=False)
            calls[mode] = lambda predictor=predictor: predictor.predict_images(frames)
    return calls


def _onnxruntime_call(
    model: torch.nn.Module, what: str, in_size: tuple[int, int], images: torch.Tensor, frames: list[np.ndarray],
    min_size: int, max_size: int, batch: int,
) -> Callable[[], Any]:  # fmt: skip
    """Export ``model`` (fixed input size) to a temporary ONNX file and run it with onnxruntime, same threads."""
    import tempfile

    from sparseinst_zoo.export import OnnxPredictor, export_onnx

    path = os.path.join(tempfile.mkdtemp(prefix="sparseinst-compare-"), "model.onnx")
    if images.device.type != "cpu":
        raise ValueError("the onnxruntime mode runs on the CPU provider; use --device cpu")
    export_onnx(model, path, height=in_size[0], width=in_size[1], verify=False)
    predictor = OnnxPredictor(path, num_threads=torch.get_num_threads(), min_size=min_size, max_size=max_size,
                              batch_size=batch, keep_image=False)  # fmt: skip
    if what == "forward":
        return lambda: predictor.model(images)
    return lambda: predictor.predict_images(frames)


def _eager(model: torch.nn.Module, images: torch.Tensor) -> Any:
    with torch.inference_mode():
        return model(images)


def interleave(calls: dict[str, Callable[[], Any]], rounds: int, warmup: int, device: torch.device,
               ) -> dict[str, list[float]]:  # fmt: skip
    """Milliseconds per call of each mode over ``rounds`` rounds (order rotated every round)."""
    names = list(calls)

    def timed(name: str) -> float:
        start = time.perf_counter()
        calls[name]()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - start) * 1000.0

    for _ in range(warmup):
        for name in names:
            timed(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(timed(name))
        print(f"round {index + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.0f} ms" for n in names), flush=True)
    return times


def table(times: dict[str, list[float]], batch: int) -> str:
    names = list(times)
    base = times[names[0]]
    lines = [
        f"| mode | median ms | min ms | p90 ms | images/s (median) | paired speed-up vs {names[0]} |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        values = times[name]
        median = statistics.median(values)
        paired = statistics.median(b / v for b, v in zip(base, values))
        lines.append(f"| {name} | {median:.1f} | {min(values):.1f} | {np.percentile(values, 90):.1f} | "
                     f"{batch * 1000 / median:.2f} | {paired:.2f}x |")  # fmt: skip
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", nargs="+", default=["fp32", "fp32-fold", "fp32-fold-cl", "bf16-fold", "bf16-cl"])
    parser.add_argument("--what", choices=("forward", "predict"), default="forward")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--size", default="640x853")
    parser.add_argument("--min-size", type=int, default=None)
    parser.add_argument("--max-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--out", default=None, help="Markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES and m != ONNXRUNTIME]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {[*MODES, ONNXRUNTIME]}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = sparseinst_zoo.create_model(args.model).eval().to(device)
    cfg = model.pretrained_cfg
    min_size = args.min_size if args.min_size is not None else cfg.min_size
    max_size = args.max_size if args.max_size is not None else cfg.max_size
    image_size = parse_size(args.size)
    calls = build_calls(model, args.modes, args.what, args.batch_size, image_size, min_size, max_size, device)
    times = interleave(calls, args.rounds, args.warmup, device)
    env = environment(device)
    in_size = input_size_for(image_size, min_size, max_size)
    command = "python benchmarks/compare_modes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = "\n".join([
        f"# {args.model} {args.what}, interleaved modes",
        "",
        f"- {env['device_name']} ({device}), {env['threads']} threads, torch {env['torch']}, timm {env['timm']}",
        f"- batch {args.batch_size}, image {args.size}, network input {in_size[0]}x{in_size[1]}, "
        f"{args.rounds} rounds after {args.warmup} warm-up",
        f"- command: `{command}`",
        "",
        table(times, args.batch_size),
        "",
    ])  # fmt: skip
    print(text)
    if args.out:
        write_text(args.out, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
