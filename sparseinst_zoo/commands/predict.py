"""``sparseinst predict MODEL [SOURCE ...]``: overlay images (and COCO-style JSON) for images, folders, globs, videos.

MODEL is a registered name (weights: ``--weights pretrained`` from the Hub, ``--checkpoint PATH`` from a local file,
or ``--weights random``), ``hf-hub:org/repo``, or a folder written by ``save_pretrained`` / ``sparseinst convert``.
Without SOURCE the bundled sample photo is used.

Example:
    $ sparseinst predict sparseinst_r50_giam --checkpoint model.safetensors photo.jpg --out out/ --save-json
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from ._model import add_model_arguments, load_cli_model
from .benchmark import add_speed_arguments, speed_kwargs

HELP = "segment instances in images, folders, globs or videos; write overlay images and COCO-style JSON"

# Display threshold of the CLI: the reference demo (demo.py --confidence-threshold) shows instances whose final score
# is above 0.5. The Python API keeps the evaluation threshold 0.005.
DEFAULT_CLI_THRESHOLD = 0.5
HALF_CHOICES = ("auto", "fp16", "bf16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the predict options on ``parser``."""
    add_model_arguments(parser)
    parser.add_argument("sources", nargs="*", metavar="SOURCE",
                        help="image/video files, folders or glob patterns (default: the bundled sample photo)")
    parser.add_argument("--out", default="runs/predict", metavar="DIR",
                        help="output folder for overlays and JSON (default: runs/predict)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_CLI_THRESHOLD,
                        help=f"show instances whose score is above this (default {DEFAULT_CLI_THRESHOLD}, as the "
                             "reference demo; 0.005 keeps what COCO evaluation keeps)")
    parser.add_argument("--mask-threshold", type=float, default=0.45, help="mask probability threshold (0.45)")
    parser.add_argument("--max-detections", type=int, default=100, help="at most this many instances per image")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--half", nargs="?", const="auto", default=None, metavar="{fp16,bf16}",
                        help="autocast the network: fp16, bf16, or without a value fp16 on CUDA / bf16 on CPU")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default: 1)")
    parser.add_argument("--min-size", type=int, default=None, help="resize shorter side (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None, help="cap of the longer side (default: the model's)")
    parser.add_argument("--save-json", action="store_true",
                        help="also write DIR/predictions.json (COCO format: images, categories, annotations with "
                             "RLE masks and scores)")
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlay images (e.g. JSON only)")
    parser.add_argument("--quiet", action="store_true", help="no per-image lines and no progress bar")
    add_speed_arguments(parser, precision=False)
    _allow_sources_after_options(parser)


def _allow_sources_after_options(parser: argparse.ArgumentParser) -> None:
    """Accept SOURCEs after options too (``predict MODEL --checkpoint x.pt photo.jpg``).

    argparse fills all positionals from the first run of them, so later paths come back as unrecognised; this
    parser's ``parse_known_args`` (which the ``sparseinst`` sub-command dispatch calls) appends them to ``sources``.
    """

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = argparse.ArgumentParser.parse_known_args(parser, args, namespace)
        late = [a for a in extras if not a.startswith("-") or a == "-"]
        half = getattr(namespace, "half", None)
        if half is not None and half not in HALF_CHOICES:  # `--half photo.jpg`: a bare --half, then a source
            if not _looks_like_source(half):
                parser.error(f"argument --half: invalid choice: {half!r} (choose from fp16, bf16, or no value)")
            namespace.half, late = "auto", [half, *late]
        if late:
            namespace.sources = list(namespace.sources or []) + late
        return namespace, [a for a in extras if a not in late]

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def _looks_like_source(value: str) -> bool:
    """An existing path or a glob pattern (what ``--half`` may swallow from ``--half photo.jpg``)."""
    return os.path.exists(value) or any(c in value for c in "*?[")


def _unique_stem(stem: str, used: set[str]) -> str:
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}_{n}", n + 1
    used.add(candidate)
    return candidate


def run(args: argparse.Namespace) -> int:
    """Predict every source, write overlays (and JSON); returns 0."""
    import torch
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .._io import atomic_write_json
    from ..inference.predictor import Predictor
    from ..inference.sources import flatten_sources, has_video, sample_image_path, video_fps
    from ..inference.visualise import VideoWriter

    if not 0.0 <= args.threshold < 1.0:
        raise ValueError(f"--threshold must be in [0, 1), got {args.threshold}")
    sources = args.sources or [sample_image_path()]
    flat = flatten_sources(sources)  # resolve paths first: a typo fails before the model is built
    model = load_cli_model(args.model, args.weights, args.checkpoint, args.quiet)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    speed = {k: v for k, v in speed_kwargs(args).items() if k != "precision"}  # --half sets the precision
    predictor = Predictor(
        model, score_threshold=args.threshold, mask_threshold=args.mask_threshold, max_detections=args.max_detections,
        min_size=args.min_size, max_size=args.max_size, device=device, half=args.half or False, sort_by_score=True,
        batch_size=args.batch_size, optimize=speed if any(speed.values()) else None,
    )  # fmt: skip
    os.makedirs(args.out, exist_ok=True)
    names = predictor.names
    coco: dict[str, Any] = {
        "info": {"description": f"sparseinst predict {args.model}", "score_threshold": args.threshold},
        "images": [], "annotations": [], "categories": [],
    }  # fmt: skip
    total = None if has_video(flat) else len(flat)
    verbose = not args.quiet and total is not None and total <= 20
    used: set[str] = set()
    stems: dict[str, str] = {}  # video path -> stem
    writers: dict[str, VideoWriter] = {}
    written: list[str] = []
    count = images = 0
    show_bar = not args.quiet and (total is None or total > 1)
    logger = logging.getLogger("sparseinst_zoo")
    # warnings (e.g. an unreadable file skipped in a folder) print above the progress bar, not through it
    with _SkippedFiles(logger) as skipped, logging_redirect_tqdm([logger]), \
            tqdm(total=total, unit="img", disable=not show_bar, file=sys.stderr, leave=False) as bar:  # fmt: skip
        for index, result in enumerate(predictor.stream(flat)):
            images += 1
            # the threshold applies to the final (rescored) score, as the reference demo's display filter
            result = result[result.scores > args.threshold]
            count += len(result)
            image_id = index + 1
            if args.save_json:
                entry = {"id": image_id, "file_name": result.path or f"image{index}", "height": result.image_size[0],
                         "width": result.image_size[1]}  # fmt: skip
                if result.frame is not None:
                    entry["frame"] = result.frame
                coco["images"].append(entry)
                for ann in result.to_coco(image_id):
                    ann.update(id=len(coco["annotations"]) + 1, area=int(_area(ann["segmentation"])), iscrowd=0)
                    coco["annotations"].append(ann)
            if not args.no_overlay:
                if result.frame is None:
                    stem = _unique_stem(_stem(result.path, index), used)
                    written.append(result.save(os.path.join(args.out, f"{stem}.png")))
                else:
                    if result.path not in writers:
                        stems[result.path] = _unique_stem(_stem(result.path, index), used)
                        writers[result.path] = VideoWriter(
                            os.path.join(args.out, f"{stems[result.path]}.mp4"), fps=video_fps(result.path)
                        )
                    writers[result.path].write(result.plot())
            if verbose:
                where = result.path or f"image {index}"
                summary = ", ".join(f"{n} {c:.2f}" for n, c in zip(result.classes, result.scores.tolist()))
                tqdm.write(f"{where}: {len(result)} instance(s){': ' + summary if summary else ''}", file=sys.stderr)
            bar.update(1)
    for writer in writers.values():
        written.append(writer.close())
    if args.save_json:
        coco["categories"] = _categories(names)
        json_path = os.path.join(args.out, "predictions.json")
        atomic_write_json(json_path, coco)
        written.append(json_path)
    if not args.quiet:
        files = ", ".join(written[:3]) + (f" and {len(written) - 3} more" if len(written) > 3 else "")
        unread = f" ({len(skipped.paths)} unreadable file(s) skipped)" if skipped.paths else ""
        print(f"{count} instance(s) with score > {args.threshold} in {images} image(s){unread}; "
              f"wrote {files or 'nothing'}")  # fmt: skip
        if count == 0 and args.weights == "random" and not args.checkpoint:
            print("(random weights score below 0.1: add --threshold 0 to draw their meaningless masks anyway)")
    return 0


class _SkippedFiles(logging.Filter):
    """While active, collects the files the sources skipped as unreadable (log records with ``skipped_source``)."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger
        self.paths: list[str] = []

    def __enter__(self) -> _SkippedFiles:
        self.logger.addFilter(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.logger.removeFilter(self)

    def filter(self, record: logging.LogRecord) -> bool:
        if hasattr(record, "skipped_source"):
            self.paths.append(record.skipped_source)
        return True


def _stem(path: str | None, index: int) -> str:
    """Output file stem: the source's file name without extension, or ``image<i>`` for in-memory images."""
    return os.path.splitext(os.path.basename(path))[0] if path else f"image{index}"


def _area(rle: dict[str, Any]) -> float:
    from pycocotools import mask as mask_utils

    return float(mask_utils.area(rle))


def _categories(names: tuple[str, ...]) -> list[dict[str, Any]]:
    from .._coco import COCO_CATEGORY_IDS, COCO_CLASSES

    if names == tuple(COCO_CLASSES):
        return [{"id": cid, "name": name} for cid, name in zip(COCO_CATEGORY_IDS, names)]
    return [{"id": i, "name": name} for i, name in enumerate(names)]
