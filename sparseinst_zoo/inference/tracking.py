"""``model.track``: instance ids that persist across the frames of a video or an image sequence.

Each frame is predicted as by ``model.predict``; its instances go to ByteTrack, the implementation of the
``supervision`` package (``pip install "sparseinst-zoo[track]"``), which matches them to the tracks of the previous
frames by box IoU, with a Kalman motion model, and gives each track an id (1, 2, ...; never reused within a
sequence). The matched ids come back as ``Results.track_ids``, aligned with the instances; masks, scores and labels
are kept.

What ByteTrack does not match is dropped, as Ultralytics does: low-score instances that continue no track, and an
object seen for the first time after the first frame (ByteTrack confirms a new track on its second frame). Pass
``keep_untracked=True`` to keep them with track id -1 instead.

Sequences: the frames of each video file form one sequence with its own tracker (ids restart at 1 for the next
video); consecutive images (files, arrays, a folder of frames, in order) form one sequence. ``Results.frame`` stays
what ``predict`` gives (the frame index in a video, None for images).
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import numpy as np
from torch import nn

from .._io import NextPath, free_names, publish, remove_empty_dirs, reserve_run_dir, temporary_path
from ..errors import MissingDependency, SparseInstError, install_hint
from .predictor import Predictor, check_score_threshold
from .results import Results
from .sources import VIDEO_EXTENSIONS, video_fps
from .visualise import save_image
from .writer import VideoOverlays

__all__ = [
    "InstanceTracker",
    "TrackWriter",
    "require_byte_track",
    "track",
    "track_results",
]

INSTALL_HINT = install_hint("track")
DEFAULT_FRAME_RATE = 30.0  # for image sequences, whose frame rate nobody told us (ByteTrack's own default)


def require_byte_track() -> Any:
    """``supervision.ByteTrack``, imported only when tracking (supervision is an optional extra).

    Raises MissingDependency (an ImportError), saying what to install, if supervision is missing or has no ByteTrack.
    """
    try:
        with warnings.catch_warnings():  # ByteTrack needs no OpenCV; its fallback notice is noise here
            warnings.filterwarnings("ignore", message=".*OpenCV", category=UserWarning)
            import supervision
    except ImportError:
        raise MissingDependency(f"tracking needs the supervision package: {INSTALL_HINT}") from None
    byte_track = getattr(supervision, "ByteTrack", None)
    if byte_track is None:  # supervision 0.31 removed it; the extra pins a version that has it
        raise MissingDependency(
            f"tracking needs supervision.ByteTrack, which supervision {supervision.__version__} no longer has: "
            f"{INSTALL_HINT} (installs supervision<0.31)"
        )
    return byte_track


def _check_options(
    track_activation_threshold: float,
    lost_track_buffer: int,
    minimum_matching_threshold: float,
    frame_rate: float,
    minimum_consecutive_frames: int,
) -> None:
    if not 0.0 <= track_activation_threshold <= 1.0:
        raise SparseInstError(f"track_activation_threshold must be in [0, 1], got {track_activation_threshold}")
    if not 0.0 < minimum_matching_threshold <= 1.0:
        raise SparseInstError(f"minimum_matching_threshold must be in (0, 1], got {minimum_matching_threshold}")
    if lost_track_buffer < 0 or minimum_consecutive_frames < 1 or frame_rate <= 0:
        raise SparseInstError(
            "lost_track_buffer must be >= 0, minimum_consecutive_frames >= 1 and frame_rate > 0, got "
            f"{lost_track_buffer}, {minimum_consecutive_frames} and {frame_rate}"
        )


class InstanceTracker:
    """ByteTrack over the :class:`Results` of one frame sequence: gives each instance a persistent id.

    Args:
        track_activation_threshold: ByteTrack's high score: instances above it are matched first; a new track needs
            this plus 0.1 (instances between 0.1 and this only continue existing tracks).
        lost_track_buffer: frames (at 30 fps) a lost track is remembered, so an occluded object gets its id back.
        minimum_matching_threshold: ByteTrack's matching cost threshold (1 - IoU, fused with the score).
        frame_rate: the sequence's frame rate (scales ``lost_track_buffer``).
        minimum_consecutive_frames: frames a track must be seen before it gets an id.
        keep_untracked: keep the instances ByteTrack did not match, with track id -1 (default: drop them).

    Example:
        >>> import numpy as np
        >>> masks = np.zeros((1, 40, 60), bool); masks[0, 10:30, 10:30] = True
        >>> tracker = InstanceTracker()
        >>> [tracker.update(Results(masks, np.array([0.9]), np.array([0]), ["box"])).track_ids.tolist()
        ...  for _ in range(3)]
        [[1], [1], [1]]
    """

    def __init__(
        self,
        *,
        track_activation_threshold: float = 0.25,
        lost_track_buffer: int = 30,
        minimum_matching_threshold: float = 0.8,
        frame_rate: float = DEFAULT_FRAME_RATE,
        minimum_consecutive_frames: int = 1,
        keep_untracked: bool = False,
    ) -> None:
        _check_options(
            track_activation_threshold,
            lost_track_buffer,
            minimum_matching_threshold,
            frame_rate,
            minimum_consecutive_frames,
        )
        byte_track = require_byte_track()
        with warnings.catch_warnings():  # its deprecation notice: the extra pins a supervision that still has it
            warnings.simplefilter("ignore", FutureWarning)
            self._byte_track = byte_track(
                track_activation_threshold=track_activation_threshold,
                lost_track_buffer=lost_track_buffer,
                minimum_matching_threshold=minimum_matching_threshold,
                frame_rate=frame_rate,
                minimum_consecutive_frames=minimum_consecutive_frames,
            )
        self.keep_untracked = keep_untracked

    def match(self, result: Results) -> np.ndarray:
        """Advance the tracker by one frame; the (N,) int64 track id of each instance of ``result``, -1 if none."""
        detections = result.to_supervision()
        detections.data["instance_index"] = np.arange(len(result))
        tracked = self._byte_track.update_with_detections(detections)
        track_ids = np.full(len(result), -1, dtype=np.int64)
        if len(tracked):
            track_ids[tracked.data["instance_index"]] = tracked.tracker_id
        return track_ids

    def update(self, result: Results) -> Results:
        """A new Results: ``result``'s instances with their ``track_ids`` (unmatched ones dropped unless
        ``keep_untracked``)."""
        track_ids = self.match(result)
        keep = np.arange(len(result)) if self.keep_untracked else np.flatnonzero(track_ids >= 0)
        tracked = result[keep]
        tracked.track_ids = track_ids[keep]
        return tracked


def _sequence_key(result: Results) -> str | None:
    """Frames of one video share a key (its path); all images share the key None."""
    return result.path if result.frame is not None else None


def track_results(results: Iterable[Results], new_tracker: Callable[[Results], InstanceTracker]) -> Iterator[Results]:
    """Track a stream of per-frame Results; ``new_tracker(first_result)`` starts the tracker of each sequence."""
    tracker: InstanceTracker | None = None
    key: str | None = None
    for result in results:
        if tracker is None or _sequence_key(result) != key or result.frame == 0:
            tracker, key = new_tracker(result), _sequence_key(result)
        yield tracker.update(result)


def track(
    model: nn.Module,
    source: Any = None,
    *,
    score_threshold: float = 0.1,
    track_activation_threshold: float = 0.25,
    lost_track_buffer: int = 30,
    minimum_matching_threshold: float = 0.8,
    frame_rate: float | None = None,
    minimum_consecutive_frames: int = 1,
    keep_untracked: bool = False,
    stream: bool = True,
    **predict_options: Any,
) -> Iterator[Results] | list[Results]:
    """Segment and track the instances of a video (or of an image sequence) with ``model`` (``model.track``).

    Args:
        model: a SparseInst model.
        source: a video file, a folder of frames, a glob, a list of images or frames (anything ``predict`` takes).
        score_threshold: instances whose final score is below this are not given to the tracker (ByteTrack itself
            ignores scores below 0.1).
        track_activation_threshold, lost_track_buffer, minimum_matching_threshold, minimum_consecutive_frames,
            keep_untracked: the tracker's options, see :class:`InstanceTracker`.
        frame_rate: the videos' frame rate for ByteTrack (default: read from each video file; 30 for images).
        stream: yield the Results frame by frame (default); False returns a list.
        **predict_options: options of :class:`~sparseinst_zoo.inference.predictor.Predictor` (``device``,
            ``mask_threshold``, ``max_detections``, ``half``, ...).

    Returns:
        One Results per frame, with ``track_ids`` set, instances by descending score.

    Example:
        >>> import numpy as np, sparseinst_zoo
        >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
        >>> frames = [np.zeros((64, 96, 3), np.uint8)] * 3
        >>> [r.track_ids.dtype.name for r in model.track(frames)]
        ['int64', 'int64', 'int64']
    """
    check_score_threshold(score_threshold)
    if "sort_by_score" in predict_options:
        raise SparseInstError(
            "track always orders the instances of a frame by score (as ByteTrack ranks them); drop sort_by_score"
        )
    require_byte_track()  # a missing extra or a bad option fails here, before the first frame is decoded
    _check_options(
        track_activation_threshold,
        lost_track_buffer,
        minimum_matching_threshold,
        frame_rate or DEFAULT_FRAME_RATE,
        minimum_consecutive_frames,
    )
    new_tracker = functools.partial(
        _new_tracker,
        frame_rate=frame_rate,
        track_activation_threshold=track_activation_threshold,
        lost_track_buffer=lost_track_buffer,
        minimum_matching_threshold=minimum_matching_threshold,
        minimum_consecutive_frames=minimum_consecutive_frames,
        keep_untracked=keep_untracked,
    )
    predictor = Predictor(model, score_threshold=score_threshold, sort_by_score=True, **predict_options)
    frames = (result[result.scores > score_threshold] for result in predictor.stream(source))
    tracked = track_results(frames, new_tracker)
    return tracked if stream else list(tracked)


def _new_tracker(first: Results, *, frame_rate: float | None, **tracker_options: Any) -> InstanceTracker:
    """The tracker of the sequence that ``first`` starts, at ``frame_rate`` (default: its video's rate, 30 for
    images); ``tracker_options`` are :class:`InstanceTracker`'s others."""
    if frame_rate is None:
        frame_rate = video_fps(str(first.path), DEFAULT_FRAME_RATE) if _is_video_frame(first) else DEFAULT_FRAME_RATE
    return InstanceTracker(frame_rate=frame_rate, **tracker_options)


