"""Overlay drawing of instance masks (distinct colours, outlines, class + score labels) and atomic image saving."""

from __future__ import annotations

import colorsys
import functools
import os
from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import lru_cache
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .._io import NextPath, atomic_write, publish, temporary_path
from ..errors import MissingDependency, SparseInstError, install_hint
from .masks import masks_to_boxes

if TYPE_CHECKING:  # PyAV is optional: imported when a video is written
    from av.video.stream import VideoStream

__all__ = ["instance_colors", "track_colors", "draw_instances", "save_image", "VideoWriter"]

UNTRACKED_COLOR = (128, 128, 128)  # instances a tracker kept without an id (track id -1)


def _golden_colour(i: int) -> list[int]:
    hue = (0.6 + i * 0.618033988749895) % 1.0
    value = 0.95 if i % 2 == 0 else 0.75
    return [round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, value)]


def instance_colors(n: int) -> np.ndarray:
    """``n`` distinct saturated RGB colours (golden-ratio hue steps), uint8 (n, 3).

    Example:
        >>> instance_colors(3).shape
        (3, 3)
    """
    return np.asarray([_golden_colour(i) for i in range(n)], dtype=np.uint8).reshape(n, 3)


def track_colors(track_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """One RGB colour per track id, the same in every frame (grey for -1, untracked), uint8 (n, 3).

    Example:
        >>> bool((track_colors([7, 3, 7])[2] == track_colors([7])[0]).all())
        True
    """
    ids = [int(i) for i in track_ids]
    return np.asarray([_golden_colour(i) if i >= 0 else UNTRACKED_COLOR for i in ids], dtype=np.uint8).reshape(-1, 3)


def _boundary(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Pixels of ``mask`` within ``thickness`` pixels of its border (4-neighbour erosion)."""
    inner = mask.copy()
    for _ in range(thickness):
        padded = np.pad(inner, 1)
        inner = inner & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def draw_instances(
    image: np.ndarray,
    masks: np.ndarray,
    scores: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    boxes: np.ndarray | None = None,
    alpha: float = 0.45,
    outline: bool = True,
    labels: bool = True,
    show_boxes: bool = False,
    track_ids: Sequence[int] | np.ndarray | None = None,
    show_ids: bool = True,
) -> np.ndarray:
    """Draw (N, H, W) bool masks over a uint8 HxWx3 RGB image and return the new image.

    Larger instances are drawn first so that small ones stay visible. Each instance gets its own colour, a filled
    translucent mask (``alpha``), a solid outline, and a ``"name score"`` label at the top-left of its box. With
    ``track_ids`` the colour follows the track id (the same object keeps its colour across frames) and, if
    ``show_ids``, the label starts with ``#id``.

    Example:
        >>> img = np.zeros((20, 30, 3), np.uint8); m = np.zeros((1, 20, 30), bool); m[0, 5:15, 5:20] = True
        >>> draw_instances(img, m, [0.9], ["cat"]).shape
        (20, 30, 3)
    """
    image, masks = _checked_inputs(image, masks)
    if not 0.0 <= alpha <= 1.0:  # outside, the blend overflows uint8 into noise
        raise SparseInstError(f"alpha is the masks' opacity, from 0 (invisible) to 1 (opaque); got {alpha}")
    if boxes is None:
        boxes = masks_to_boxes(masks)
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 250))
    colours = instance_colors(len(masks)) if track_ids is None else track_colors(track_ids)
    order = np.argsort(-masks.sum((1, 2)), kind="stable")
    out = Image.fromarray(_paint_masks(image, masks, colours, order, alpha, thickness if outline else None))
    if labels or show_boxes:
        caption = functools.partial(_caption, class_names, scores, track_ids if show_ids else None) if labels else None
        _annotate(out, masks, boxes, colours, order, thickness, caption, show_boxes)
    return np.asarray(out)


def _checked_inputs(image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` and ``masks`` as arrays, refused unless a uint8 HxWx3 image and (N, H, W) masks of its size."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise SparseInstError(f"draw_instances expects a uint8 HxWx3 RGB image, got {image.shape} {image.dtype}")
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[1:] != image.shape[:2]:
        raise SparseInstError(f"mask size {masks.shape[1:]} differs from the image size {image.shape[:2]}")
    return image, masks


def _paint_masks(
    image: np.ndarray, masks: np.ndarray, colours: np.ndarray, order: np.ndarray, alpha: float, outline: int | None
) -> np.ndarray:
    """``image`` with each mask blended in its colour (in ``order``), and an ``outline`` pixels thick border."""
    canvas = image.astype(np.float32)
    for i in order:
        colour = colours[i].astype(np.float32)
        canvas[masks[i]] = canvas[masks[i]] * (1 - alpha) + colour * alpha
        if outline is not None:
            canvas[_boundary(masks[i], outline)] = colour
    return canvas.round().clip(0, 255).astype(np.uint8)


def _caption(
    class_names: Sequence[str],
    scores: Sequence[float] | np.ndarray,
    track_ids: Sequence[int] | np.ndarray | None,
    i: int,
) -> str:
    """Instance ``i``'s label: ``"name score"``, after ``#id`` when it has a track id to show."""
    text = f"{class_names[i]} {float(scores[i]):.2f}"
    if track_ids is not None and int(track_ids[i]) >= 0:
        text = f"#{int(track_ids[i])} {text}"
    return text


def _annotate(
    out: Image.Image,
    masks: np.ndarray,
    boxes: np.ndarray,
    colours: np.ndarray,
    order: np.ndarray,
    thickness: int,
    caption: Callable[[int], str] | None,
    show_boxes: bool,
) -> None:
    """Draw each non-empty instance's box (if ``show_boxes``) and ``caption(i)`` label (if any) onto ``out``."""
    draw = ImageDraw.Draw(out)
    font = _font(max(11, round(min(out.size) / 36)))
    for i in order:
        if not masks[i].any():
            continue
        colour = tuple(int(c) for c in colours[i])
        x1, y1, x2, y2 = (float(v) for v in boxes[i])
        if show_boxes:
            draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=colour, width=thickness)
        if caption is not None:
            _draw_label(draw, out.size, caption(i), (x1, y1), colour, font)


def _draw_label(
    draw: ImageDraw.ImageDraw,
    size: tuple[int, int],
    text: str,
    corner: tuple[float, float],
    colour: tuple[int, ...],
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
) -> None:
    """``text`` on a ``colour`` tag above the box ``corner`` (below it, or shifted, where the image ends there)."""
    width, height = size
    x1, y1 = corner
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_w, text_h = right - left + 4, bottom - top + 4
    tx = min(max(x1, 0), max(width - text_w, 0))
    ty = y1 - text_h if y1 - text_h >= 0 else min(y1, max(height - text_h, 0))
    draw.rectangle([tx, ty, tx + text_w, ty + text_h], fill=colour)
    luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    draw.text((tx + 2 - left, ty + 2 - top), text, fill="black" if luminance > 150 else "white", font=font)


def save_image(
    image: np.ndarray, path: str | os.PathLike[str], *, replace: bool = True, next_path: NextPath | None = None
) -> str:
    """Write a uint8 HxWx3 RGB array to ``path`` (format from its extension) atomically; returns the path written.

    ``replace=False`` never replaces an existing file: the next free ``<stem>_2`` (or ``next_path()``) is written,
    see :func:`~sparseinst_zoo._io.publish`.
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1]
    image_format = Image.registered_extensions().get(suffix.lower())
    if image_format is None:
        raise SparseInstError(f"cannot save {path!r}: unknown image extension {suffix!r} (use .png or .jpg)")
    pil_image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    return atomic_write(
        path, lambda handle: pil_image.save(handle, format=image_format), replace=replace, next_path=next_path
    )


class VideoWriter:
    """Write RGB uint8 frames to a video file with PyAV (H.264 if available, else MPEG-4), atomically on close.

    ``replace`` and ``next_path`` say what happens when the file exists on close, as for :func:`save_image`.
    The video has the size of the first frame, rounded up to even sides (4:2:0 video needs them) by repeating the
    last row or column: every pixel of a frame is kept, also for a 1-pixel-wide one.

    Example:
        >>> writer = VideoWriter("overlay.mp4", fps=25)  # doctest: +SKIP
        >>> writer.write(frame); writer.close()  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float = 25.0,
        *,
        replace: bool = True,
        next_path: NextPath | None = None,
    ) -> None:
        try:
            import av
        except ImportError:
            raise MissingDependency(f"writing overlay videos needs PyAV: {install_hint('video')}") from None
        self._av = av
        self.path = os.fspath(path)
        self.fps = fps
        self._replace, self._next_path = replace, next_path
        self._tmp = temporary_path(self.path)
        self._container = av.open(self._tmp, "w")
        self._stream: VideoStream | None = None

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 HxWx3 RGB frame (the first frame fixes the size)."""
        if self._stream is None:
            codec = "h264" if "h264" in self._av.codecs_available else "mpeg4"
            rate = Fraction(self.fps).limit_denominator(1001)
            stream = cast("VideoStream", self._container.add_stream(codec, rate=rate))  # a video codec's stream
            stream.height, stream.width = frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2
            stream.pix_fmt = "yuv420p"
            self._stream = stream
        stream = self._stream
        frame = frame[: stream.height, : stream.width]
        pad = ((0, stream.height - frame.shape[0]), (0, stream.width - frame.shape[1]), (0, 0))
        frame = np.ascontiguousarray(np.pad(frame, pad, mode="edge"))
        for packet in stream.encode(self._av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)

    def close(self) -> str:
        """Flush, close and move the file into place; returns the path written."""
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            self.path = publish(self._tmp, self.path, replace=self._replace, next_path=self._next_path)
        finally:
            if os.path.exists(self._tmp):
                os.unlink(self._tmp)
        return self.path
