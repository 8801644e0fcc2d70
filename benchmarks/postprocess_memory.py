"""Peak resident memory of postprocessing many kept instances on a large image (issue 12, item 12).

Each measurement runs in a fresh process (peak RSS is per process): synthetic outputs with ``--instances`` queries
that all pass the thresholds, for an image of ``--size`` resized to the model's 640x853 rule, postprocessed to the
original size. ``--chunk-pixels 0`` upsamples every mask at once, as postprocess did before (K x H x W float32).

Example:
    python benchmarks/postprocess_memory.py --size 4000x4000 --instances 100
    python benchmarks/postprocess_memory.py --size 2000x2000 --instances 100 --chunk-pixels 0
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def _measure(height: int, width: int, instances: int, chunk_pixels: int | None) -> dict[str, float]:
    import torch

    from sparseinst_zoo.inference import postprocess as module
    from sparseinst_zoo.inference.transforms import get_output_shape, padded_shape

    torch.set_num_threads(1)
    resized = get_output_shape(height, width, 640, 853)
    padded = padded_shape(*resized)
    generator = torch.Generator().manual_seed(0)
    outputs = {
        "pred_logits": torch.full((1, instances, 80), 4.0),
        "pred_scores": torch.full((1, instances, 1), 4.0),
        "pred_masks": torch.randn(1, instances, padded[0] // 4, padded[1] // 4, generator=generator),
    }
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if chunk_pixels is None:  # the library's own path, end to end
        masks = module.postprocess(outputs, [resized], [(height, width)], 0.005, 0.45, instances)[0]["masks"]
    else:
        probs = outputs["pred_masks"][0].sigmoid()
        masks = module.upsample_masks(probs, padded, resized, (height, width), 0.45, chunk_pixels or 1 << 62)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_rss_mb": peak, "before_mb": before, "kept": int(masks.shape[0]), "mask_mb": masks.numel() / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="4000x4000", help="HEIGHTxWIDTH of the original image")
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument(
        "--chunk-pixels",
        type=int,
        default=None,
        help="float32 values upsampled at once (default: the library's; 0: all masks at once)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.split("x"))
    if args.child:
        print(json.dumps(_measure(height, width, args.instances, args.chunk_pixels)))
        return
    argv = [sys.executable, __file__, "--child", "--size", args.size, "--instances", str(args.instances)]
    if args.chunk_pixels is not None:
        argv += ["--chunk-pixels", str(args.chunk_pixels)]
    figures = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
    mode = "all masks at once" if args.chunk_pixels == 0 else "chunked (default)"
    peak, before, masks = figures["peak_rss_mb"], figures["before_mb"], figures["mask_mb"]
    print(
        f"{args.instances} instances at {args.size}, {mode}: peak RSS {peak:.0f} MB "
        f"(process before upsampling {before:.0f} MB; bool masks {masks:.0f} MB)"
    )


if __name__ == "__main__":
    main()
