"""``sparseinst predict MODEL [SOURCE ...]``: overlay images (COCO-style JSON, YOLO label files) for images, folders,
globs, videos.

MODEL is a registered name (weights: ``--weights pretrained`` from the Hub, ``--checkpoint PATH`` from a local file,
or ``--weights random``), ``hf-hub:org/repo``, or a folder written by ``save_pretrained`` / ``sparseinst convert``.
Without SOURCE the bundled sample photo is used.

Example:
    $ sparseinst predict sparseinst_r50_giam --checkpoint model.safetensors photo.jpg --out out/ --save-json
    $ sparseinst predict runs/train/best new_images/ --save-txt --save-conf --no-overlay  # pseudo-labels
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from .._constants import DEFAULT_PREDICT_DIR as DEFAULT_RUN_DIR
from .._constants import DEFAULT_SCORE_THRESHOLD
from .._text import listed
from ..errors import SparseInstError
from ._model import add_model_arguments, load_cli_model, refuse_weights_for_exported
from ._options import (
    PRECISION_SPELLINGS,
    add_batch_size_argument,
    add_device_argument,
    add_mask_threshold_argument,
    add_max_detections_argument,
    add_precision_argument,
    add_quiet_argument,
    add_resize_arguments,
    add_score_threshold_argument,
    add_speed_arguments,
    show_bar,
    speed_kwargs,
)
from ._signals import terminate_as_interrupt

HELP = "segment instances in images, folders, globs or videos; write overlays, COCO-style JSON or YOLO label files"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the predict options on ``parser``."""
    add_model_arguments(parser)
    parser.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="image/video files, folders or glob patterns (default: the bundled sample photo)",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_RUN_DIR,
        metavar="DIR",
        help=f"run folder for overlays and JSON (default: {DEFAULT_RUN_DIR}); if it exists, the next "
        "free DIR2, DIR3, ... is used",
    )
    parser.add_argument(
        "--exist-ok",
        action="store_true",
        help="write into DIR even if it exists (files already there are never replaced)",
    )
    add_score_threshold_argument(parser, DEFAULT_SCORE_THRESHOLD, note="0.005 keeps what COCO evaluation keeps")
    add_mask_threshold_argument(parser)
    add_max_detections_argument(parser)
    add_device_argument(parser)
    # None: the model's dtype (fp32 for a loaded model), or OpenVINO's own default for an .xml model
    add_precision_argument(parser, default=None, default_help="fp32; an OpenVINO model: OpenVINO's choice")
    add_batch_size_argument(parser, default=1)
    add_resize_arguments(parser)
    parser.add_argument(
        "--save-json",
        action="store_true",
        help="also write DIR/predictions.json (COCO format: images, categories with the model's "
        "dataset ids, annotations with RLE masks and scores)",
    )
    parser.add_argument(
        "--save-txt",
        action="store_true",
        help="also write a YOLO segmentation label file per image, DIR/labels/<stem>.txt ('class x1 y1 x2 y2 ...', "
        "normalised; <stem>_<frame>.txt per video frame; empty for no instances): pseudo-labels to fix and train on",
    )
    parser.add_argument(
        "--save-conf", action="store_true", help="with --save-txt: add each instance's score as the last column"
    )
    parser.add_argument(
        "--no-overlay", action="store_true", help="do not write overlay images (e.g. JSON or labels only)"
    )
    parser.add_argument(
        "--no-optimize",
        action="store_true",
        help="run the plain eager model (default: the exact fast path, BatchNorms folded, NHWC)",
    )
    add_quiet_argument(parser)  # also no per-image lines and no summary
    add_speed_arguments(parser, fold_and_nhwc_by_default=True)
    _allow_sources_after_options(parser)


def _allow_sources_after_options(parser: argparse.ArgumentParser) -> None:
    """Accept SOURCEs after options too (``predict MODEL --checkpoint x.pt photo.jpg``).

    argparse fills all positionals from the first run of them, so later paths come back as unrecognised; this
    parser's ``parse_known_args`` (which the ``sparseinst`` sub-command dispatch calls) appends them to ``sources``.
    A bare ``--half`` before a path (``--half photo.jpg``, the deprecated alias taking an optional value) is read as
    ``--half`` and a SOURCE.
    """

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        argv = _bare_half_before_source(sys.argv[1:] if args is None else list(args))
        namespace, extras = argparse.ArgumentParser.parse_known_args(parser, argv, namespace)
        late = [a for a in extras if not a.startswith("-") or a == "-"]
        if late:
            namespace.sources = list(namespace.sources or []) + late
        return namespace, [a for a in extras if a not in late]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign, assignment]


