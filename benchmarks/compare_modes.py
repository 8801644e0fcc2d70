"""Compare inference modes in one process, interleaving their calls, and write a Markdown table.

Use it on machines where other work competes for the CPU/GPU: every round runs each mode once (in a rotating
order), so slow periods hit all modes alike, and the per-round ratio to the first mode ("paired speed-up", the
median over rounds) stays meaningful even when absolute latencies drift. ``run_matrix.py`` measures absolute
figures (one fresh process per configuration) on a quiet machine.

Exported runtimes are modes too: ``onnxruntime`` (the exact ONNX graph), ``openvino-fp32`` (OpenVINO, f32 inference
precision) and ``openvino`` (OpenVINO's default CPU inference precision, bf16 on AVX512-BF16/AMX CPUs); the model is
exported once at the network input size. The "accuracy" column compares each mode's raw heads with PyTorch fp32 eager
on the same batch (:func:`sparseinst_zoo.export.compare_outputs`: max |diff| relative to the output's scale, and
the max probability difference).

Example (the CPU figures of docs/performance.md):
    python benchmarks/compare_modes.py sparseinst_r50_giam --device cpu --threads 2 --size 640x853 \
        --min-size 640 --what predict --modes fp32 fp32-fold-cl bf16-cl onnxruntime openvino-fp32 openvino \
        --rounds 6 --out benchmarks/results/cpu-r50-giam-predict-backends-2threads.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_matrix import MODES, report  # noqa: E402

EXPORTED = {"onnxruntime": ("onnxruntime", None), "openvino-fp32": ("openvino", "fp32"), "openvino": ("openvino", None)}

import sparseinst_zoo  # noqa: E402
from sparseinst_zoo._constants import EVAL_SCORE_THRESHOLD  # noqa: E402
from sparseinst_zoo.benchmark import environment, input_size_for, parse_size  # noqa: E402
from sparseinst_zoo.export import compare_outputs, convert_onnx_to_openvino, export_onnx  # noqa: E402
from sparseinst_zoo.inference.backends import RAW_OUTPUTS, ExportedPredictor, load_backend  # noqa: E402
from sparseinst_zoo.inference.optimize import optimize_for_inference  # noqa: E402
from sparseinst_zoo.inference.predictor import Predictor  # noqa: E402


def build_calls(
    model: torch.nn.Module,
    modes: Sequence[str],
    what: str,
    batch: int,
    image_size: tuple[int, int],
    min_size: int,
    max_size: int,
    device: torch.device,
    score_threshold: float = EVAL_SCORE_THRESHOLD,
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """One zero-argument callable per mode (forward or end-to-end predict), and each mode's accuracy vs fp32."""
    in_size = input_size_for(image_size, min_size, max_size)
    images = torch.randn(batch, 3, *in_size, generator=torch.Generator().manual_seed(0)).to(device)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*image_size, 3), dtype=np.uint8) for _ in range(batch)]
    reference = _eager(model, images)
    files = _export_files(model, modes, in_size, device)
    calls: dict[str, Callable[[], Any]] = {}
    accuracy: dict[str, str] = {}
    # by default the reference's workload: every query above the evaluation threshold is postprocessed at full size
    common: dict[str, Any] = dict(
        min_size=min_size, max_size=max_size, batch_size=batch, keep_image=False, score_threshold=score_threshold
    )
    for mode in modes:
        if mode in EXPORTED:
            runtime, precision = EXPORTED[mode]
            net: Any = load_backend(files[runtime], runtime, num_threads=torch.get_num_threads(), precision=precision)
            predictor: Predictor = ExportedPredictor(net, **common)
            mode_label = f"{mode} ({getattr(net, 'precision', 'fp32')})"
        elif mode == "default":  # what model.predict runs when given no option: the cached exact fast path
            predictor = Predictor(model, **common)
            net, mode_label = predictor.model, "default predict"
        else:
            options = MODES[mode]
            net = optimize_for_inference(model, **{"fold_bn": False, **options}) if options else model
            # optimize=False: the row runs exactly its own mode (predict's default would fold the eager model)
            predictor = Predictor(net, optimize=False, **common)
            mode_label = mode
        accuracy[mode] = _accuracy(reference, _eager(net, images)) + f" | {mode_label}"
        if what == "forward":
            calls[mode] = lambda net=net: _eager(net, images)
        else:
            calls[mode] = lambda predictor=predictor: predictor.predict_images(frames)
    return calls, accuracy


