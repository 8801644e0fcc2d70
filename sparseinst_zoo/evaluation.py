"""COCO mask AP of a model on a dataset (COCO JSON or a ``data.yaml``), with ``COCOeval`` and ``iouType='segm'``.

Scoring runs on `faster-coco-eval <https://github.com/MiXaiLL76/faster_coco_eval>`_ when it is installed
(``pip install "sparseinst-zoo[fast-eval]"``, same metrics, several times faster) and on pycocotools otherwise;
``backend=`` forces either. Predictions use the model's predictor (reference preprocessing and postprocessing); under
``torch.distributed`` each process predicts a share of the images and rank 0 scores them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import warnings
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._distributed import gather_to_rank0, world_size
from ._distributed import rank as current_rank
from ._factory import create_model
from ._io import check_json_path, write_new_json
from ._registry import get_pretrained_cfg, is_model, split_model_name_tag
from ._text import listed
from .data.instances import ImageRecord, InstanceSet, segmentation_area
from .data.spec import load_instances
from .errors import Argument, DataError, MissingDependency, SparseInstError, install_hint
from .inference.backends import create_predictor, is_exported_model
from .inference.precision import PrecisionLike, parse_precision, precision_from_alias
from .inference.predictor import Predictor

__all__ = [
    "evaluate",
    "METRIC_KEYS",
    "EVAL_BACKENDS",
    "coco_ground_truth",
    "check_crowd_kept",
    "score_detections",
    "summarize_coco_eval",
    "resolve_backend",
    "check_metrics_path",
    "write_metrics",
]

_logger = logging.getLogger("sparseinst_zoo")
METRIC_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")
EvalBackend = Literal["auto", "faster", "pycocotools"]
EVAL_BACKENDS: tuple[str, ...] = ("auto", "faster", "pycocotools")


def resolve_backend(backend: str = "auto") -> str:
    """``'faster'`` or ``'pycocotools'``: ``'auto'`` picks faster-coco-eval when it is installed.

    Example:
        >>> resolve_backend("pycocotools")
        'pycocotools'
    """
    if backend not in EVAL_BACKENDS:
        raise SparseInstError(f"backend must be one of {EVAL_BACKENDS}, got {backend!r}")
    installed = importlib.util.find_spec("faster_coco_eval") is not None
    if backend == "faster" and not installed:
        raise MissingDependency(f"backend='faster' needs faster-coco-eval: {install_hint('fast-eval')}")
    if backend == "auto":
        return "faster" if installed else "pycocotools"
    return backend


@contextlib.contextmanager
def _quiet_scorer() -> Iterator[io.StringIO]:
    """Catch what the COCO libraries report: pycocotools prints (yielded), faster-coco-eval logs at INFO.

    The scorer's INFO records are held back (warnings still pass) so a training run that configured the root logger
    shows one line per evaluation, not the scorer's twenty.
    """
    scorer_logger = logging.getLogger("faster_coco_eval")
    level = scorer_logger.level
    scorer_logger.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            yield printed
    finally:
        scorer_logger.setLevel(level)


def check_metrics_path(out: str | os.PathLike[str]) -> str:
    """``out`` if it names a ``.json`` file (not a folder); raises a one-line SparseInstError otherwise.

    Example:
        >>> check_metrics_path("metrics.json")
        'metrics.json'
    """
    return check_json_path(out, "the metrics", "metrics.json")


def write_metrics(out: str | os.PathLike[str], metrics: dict[str, Any]) -> str:
    """Write ``metrics`` as JSON (atomically) to ``out``, or to the next free ``<stem>_2.json`` ... when it exists.

    An existing file (an earlier run's metrics, the ground truth just read) is never replaced.

    Returns:
        The path written.
    """
    path = check_metrics_path(out)
    chosen = write_new_json(path, metrics, allow_nan=False)
    if chosen != path:
        _logger.warning("%s exists, so the metrics are written to %s", path, chosen)
    return chosen


def _coco_api(backend: str) -> tuple[Any, Any]:
    """The ``(COCO, COCOeval)`` classes of a resolved backend (imported on use: both are optional at import time)."""
    if backend == "faster":
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    return COCO, COCOeval


def check_crowd_kept(dataset: InstanceSet) -> None:
    """Raise a DataError when ``dataset`` was read without its crowd annotations (``keep_crowd=False``).

    COCOeval ignores the detections that cover a crowd region only when the region is in the ground truth; without
    it they count as false positives and the AP is lower than COCO's.
    """
    kept = sum(ann["iscrowd"] for image in dataset.images for ann in image.annotations)
    if dataset.num_crowd > kept:
        raise DataError(
            f"{dataset.source} was loaded without its {dataset.num_crowd} crowd annotation(s), which COCO AP needs "
            "(detections on crowd regions are ignored, not false positives): load it with keep_crowd=True"
        )


def coco_ground_truth(dataset: InstanceSet, backend: str = "pycocotools") -> Any:
    """A ``COCO`` object of ``backend`` built from a validated dataset (``area`` and ``iscrowd`` filled in).

    Annotation ids are the dataset's, or 1..N in image order when one of them is below 1 (COCOeval's matching reads
    id 0 as "unmatched").

    Raises:
        DataError: if the dataset was read without its crowd annotations (see :func:`check_crowd_kept`).
    """
    check_crowd_kept(dataset)
    # COCOeval marks an unmatched ground truth with id 0, so an annotation numbered 0 (Roboflow's exports count from
    # 0) would have its true positive scored as a false positive: ids below 1 are renumbered 1..N
    renumber = any(ann["id"] < 1 for image in dataset.images for ann in image.annotations)
    annotations: list[dict[str, Any]] = []
    for image in dataset.images:
        for ann in image.annotations:
            area = ann.get("area")
            if area is None:
                area = segmentation_area(ann["segmentation"], image.height, image.width)
            annotations.append(
                {
                    "id": len(annotations) + 1 if renumber else ann["id"],
                    "image_id": image.id,
                    "category_id": dataset.category_ids[ann["label"]],
                    "segmentation": ann["segmentation"],
                    "iscrowd": ann["iscrowd"],
                    "area": float(area),
                }
            )
    coco_class, _ = _coco_api(resolve_backend(backend))
    gt = coco_class()
    images = [{"id": i.id, "file_name": i.file_name, "height": i.height, "width": i.width} for i in dataset.images]
    gt.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for c, n in zip(dataset.category_ids, dataset.label_names)],
    }
    with _quiet_scorer():
        gt.createIndex()
    return gt


def summarize_coco_eval(coco_eval: Any, label_names: tuple[str, ...]) -> dict[str, Any]:
    """``AP, AP50, AP75, APs, APm, APl`` and ``per_class`` AP (percent) from an evaluated ``COCOeval``.

    A metric without ground truth to measure it (e.g. APl without large objects) is ``None``, not a number.
    """
    stats = [float(v) for v in coco_eval.stats[:6]]
    metrics: dict[str, Any] = {key: (100.0 * v if v >= 0 else None) for key, v in zip(METRIC_KEYS, stats)}
    precision = np.asarray(coco_eval.eval["precision"])  # (IoU thresholds, recall points, classes, areas, max dets)
    per_class = {}
    for index, name in enumerate(label_names):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        per_class[name] = 100.0 * float(values.mean()) if values.size else None
    metrics["per_class"] = per_class
    return metrics


def undefined_metrics(label_names: tuple[str, ...]) -> dict[str, Any]:
    """The metrics of a dataset that has nothing to measure: every value None."""
    return {**{key: None for key in METRIC_KEYS}, "per_class": {name: None for name in label_names}}


def _nothing_to_measure(dataset: InstanceSet, lacking: str) -> dict[str, Any]:
    """Warn that ``dataset`` has no ``lacking`` (image, annotation) and return its undefined metrics."""
    _logger.warning("%s has no %s: every metric is undefined", dataset.source, lacking)
    return undefined_metrics(dataset.label_names)


def _detections_object(gt: Any, detections: list[dict[str, Any]], coco_class: Any) -> Any:
    if detections:
        return gt.loadRes([dict(d) for d in detections])  # loadRes adds keys to the dicts: keep the caller's intact
    empty = coco_class()  # loadRes rejects an empty list; no detections is a valid (zero) result
    empty.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    empty.createIndex()
    return empty


def score_detections(
    dataset: InstanceSet, detections: list[dict[str, Any]], backend: str = "auto", gt: Any = None
) -> dict[str, Any]:
    """COCO mask AP of COCO-format ``detections`` (``image_id, category_id, segmentation`` RLE, ``score``).

    Args:
        dataset: the ground truth.
        detections: result dicts as :meth:`~sparseinst_zoo.inference.results.Results.to_coco` writes them.
        backend: ``'auto'``, ``'faster'`` (faster-coco-eval) or ``'pycocotools'``.
        gt: the ground truth as a ``COCO`` object of the same backend (built from ``dataset`` when None).

    Returns:
        The metrics (see :func:`evaluate`); every value None when the dataset has no annotation.
    """
    backend = resolve_backend(backend)
    coco_class, eval_class = _coco_api(backend)
    gt = gt if gt is not None else coco_ground_truth(dataset, backend)
    if not gt.dataset["annotations"]:
        return _nothing_to_measure(dataset, "annotation")
    with _quiet_scorer() as summary, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' numpy-2 copy keyword
        coco_eval = eval_class(gt, _detections_object(gt, detections, coco_class), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    _logger.debug("COCO segm evaluation (%s) on %s:\n%s", backend, dataset.source, summary.getvalue())
    return summarize_coco_eval(coco_eval, dataset.label_names)


class _ImageDataset(Dataset):
    def __init__(self, dataset: InstanceSet, images: list[ImageRecord]) -> None:
        self.dataset, self.images = dataset, images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        record = self.images[index]
        return record.id, self.dataset.load_image(record)


def _resolve_model(model: nn.Module | str, checkpoint: str | os.PathLike[str] | None) -> nn.Module:
    if not isinstance(model, str):
        return model
    cfg = get_pretrained_cfg(model) if is_model(split_model_name_tag(model)[0]) else None
    pretrained = checkpoint is None and cfg is not None and cfg.has_weights
    return create_model(model, pretrained=pretrained, checkpoint_path=checkpoint)


def _predictor(
    model: nn.Module | str,
    checkpoint: str | os.PathLike[str] | None,
    device: str | torch.device | None,
    precision: PrecisionLike,
    **options: Any,
) -> Predictor:
    """The predictor of a model, a model name / folder, or an exported file (run by its own runtime)."""
    if is_exported_model(model):
        if checkpoint is not None or device is not None:
            raise SparseInstError.naming(
                "an exported model carries its weights and runs on its runtime's device: drop {checkpoint} / {device}",
                checkpoint=Argument("checkpoint"),
                device=Argument("device"),
            )
        return create_predictor(model, precision=precision, **options)
    return Predictor(_resolve_model(model, checkpoint), device=device, precision=precision, **options)


def _check_classes(model: nn.Module, dataset: InstanceSet) -> None:
    num_classes = int(getattr(model, "num_classes", dataset.num_classes))
    if num_classes != dataset.num_classes:
        raise DataError(
            f"the model predicts {num_classes} classes but {dataset.source} has {dataset.num_classes} "
            "categories; evaluate a model fine-tuned on this dataset (sparseinst train ...)"
        )
    model_names = tuple(getattr(model, "label_names", ()) or ())
    if model_names and model_names != dataset.label_names:
        _logger.warning(
            "the model's classes [%s] differ from the categories of %s [%s]; predicted label i is scored "
            "as the dataset's i-th category",
            listed(map(repr, model_names), shown=6),
            dataset.source,
            listed(map(repr, dataset.label_names), shown=6),
        )


def _predict_shard(
    predictor: Predictor, dataset: InstanceSet, batch_size: int, workers: int, progress: bool
) -> list[dict[str, Any]]:
    """COCO result dicts of every image on rank 0 (gathered from the ranks' shards), none on the other ranks.

    Only rank 0 scores them, so the other ranks never hold the whole validation set's detections.
    """
    rank, world = current_rank(), world_size()
    shard = dataset.images[rank::world]
    loader = DataLoader(_ImageDataset(dataset, shard), batch_size=batch_size, num_workers=workers, collate_fn=list)
    detections: list[dict[str, Any]] = []
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc="eval", unit="img", leave=False)
    for chunk in loader:
        results = predictor.predict_images([image for _, image in chunk])
        for (image_id, _), result in zip(chunk, results):
            detections.extend(result.to_coco(image_id, dataset.category_ids))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    parts = gather_to_rank0(detections)
    return [d for part in parts for d in part] if parts is not None else []


def _dataset_to_score(
    data: str | os.PathLike[str] | None,
    images: str | os.PathLike[str] | None,
    split: str,
    dataset: InstanceSet | None,
) -> InstanceSet:
    """The given dataset, or ``data`` read with its crowd annotations; checked to hold them before predicting."""
    if dataset is None:
        if data is None:
            raise SparseInstError("evaluate needs data= (a COCO JSON with images=, or a data.yaml) or dataset=")
        dataset = load_instances(data, images, split=split, keep_crowd=True)
    check_crowd_kept(dataset)
    return dataset


def _metrics_on_rank0(
    predictor: Predictor, dataset: InstanceSet, scorer: str, batch_size: int, workers: int, progress: bool
) -> dict[str, Any] | None:
    """The metrics on rank 0 (every rank predicts its shard), None on the other ranks; undefined without images."""
    if not dataset.images:
        return _nothing_to_measure(dataset, "image")
    detections = _predict_shard(predictor, dataset, batch_size, workers, progress)
    return score_detections(dataset, detections, scorer) if current_rank() == 0 else None


def _metrics_on_every_rank(metrics: dict[str, Any] | None, dataset: InstanceSet) -> dict[str, Any]:
    """Rank 0's metrics on every rank (broadcast; a dataset without images has them on every rank already)."""
    if world_size() > 1 and dataset.images:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    assert metrics is not None
    return metrics


def evaluate(
    model: nn.Module | str,
    data: str | os.PathLike[str] | None = None,
    images: str | os.PathLike[str] | None = None,
    *,
    split: str = "val",
    dataset: InstanceSet | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    precision: PrecisionLike = None,
    half: PrecisionLike = None,
    workers: int = 0,
    score_threshold: float = 0.005,
    max_detections: int = 100,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    backend: EvalBackend = "auto",
    coco: InstanceSet | None = None,
) -> dict[str, Any]:
    """COCO instance segmentation AP of ``model`` on a COCO JSON or ``data.yaml`` dataset.

    Args:
        model: a SparseInst model, or a name / ``save_pretrained`` folder for :func:`sparseinst_zoo.create_model`
            (a registered name without ``checkpoint`` loads its pretrained weights).
        data: a COCO instances JSON (with ``images``) or a dataset YAML (see docs/datasets.md).
        images: image folder of a COCO JSON ``data``.
        split: the split of a YAML ``data`` to evaluate on.
        dataset: an already parsed dataset (instead of ``data``; ``coco=`` is its deprecated alias).
        checkpoint: weights file for a model given by name.
        min_size / max_size: test resize (shorter side / longer-side cap); default: the model's cfg.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        precision: ``'fp32'``, ``'fp16'`` or ``'bf16'`` (see :mod:`sparseinst_zoo.inference.precision`);
            ``half=`` is its deprecated alias.
        workers: image-decoding worker processes.
        score_threshold / max_detections: postprocessing (reference: 0.005 / 100).
        out: also write the metrics to this ``.json`` file (atomically); when it exists, to the next free
            ``<stem>_2.json`` ... instead (see :func:`write_metrics`). Checked before anything is predicted.
        progress: show a progress bar.
        backend: ``'auto'`` (faster-coco-eval when installed), ``'faster'`` or ``'pycocotools'``.

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl": float percent (None if undefined), "per_class": {name: AP}}``;
        every value None for a dataset without images or annotations. Under ``torch.distributed`` every process
        gets the metrics.

    Example:
        >>> import sparseinst_zoo
        >>> metrics = sparseinst_zoo.evaluate("runs/shapes/best", "val.json", "val_images/")  # doctest: +SKIP
        >>> round(metrics["AP"], 1), sorted(metrics)[:3]  # doctest: +SKIP
        (61.3, ['AP', 'AP50', 'AP75'])
    """
    precision = precision_from_alias(precision, half, "evaluate")
    parse_precision(precision)  # checked here; the predictor resolves it on its device
    scorer = resolve_backend(backend)  # fail before predicting when the backend is missing
    if out is not None:
        check_metrics_path(out)
    dataset = _dataset_to_score(data, images, split, dataset if dataset is not None else coco)
    predictor = _predictor(
        model,
        checkpoint,
        device,
        precision,
        score_threshold=score_threshold,
        max_detections=max_detections,
        min_size=min_size,
        max_size=max_size,
        batch_size=batch_size,
        keep_image=False,
    )
    _check_classes(predictor.source_model, dataset)
    metrics = _metrics_on_rank0(predictor, dataset, scorer, batch_size, workers, progress)
    if current_rank() == 0 and out is not None:
        assert metrics is not None
        write_metrics(out, metrics)
    return _metrics_on_every_rank(metrics, dataset)