def _bare_half_before_source(argv: list[str]) -> list[str]:
    """``argv`` with ``--half PATH`` written ``--half=auto PATH`` where PATH is no precision but a source."""
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        value = out[i + 1]
        if arg == "--half" and value.lower() not in PRECISION_SPELLINGS and _looks_like_source(value):
            out[i] = "--half=auto"
    return out


def _looks_like_source(value: str) -> bool:
    """An existing path or a glob pattern (what ``--half`` may swallow from ``--half photo.jpg``)."""
    return os.path.exists(value) or any(c in value for c in "*?[")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Predictor keyword arguments from the flags."""
    from ..inference.writer import check_label_options

    check_label_options(args.save_txt, args.save_conf, ("--save-txt", "--save-conf"))
    speed = speed_kwargs(args)
    optimize: bool | dict[str, Any] | None = None  # the default exact fast path already folds BN, channels_last
    if args.no_optimize and (speed["compile"] or speed["cuda_graphs"]):
        raise SparseInstError("--no-optimize runs the plain eager model: drop it, or drop --compile and --cuda-graphs")
    if args.no_optimize:
        optimize = False
    elif speed["compile"] or speed["cuda_graphs"]:
        optimize = {"channels_last": True, "compile": speed["compile"], "cuda_graphs": speed["cuda_graphs"]}
    return {
        "score_threshold": args.score_threshold,
        "mask_threshold": args.mask_threshold,
        "max_detections": args.max_detections,
        "min_size": args.min_size,
        "max_size": args.max_size,
        "precision": args.precision,
        "sort_by_score": True,
        "batch_size": args.batch_size,
        "optimize": optimize,
    }


def run(args: argparse.Namespace) -> int:
    """Predict every source, write overlays (and JSON) through the library's writer; returns 0.

    Under ``torchrun`` every process predicts its block of the sources into one run folder and rank 0 writes the
    merged ``predictions.json`` (see :mod:`sparseinst_zoo.inference.sharding`).
    """
    from .._distributed import process_group_from_env
    from ..inference.sources import flatten_sources, sample_image_path

    options = _options(args)
    flat = flatten_sources(args.sources or [sample_image_path()])  # a typo fails before the model is built
    with process_group_from_env(args.device), terminate_as_interrupt():
        return _predict(args, options, flat)


def _predictor(args: argparse.Namespace, options: dict[str, Any], on_skip: Any) -> Any:
    """The predictor of MODEL: an exported file on its own runtime, else the PyTorch model on ``--device``."""
    import torch

    from .._device import select_device
    from .._distributed import local_rank, rank, world_size
    from ..inference.backends import create_predictor, is_exported_model
    from ..inference.predictor import Predictor

    if is_exported_model(args.model):
        speed = ["the PyTorch speed flags"] if options["optimize"] is not None else []
        refuse_weights_for_exported(args, *(["--device"] if args.device else []), *speed)
        exported = {k: v for k, v in options.items() if k != "optimize"}
        return create_predictor(args.model, on_skip=on_skip, **exported)
    if world_size() > 1 and args.weights == "random" and not args.checkpoint:
        torch.manual_seed(0)  # one random model on every rank, so the shares are predicted alike
    model = load_cli_model(args.model, args.weights, args.checkpoint, quiet=rank() > 0)  # a warning: not --quiet's
    device = select_device(args.device, local_rank=local_rank())
    return Predictor(model, device=device, on_skip=on_skip, **options)


def _predict(args: argparse.Namespace, options: dict[str, Any], flat: list[Any]) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .._distributed import rank, world_size
    from ..inference.sharding import shard_sources
    from ..inference.sources import has_video
    from ..inference.writer import ResultsWriter

    share = shard_sources(flat, rank(), world_size())
    skipped: list[str] = []

    def on_skip(path: str, error: Exception) -> None:
        skipped.append(path)
        tqdm.write(f"warning: skipped {path}: {error}", file=sys.stderr)

    predictor = _predictor(args, options, on_skip)
    threshold = options["score_threshold"]
    writer = ResultsWriter(
        args.out,
        overlays=not args.no_overlay,
        save_json=args.save_json,
        save_txt=args.save_txt,
        save_conf=args.save_conf,
        exist_ok=args.exist_ok,
        names=predictor.names,
        category_ids=predictor.category_ids,
        sources=flat,
        description=f"sparseinst predict {args.model}",
        info={"score_threshold": threshold},
        distributed=True,
    )
    total = None if has_video(share) else len(share)
    quiet = args.quiet or rank() > 0  # the other ranks print only their summary line
    verbose = not quiet and total is not None and total <= 20
    count = images = 0
    logger = logging.getLogger("sparseinst_zoo")
    hide_bar = not show_bar(quiet) or total == 1
    try:
        with (
            writer,
            logging_redirect_tqdm([logger]),
            tqdm(total=total, unit="img", file=sys.stderr, leave=False, disable=hide_bar) as bar,
        ):
            for result in predictor.stream_items(share):
                # the threshold applies to the final (rescored) score too, as the reference demo's display filter
                result = result[result.scores > threshold]
                writer.write(result)
                images, count = images + 1, count + len(result)
                if verbose:
                    summary = result.summary()
                    where = result.path or f"image {images - 1}"
                    tqdm.write(
                        f"{where}: {len(result)} instance(s){': ' + summary if summary else ''}", file=sys.stderr
                    )
                bar.update(1)
    except KeyboardInterrupt:
        args.resume_hint = interrupted_summary(writer.save_dir, writer.written, images, total)  # the files closed
        raise
    if not args.quiet:
        _print_summary(args, writer.written, count, images, threshold, len(skipped))
    return 0


def interrupted_summary(folder: str, written: list[str], done: int, total: int | None) -> str:
    """What a stopped run predicted and kept, e.g. ``612 of 2000 image(s) predicted; kept in runs/predict2: ...``.

    Example:
        >>> interrupted_summary("runs/p", ["runs/p/a.png", "runs/p/labels/a.txt", "runs/p/predictions.json"], 1, 4)
        '1 of 4 image(s) predicted; kept in runs/p: predictions.json, 1 overlay(s), 1 label file(s)'
    """
    progress = f"{done} of {total} image(s)" if total is not None else f"{done} image(s) or frame(s)"
    json_files = [os.path.basename(path) for path in written if path.endswith(".json")]
    labels = _label_files(written)
    overlays = len(written) - len(json_files) - len(labels)
    kept = [*json_files, *([f"{overlays} overlay(s)"] if overlays else []), *_counted_labels(labels)]
    return f"{progress} predicted; kept in {folder}: {', '.join(kept)}" if written else f"{progress} predicted"


def _label_files(written: list[str]) -> list[str]:
    """The YOLO label files among the files a writer wrote (the only ``.txt`` files it writes)."""
    return [path for path in written if path.endswith(".txt")]


def _counted_labels(labels: list[str]) -> list[str]:
    return [f"{len(labels)} label file(s)"] if labels else []


def _print_summary(
    args: argparse.Namespace, written: list[str], count: int, images: int, threshold: float, skipped: int
) -> None:
    from .._distributed import rank, world_size

    prefix = f"rank {rank()}/{world_size()}: " if world_size() > 1 else ""
    labels = _label_files(written)
    files = listed([path for path in written if not path.endswith(".txt")])
    if labels:  # thousands of them: their folder and count, not the first three
        files = ", ".join([*([files] if files else []), f"{len(labels)} label file(s) in {os.path.dirname(labels[0])}"])
    unread = f" ({skipped} unreadable file(s) skipped)" if skipped else ""
    print(
        f"{prefix}{count} instance(s) with score > {threshold} in {images} image(s){unread}; wrote {files or 'nothing'}"
    )
    if count == 0 and args.weights == "random" and not args.checkpoint and rank() == 0:
        print(
            "(random weights score below 0.1: add --score-threshold 0 to draw their meaningless masks anyway)",
            file=sys.stderr,
        )
