"""Postprocessing time of 100 queries at the evaluation threshold, by how many of their masks can be visible.

A trained SparseInst gives most of its 100 queries an empty mask (no stride-4 probability near the mask threshold;
their final score is 0), random weights give none. Postprocessing skips the empty ones and upsamples the rest a few
at a time on a CPU; ``before`` is the upsampling alone of the earlier path (every kept mask, up to 64 MiB of
float32 at once; a lower bound of its postprocessing, while ``now`` is the whole of postprocess). The
two give bit-identical masks (checked here on every configuration). Synthetic outputs: ``--visible`` of the queries
have strong random masks, the others none; every query passes the 0.005 threshold. The paths alternate in each
round, so a busy shared CPU slows them alike.

Example:
    python benchmarks/postprocess_speed.py --size 480x640 --threads 2 --rounds 7 --visible 100 30 10 \
        --out benchmarks/results/postprocess-speed.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from sparseinst_zoo._constants import EVAL_SCORE_THRESHOLD, MASK_STRIDE
from sparseinst_zoo.inference import postprocess as module
from sparseinst_zoo.inference.transforms import get_output_shape, padded_shape

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_matrix import report  # noqa: E402


def synthetic_outputs(resized: tuple[int, int], queries: int, visible: int) -> dict[str, torch.Tensor]:
    """Raw heads for one image: every query kept, the first ``visible`` with masks that cross the threshold."""
    padded = padded_shape(*resized)
    generator = torch.Generator().manual_seed(0)
    masks = torch.randn(1, queries, padded[0] // MASK_STRIDE, padded[1] // MASK_STRIDE, generator=generator) * 3
    masks[:, visible:] = masks[:, visible:].clamp(max=-1.0)  # sigmoid(-1) = 0.27: no pixel near 0.45
    return {
        "pred_logits": torch.full((1, queries, 80), 2.0),
        "pred_scores": torch.full((1, queries, 1), 2.0),
        "pred_masks": masks,
    }


def before(outputs: dict[str, torch.Tensor], resized: tuple[int, int], original: tuple[int, int]) -> torch.Tensor:
    """The earlier path: every kept mask upsampled, 64 MiB of float32 at a time."""
    padded = (outputs["pred_masks"].shape[-2] * MASK_STRIDE, outputs["pred_masks"].shape[-1] * MASK_STRIDE)
    probs = outputs["pred_masks"][0].sigmoid()
    return module.upsample_masks(probs, padded, resized, original, 0.45, chunk_pixels=module.UPSAMPLE_CHUNK_PIXELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x640", help="HEIGHTxWIDTH of the original image")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--visible", type=int, nargs="+", default=[100, 30, 10], help="queries with visible masks")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", help="also write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    original = tuple(int(v) for v in args.size.split("x"))
    resized = get_output_shape(original[0], original[1], 640, 853)
    lines = [
        f"`python benchmarks/postprocess_speed.py --size {args.size} --threads {args.threads} --rounds {args.rounds} "
        f"--visible {' '.join(map(str, args.visible))}` (torch {torch.__version__}, {args.queries} queries kept, "
        f"image {args.size} resized to {resized[0]}x{resized[1]})",
        "",
        "| visible masks | before ms | now ms | speed-up | identical |",
        "|---:|---:|---:|---:|---|",
    ]
    for visible in args.visible:
        outputs = synthetic_outputs(resized, args.queries, visible)
        paths = {
            "before": lambda outputs=outputs: before(outputs, resized, original),
            "now": lambda outputs=outputs: module.postprocess(outputs, [resized], [original], EVAL_SCORE_THRESHOLD)[0][
                "masks"
            ],
        }
        identical = torch.equal(paths["before"](), paths["now"]())
        times: dict[str, list[float]] = {name: [] for name in paths}
        for round_index in range(args.rounds):
            for name in sorted(paths, reverse=bool(round_index % 2)):
                start = time.perf_counter()
                paths[name]()
                times[name].append((time.perf_counter() - start) * 1000)
        old, new = statistics.median(times["before"]), statistics.median(times["now"])
        lines.append(f"| {visible} | {old:.0f} | {new:.0f} | {old / new:.2f}x | {'yes' if identical else 'NO'} |")
        print(lines[-1], flush=True)
    report(lines, args.out)


if __name__ == "__main__":
    main()
