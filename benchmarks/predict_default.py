"""Default ``predict`` (the exact fast path) against the plain eager model, interleaved in one process.

The setting of issue 14's table: R-50 G-IAM, a 480x640 image resized to 640x853, CPU threads fixed. Each round runs
every mode once in a rotating order, so a busy shared CPU slows all modes alike; the paired ratio (median over
rounds) stays meaningful when absolute latencies drift. Also times the stages of the default path (preprocess,
network, postprocess) and checks that the default path's outputs match the eager model's.

Example:
    python benchmarks/predict_default.py --model sparseinst_r50_giam --threads 2 --rounds 6 \
        --out benchmarks/results/predict-default.md
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import sparseinst_zoo
from sparseinst_zoo.inference.predictor import Predictor
from sparseinst_zoo.inference.transforms import normalize_and_pad, resize_images


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _stage_times(predictor: Predictor, image: np.ndarray) -> dict[str, float]:
    """Milliseconds of preprocess, network and postprocess for one image on ``predictor``'s path."""
    with torch.inference_mode():
        start = time.perf_counter()
        resized, original = resize_images([image], predictor.min_size, predictor.max_size, predictor.device, "pil")
        batch, sizes = normalize_and_pad(resized, predictor.mean, predictor.std)
        t1 = time.perf_counter()
        outputs = predictor.forward(batch, predictor.network())
        t2 = time.perf_counter()
        predictor.postprocess(outputs, sizes, original)
        t3 = time.perf_counter()
    return {"preprocess": (t1 - start) * 1000, "network": (t2 - t1) * 1000, "postprocess": (t3 - t2) * 1000}


def _max_output_difference(model: torch.nn.Module, fast: Predictor, image: np.ndarray) -> float:
    eager = Predictor(model, optimize=False)
    with torch.inference_mode():
        resized, _ = resize_images([image], eager.min_size, eager.max_size, eager.device, "pil")
        batch, _ = normalize_and_pad(resized, eager.mean, eager.std)
        a, b = eager.forward(batch), fast.forward(batch, fast.network())
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sparseinst_r50_giam")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the decoded image")
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=0.005,
        help="0.005 keeps every query (the reference's workload); predict's default is 0.25",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown table here")
    parser.add_argument(
        "--pretrained",
        action="store_true",
        help="COCO weights (cache -> Hub -> original release) instead of random ones: trained masks, mostly empty",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    height, width = (int(v) for v in args.size.split("x"))
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    model = sparseinst_zoo.create_model(args.model, pretrained=args.pretrained).eval()
    modes = {
        "eager (optimize=False)": Predictor(model, score_threshold=args.score_threshold, optimize=False),
        "default predict": Predictor(model, score_threshold=args.score_threshold),
    }
    for predictor in modes.values():  # warm-up (and the one fold of the default path)
        predictor(image)
    times: dict[str, list[float]] = {name: [] for name in modes}
    names = list(modes)
    for round_index in range(args.rounds):
        for name in names[round_index % 2 :] + names[: round_index % 2]:
            times[name].append(_timed(lambda p=modes[name]: p(image)))
    eager_ms = statistics.median(times[names[0]])
    ratios = [e / d for e, d in zip(times[names[0]], times[names[1]])]
    stages = {name: _stage_times(p, image) for name, p in modes.items()}
    lines = [
        f"`python benchmarks/predict_default.py --model {args.model} --threads {args.threads} --rounds {args.rounds} "
        f"--size {args.size} --score-threshold {args.score_threshold}` (torch {torch.__version__}, "
        f"{len(ratios)} interleaved rounds, {len(predictor(image)[0])} instances kept)",
        "",
        "| mode | median ms | paired speed-up vs eager | preprocess ms | network ms | postprocess ms |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        median = statistics.median(times[name])
        speed = 1.0 if name == names[0] else statistics.median(ratios)
        s = stages[name]
        lines.append(
            f"| {name} | {median:.0f} | {speed:.2f}x | {s['preprocess']:.0f} | {s['network']:.0f} | "
            f"{s['postprocess']:.0f} |"
        )
    difference = _max_output_difference(model, modes[names[1]], image)
    lines += ["", f"max |default - eager| over the raw outputs: {difference:.2e}; eager median {eager_ms:.0f} ms"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
