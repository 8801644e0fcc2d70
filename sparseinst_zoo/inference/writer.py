"""Writing predictions to disk: overlay images, overlay videos, a COCO ``predictions.json`` and YOLO label files
(``labels/<stem>.txt``, for pseudo-labelling), in a run folder.

Nothing already on disk is ever replaced or lost:

- a new run never touches an old one: when the folder exists, the next free ``<folder>2``, ``<folder>3``, ... is
  used (``runs/predict`` -> ``runs/predict2``, as Ultralytics); ``exist_ok=True`` writes into the folder itself;
- output names cannot collide: an overlay is ``<source stem>.png`` (``.mp4`` for videos), and a name that exists
  already (a source photo in the same folder, a file of an earlier run, another source with the same stem) gets
  the next free ``_2``, ``_3`` suffix instead; every file is written atomically. Label files follow the same rule
  in ``labels/``: ``labels/<source stem>.txt`` (``<stem>_<frame>.txt`` for video frames, frames counted from 0), a
  taken name gets ``_2``. The names of the ``sources`` given are chosen in source order before anything is
  written, so they do not depend on which files turn out unreadable, nor on how many processes share the work.
- a run that writes nothing (it fails on its first source, or every source is skipped) leaves no folder: the run
  folder is created when the writer starts (that reserves its name) and taken back at the end while it is still
  empty, with the parent folders it needed (and a ``labels/`` folder it made).

Many processes (``distributed=True`` under ``torchrun``): rank 0 chooses the run folder and tells the others, every
rank writes the overlays and label files of its own block of sources (see :mod:`~sparseinst_zoo.inference.sharding`)
under the names planned for them, and at :meth:`~ResultsWriter.close` rank 0 gathers the ranks' annotations and
writes one ``predictions.json`` in source order, as one process would.

Example:
    >>> import numpy as np, sparseinst_zoo, tempfile, os
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> out = os.path.join(tempfile.mkdtemp(), "predict")
    >>> with ResultsWriter(out, save_json=True) as writer:
    ...     writer.write(model.predict(np.zeros((64, 96, 3), np.uint8))[0])
    >>> sorted(os.listdir(writer.save_dir))
    ['image0.png', 'predictions.json']
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

import numpy as np

from .._constants import DEFAULT_PREDICT_DIR
from .._distributed import barrier, broadcast_from_rank0, gather_to_rank0, rank, world_size
from .._io import NextPath, atomic_write_json, free_names, free_path, remove_empty_dirs, reserve_run_dir, write_lines
from ..errors import SparseInstError
from .masks import rle_area
from .results import Results
from .sharding import merge_predictions, shard_bounds
from .sources import VIDEO_EXTENSIONS, video_fps
from .visualise import VideoWriter, save_image

__all__ = ["DEFAULT_RUN_DIR", "LABELS_DIR", "ResultsWriter", "VideoOverlays", "check_label_options"]

DEFAULT_RUN_DIR = DEFAULT_PREDICT_DIR
LABELS_DIR = "labels"  # the label files' folder in a run folder, as Ultralytics' predict save_txt


def check_label_options(save_txt: bool, save_conf: bool, spelling: tuple[str, str] = ("save_txt", "save_conf")) -> None:
    """Refuse ``save_conf`` without ``save_txt`` (the score is a column of the label files), in the caller's
    ``spelling`` of the two options (the CLI's ``--save-txt``, ``--save-conf``).

    Example:
        >>> check_label_options(False, True, ("--save-txt", "--save-conf"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        sparseinst_zoo.errors.SparseInstError: --save-conf adds the score to the label files of --save-txt: add ...
    """
    if save_conf and not save_txt:
        txt, conf = spelling
        raise SparseInstError(f"{conf} adds the score to the label files of {txt}: add {txt}, or drop {conf}")


def _overlay_suffix(path: str) -> str:
    return ".mp4" if path.lower().endswith(VIDEO_EXTENSIONS) else ".png"


def _stem(path: str | None, index: int) -> str:
    """Output file stem: the source's file name without extension, or ``image<i>`` for in-memory images."""
    return os.path.splitext(os.path.basename(path))[0] if path else f"image{index}"


class VideoOverlays:
    """The overlay video of each source video being written, finished files appended to ``written``.

    A video whose frame 0 comes again (the same file named twice) gets a second file, not its frames appended.
    """

    def __init__(self, written: list[str]) -> None:
        self.written = written
        self._open: dict[str, VideoWriter] = {}

    def write(self, source: str, frame: int, overlay: np.ndarray, new_path: Callable[[], tuple[str, NextPath]]) -> None:
        """Append ``overlay`` to ``source``'s video; ``new_path()`` names a new one (read at ``source``'s rate) and
        the names to try if that one is taken when the video is finished (an existing file is never replaced)."""
        video = self._open.get(source)
        if video is None or frame == 0:
            if video is not None:
                self.written.append(video.close())
            path, retry = new_path()
            video = self._open[source] = VideoWriter(path, fps=video_fps(source), replace=False, next_path=retry)
        video.write(overlay)

    def close(self) -> None:
        """Finish every open video."""
        for video in self._open.values():
            self.written.append(video.close())
        self._open.clear()


class ResultsWriter:
    """Write overlays (``<stem>.png``, ``<stem>.mp4`` for video frames), ``predictions.json`` and YOLO label files
    (``labels/<stem>.txt``) for Results.

    Args:
        out: the run folder (see the module doc for how an existing one is handled).
        overlays: write overlay images / videos.
        save_json: write ``predictions.json`` on :meth:`close`: COCO ``images``, ``categories`` and ``annotations``
            (RLE masks, boxes, scores) with the model's dataset category ids.
        save_txt: write one YOLO segmentation label file per image (per video frame) as it comes,
            ``labels/<stem>.txt`` (``labels/<stem>_<frame>.txt``), see :meth:`Results.save_txt`; an image without
            instances gets an empty file.
        save_conf: add each instance's score as the last column of the label files (needs ``save_txt``).
        exist_ok: write into ``out`` even if it exists.
        names: the model's class names (for ``categories``).
        category_ids: the dataset id of each label (default: the labels).
        sources: the flattened sources of this run (never written to, whatever their folder); their overlay names
            are chosen up front, in this order. With ``distributed``: all of them, not only this rank's block.
        plot_options: keyword arguments of :meth:`Results.plot` (``alpha``, ``show_boxes``, ...).
        description: the ``info.description`` of ``predictions.json``; ``info``: more ``info`` fields.
        distributed: this process writes its block of ``sources`` in a process group (``torchrun``), as the module
            doc says; every rank must create, write to and close its writer. No effect in a single process.
    """

    def __init__(
        self,
        out: str | os.PathLike[str] = DEFAULT_RUN_DIR,
        *,
        overlays: bool = True,
        save_json: bool = False,
        save_txt: bool = False,
        save_conf: bool = False,
        exist_ok: bool = False,
        names: Sequence[str] = (),
        category_ids: Sequence[int] | None = None,
        sources: Iterable[Any] = (),
        plot_options: dict[str, Any] | None = None,
        description: str = "sparseinst predict",
        info: dict[str, Any] | None = None,
        distributed: bool = False,
    ) -> None:
        check_label_options(save_txt, save_conf)
        sources = list(sources)
        self._rank, self._world = (rank(), world_size()) if distributed else (0, 1)
        if self._world > 1 and not sources:
            raise SparseInstError("a distributed ResultsWriter needs sources=, the whole source list the ranks share")
        self._created: list[str] = []
        self.save_dir = self._choose_run_dir(out, exist_ok)
        self.overlays = overlays
        self.save_json = save_json
        self.save_txt, self.save_conf = save_txt, save_conf
        self.labels_dir = os.path.join(self.save_dir, LABELS_DIR)
        if self._rank == 0 and save_txt and not os.path.exists(self.labels_dir):
            self._created.append(os.path.abspath(self.labels_dir))  # taken back at the end while empty
        self.names = tuple(names)
        self.category_ids = tuple(category_ids) if category_ids is not None else None
        self.plot_options = dict(plot_options or {})
        self.written: list[str] = []
        self._taken = {os.path.realpath(s) for s in sources if isinstance(s, (str, os.PathLike))}
        self._videos = VideoOverlays(self.written)
        self._coco: dict[str, Any] = {
            "info": {"description": description, **(info or {})},
            "images": [],
            "annotations": [],
        }
        self._count = self._sources_seen = 0
        self._first_source = shard_bounds(len(sources), self._rank, self._world)[0]
        self._closed = False
        self._planned = self._plan(sources, self.save_dir, _overlay_suffix) if overlays else {}
        self._planned_labels = self._plan(sources, self.labels_dir, lambda path: ".txt") if save_txt else {}
        self._video_label_stems: dict[str, str] = {}
        if self._world > 1:
            barrier()  # every rank planned from the same folder before any rank writes into it

    def _choose_run_dir(self, out: str | os.PathLike[str], exist_ok: bool) -> str:
        """The run folder, created to reserve its name; with many processes rank 0 alone chooses and creates it."""
        save_dir = ""
        if self._rank == 0:
            save_dir, self._created = reserve_run_dir(out, exist_ok)
        return save_dir if self._world == 1 else broadcast_from_rank0(save_dir)

    def _plan(self, sources: list[Any], folder: str, suffix: Callable[[str], str]) -> dict[str, deque[str]]:
        """The output path in ``folder`` of every source file, in source order (a file listed twice gets two)."""
        planned: dict[str, deque[str]] = {}
        for index, source in enumerate(sources):
            if isinstance(source, (str, os.PathLike)):
                path = os.fspath(source)
                planned.setdefault(path, deque()).append(
                    free_path(folder, _stem(path, index), suffix(path), self._taken)
                )
        return planned

    def _next_path(
        self, plan: dict[str, deque[str]], folder: str, path: str | None, index: int, suffix: str
    ) -> tuple[str, NextPath]:
        """The planned name of this source file, else (an in-memory image) the next free name of its stem; and the
        names to write instead if another process or thread creates that file first."""
        retry = free_names(folder, _stem(path, index), suffix, self._taken)
        planned = plan.get(path) if path else None
        return (planned.popleft() if planned else retry()), retry

    def _overlay_path(self, path: str | None, index: int, suffix: str) -> tuple[str, NextPath]:
        return self._next_path(self._planned, self.save_dir, path, index, suffix)

    def _label_path(self, result: Results, index: int) -> tuple[str, NextPath]:
        """``labels/<stem>.txt`` of an image; ``labels/<stem>_<frame>.txt`` of a video frame, ``<stem>`` the name
        planned for its video (a video named twice gets its second name at its second frame 0)."""
        if result.frame is None:
            return self._next_path(self._planned_labels, self.labels_dir, result.path, index, ".txt")
        key = str(result.path)
        if result.frame == 0 or key not in self._video_label_stems:
            planned, _ = self._next_path(self._planned_labels, self.labels_dir, result.path, index, ".txt")
            self._video_label_stems[key] = os.path.splitext(os.path.basename(planned))[0]
        retry = free_names(self.labels_dir, f"{self._video_label_stems[key]}_{result.frame}", ".txt", self._taken)
        return retry(), retry

    def write(self, result: Results) -> None:
        """Add one image's (or video frame's) results."""
        if result.frame is None or result.frame == 0:
            self._sources_seen += 1
        index = self._first_source + self._sources_seen - 1  # the source's place in the run (in-memory names)
        self._count += 1
        result.save_dir = self.save_dir
        if self.save_txt:
            path, retry = self._label_path(result, index)
            self.written.append(write_lines(path, result.yolo_lines(self.save_conf), replace=False, next_path=retry))
        if self.overlays:
            self._write_overlay(result, index)
        # last: a Ctrl-C while the files are written never leaves predictions.json naming an image without them
        if self.save_json:
            self._add_json(result, image_id=self._count, index=index)

    def _write_overlay(self, result: Results, index: int) -> None:
        overlay = result.plot(**self.plot_options)
        if result.frame is None:
            path, retry = self._overlay_path(result.path, index, ".png")
            self.written.append(save_image(overlay, path, replace=False, next_path=retry))
            return
        self._videos.write(
            str(result.path), result.frame, overlay, lambda: self._overlay_path(result.path, index, ".mp4")
        )

    def _add_json(self, result: Results, image_id: int, index: int) -> None:
        entry: dict[str, Any] = {
            "id": image_id,
            "file_name": result.path or f"image{index}",
            "height": result.image_size[0],
            "width": result.image_size[1],
        }
        if result.frame is not None:
            entry["frame"] = result.frame
        self._coco["images"].append(entry)
        annotations = self._coco["annotations"]
        for ann in result.to_coco(image_id, self.category_ids):
            ann.update(id=len(annotations) + 1, area=rle_area(ann["segmentation"]), iscrowd=0)
            annotations.append(ann)

    def categories(self) -> list[dict[str, Any]]:
        """COCO ``categories``: the dataset id and name of each label."""
        ids = self.category_ids or tuple(range(len(self.names)))
        return [{"id": int(cid), "name": name} for cid, name in zip(ids, self.names)]

    def write_all(self, results: Iterable[Results]) -> Iterator[Results]:
        """Write each of ``results`` as it comes and yield it; closes the writer at the end."""
        with self:
            for result in results:
                self.write(result)
                yield result

    def close(self) -> list[str]:
        """Finish the videos and write ``predictions.json``; returns every file this process wrote.

        With many processes this waits for every rank, and rank 0 writes the merged ``predictions.json``.
        """
        if self._closed:
            return self.written
        self._closed = True
        self._videos.close()
        if self.save_json:
            parts = gather_to_rank0(self._coco) if self._world > 1 else [self._coco]
            if parts is not None:
                coco = merge_predictions(parts)
                coco["categories"] = self.categories()
                retry = free_names(self.save_dir, "predictions", ".json", self._taken)
                self.written.append(atomic_write_json(retry(), coco, replace=False, next_path=retry))
        elif self._world > 1:
            barrier()  # rank 0 returns once every rank's overlays are on disk
        remove_empty_dirs([folder for folder in self._created if os.path.isdir(folder)])  # labels/ may never be made
        return self.written

    def __enter__(self) -> ResultsWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and self._count == 0 and self._world == 1:
            self.save_json = False  # a run that failed before its first result leaves no empty predictions.json
        self.close()
