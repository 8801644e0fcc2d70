"""``sparseinst export MODEL --format onnx``: an exact ONNX file (or a torch.export ``.pt2`` program) of a model.

MODEL is a registered name (weights: ``--weights pretrained`` from the Hub, ``--checkpoint PATH`` from a local file,
or ``--weights random``), ``hf-hub:org/repo``, or a folder written by ``save_pretrained`` / ``sparseinst convert``.

Example:
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --format onnx --height 640 --width 864
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --dynamic --out r50_giam_dynamic.onnx
"""

from __future__ import annotations

import argparse
import os
import time

from ._model import add_model_arguments, load_cli_model

HELP = "export a model to ONNX (normalisation inside, exact pyramid pooling, DCN as DeformConv) or torch.export .pt2"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the export options on ``parser``."""
    add_model_arguments(parser)
    parser.add_argument("--format", choices=("onnx", "pt2"), default="onnx",
                        help="onnx (default) or pt2 (torch.export.save of the same pixel-input program)")
    parser.add_argument("--height", type=int, default=640, help="input height, a multiple of 32 (default 640)")
    parser.add_argument("--width", type=int, default=640, help="input width, a multiple of 32 (default 640)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="output file (default: MODEL_HxW.onnx, or MODEL_dynamic.onnx with --dynamic)")
    parser.add_argument("--dynamic", action="store_true",
                        help="dynamic height and width (any multiples of 32); the batch dimension is always dynamic")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 19; DCN models need >= 19)")
    parser.add_argument("--half", action="store_true", help="float16 weights and activations (GPU runtimes)")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="output per-query scores, labels and mask probabilities at the input size instead of "
                             "the raw heads (OnnxPredictor needs the raw heads)")
    parser.add_argument("--mask-threshold", type=float, default=0.45,
                        help="mask threshold of the in-graph rescoring (--with-postprocess; default 0.45)")
    parser.add_argument("--uint8", action="store_true",
                        help="uint8 pixel input instead of float32 (feed camera frames directly)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the onnxruntime-vs-PyTorch check on a random batch after the export")


def _default_out(args: argparse.Namespace) -> str:
    stem = os.path.basename(os.path.normpath(args.model.removeprefix("hf-hub:"))).replace("/", "_") or "model"
    size = "dynamic" if args.dynamic else f"{args.height}x{args.width}"
    return f"{stem}_{size}.{args.format}"


def run(args: argparse.Namespace) -> int:
    """Build the model, export it, verify it and print a summary. Returns 0."""
    from ..export import DEFAULT_OPSET, HALF_TOLERANCE, export_onnx, save_program, verify_onnx

    if args.format == "pt2" and (args.opset is not None or args.half):
        raise ValueError("--opset and --half apply to --format onnx only")
    out = args.out or _default_out(args)
    model = load_cli_model(args.model, args.weights, args.checkpoint)
    start = time.perf_counter()
    if args.format == "pt2":
        path = save_program(
            model, out, args.height, args.width, dynamic=args.dynamic, with_preprocess=True,
            with_postprocess=args.with_postprocess, input_dtype="uint8" if args.uint8 else "float32",
        )  # fmt: skip
        print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s; "
              "load it with torch.export.load(path).module()")
        return 0
    path = export_onnx(
        model, out, args.height, args.width, dynamic=args.dynamic, opset=args.opset or DEFAULT_OPSET, half=args.half,
        with_postprocess=args.with_postprocess, mask_threshold=args.mask_threshold,
        input_dtype="uint8" if args.uint8 else "float32", verify=False,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    size = "dynamic HxW (multiples of 32)" if args.dynamic else f"{args.height}x{args.width}"
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB, input {size}) in {seconds:.1f} s")
    if args.no_verify:
        return 0
    tolerance = HALF_TOLERANCE if args.half else {}
    differences = verify_onnx(model, path, args.height, args.width, raise_on_mismatch=True, **tolerance)
    summary = ", ".join(f"{name} {diff:.2g}" for name, diff in differences.items())
    versus = "float32 PyTorch (float16 graph)" if args.half else "PyTorch"
    print(f"onnxruntime matches {versus} at {args.height}x{args.width} (max abs difference: {summary})")
    return 0
