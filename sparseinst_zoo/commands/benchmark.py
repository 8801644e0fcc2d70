"""``sparseinst benchmark``: latency, throughput, memory and GFLOPs of a model, plain or with the fast paths.

Example:
    $ sparseinst benchmark sparseinst_r50_giam --device cpu --threads 2 --size 640x853 --min-size 640 \
        --fold-bn --channels-last --iters 10 --out r50_cpu.json
    $ sparseinst benchmark sparseinst_r50_giam --backend openvino --precision bf16 --threads 2 --what predict
    $ sparseinst benchmark r50_giam_640x864.onnx --threads 2 --what predict
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .._download import download_bars
from ..errors import command_line_words
from ._options import (
    add_batch_size_argument,
    add_deprecated_alias,
    add_device_argument,
    add_precision_argument,
    add_quiet_argument,
    add_resize_arguments,
    add_speed_arguments,
    add_threads_argument,
    non_negative_int,
    positive_int,
    speed_kwargs,
)

HELP = "measure latency (median/p10/p90), images/s, peak memory and GFLOPs of a model and its fast inference paths"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the benchmark options on ``parser``."""
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="model name (see `sparseinst list`), e.g. sparseinst_r50_giam, or an exported .onnx / OpenVINO .xml file",
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "openvino"),
        default=None,
        help="runtime: torch (default for a model name), onnxruntime (default for .onnx) or openvino "
        "(default for .xml; --precision bf16 is OpenVINO's default on AVX512-BF16/AMX CPUs); a "
        "model name is exported at the input size first",
    )
    add_device_argument(parser)
    add_batch_size_argument(parser, default=1)
    parser.add_argument(
        "--size",
        default="640x853",
        metavar="HxW",
        help="HEIGHTxWIDTH of the decoded image (default: 640x853, a COCO-like photo)",
    )
    add_resize_arguments(parser, no_resize=True)
    add_precision_argument(parser, default="fp32", aliases=())
    add_speed_arguments(parser)
    parser.add_argument(
        "--what",
        choices=("forward", "predict"),
        default="forward",
        help="forward (the default): network on a padded float batch; predict: end to end on uint8 images",
    )
    parser.add_argument(
        "--resize-backend",
        choices=("pil", "torch"),
        default=None,
        help="--what predict: resize with PIL (the reference, default on CPU) or torch on the device (default on CUDA)",
    )
    parser.add_argument(
        "--iters",
        type=positive_int,
        default=None,
        metavar="N",
        help="timed iterations (default: 50 on CUDA, 10 on CPU)",
    )
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="untimed warm-up iterations (default: 10 on CUDA, 2 on CPU)",
    )
    add_threads_argument(parser)
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs count (one extra forward)")
    parser.add_argument(
        "--weights",
        choices=("random", "pretrained"),
        default="random",
        help="random (default: speed does not depend on the weights, but predict keeps every query) "
        "or the released weights (needs the Hub or its cache)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="local weights instead: model.safetensors, a save_pretrained folder or a reference .pth",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="OUT.json",
        help="also write the full result as JSON (an existing file is kept: the next free name _2, _3 is used)",
    )
    add_deprecated_alias(parser, "--json", "--out", dest="out")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Run one benchmark, print a summary and optionally write JSON. Returns 0."""
    from ..benchmark import check_result_path, format_result, run_benchmark, write_json
    from ..inference.backends import EXPORTED_SUFFIXES

    if args.out:
        check_result_path(args.out)  # before the run, not after it
    backend = args.backend or EXPORTED_SUFFIXES.get(os.path.splitext(args.model)[1].lower(), "torch")
    result = run_benchmark(
        args.model,
        backend=backend,
        device=args.device,
        batch_size=args.batch_size,
        image_size=args.size,
        min_size=args.min_size,
        max_size=args.max_size,
        **speed_kwargs(args),
        iters=args.iters,
        warmup=args.warmup,
        what=args.what,
        threads=args.threads,
        flops=not args.no_flops,
        resize_backend=args.resize_backend,
        pretrained=args.weights == "pretrained",
        checkpoint_path=args.checkpoint,
        seed=args.seed,
    )
    print(format_result(result))
    if args.out:
        written = write_json(result, args.out)
        if written != args.out:  # news even with --quiet
            print(f"{args.out} exists; wrote {written}")
        elif not args.quiet:
            print(f"wrote {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command without the rest of the CLI (used by ``benchmarks/run_matrix.py`` in fresh processes)."""
    parser = argparse.ArgumentParser(prog="sparseinst benchmark", description=HELP)
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    args = parser.parse_args(argv)
    try:
        with command_line_words(), download_bars(not args.quiet):
            return run(args)
    except (ValueError, OSError, RuntimeError, KeyError) as err:
        if args.debug:
            raise
        print(f"sparseinst benchmark: error: {getattr(err, 'cli_message', None) or err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