def _export_files(
    model: torch.nn.Module,
    modes: Sequence[str],
    in_size: tuple[int, int],
    device: torch.device,
) -> dict[str, str]:
    """Export once at the fixed input size: ONNX for onnxruntime, its OpenVINO conversion for openvino."""
    runtimes = {EXPORTED[mode][0] for mode in modes if mode in EXPORTED}
    if not runtimes:
        return {}
    if device.type != "cpu":
        raise ValueError("the onnxruntime/openvino modes run on the CPU; use --device cpu")
    folder = tempfile.mkdtemp(prefix="sparseinst-compare-")
    files = {"onnxruntime": export_onnx(model, os.path.join(folder, "model.onnx"), *in_size, verify=False)}
    if "openvino" in runtimes:
        files["openvino"] = convert_onnx_to_openvino(files["onnxruntime"], os.path.join(folder, "model.xml"))
    return files


def _accuracy(reference: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> str:
    """``max |diff| / scale`` of the worst head and the max probability difference, vs PyTorch fp32 eager."""
    expected = [reference[name].float() for name in RAW_OUTPUTS]
    got = [outputs[name].float().cpu().numpy() for name in RAW_OUTPUTS]
    differences, _ = compare_outputs(RAW_OUTPUTS, expected, got)
    relative = max(differences[n] / max(float(e.abs().max()), 1.0) for n, e in zip(RAW_OUTPUTS, expected))
    return f"{relative:.1e} | {differences['probabilities']:.1e} | {differences['mask_pixels']:.1e}"


def _eager(model: Any, images: torch.Tensor) -> Any:
    with torch.inference_mode():
        return model(images)


def interleave(
    calls: dict[str, Callable[[], Any]],
    rounds: int,
    warmup: int,
    device: torch.device,
) -> dict[str, list[float]]:
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


def table(times: dict[str, list[float]], batch: int, accuracy: dict[str, str]) -> str:
    names = list(times)
    base = times[names[0]]
    lines = [
        f"| mode | median ms | min ms | p90 ms | images/s (median) | paired speed-up vs {names[0]} | "
        "max abs diff / scale vs fp32 | max prob diff | mask pixels flipped | runs as |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in names:
        values = times[name]
        median = statistics.median(values)
        paired = statistics.median(b / v for b, v in zip(base, values))
        lines.append(
            f"| {name} | {median:.1f} | {min(values):.1f} | {np.percentile(values, 90):.1f} | "
            f"{batch * 1000 / median:.2f} | {paired:.2f}x | {accuracy[name]} |"
        )
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
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=EVAL_SCORE_THRESHOLD,
        help="predict rows keep instances above this (default: the evaluation's 0.005, the reference's workload)",
    )
    parser.add_argument("--out", default=None, help="Markdown file to write (default: print only)")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="COCO weights (cache -> Hub -> original release) instead of random ones: trained masks, mostly empty",
    )
    args = parser.parse_args(argv)
    unknown = [m for m in args.modes if m not in MODES and m not in EXPORTED and m != "default"]
    if unknown:
        parser.error(f"unknown modes {unknown}; known: {['default', *MODES, *EXPORTED]}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = sparseinst_zoo.create_model(args.model, pretrained=args.pretrained).eval().to(device)
    cfg = model.pretrained_cfg
    min_size = args.min_size if args.min_size is not None else cfg.min_size
    max_size = args.max_size if args.max_size is not None else cfg.max_size
    image_size = parse_size(args.size)
    calls, accuracy = build_calls(
        model, args.modes, args.what, args.batch_size, image_size, min_size, max_size, device, args.score_threshold
    )
    kept = ""
    if args.what == "predict":
        kept = f", score threshold {args.score_threshold}: {len(calls[args.modes[0]]()[0])} instances kept"
    times = interleave(calls, args.rounds, args.warmup, device)
    env = environment(device)
    in_size = input_size_for(image_size, min_size, max_size)
    command = "python benchmarks/compare_modes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        f"# {args.model} {args.what}, interleaved modes",
        "",
        f"- {env['device_name']} ({device}), {env['threads']} threads, torch {env['torch']}, timm {env['timm']}",
        f"- batch {args.batch_size}, image {args.size}, network input {in_size[0]}x{in_size[1]}, "
        f"{args.rounds} rounds after {args.warmup} warm-up{kept}",
        f"- command: `{command}`",
        "",
        table(times, args.batch_size, accuracy),
    ]
    report(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
