"""``sparseinst track MODEL SOURCE ...``: instances with ids that persist across video frames (ByteTrack).

Writes an overlay video per video (each instance coloured by its track id, labelled ``#id``), an overlay image per
image of an image sequence and, with ``--save-json``, ``tracks.jsonl`` (one line per tracked instance: source,
frame, track_id, label, name, score, box, RLE mask) into a new run folder (``runs/track``, ``runs/track2``, ...);
nothing on disk is overwritten.

Example:
    $ sparseinst track sparseinst_r50_giam --checkpoint model.safetensors clip.mp4 --save-json
"""

from __future__ import annotations

import argparse
import os
import sys

from .._text import listed
from ._model import add_model_arguments, load_cli_model
from ._options import (
    add_device_argument,
    add_mask_threshold_argument,
    add_max_detections_argument,
    add_quiet_argument,
    add_score_threshold_argument,
    fraction,
    non_negative_int,
    show_bar,
)
from ._signals import terminate_as_interrupt

HELP = "segment and track instances through videos (ByteTrack ids); write overlay videos and tracks.jsonl"

# As `predict`'s display threshold would hide the low-score detections that ByteTrack uses to keep a track alive,
# the default passes everything above ByteTrack's own floor (0.1) to the tracker.
DEFAULT_SCORE_THRESHOLD = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the track options on ``parser``."""
    add_model_arguments(parser)
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="SOURCE",
        help="video files, or folders / glob patterns of frames (one sequence, in name order)",
    )
    parser.add_argument(
        "--out",
        default="runs/track",
        metavar="DIR",
        help="run folder (default runs/track; taken: runs/track2, runs/track3, ...)",
    )
    parser.add_argument(
        "--exist-ok",
        action="store_true",
        help="write into DIR even if it exists (a file name that is taken there gets a _2, _3 suffix)",
    )
    parser.add_argument(
        "--save-json",
        action="store_true",
        help="also write DIR/tracks.jsonl: one JSON line per tracked instance with frame and track_id",
    )
    add_score_threshold_argument(
        parser, DEFAULT_SCORE_THRESHOLD, note="ByteTrack keeps tracks alive on the low-score ones", alias=False
    )
    parser.add_argument(
        "--track-threshold",
        type=fraction(high_open=False),
        default=0.25,
        metavar="SCORE",
        help="ByteTrack's high score: a new track needs this + 0.1 (default: 0.25)",
    )
    parser.add_argument(
        "--lost-track-buffer",
        type=non_negative_int,
        default=30,
        metavar="FRAMES",
        help="frames (at 30 fps) a lost track is remembered to give a re-appearing object its id back (default: 30)",
    )
    parser.add_argument(
        "--match-threshold",
        type=fraction(low_open=True, high_open=False),
        default=0.8,
        metavar="IOU",
        help="ByteTrack's matching threshold (default: 0.8)",
    )
    parser.add_argument(
        "--keep-untracked",
        action="store_true",
        help="keep instances the tracker did not match, with track id -1 (default: drop them)",
    )
    parser.add_argument(
        "--show-ids",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="draw '#id' in the overlay labels (default: on; colours follow the ids either way)",
    )
    add_mask_threshold_argument(parser)
    add_max_detections_argument(parser)
    add_device_argument(parser)
    parser.add_argument("--no-overlay", action="store_true", help="do not write overlays (e.g. JSON only)")
    add_quiet_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Track every source, write the run folder; returns 0."""
    from tqdm import tqdm

    from .._device import select_device
    from ..inference.sources import flatten_sources
    from ..inference.tracking import TrackWriter, require_byte_track, track

    require_byte_track()  # before the model is built (a MissingDependency: one line)
    flat = flatten_sources(args.sources)  # a typo in a path fails before the model is built
    model = load_cli_model(args.model, args.weights, args.checkpoint)  # its random-weights warning shows with --quiet
    device = select_device(args.device)
    frames = track(
        model,
        flat,
        score_threshold=args.score_threshold,
        track_activation_threshold=args.track_threshold,
        lost_track_buffer=args.lost_track_buffer,
        minimum_matching_threshold=args.match_threshold,
        keep_untracked=args.keep_untracked,
        mask_threshold=args.mask_threshold,
        max_detections=args.max_detections,
        device=device,
    )
    writer = TrackWriter(
        args.out,
        save_json=args.save_json,
        overlays=not args.no_overlay,
        show_ids=args.show_ids,
        exist_ok=args.exist_ok,
        sources=flat,
    )
    try:
        with (
            terminate_as_interrupt(),
            writer,
            tqdm(unit="frame", disable=not show_bar(args.quiet), file=sys.stderr, leave=False) as bar,
        ):
            for result in frames:
                writer.write(result)
                bar.update(1)
    except KeyboardInterrupt:
        args.resume_hint = interrupted_summary(writer.directory, writer.written, writer.frames)  # the files closed
        raise
    if not args.quiet:
        files = listed(writer.written)
        print(
            f"{writer.instances} tracked instance(s), {len(writer.tracks)} track(s) in {writer.frames} frame(s); "
            f"wrote {files or 'nothing'}"
        )
    return 0


def interrupted_summary(folder: str, written: list[str], frames: int) -> str:
    """What a stopped run tracked and kept, e.g. ``108 frame(s) tracked; kept in runs/t: clip.mp4, tracks.jsonl``."""
    names = sorted(os.path.basename(path) for path in written)
    return f"{frames} frame(s) tracked" + (f"; kept in {folder}: {listed(names)}" if names else "")
