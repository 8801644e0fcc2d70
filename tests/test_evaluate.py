"""COCO evaluation: perfect detections score 100, key layout, class-count checks, atomic JSON output, backends."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from detections import perturbed_detections
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

import sparseinst_zoo
from sparseinst_zoo.data import CocoInstances
from sparseinst_zoo.data.synthetic import SHAPE_CLASSES, make_shapes_dataset
from sparseinst_zoo.errors import DataError, SparseInstError
from sparseinst_zoo.evaluation import (
    METRIC_KEYS,
    coco_ground_truth,
    evaluate,
    resolve_backend,
    score_detections,
    summarize_coco_eval,
)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_shapes")
    return make_shapes_dataset(root, num_images=6, seed=4), str(root)


def _score(coco, detections):
    gt = coco_ground_truth(coco)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(detections), iouType="segm")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return summarize_coco_eval(coco_eval, coco.label_names)


def test_ground_truth_as_detections_scores_100(shapes):
    json_path, images = shapes
    coco = CocoInstances(json_path, images, keep_crowd=True)
    detections = []
    for image in coco.images:
        labels, masks = coco.load_targets(image)
        for label, mask in zip(labels, masks):
            rle = mask_utils.encode(mask[:, :, None].copy(order="F"))[0]
            rle["counts"] = rle["counts"].decode()
            detections.append(
                {"image_id": image.id, "category_id": coco.category_ids[label], "segmentation": rle, "score": 1.0}
            )
    metrics = _score(coco, detections)
    assert set(metrics) == {*METRIC_KEYS, "per_class"}
    assert metrics["AP"] == pytest.approx(100.0) and metrics["AP50"] == pytest.approx(100.0)
    present = {coco.label_names[a["label"]] for img in coco.images for a in img.annotations}
    assert all(metrics["per_class"][name] == pytest.approx(100.0) for name in present)
    # the same masks labelled with the wrong class score 0
    shifted = {c: coco.category_ids[(i + 1) % 3] for i, c in enumerate(coco.category_ids)}
    wrong = [
        {
            "image_id": d["image_id"],
            "category_id": shifted[d["category_id"]],
            "score": 1.0,
            "segmentation": d["segmentation"],
        }
        for d in detections
    ]
    assert _score(coco, wrong)["AP"] == pytest.approx(0.0)


def test_evaluate_model_writes_json_and_checks_class_count(shapes, tmp_path):
    json_path, images = shapes
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    out = tmp_path / "sub" / "metrics.json"
    metrics = evaluate(model, json_path, images, batch_size=2, out=out)
    saved = json.loads(out.read_text())
    assert set(saved) == {*METRIC_KEYS, "per_class"} and saved["AP"] == metrics["AP"]
    assert list(saved["per_class"]) == list(SHAPE_CLASSES)
    assert all(v is None or 0.0 <= v <= 100.0 for k, v in saved.items() if k != "per_class")
    assert not list(out.parent.glob("*.tmp*"))
    with pytest.raises(ValueError, match="predicts 80 classes but .* has 3 categories"):
        evaluate(sparseinst_zoo.create_model("sparseinst_tiny_test"), json_path, images)


def test_evaluate_warns_when_the_model_was_trained_on_other_classes(shapes, caplog):
    json_path, images = shapes
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=SHAPE_CLASSES)
    evaluate(model, json_path, images, batch_size=6)
    assert "differ from the categories" not in caplog.text
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=("cat", "dog", "bird"))
    evaluate(model, json_path, images, batch_size=6)
    assert "the model's classes ['cat', 'dog', 'bird'] differ from the categories of" in caplog.text


def test_faster_coco_eval_and_pycocotools_agree(tmp_path):
    path = make_shapes_dataset(tmp_path, num_images=40, size=(64, 80), max_shapes=4, seed=9)
    coco = CocoInstances(path, tmp_path, keep_crowd=True)
    detections = perturbed_detections(coco)
    slow = score_detections(coco, detections, "pycocotools")
    fast = score_detections(coco, detections, "faster")
    assert 5.0 < slow["AP"] < 95.0 and resolve_backend("auto") == "faster"
    for key in METRIC_KEYS:
        assert (slow[key] is None and fast[key] is None) or abs(slow[key] - fast[key]) < 1e-4 * 100, key
    assert all(abs(slow["per_class"][n] - fast["per_class"][n]) < 1e-2 for n in SHAPE_CLASSES)  # 1e-4 in [0, 1]
    with pytest.raises(SparseInstError, match="backend must be one of"):
        score_detections(coco, detections, "fast")


def test_crowd_regions_are_scored_as_coco_does_and_never_silently_dropped(tmp_path):
    """A detection on a crowd region is ignored by COCOeval, as pycocotools run on the JSON by hand shows; a dataset
    read without its crowd annotations (``keep_crowd=False``, the training default) would count it as a false
    positive, so scoring it is refused."""
    Image.fromarray(np.full((40, 40, 3), 80, np.uint8)).save(tmp_path / "1.png")
    crowd = np.zeros((40, 40), np.uint8)
    crowd[25:38, 2:38] = 1
    flat = crowd.flatten(order="F")  # uncompressed RLE: column-major runs, starting with a run of zeros
    runs = np.diff([0, *(np.flatnonzero(np.diff(flat)) + 1), flat.size]).tolist()
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": 40, "width": 40}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 4,
                "iscrowd": 0,
                "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20]],
                "area": 324,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 4,
                "iscrowd": 1,
                "area": int(crowd.sum()),
                "segmentation": {"size": [40, 40], "counts": runs},
            },
        ],
        "categories": [{"id": 4, "name": "a"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    with_crowd = CocoInstances(tmp_path / "ann.json", tmp_path, keep_crowd=True)
    masks = {1: with_crowd.load_targets(with_crowd.images[0])[1][0], 2: crowd}
    detections = [
        {"image_id": 1, "category_id": 4, "segmentation": _rle(masks[i]), "score": score}
        for i, score in ((2, 0.95), (1, 0.9))  # the crowd region first: a false positive if it were not ignored
    ]
    gt = COCO(str(tmp_path / "ann.json"))
    with contextlib.redirect_stdout(io.StringIO()):
        by_hand = COCOeval(gt, gt.loadRes([dict(d) for d in detections]), iouType="segm")  # loadRes adds keys
        by_hand.evaluate()
        by_hand.accumulate()
        by_hand.summarize()
    assert 100.0 * by_hand.stats[0] == pytest.approx(100.0)
    for backend in ("pycocotools", "faster"):
        assert score_detections(with_crowd, detections, backend)["AP"] == pytest.approx(100.0)
    without = CocoInstances(tmp_path / "ann.json", tmp_path)
    message = r"ann\.json was loaded without its 1 crowd annotation\(s\), .*: load it with keep_crowd=True"
    with pytest.raises(DataError, match=message):
        score_detections(without, detections)
    with pytest.raises(DataError, match=message):  # before any prediction
        evaluate(sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=1), dataset=without)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": rle["size"], "counts": rle["counts"].decode()}


def test_no_detections_score_zero_where_there_is_ground_truth(shapes):
    coco = CocoInstances(*shapes, keep_crowd=True)
    for backend in ("pycocotools", "faster"):
        metrics = score_detections(coco, [], backend)
        assert metrics["AP"] == 0.0 and metrics["APl"] is None  # 64 px images hold no large object


def test_precision_and_the_deprecated_half_alias(shapes):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    reference = evaluate(model, *shapes, batch_size=6, precision="fp32")
    with pytest.warns(FutureWarning, match="half=.* is deprecated; use precision="):
        assert evaluate(model, *shapes, batch_size=6, half=False) == reference
    with pytest.raises(SparseInstError, match="precision must be one of"):
        evaluate(model, *shapes, precision="int8")


def test_an_exported_onnx_file_is_evaluated_like_its_model(tmp_path):
    """A briefly trained tiny model (AP50 > 0, so the comparison means something) scores the same exported."""
    from sparseinst_zoo.export import export_onnx
    from sparseinst_zoo.training.config import TrainConfig
    from sparseinst_zoo.training.engine import Trainer

    json_path = make_shapes_dataset(tmp_path / "shapes", num_images=24, max_shapes=2, radius=(0.2, 0.32), seed=0)
    images = str(tmp_path / "shapes")
    torch.manual_seed(0)
    config = TrainConfig(
        model="sparseinst_tiny_test",
        train_json=json_path,
        train_images=images,
        batch_size=4,
        lr=2e-3,
        min_sizes=(64,),
        max_size=96,
        out=str(tmp_path / "run"),
        workers=0,
        progress=False,
        tensorboard=False,
        iters=60,
    )
    Trainer(config).train()
    model = sparseinst_zoo.create_model(str(tmp_path / "run" / "last")).eval()
    onnx_path = export_onnx(model, tmp_path / "tiny.onnx", 64, 64, dynamic=True)
    expected = evaluate(model, json_path, images, batch_size=4, min_size=64, max_size=96)
    got = evaluate(onnx_path, json_path, images, batch_size=4, min_size=64, max_size=96)
    assert expected["AP50"] > 0
    for key in METRIC_KEYS:
        assert got[key] == pytest.approx(expected[key], abs=1e-3), key
    with pytest.raises(SparseInstError, match="exported model carries its weights"):
        evaluate(onnx_path, json_path, images, checkpoint="x.safetensors")


def test_metrics_never_replace_a_file_and_must_be_json(shapes, tmp_path, caplog, capsys):
    from sparseinst_zoo.cli import main

    source, images = shapes
    ground_truth = open(source, "rb").read()
    annotations = tmp_path / "annotations.json"
    annotations.write_bytes(ground_truth)
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    folder = model.save_pretrained(tmp_path / "model")
    metrics = evaluate(model, annotations, images, batch_size=6, out=annotations)  # the file it just read
    assert annotations.read_bytes() == ground_truth
    assert json.loads((tmp_path / "annotations_2.json").read_text()) == metrics
    assert "annotations.json exists, so the metrics are written to" in caplog.text
    data = ["--data", str(annotations), "--images", images, "--workers", "0"]
    assert main(["val", str(folder), *data, "--out", str(annotations)]) == 0
    assert annotations.read_bytes() == ground_truth
    assert f"wrote {tmp_path / 'annotations_3.json'}" in capsys.readouterr().out  # the path actually written
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"\x89PNG not metrics")
    assert main(["val", str(folder), *data, "--out", str(victim)]) == 1
    assert "name a .json file" in capsys.readouterr().err and victim.read_bytes() == b"\x89PNG not metrics"
    with pytest.raises(SparseInstError, match="name a .json file"):
        evaluate(model, annotations, images, out=tmp_path / "metrics")  # checked before anything is predicted
    assert sorted(p.name for p in tmp_path.glob("*.json")) == [
        "annotations.json",
        "annotations_2.json",
        "annotations_3.json",
    ]
