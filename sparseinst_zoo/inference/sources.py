"""Image sources for ``predict``: paths, folders, globs, arrays, tensors, PIL images and video files.

Every image becomes a uint8 HxWx3 RGB numpy array:

- files are decoded with PIL, rotated by their EXIF orientation (as detectron2's ``read_image``) and converted with
  ``Image.convert("RGB")`` (grayscale replicated, palette expanded, alpha dropped, CMYK converted);
- numpy arrays: HxWx3 uint8 RGB as is; HxW or HxWx1 grayscale replicated to 3 channels; HxWx4 RGBA loses its alpha
  channel (no blending); other dtypes are rejected (convert to uint8 yourself, the scaling is ambiguous);
- torch tensors: CHW (or a BxCxHxW batch) with C in {1, 3, 4} treated like the arrays above; uint8 values are used as
  is, float tensors must hold values in [0, 1] (torchvision's convention) and are scaled by 255 and rounded;
- PIL images: converted with ``convert("RGB")`` (16-bit grayscale scaled to 8 bits; float images must hold 0..255).

Video files (``.mp4``, ``.avi``, ``.mov``, ``.mkv``, ``.webm``, ...) are decoded frame by frame with PyAV
(``pip install "sparseinst-zoo[video]"``) or, if that is missing, OpenCV (``pip install opencv-python-headless``).

A file you name that cannot be decoded is an error. A file found in a folder or by a glob pattern that cannot be
decoded is skipped with a warning (one broken download should not stop a folder of thousands); if none of them can
be read, that is an error again.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import MissingDependency, SparseInstError, install_hint

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "SourceItem",
    "sample_image_path",
    "load_image",
    "to_rgb_uint8",
    "resolve_paths",
    "flatten_sources",
    "FoundFile",
    "iter_source",
    "iter_items",
    "has_video",
    "iter_video_frames",
    "video_fps",
    "prefetch",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pbm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts")
_GLOB_CHARS = ("*", "?", "[")
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]+://")  # http(s), rtsp, ...; two letters at least, so C:// is a path
_logger = logging.getLogger("sparseinst_zoo")


@dataclass(frozen=True)
class FoundFile:
    """A file found in a folder or by a glob (not named by the user): skipped, and reported, if it cannot be used."""

    path: str

    def __fspath__(self) -> str:
        return self.path


@dataclass
class SourceItem:
    """One decoded image and where it came from (``path`` is None for in-memory inputs)."""

    image: np.ndarray
    path: str | None = None
    frame: int | None = None
    name: str = ""
    found: bool = False  # found in a folder or by a glob (not named by the user): skipped if it cannot be used


def sample_image_path() -> str:
    """Path of the bundled sample photograph (CC0, see ``sparseinst_zoo/assets/README.md``).

    Example:
        >>> sample_image_path().endswith("chelsea.jpg")
        True
    """
    return str(resources.files("sparseinst_zoo").joinpath("assets").joinpath("chelsea.jpg"))


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file into a uint8 HxWx3 RGB array (EXIF orientation applied).

    Raises FileNotFoundError if the file does not exist and SparseInstError if it is not a readable image.

    Example:
        >>> load_image(sample_image_path()).shape
        (300, 451, 3)
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"image file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"expected an image file, got the folder {path!r}")
    try:
        with Image.open(path) as opened:
            frames = int(getattr(opened, "n_frames", 1))
            if frames > 1:
                warnings.warn(
                    f"{path} has {frames} frames (an animation); only the first is used. "
                    "Convert it to a video (e.g. .mp4) to predict every frame",
                    stacklevel=2,
                )
            array = _pil_to_rgb_array(ImageOps.exif_transpose(opened), f"image {path!r}")
    except SparseInstError:
        raise  # decoded, but its values cannot be used: the message says so (not "corrupt")
    except Image.DecompressionBombError as err:  # not an OSError: Pillow refuses > 2 * MAX_IMAGE_PIXELS pixels
        raise SparseInstError(
            f"cannot read image {path!r}: it is too large to decode ({err}); downscale it, or raise "
            "PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SparseInstError(f"cannot read image {path!r}: not an image or the file is corrupt ({err})") from err
    if array.size == 0:
        raise SparseInstError(f"cannot read image {path!r}: it has no pixels")
    return np.ascontiguousarray(array)


_WIDE_INTEGER_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def _pil_to_rgb_array(image: Image.Image, name: str) -> np.ndarray:
    """uint8 HxWx3 RGB of a PIL image; 16-bit grayscale (modes I;16 and I) is scaled to 8 bits, not clipped; 32-bit
    float grayscale (mode F) must hold 0..255 levels, which PIL converts (it would clip others, and 0..1 to black)."""
    if image.mode == "F":
        values = np.asarray(image)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if not (np.isfinite(values).all() and 0.0 <= low and high <= 255.0) or 0.0 < high <= 1.0:
            raise SparseInstError(
                f"{name}: a float (mode F) image is read as 0..255 grey levels, but it holds values from {low:.3g} to "
                f"{high:.3g}; scale it to 0..255 and convert it to 8 bits first, e.g. "
                "Image.fromarray((values * 255).round().astype(np.uint8)) for values in [0, 1]"
            )
    if image.mode in _WIDE_INTEGER_MODES:
        wide = np.asarray(image).astype(np.float64)
        levels = np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8)  # 65535 -> 255, as ImageMagick/OpenCV
        return np.repeat(levels[..., None], 3, axis=-1)
    return np.array(image.convert("RGB"))


def _to_uint8_hint(kind: str, cast: str) -> str:
    """How to make 8-bit levels of an array of this dtype ``kind`` (``'b'`` bool, ``'u16'``, ``'f'``, ``'i'``)."""
    if kind == "b":
        return f"x.{cast} * 255 for a bool mask"
    if kind == "u16":
        return f"(x / 257).round().{cast} for a 16-bit image (a PIL I;16 image is scaled so for you)"
    if kind == "f":
        return f"(x * 255).round().clip(0, 255).{cast} for values in [0, 1]"
    return f"x.clip(0, 255).{cast} for 0..255 levels"


def _array_to_rgb(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype != np.uint8:
        kind = "u16" if array.dtype == np.uint16 else array.dtype.kind
        raise SparseInstError(
            f"{name}: expected a uint8 array, got dtype {array.dtype}; convert it, e.g. "
            + _to_uint8_hint(kind, "astype(np.uint8)")
        )
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (3, 4):
        raise SparseInstError(
            f"{name}: expected an HxWx3 RGB image (or HxW grayscale, HxWx4 RGBA), got shape {array.shape}; "
            "channels must be last for numpy arrays (use array.transpose(1, 2, 0) for CHW)"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise SparseInstError(f"{name}: the image is empty (shape {array.shape})")
    return np.ascontiguousarray(array[..., :3])


def _tensor_to_rgb(tensor: torch.Tensor, name: str) -> np.ndarray:
    if tensor.ndim == 2:
        tensor = tensor[None]
    if tensor.ndim != 3 or tensor.shape[0] not in (1, 3, 4):
        raise SparseInstError(
            f"{name}: expected a CxHxW tensor with C in (1, 3, 4), got shape {tuple(tensor.shape)}; "
            "tensors are channels-first (use t.permute(2, 0, 1) for HWC)"
        )
    tensor = tensor.detach()
    if tensor.is_floating_point():
        if tensor.numel() and (not torch.isfinite(tensor).all() or tensor.min() < 0 or tensor.max() > 1):
            raise SparseInstError(
                f"{name}: float tensors must hold values in [0, 1] (got min {tensor.min().item():.3g}, "
                f"max {tensor.max().item():.3g}); divide 0..255 values by 255 or pass a uint8 tensor"
            )
        tensor = (tensor * 255).round().to(torch.uint8)
    elif tensor.dtype != torch.uint8:
        kind = "b" if tensor.dtype == torch.bool else "u16" if tensor.dtype == torch.uint16 else "i"
        raise SparseInstError(
            f"{name}: expected a uint8 or float tensor, got dtype {tensor.dtype}; convert it, e.g. "
            + _to_uint8_hint(kind, "to(torch.uint8)")
        )
    return _array_to_rgb(tensor.permute(1, 2, 0).cpu().numpy(), name)


def to_rgb_uint8(image: Any, name: str = "image") -> np.ndarray:
    """Convert one in-memory image (numpy array, torch CHW tensor, PIL image) to uint8 HxWx3 RGB.

    Example:
        >>> to_rgb_uint8(np.zeros((4, 5), np.uint8)).shape
        (4, 5, 3)
    """
    if isinstance(image, Image.Image):
        return _array_to_rgb(_pil_to_rgb_array(image, name), name)
    if isinstance(image, np.ndarray):
        return _array_to_rgb(image, name)
    if isinstance(image, torch.Tensor):
        return _tensor_to_rgb(image, name)
    raise TypeError(
        f"{name}: unsupported source type {type(image).__name__}; pass a path, folder, glob, PIL image, "
        "numpy HxWx3 uint8 array, torch CxHxW tensor, or a list of these"
    )


def _is_video(path: str) -> bool:
    return path.lower().endswith(VIDEO_EXTENSIONS)


def resolve_paths(source: str | os.PathLike[str]) -> list[str]:
    """Expand a file, folder (its images and videos, sorted, not recursive) or glob pattern into file paths."""
    path = os.fspath(source)
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        )
        if not files:
            raise FileNotFoundError(
                f"no images or videos in folder {path!r} (looked for {', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})"
            )
        return files
    if os.path.exists(path):
        return [path]
    if _URL.match(path):  # before the glob test: a query string's '?' is no pattern
        raise SparseInstError(f"URLs are not supported as sources ({path!r}); download the file and pass its path")
    if any(c in path for c in _GLOB_CHARS):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"no files match the pattern {path!r}")
        return files
    raise FileNotFoundError(f"source not found: {path!r} (not a file, folder or glob pattern)")


def flatten_sources(source: Any) -> list[Any]:
    """Sources as a flat list: paths expanded (files, folders, globs), batches of tensors/arrays split into images.

    ``None`` means the bundled sample image.
    """
    if source is None:
        return [sample_image_path()]
    if isinstance(source, FoundFile):  # already flattened
        return [source]
    if isinstance(source, (str, os.PathLike)):
        paths = resolve_paths(source)
        if paths == [os.fspath(source)]:  # the user named this file
            return paths
        return [FoundFile(path) for path in paths]
    if isinstance(source, (list, tuple)):
        if len(source) == 0:
            raise SparseInstError("empty list of sources: pass at least one path, array, tensor or PIL image")
        return [item for element in source for item in flatten_sources(element)]
    if isinstance(source, torch.Tensor) and source.ndim == 4:
        return list(source)
    if isinstance(source, np.ndarray) and source.ndim == 4:
        return list(source)
    return [source]


def has_video(items: list[Any]) -> bool:
    """True if any flattened source item is a video file path."""
    return any(isinstance(item, (str, FoundFile)) and _is_video(os.fspath(item)) for item in items)


def iter_video_frames(path: str) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame into uint8 HxWx3 RGB arrays (PyAV, else OpenCV)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file not found: {path!r}")
    try:
        import av
    except ImportError:
        yield from _opencv_frames(path)
        return
    try:
        container = av.open(path)
    except Exception as err:  # PyAV raises its own error hierarchy (av.error.*)
        raise SparseInstError(f"cannot read video {path!r}: {err}") from err
    with container:
        if not container.streams.video:
            raise SparseInstError(f"cannot read video {path!r}: it has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
        except av.error.FFmpegError as err:
            raise SparseInstError(f"cannot decode video {path!r}: {err}") from err


def _opencv_frames(path: str) -> Iterator[np.ndarray]:
    """The OpenCV fallback of :func:`iter_video_frames` (RGB frames)."""
    try:
        import cv2
    except ImportError:
        raise MissingDependency(
            f"reading the video {path!r} needs PyAV or OpenCV: {install_hint('video')} "
            "(or: pip install opencv-python-headless)"
        ) from None
    capture = cv2.VideoCapture(path)
    if not capture.isOpened():
        raise SparseInstError(f"cannot read video {path!r}: OpenCV could not open it")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield np.ascontiguousarray(frame[..., ::-1])  # OpenCV decodes BGR
    finally:
        capture.release()


def video_fps(path: str, default: float = 25.0) -> float:
    """Average frame rate of a video file (``default`` if unknown or no video backend is installed)."""
    try:
        import av

        with av.open(path) as container:
            rate = container.streams.video[0].average_rate
            return float(rate) if rate else default
    except Exception:  # any backend/container problem: the caller only needs a sensible rate
        return default


_DONE = object()
_JOIN_TIMEOUT_S = 10.0  # one frame's decoding, at the most, is left to finish after a stop


def prefetch(iterator: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``iterator`` in a background thread, ``depth`` items ahead, so decoding overlaps the caller's work.

    Items and exceptions arrive in order; closing the returned generator (or an exception in the caller, Ctrl-C
    included) stops the thread and waits for it: a daemon thread still decoding when the interpreter exits is killed
    inside native code, which aborts the process ("terminate called without an active exception").
    """
    items: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as err:  # handed to the consumer, which re-raises it in its own thread
            put(err)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()  # the decoder's files, in this thread, which runs it

    thread = threading.Thread(target=produce, name="sparseinst-decode", daemon=True)
    thread.start()
    try:
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=_JOIN_TIMEOUT_S)


