"""``sparseinst export MODEL --format onnx|openvino|pt2``: an exact ONNX file, an OpenVINO model converted from it,
or a torch.export ``.pt2`` program.

MODEL is a registered name (weights: ``--weights pretrained`` from the Hub, ``--checkpoint PATH`` from a local file,
or ``--weights random``), ``hf-hub:org/repo``, or a folder written by ``save_pretrained`` / ``sparseinst convert``.

Example:
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --format onnx --height 640 --width 864
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --dynamic --out r50_giam_dynamic.onnx
    $ sparseinst export sparseinst_r50_giam --format openvino --height 640 --width 864 --out r50/model.xml
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from ..errors import SparseInstError
from ._model import add_model_arguments, load_cli_model

HELP = (
    "export a model to ONNX (normalisation inside, exact pyramid pooling, DCN as DeformConv), OpenVINO (from that "
    "ONNX graph) or torch.export .pt2"
)
SUFFIXES = {"onnx": "onnx", "openvino": "xml", "pt2": "pt2"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the export options on ``parser``."""
    add_model_arguments(parser)
    parser.add_argument(
        "--format",
        choices=tuple(SUFFIXES),
        default="onnx",
        help="onnx (default), openvino (model.xml + .bin converted from the ONNX graph by OpenVINO) "
        "or pt2 (torch.export.save of the same pixel-input program)",
    )
    parser.add_argument("--height", type=int, default=640, help="input height, a multiple of 32 (default 640)")
    parser.add_argument("--width", type=int, default=640, help="input width, a multiple of 32 (default 640)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="output file (default: MODEL_HxW.onnx|.xml|.pt2, or MODEL_dynamic.* with --dynamic)",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic height and width (any multiples of 32); the batch dimension is always dynamic",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default 19; DCN models need >= 19)")
    parser.add_argument("--half", action="store_true", help="float16 weights and activations (GPU runtimes)")
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="output per-query scores, labels and mask probabilities at the input size instead of "
        "the raw heads (OnnxPredictor needs the raw heads)",
    )
    parser.add_argument(
        "--mask-threshold",
        type=float,
        default=0.45,
        help="mask threshold of the in-graph rescoring (--with-postprocess; default 0.45)",
    )
    parser.add_argument(
        "--uint8", action="store_true", help="uint8 pixel input instead of float32 (feed camera frames directly)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the runtime-vs-PyTorch check on a random batch after the export"
    )


def _default_out(args: argparse.Namespace) -> str:
    stem = os.path.basename(os.path.normpath(args.model.removeprefix("hf-hub:"))).replace("/", "_") or "model"
    size = "dynamic" if args.dynamic else f"{args.height}x{args.width}"
    return f"{stem}_{size}.{SUFFIXES[args.format]}"


def _summary(differences: dict[str, float]) -> str:
    shown = {name: diff for name, diff in differences.items() if name not in ("labels", "mask_pixels")}
    return ", ".join(f"{name} {diff:.2g}" for name, diff in shown.items())


def _export_pt2(args: argparse.Namespace, model: Any, out: str) -> None:
    from ..export import save_program

    start = time.perf_counter()
    path = save_program(
        model,
        out,
        args.height,
        args.width,
        dynamic=args.dynamic,
        with_preprocess=True,
        with_postprocess=args.with_postprocess,
        input_dtype="uint8" if args.uint8 else "float32",
    )
    print(
        f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB) in {time.perf_counter() - start:.1f} s; "
        "load it with torch.export.load(path).module()"
    )


def _export_openvino(args: argparse.Namespace, model: Any, out: str, options: dict[str, Any]) -> None:
    from ..export import export_openvino, verify_openvino
    from ..inference.backends.openvino import default_precision

    start = time.perf_counter()
    path = export_openvino(model, out, args.height, args.width, verify=False, **options)
    weights = os.path.splitext(path)[0] + ".bin"
    seconds = time.perf_counter() - start
    print(f"wrote {path} + {weights} ({os.path.getsize(weights) / 2**20:.1f} MiB) in {seconds:.1f} s")
    if args.no_verify:
        return
    for precision in dict.fromkeys(("fp32", default_precision())):
        differences = verify_openvino(
            model, path, precision, height=args.height, width=args.width, raise_on_mismatch=True
        )
        exact = "exact" if precision == "fp32" else "within the bf16/fp16 tolerance"
        print(
            f"OpenVINO {precision} matches PyTorch at {args.height}x{args.width}, {exact} "
            f"(max abs difference: {_summary(differences)})"
        )


def run(args: argparse.Namespace) -> int:
    """Build the model, export it, verify it and print a summary. Returns 0."""
    from ..export import DEFAULT_OPSET, EXACT_TOLERANCE, HALF_TOLERANCE, export_onnx, verify_onnx

    if args.format != "onnx" and (args.opset is not None or args.half):
        raise SparseInstError("--opset and --half apply to --format onnx only")
    out = args.out or _default_out(args)
    model = load_cli_model(args.model, args.weights, args.checkpoint)
    if args.format == "pt2":
        _export_pt2(args, model, out)
        return 0
    options: dict[str, Any] = dict(
        dynamic=args.dynamic,
        with_postprocess=args.with_postprocess,
        mask_threshold=args.mask_threshold,
        input_dtype="uint8" if args.uint8 else "float32",
    )
    if args.format == "openvino":
        _export_openvino(args, model, out, options)
        return 0
    start = time.perf_counter()
    path = export_onnx(
        model, out, args.height, args.width, opset=args.opset or DEFAULT_OPSET, half=args.half, verify=False, **options
    )
    seconds = time.perf_counter() - start
    size = "dynamic HxW (multiples of 32)" if args.dynamic else f"{args.height}x{args.width}"
    print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB, input {size}) in {seconds:.1f} s")
    if args.no_verify:
        return 0
    tolerance = HALF_TOLERANCE if args.half else EXACT_TOLERANCE
    differences = verify_onnx(model, path, args.height, args.width, tolerance=tolerance, raise_on_mismatch=True)
    versus = "float32 PyTorch (float16 graph)" if args.half else "PyTorch"
    print(f"onnxruntime matches {versus} at {args.height}x{args.width} (max abs difference: {_summary(differences)})")
    return 0