class TrackWriter:
    """Writes tracked frames into a run folder: an overlay video per video source (``<name>.mp4``), an overlay
    image per image (``<name>.png``; ``frame000012.png`` for in-memory frames) and, with ``save_json``,
    ``tracks.jsonl``: one JSON object per line and per tracked instance, ``{"source", "frame", "track_id", "label",
    "name", "score", "box", "mask"}`` (``frame``: the index in its video or image sequence; box ``x1, y1, x2, y2``;
    mask a COCO compressed RLE, as in ``predictions.json``).

    Nothing on disk is replaced: the folder is :func:`next_run_dir`'s, and a file name that exists (or is one of
    ``sources``) gets the next free ``_2``, ``_3`` suffix. Files are written under temporary names and moved into
    place on :meth:`close`, also when the run stops early: the frames processed so far are kept; a run that stops
    before its first frame leaves no folder (only the folders this writer made, and only while empty, are removed).

    Example:
        >>> with TrackWriter("runs/track", save_json=True) as writer:  # doctest: +SKIP
        ...     for result in model.track("clip.mp4"):
        ...         writer.write(result)
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        save_json: bool = False,
        overlays: bool = True,
        show_ids: bool = True,
        exist_ok: bool = False,
        sources: Iterable[Any] = (),
    ) -> None:
        # reserves the name, also against a run started at the same time; taken back on close if nothing was written
        self.directory, self._created = reserve_run_dir(out_dir, exist_ok)
        self.overlays = overlays
        self.show_ids = show_ids
        self.written: list[str] = []
        self.frames = self.instances = 0
        self.tracks: set[tuple[str | None, int]] = set()  # (sequence, track id): ids restart in each video
        self._taken = {os.path.realpath(s) for s in sources if isinstance(s, (str, os.PathLike))}
        self._next_image_frame = 0
        self._videos = VideoOverlays(self.written)
        self._json: tuple[str, NextPath, str, IO[str]] | None = None  # path, names if taken, temporary file, handle
        if save_json:
            retry = free_names(self.directory, "tracks", ".jsonl", self._taken)
            path = retry()
            tmp = temporary_path(path)
            self._json = (path, retry, tmp, open(tmp, "w", encoding="utf-8"))

    def _frame_index(self, result: Results) -> int:
        """The frame's index in its sequence: the video frame, or the image's position (as :func:`track_results`
        counts sequences: images after a video start a new one)."""
        if _is_video_frame(result):
            self._next_image_frame = 0
            return int(result.frame)  # type: ignore[arg-type]
        self._next_image_frame += 1
        return self._next_image_frame - 1

    def _new_name(self, result: Results, frame: int, suffix: str) -> tuple[str, NextPath]:
        """A free name for this frame's (video's) overlay, and the names to try if someone else creates it first."""
        stem = os.path.splitext(os.path.basename(result.path))[0] if result.path else f"frame{frame:06d}"
        retry = free_names(self.directory, stem, suffix, self._taken)
        return retry(), retry

    def write(self, result: Results) -> None:
        """Add one tracked frame: its JSON lines and its overlay."""
        frame = self._frame_index(result)
        if self._json is not None:
            for instance in result.to_dict()["instances"]:
                line = {"source": result.path, "frame": frame, "track_id": instance.pop("track_id", -1)}
                self._json[3].write(json.dumps({**line, **instance}) + "\n")
        if self.overlays:
            self._write_overlay(result, frame)
        track_ids = result.track_ids if result.track_ids is not None else np.full(len(result), -1)
        self.tracks.update((result.path if _is_video_frame(result) else None, int(i)) for i in track_ids if i >= 0)
        self.frames += 1
        self.instances += len(result)

    def _write_overlay(self, result: Results, frame: int) -> None:
        overlay = result.plot(show_ids=self.show_ids)
        if not _is_video_frame(result):
            path, retry = self._new_name(result, frame, ".png")
            self.written.append(save_image(overlay, path, replace=False, next_path=retry))
            return
        self._videos.write(str(result.path), frame, overlay, lambda: self._new_name(result, frame, ".mp4"))

    def close(self) -> list[str]:
        """Finish the videos and ``tracks.jsonl``; returns every file written."""
        self._videos.close()
        if self._json is not None:
            path, retry, tmp, handle = self._json
            handle.close()
            if self.frames:
                self.written.append(publish(tmp, path, replace=False, next_path=retry))
            else:  # a run that failed before its first frame leaves no empty tracks.jsonl
                os.remove(tmp)
            self._json = None
        remove_empty_dirs(self._created)
        return self.written

    def __enter__(self) -> TrackWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _is_video_frame(result: Results) -> bool:
    return result.path is not None and result.frame is not None and result.path.lower().endswith(VIDEO_EXTENSIONS)