def _describe(item: Any, index: int) -> str:
    if isinstance(item, Image.Image):
        return f"source {index} (PIL image)"
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return f"source {index} ({type(item).__name__} of shape {tuple(item.shape)})"
    return f"source {index}"


def iter_source(source: Any) -> Iterator[SourceItem]:
    """Lazily decode every image of ``source`` (see the module doc for accepted types), in order.

    Example:
        >>> next(iter_source(None)).image.shape
        (300, 451, 3)
    """
    return iter_items(flatten_sources(source))


def _iter_file(item: str | FoundFile) -> Iterator[SourceItem]:
    path, found = os.fspath(item), isinstance(item, FoundFile)
    if _is_video(path):
        for frame_index, frame in enumerate(iter_video_frames(path)):
            yield SourceItem(frame, path=path, frame=frame_index, name=os.path.basename(path), found=found)
    else:
        yield SourceItem(load_image(path), path=path, name=os.path.basename(path), found=found)


def _warn_skipped(path: str, error: Exception) -> None:
    _logger.warning("skipped %s: %s", path, error)


def iter_items(items: list[Any], on_skip: Callable[[str, Exception], None] | None = None) -> Iterator[SourceItem]:
    """Lazily decode the items of :func:`flatten_sources`; videos yield one item per frame.

    Files found in folders or by globs that cannot be decoded are skipped (see the module doc) and reported as
    ``on_skip(path, error)`` (default: a logged warning).
    """
    report = on_skip or _warn_skipped
    decoded = 0
    skipped: list[str] = []
    for index, item in enumerate(items):
        if isinstance(item, (str, FoundFile)):
            try:
                for found in _iter_file(item):
                    decoded += 1
                    yield found
            except (SparseInstError, OSError) as err:  # an unreadable file; anything else is a bug, never skipped
                if not isinstance(item, FoundFile):  # a file the user named: never skipped
                    raise
                skipped.append(item.path)
                report(item.path, err)
        else:
            name = _describe(item, index)
            decoded += 1
            yield SourceItem(to_rgb_uint8(item, name), name=name)
    if skipped and not decoded:
        raise SparseInstError(
            f"none of the {len(skipped)} file(s) found could be read as an image or video (first: {skipped[0]!r}); "
            "check that they are not empty or truncated"
        )
