"""COCO mask AP of a model on a COCO-format dataset (pycocotools ``COCOeval``, ``iouType='segm'``).

Predictions use the model's predictor (reference preprocessing and postprocessing); under ``torch.distributed`` each
process predicts a share of the images and rank 0 scores them.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._io import atomic_write_json
from .data import CocoImage, CocoInstances
from .distributed import rank as current_rank
from .distributed import world_size

__all__ = ["evaluate", "METRIC_KEYS", "coco_ground_truth", "summarize_coco_eval"]

_logger = logging.getLogger("sparseinst_zoo")
METRIC_KEYS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class _ImageDataset(Dataset):
    def __init__(self, coco: CocoInstances, images: list[CocoImage]) -> None:
        self.coco, self.images = coco, images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        record = self.images[index]
        return record.id, self.coco.load_image(record)


def coco_ground_truth(coco: CocoInstances):
    """A pycocotools ``COCO`` built from the validated file (``area`` and ``iscrowd`` filled in where missing)."""
    from pycocotools.coco import COCO

    annotations = []
    for image in coco.images:
        for ann in image.annotations:
            area = ann.get("area")
            if area is None:
                segm = ann["segmentation"]
                if isinstance(segm, list):
                    rle = mask_utils.merge(mask_utils.frPyObjects(segm, image.height, image.width))
                elif isinstance(segm["counts"], list):
                    rle = mask_utils.frPyObjects(segm, image.height, image.width)
                else:
                    rle = segm
                area = float(mask_utils.area(rle))
            annotations.append({
                "id": ann["id"], "image_id": image.id, "category_id": coco.category_ids[ann["label"]],
                "segmentation": ann["segmentation"], "iscrowd": ann["iscrowd"], "area": float(area),
            })  # fmt: skip
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i.id, "file_name": i.file_name, "height": i.height, "width": i.width} for i in coco.images],
        "annotations": annotations,
        "categories": [{"id": c, "name": n} for c, n in zip(coco.category_ids, coco.label_names)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def summarize_coco_eval(coco_eval: Any, label_names: tuple[str, ...]) -> dict[str, Any]:
    """``AP, AP50, AP75, APs, APm, APl`` and ``per_class`` AP (percent) from an evaluated ``COCOeval``.

    A class without ground truth in the data set gets ``None`` (not a number) in ``per_class``.
    """
    stats = [float(v) for v in coco_eval.stats[:6]]
    metrics: dict[str, Any] = {key: (100.0 * v if v >= 0 else None) for key, v in zip(METRIC_KEYS, stats)}
    precision = coco_eval.eval["precision"]  # (IoU thresholds, recall points, classes, area ranges, max dets)
    per_class = {}
    for index, name in enumerate(label_names):
        values = precision[:, :, index, 0, -1]
        values = values[values > -1]
        per_class[name] = 100.0 * float(values.mean()) if values.size else None
    metrics["per_class"] = per_class
    return metrics


def _empty_metrics(label_names: tuple[str, ...]) -> dict[str, Any]:
    return {**{key: 0.0 for key in METRIC_KEYS}, "per_class": {name: 0.0 for name in label_names}}


def evaluate(
    model: nn.Module | str,
    json_path: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    min_size: int | None = None,
    max_size: int | None = None,
    batch_size: int = 4,
    device: str | torch.device | None = None,
    half: bool | str = False,
    workers: int = 0,
    score_threshold: float = 0.005,
    max_detections: int = 100,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    coco: CocoInstances | None = None,
) -> dict[str, Any]:
    """COCO instance segmentation AP of ``model`` on a COCO-format dataset.

    Args:
        model: a SparseInst model, or a name / ``save_pretrained`` folder for :func:`sparseinst_zoo.create_model`
            (a registered name without ``checkpoint`` loads its pretrained weights).
        json_path: COCO instances JSON with the ground truth.
        images: folder with the images.
        checkpoint: weights file for a model given by name.
        min_size / max_size: test resize (shorter side / longer-side cap); default: the model's cfg.
        batch_size: images per forward pass.
        device: where to run (default: the model's device).
        half: autocast (see :class:`~sparseinst_zoo.inference.predictor.Predictor`).
        workers: image-decoding worker processes.
        score_threshold / max_detections: postprocessing (reference: 0.005 / 100).
        out: also write the metrics as JSON there (atomically).
        progress: show a progress bar.
        coco: an already parsed dataset (skips re-reading ``json_path``).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl": float percent (None if undefined), "per_class": {name: AP}}``.
        Under ``torch.distributed`` every process gets the metrics.

    Example:
        >>> import sparseinst_zoo
        >>> metrics = sparseinst_zoo.evaluate("runs/shapes/best", "val.json", "val_images/")  # doctest: +SKIP
        >>> round(metrics["AP"], 1), sorted(metrics)[:3]  # doctest: +SKIP
        (61.3, ['AP', 'AP50', 'AP75'])
    """
    from pycocotools.cocoeval import COCOeval

    from ..inference.predictor import Predictor

    if isinstance(model, str):
        from .._factory import create_model
        from .._registry import get_pretrained_cfg, is_model, split_model_name_tag

        registered = is_model(split_model_name_tag(model)[0])
        cfg = get_pretrained_cfg(model) if registered else None
        pretrained = checkpoint is None and cfg is not None and cfg.has_weights
        model = create_model(model, pretrained=pretrained, checkpoint_path=checkpoint)
    if coco is None:
        coco = CocoInstances(json_path, images, keep_crowd=True)
    num_classes = int(getattr(model, "num_classes", coco.num_classes))
    if num_classes != coco.num_classes:
        raise ValueError(f"the model predicts {num_classes} classes but {coco.json_path} has {coco.num_classes} "
                         "categories; evaluate a model fine-tuned on this dataset (sparseinst train ...)")  # fmt: skip
    label_names = coco.label_names
    model_names = tuple(getattr(model, "label_names", ()) or ())
    if model_names and model_names != label_names:
        _logger.warning("the model's classes %s differ from the categories of %s %s; predicted label i is scored "
                        "as the dataset's i-th category", list(model_names), coco.json_path,
                        list(label_names))  # fmt: skip
    predictor = Predictor(
        model, score_threshold=score_threshold, max_detections=max_detections, min_size=min_size, max_size=max_size,
        device=device, half=half, batch_size=batch_size, keep_image=False,
    )  # fmt: skip
    rank, world = current_rank(), world_size()
    shard = coco.images[rank::world]
    loader = DataLoader(_ImageDataset(coco, shard), batch_size=batch_size, num_workers=workers, collate_fn=list)
    detections: list[dict[str, Any]] = []
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(shard), desc="eval", unit="img", leave=False)
    for chunk in loader:
        results = predictor.predict_images([image for _, image in chunk])
        for (image_id, _), result in zip(chunk, results):
            detections.extend(result.to_coco(image_id, coco.category_ids))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    if world > 1:
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, detections)
        detections = [d for part in gathered for d in part]

    metrics: dict[str, Any] | None = None
    if rank == 0:
        if not detections:
            _logger.warning("no detections on %s: every metric is 0", coco.json_path)
            metrics = _empty_metrics(label_names)
        else:
            gt = coco_ground_truth(coco)
            with contextlib.redirect_stdout(io.StringIO()) as summary:
                coco_dt = gt.loadRes(detections)
                coco_eval = COCOeval(gt, coco_dt, iouType="segm")
                coco_eval.evaluate()
                coco_eval.accumulate()
                coco_eval.summarize()
            _logger.debug("COCO segm evaluation on %s:\n%s", coco.json_path, summary.getvalue().split("DONE", 1)[-1])
            metrics = summarize_coco_eval(coco_eval, label_names)
        if out is not None:
            atomic_write_json(out, metrics, allow_nan=False)
    if world > 1:
        box = [metrics]
        dist.broadcast_object_list(box, src=0)
        metrics = box[0]
    assert metrics is not None
    return metrics



