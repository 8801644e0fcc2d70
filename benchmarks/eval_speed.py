"""Time COCO mask-AP scoring with faster-coco-eval and pycocotools on a synthetic shapes set.

Detections are the ground-truth masks shifted by up to 2 pixels (20% relabelled) plus ``--junk`` random
low-score boxes per image, so that each image is scored with a realistic number of candidates. Prints a Markdown
table (and writes it with ``--out``).

Example:
    $ python benchmarks/eval_speed.py --images 3000 --junk 20 --out benchmarks/results/eval-speed.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

import numpy as np

from sparseinst_zoo.data import CocoInstances
from sparseinst_zoo.data.synthetic import make_shapes_dataset
from sparseinst_zoo.evaluation import METRIC_KEYS, coco_ground_truth, score_detections
from sparseinst_zoo.inference.masks import encode_rle

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_matrix import report  # noqa: E402


def make_detections(coco: CocoInstances, junk: int, seed: int = 0) -> list[dict]:
    """Shifted ground truth plus ``junk`` random rectangles per image."""
    rng = np.random.default_rng(seed)
    detections = []
    for image in coco.images:
        labels, masks = coco.load_targets(image)
        for label, mask in zip(labels, masks):
            mask = np.roll(mask, int(rng.integers(-2, 3)), axis=int(rng.integers(2)))
            label = (label + 1) % coco.num_classes if rng.random() < 0.2 else label
            detections.append(
                {
                    "image_id": image.id,
                    "category_id": coco.category_ids[label],
                    "segmentation": encode_rle(mask[None])[0],
                    "score": float(rng.uniform(0.3, 1.0)),
                }
            )
        for _ in range(junk):
            mask = np.zeros((image.height, image.width), np.uint8)
            y, x = rng.integers(0, image.height - 8), rng.integers(0, image.width - 8)
            mask[y : y + int(rng.integers(4, 24)), x : x + int(rng.integers(4, 24))] = 1
            detections.append(
                {
                    "image_id": image.id,
                    "category_id": int(rng.choice(coco.category_ids)),
                    "segmentation": encode_rle(mask[None])[0],
                    "score": float(rng.uniform(0.0, 0.3)),
                }
            )
    return detections


def time_backend(coco: CocoInstances, detections: list[dict], backend: str, repeats: int) -> tuple[float, dict]:
    """Best wall time of ``repeats`` full scorings (ground truth object, loadRes, evaluate, accumulate)."""
    best, metrics = float("inf"), {}
    for _ in range(repeats):
        tic = time.perf_counter()
        metrics = score_detections(coco, detections, backend, gt=coco_ground_truth(coco, backend))
        best = min(best, time.perf_counter() - tic)
    return best, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--junk", type=int, default=20, help="random low-score detections per image")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = make_shapes_dataset(folder, args.images, (args.size, args.size), max_shapes=4, seed=0)
        coco = CocoInstances(path, folder, keep_crowd=True)
        detections = make_detections(coco, args.junk)
        results = {b: time_backend(coco, detections, b, args.repeats) for b in ("pycocotools", "faster")}
    instances = sum(len(i.annotations) for i in coco.images)
    slow, fast = results["pycocotools"][0], results["faster"][0]
    diff = max(abs(results["pycocotools"][1][k] - results["faster"][1][k]) for k in METRIC_KEYS[:3])
    lines = [
        f"# COCO mask-AP scoring time: {args.images} synthetic {args.size}x{args.size} images",
        "",
        f"{instances} ground-truth instances, {len(detections)} detections ({args.junk} junk per image); best of "
        f"{args.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs "
        f"(shared machine, `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}`).",
        "",
        "| backend | seconds | speed-up | AP |",
        "|---|---:|---:|---:|",
        f"| pycocotools | {slow:.2f} | 1.0x | {results['pycocotools'][1]['AP']:.3f} |",
        f"| faster-coco-eval | {fast:.2f} | {slow / fast:.1f}x | {results['faster'][1]['AP']:.3f} |",
        "",
        f"Largest AP/AP50/AP75 difference between the two: {diff:.2e} (percent points).",
        "",
        f"Command: `python benchmarks/eval_speed.py --images {args.images} --size {args.size} --junk {args.junk} "
        f"--repeats {args.repeats}`",
    ]
    report(lines, args.out)


if __name__ == "__main__":
    main()
