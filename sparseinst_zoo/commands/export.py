"""``sparseinst export MODEL --format onnx|openvino|pt2``: an exact ONNX file, an OpenVINO model converted from it,
or a torch.export ``.pt2`` program.

MODEL is a registered name (weights: ``--weights pretrained`` from the Hub, ``--checkpoint PATH`` from a local file,
or ``--weights random``), ``hf-hub:org/repo``, or a folder written by ``save_pretrained`` / ``sparseinst convert``.

Height and width are dynamic unless ``--height`` and ``--width`` fix them: the network's output depends on the padded
size it sees, so only a dynamic export gives ``model.predict``'s results for every image. The file goes beside a
MODEL folder (``runs/train/best`` -> ``runs/train/best.onnx``), else into the current folder; an existing file is
never replaced: the next free name (``best_2.onnx``) is taken instead.

Example:
    $ sparseinst export runs/train/best --format openvino
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --out r50_giam.onnx
    $ sparseinst export sparseinst_r50_giam --checkpoint model.safetensors --height 640 --width 864
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .._io import free_path, staged_path
from ..errors import SparseInstError
from ._model import add_model_arguments, load_cli_model
from ._options import add_mask_threshold_argument, add_precision_argument, add_quiet_argument

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
    parser.add_argument(
        "--height",
        type=int,
        default=None,
        help="with --width: a fixed input height, a multiple of 32 (default: dynamic height and width)",
    )
    parser.add_argument(
        "--width",
        type=int,
        default=None,
        help="with --height: a fixed input width, a multiple of 32 (default: dynamic height and width)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="output file, ending in .onnx|.xml|.pt2 as --format (default: MODEL.onnx, or MODEL_HxW.onnx for a fixed "
        "size, beside a MODEL folder, else here); an existing file is kept and the next free name (_2, _3) is used",
    )
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="dynamic height and width (the default; with --height/--width those only set the size traced and "
        "verified at); the batch dimension is always dynamic",
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset, >= 18 (default: 19; DCN models need >= 19)"
    )
    add_precision_argument(  # --half: its deprecated alias, a switch meaning fp16
        parser,
        choices=("fp32", "fp16"),
        alias_means="fp16",
        default_help="fp32; --format onnx: fp16 is float16 weights and activations, for GPU runtimes",
    )
    parser.add_argument(
        "--with-postprocess",
        action="store_true",
        help="output per-query scores, labels and mask probabilities at the input size instead of "
        "the raw heads (OnnxPredictor needs the raw heads)",
    )
    add_mask_threshold_argument(parser, note="the in-graph rescoring of --with-postprocess")
    parser.add_argument(
        "--uint8", action="store_true", help="uint8 pixel input instead of float32 (feed camera frames directly)"
    )
    parser.add_argument(
        "--no-verify", action="store_true", help="skip the runtime-vs-PyTorch check on a random batch after the export"
    )
    add_quiet_argument(parser)


def _fixed_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """``(height, width)`` given on the command line, or None; one without the other is an error."""
    if (args.height is None) != (args.width is None):
        raise SparseInstError("--height and --width go together: give both for a fixed input size, or neither")
    return None if args.height is None else (args.height, args.width)


def _output_path(args: argparse.Namespace) -> str:
    """``--out`` (its suffix checked) or the default name, moved to the next free name if it (or a companion) exists.

    Example:
        >>> ns = argparse.Namespace(model="hf-hub:org/repo", out=None, format="onnx", height=None, width=None)
        >>> os.path.basename(_output_path(ns))
        'repo.onnx'
    """
    suffix = "." + SUFFIXES[args.format]
    if args.out is not None:
        folder, name = os.path.split(os.path.expanduser(args.out))
        stem, given = os.path.splitext(name)
        if given.lower() != suffix or (args.format == "openvino" and given != suffix):  # OpenVINO: only .xml
            raise SparseInstError(
                f"--out {args.out!r} does not end in {suffix}, the suffix of --format {args.format}; give e.g. "
                f"{os.path.join(folder, (stem or 'model') + suffix)!r}"
            )
        suffix = given  # as the user spelled it (.ONNX)
    elif os.path.isdir(args.model):  # a save_pretrained folder: beside it, as Ultralytics writes beside the weights
        folder, stem = os.path.split(os.path.abspath(args.model))
        folder = os.path.relpath(folder)
    else:
        folder, stem = "", os.path.basename(args.model.removeprefix("hf-hub:").rstrip("/")) or "model"
    size = _fixed_size(args)
    if args.out is None and size is not None and not args.dynamic:
        stem = f"{stem}_{size[0]}x{size[1]}"
    return free_path(folder, stem, suffix, set(), _companions(args.format))


def _summary(differences: dict[str, float]) -> str:
    shown = {name: diff for name, diff in differences.items() if name not in ("labels", "mask_pixels")}
    return ", ".join(f"{name} {diff:.2g}" for name, diff in shown.items())


def _verify(args: argparse.Namespace, model: Any, staged: str, out: str, size: tuple[int, int]) -> list[str]:
    """Check the staged file against PyTorch (raising, so that it is never moved into place) and say how it went."""
    from ..export import EXACT_TOLERANCE, HALF_TOLERANCE, verified_precisions, verify_onnx, verify_openvino

    height, width = size
    source = f"the export to {out!r} (not written)"
    if args.format == "openvino":
        lines = []
        for precision in verified_precisions():
            differences = verify_openvino(
                model, staged, precision, height=height, width=width, raise_on_mismatch=True, source=source
            )
            exact = "exact" if precision == "fp32" else "within the bf16/fp16 tolerance"
            lines.append(
                f"OpenVINO {precision} matches PyTorch at {height}x{width}, {exact} "
                f"(max abs difference: {_summary(differences)})"
            )
        return lines
    half = args.precision == "fp16"
    tolerance = HALF_TOLERANCE if half else EXACT_TOLERANCE
    differences = verify_onnx(model, staged, height, width, tolerance=tolerance, raise_on_mismatch=True, source=source)
    versus = "float32 PyTorch (float16 graph)" if half else "PyTorch"
    return [f"onnxruntime matches {versus} at {height}x{width} (max abs difference: {_summary(differences)})"]


def _export(args: argparse.Namespace, model: Any, path: str, size: tuple[int, int], dynamic: bool) -> None:
    """Write the export of ``model`` at ``path`` in the format of ``args``."""
    from ..export import DEFAULT_OPSET, export_onnx, export_openvino, save_program

    input_dtype = "uint8" if args.uint8 else "float32"
    if args.format == "pt2":
        save_program(
            model,
            path,
            *size,
            dynamic=dynamic,
            with_preprocess=True,
            with_postprocess=args.with_postprocess,
            mask_threshold=args.mask_threshold,
            input_dtype=input_dtype,
        )
        return
    options: dict[str, Any] = dict(
        dynamic=dynamic,
        with_postprocess=args.with_postprocess,
        mask_threshold=args.mask_threshold,
        input_dtype=input_dtype,
        verify=False,
    )
    if args.format == "openvino":
        export_openvino(model, path, *size, **options)
    else:
        export_onnx(model, path, *size, opset=args.opset or DEFAULT_OPSET, precision=args.precision, **options)


def _companions(export_format: str) -> tuple[str, ...]:
    """The files an export writes beside its output (same stem), which must be free and move with it."""
    if export_format != "openvino":
        return ()
    from ..export.openvino import WEIGHTS_SUFFIXES

    return WEIGHTS_SUFFIXES


def _written(path: str, companions: tuple[str, ...]) -> list[str]:
    """``path`` and its companion files."""
    return [path] + [os.path.splitext(path)[0] + suffix for suffix in companions]


def run(args: argparse.Namespace) -> int:
    """Build the model, export it, verify it, move it into place and print a summary. Returns 0."""
    if args.format != "onnx" and (args.opset is not None or args.precision != "fp32"):
        raise SparseInstError("--opset and --precision fp16 apply to --format onnx only")
    out = _output_path(args)
    if args.out is not None and os.path.abspath(out) != os.path.abspath(os.path.expanduser(args.out)):
        print(f"{args.out} exists; writing {out} instead")
    from ..export.wrapper import check_size, export_shape

    if args.height is not None:  # _output_path has checked that --width goes with it
        check_size(args.height, args.width)  # before the model is loaded
    model = load_cli_model(args.model, args.weights, args.checkpoint)
    height, width, dynamic = export_shape(model, args.height, args.width, dynamic=args.dynamic or None)
    size = (height, width)
    companions = _companions(args.format)
    start = time.perf_counter()
    with staged_path(out, companions, replace=False) as staged:  # a file made meanwhile keeps its name too
        _export(args, model, staged.path, size, dynamic)
        seconds = time.perf_counter() - start
        mib = sum(os.path.getsize(p) for p in _written(staged.path, companions)) / 2**20
        checks = [] if args.no_verify or args.format == "pt2" else _verify(args, model, staged.path, out, size)
    out = staged.target
    if args.quiet:
        return 0
    shape = "dynamic HxW (multiples of 32)" if dynamic else f"{size[0]}x{size[1]}"
    print(f"wrote {' + '.join(_written(out, companions))} ({mib:.1f} MiB, input {shape}) in {seconds:.1f} s")
    for line in checks:
        print(line)
    if args.format == "pt2":
        print("load it with torch.export.load(path).module()")
    return 0
