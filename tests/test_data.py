"""COCO parsing and validation, mask formats, augmentation, collate and the training sampler."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from PIL import Image, PngImagePlugin

from sparseinst_zoo.data import Augmentation, AugmentConfig, CocoInstances, Collator, InstanceDataset, TrainSampler
from sparseinst_zoo.data.instances import image_size
from sparseinst_zoo.data.synthetic import SHAPE_CLASSES, make_shapes_dataset
from sparseinst_zoo.errors import DataError
from sparseinst_zoo.evaluation import score_detections
from sparseinst_zoo.inference.transforms import get_output_shape


def _write(tmp_path, data, images=((1, 20, 30),)):
    for image_id, h, w in images:
        Image.fromarray(np.full((h, w, 3), 50, np.uint8)).save(tmp_path / f"{image_id}.png")
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _base(annotations, categories=({"id": 5, "name": "a"}, {"id": 2, "name": "b"})):
    return {
        "images": [{"id": 1, "file_name": "1.png", "height": 20, "width": 30}],
        "annotations": list(annotations),
        "categories": list(categories),
    }


def test_all_mask_formats_crowd_and_contiguous_labels(tmp_path):
    truth = np.zeros((20, 30), np.uint8)
    truth[5:10, 3:9] = 1
    rle = mask_utils.encode(np.asfortranarray(truth))
    compressed = {"size": [20, 30], "counts": rle["counts"].decode()}
    flat = truth.flatten(order="F")  # uncompressed RLE: run lengths in column-major order, starting with zeros
    runs, value, count = [], 0, 0
    for v in flat:
        if v != value:
            runs.append(count)
            value, count = v, 0
        count += 1
    runs.append(count)
    uncompressed = {"size": [20, 30], "counts": runs}
    polygon = [[3, 5, 9, 5, 9, 10, 3, 10]]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 5, "segmentation": polygon},
        {"id": 11, "image_id": 1, "category_id": 2, "segmentation": compressed},
        {"id": 12, "image_id": 1, "category_id": 5, "segmentation": uncompressed},
        {"id": 13, "image_id": 1, "category_id": 2, "segmentation": compressed, "iscrowd": 1},
    ]
    coco = CocoInstances(_write(tmp_path, _base(anns)), tmp_path)
    assert coco.category_ids == (2, 5) and coco.label_names == ("b", "a") and coco.num_crowd == 1
    labels, masks = coco.load_targets(coco.images[0])
    assert labels.tolist() == [1, 0, 1]
    assert masks.shape == (3, 20, 30) and masks.dtype == np.uint8
    assert (masks[1] == truth).all() and (masks[2] == truth).all()
    assert abs(int(masks[0].sum()) - int(truth.sum())) <= 12  # polygon rasterisation differs at the border


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("annotations"), "missing top-level key"),
        (lambda d: d["annotations"][0].pop("category_id"), "annotation id 7 is missing key"),
        (lambda d: d["annotations"][0].update(image_id=99), "annotation id 7 refers to unknown image id 99"),
        (lambda d: d["annotations"][0].update(category_id=4), "annotation id 7 has category id 4"),
        (lambda d: d["annotations"][0].update(segmentation=[[1, 2, 3, 4, 5]]), "annotation id 7.*odd number"),
        (lambda d: d["annotations"][0].update(segmentation=[["a", 1]]), "annotation id 7.*flat list of numbers"),
        (lambda d: d["annotations"][0].update(segmentation={"size": [5, 5], "counts": "x"}), "id 7.*RLE size"),
        (lambda d: d["annotations"][0].pop("segmentation"), "annotation id 7 has no 'segmentation'"),
        (lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id 7 appears twice"),
        (lambda d: d["images"][0].pop("height"), "image id 1 is missing key"),
        (lambda d: d.update(categories=[]), "'categories' is empty"),
        (lambda d: d.update(images={}), "'images' must be a list"),
        (lambda d: d["annotations"][0].update(image_id="abc"), "annotation id 7 has image_id 'abc'; expected an int"),
        (
            lambda d: d["annotations"][0].update(segmentation={"size": [20, 30], "counts": [5, 3]}),
            "id 7.*uncompressed RLE 'counts' must be non-negative integers summing to height x width = 600",
        ),
    ],
)
def test_bad_files_name_the_problem(tmp_path, mutate, message):
    data = _base([{"id": 7, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    mutate(data)
    with pytest.raises(ValueError, match=message):
        CocoInstances(_write(tmp_path, data), tmp_path)


def test_missing_paths_and_invalid_json(tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        CocoInstances(tmp_path / "nope.json", tmp_path)
    path = _write(tmp_path, _base([]))
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        CocoInstances(path, tmp_path / "missing")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoInstances(path, tmp_path)


def test_missing_image_files_fail_before_training(tmp_path):
    data = _base([{"id": 7, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    data["images"].append({"id": 2, "file_name": "sub/gone.jpg", "height": 20, "width": 30})  # no annotation
    with pytest.raises(FileNotFoundError, match=r"1 of 2 image file\(s\) not found in .*sub/gone.jpg \(image id 2\)"):
        CocoInstances(_write(tmp_path, data), tmp_path)


def _turned_jpeg(path, height, width):
    """A JPEG stored as ``height x width`` pixels whose EXIF orientation (6) displays it turned by 90 degrees."""
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path, exif=exif.tobytes())


def test_image_sizes_are_checked_at_load_time_with_exif_orientation_applied(tmp_path):
    """A size the JSON gets wrong fails when the dataset is loaded, not at the first batch or evaluation reading it;
    an EXIF-turned image whose JSON gives its stored size says that the orientation is why."""
    data = _base([{"id": 7, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    data["images"].append({"id": 2, "file_name": "2.jpg", "height": 20, "width": 30})  # no annotation: eval only
    path = _write(tmp_path, data)
    _turned_jpeg(tmp_path / "2.jpg", 20, 30)  # displayed 30x20
    with pytest.raises(ValueError, match=r"2\.jpg \(image id 2\) is 30x20 \(HxW\) but the JSON says 20x30; its EXIF "):
        CocoInstances(path, tmp_path)
    data["images"][1].update(height=30, width=20)  # the displayed size: what read_image and predict see
    coco = CocoInstances(_write(tmp_path, data), tmp_path)
    assert coco.load_image(coco.images[1]).shape == (30, 20, 3)
    data["images"][0].update(height=30, width=20)
    with pytest.raises(ValueError, match=r"1\.png \(image id 1\) is 20x30 .* says 30x20; correct the JSON's height"):
        CocoInstances(_write(tmp_path, data), tmp_path)


def test_image_sizes_of_pngs_come_from_the_header(tmp_path, monkeypatch):
    """Reading a PNG's size (every image of a dataset at load time) must not decode its pixels."""
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "turned.png", exif=exif.tobytes())

    def refuse(self):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", refuse)
    assert image_size(str(tmp_path / "plain.png")) == (20, 30)
    assert image_size(str(tmp_path / "turned.png")) == (30, 20)


def test_degenerate_polygons_dropped_and_empty_images_skipped(tmp_path, caplog):
    anns = [{"id": 3, "image_id": 1, "category_id": 5, "segmentation": [[1, 1, 4, 4]]}]
    anns.append({"id": 5, "image_id": 1, "category_id": 5, "segmentation": [], "bbox": [1, 1, 4, 4]})  # box-only
    data = _base(anns)
    data["images"].append({"id": 2, "file_name": "2.png", "height": 20, "width": 30})
    data["annotations"].append({"id": 4, "image_id": 2, "category_id": 2, "segmentation": [[0, 0, 9, 0, 9, 9]]})
    coco = CocoInstances(_write(tmp_path, data, images=((1, 20, 30), (2, 20, 30))), tmp_path)
    assert "dropped 2 annotation(s) without a mask" in caplog.text and "box-only" in caplog.text
    assert "ids 3, 5" in caplog.text and coco.num_dropped == 2
    assert [img.id for img in coco.training_images()] == [2]
    (tmp_path / "2.png").unlink()
    Image.fromarray(np.zeros((21, 30, 3), np.uint8)).save(tmp_path / "2.png")
    with pytest.raises(ValueError, match="2.png is 21x30 .* says 20x30 for image id 2"):
        coco.load_image(coco.images[1])


def _truncated_jpeg(path, height=20, width=30):
    """A JPEG cut in half, as an interrupted download leaves it: its header (and size) reads, its pixels do not."""
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(path, quality=95)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def test_a_truncated_image_in_a_coco_file_fails_at_load_time_naming_it(tmp_path):
    """Its header reads, so without the end-marker check training failed only when a batch first decoded it."""
    data = _base([{"id": 7, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]]}])
    data["images"].append({"id": 2, "file_name": "cut.jpg", "height": 20, "width": 30})
    path = _write(tmp_path, data)
    _truncated_jpeg(tmp_path / "cut.jpg")
    message = r"(?i)ann\.json: cut\.jpg \(image id 2\) cannot be read as an image \(.*truncated"
    with pytest.raises(DataError, match=message):
        CocoInstances(path, tmp_path)
    trailing = Image.fromarray(np.full((20, 30, 3), 90, np.uint8))
    trailing.save(tmp_path / "cut.jpg")
    with open(tmp_path / "cut.jpg", "ab") as handle:  # data after the end marker (a phone's motion photo): fine
        handle.write(b"\x00" * 64)
    assert CocoInstances(path, tmp_path).images[1].height == 20


def _square(ann_id, image_id, category_id):
    square = [[2, 2, 12, 2, 12, 12, 2, 12]]
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "segmentation": square}


def _roboflow_export(tmp_path, categories):
    """Two images with a square each, numbered from 0 as Roboflow numbers images, annotations and categories."""
    data = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 20, "width": 30} for i in (0, 1)],
        "annotations": [_square(0, 0, 1), _square(1, 1, 2)],
        "categories": categories,
    }
    return data, _write(tmp_path, data, images=((0, 20, 30), (1, 20, 30)))


def test_a_perfect_detection_of_annotation_id_0_is_a_true_positive(tmp_path):
    """COCOeval marks an unmatched ground truth with id 0: a detection of annotation 0 counted as a false positive
    (AP 25 instead of 100 here)."""
    _, path = _roboflow_export(tmp_path, [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}])
    coco = CocoInstances(path, tmp_path, keep_crowd=True)
    rle = mask_utils.encode(np.asfortranarray(coco.load_targets(coco.images[0])[1][0]))
    rle["counts"] = rle["counts"].decode()
    detections = [{"image_id": i, "category_id": 1 + i, "segmentation": rle, "score": 0.9} for i in (0, 1)]
    for backend in ("pycocotools", "faster"):
        assert score_detections(coco, detections, backend=backend)["AP"] == pytest.approx(100.0)


def test_a_roboflow_root_category_without_annotations_is_not_a_class(tmp_path, caplog):
    """Roboflow's category 0 is the dataset's name, the supercategory of every class, never annotated (its YOLO
    export leaves it out): it was a class of its own, never trained on."""
    categories = [
        {"id": 0, "name": "pets", "supercategory": "none"},
        {"id": 1, "name": "cat", "supercategory": "pets"},
        {"id": 2, "name": "dog", "supercategory": "pets"},
    ]
    data, path = _roboflow_export(tmp_path, categories)
    coco = CocoInstances(path, tmp_path)
    assert coco.category_ids == (1, 2) and coco.label_names == ("cat", "dog")
    assert "ignoring 1 category(ies) that only group others and have no annotation: id 0 'pets'" in caplog.text
    data["annotations"].append(_square(2, 1, 0))  # an annotated parent class is a class
    assert CocoInstances(_write(tmp_path, data, images=()), tmp_path).category_ids == (0, 1, 2)
    coco_style = [{"id": 1, "name": "person", "supercategory": "person"}, {"id": 2, "name": "car"}]
    data.update(annotations=[_square(0, 0, 2)], categories=coco_style)  # a class of its own supercategory: kept
    assert CocoInstances(_write(tmp_path, data, images=()), tmp_path).category_ids == (1, 2)


def test_augmentation_sizes_flip_and_crop():
    assert get_output_shape(480, 640, 416, 853) == (416, 555)
    assert get_output_shape(100, 1000, 640, 853) == (85, 853)
    image = np.zeros((60, 90, 3), np.uint8)
    image[:, :10] = 255
    masks = np.zeros((1, 60, 90), np.uint8)
    masks[0, :, :10] = 1
    flip = Augmentation(AugmentConfig(min_sizes=(60,), max_size=200, flip_prob=1.0))
    out_image, out_masks = flip(image, masks, np.random.default_rng(0))
    assert out_image.shape == (60, 90, 3) and out_masks[0, :, -10:].all() and not out_masks[0, :, :-10].any()
    cfg = AugmentConfig(
        min_sizes=(32, 64),
        max_size=100,
        flip_prob=0.0,
        crop=True,
        crop_prob=1.0,
        crop_resize_sizes=(50,),
        crop_size=(20, 30),
    )
    seen = set()
    for seed in range(8):
        out_image, out_masks = Augmentation(cfg)(image, masks, np.random.default_rng(seed))
        assert min(out_image.shape[:2]) in (32, 64) and out_masks.shape[1:] == out_image.shape[:2]
        assert set(np.unique(out_masks)) <= {0, 1}
        seen.add(out_image.shape[:2])
    assert len(seen) > 1
    with pytest.raises(ValueError, match="max_size"):
        AugmentConfig(min_sizes=(640,), max_size=600)


def test_dataset_collate_and_sampler(tmp_path):
    path = make_shapes_dataset(tmp_path, num_images=5, size=(40, 50), seed=1)
    coco = CocoInstances(path, tmp_path)
    assert coco.label_names == SHAPE_CLASSES and len(coco.images) == 5
    dataset = InstanceDataset(coco, Augmentation(AugmentConfig(min_sizes=(40,), max_size=60)))
    a, b = dataset[(0, 123)], dataset[(0, 123)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])  # seeded augmentation
    batch = Collator((100.0, 100.0, 100.0), (50.0, 50.0, 50.0))([dataset[(i, i)] for i in range(3)])
    assert batch["images"].shape == (3, 3, 64, 64)
    h, w = batch["image_sizes"][0]
    assert (batch["images"][0, :, h:, :] == 0).all() and (batch["images"][0, :, :, w:] == 0).all()
    assert batch["targets"][0]["masks"].shape[1:] == (64, 64) and batch["targets"][0]["labels"].dtype == torch.int64

    sampler = TrainSampler(size=5, batch_size=2, max_iters=6, seed=3)
    batches = list(sampler)
    assert len(batches) == 6 and all(len(b) == 2 for b in batches)
    assert list(TrainSampler(size=5, batch_size=2, max_iters=6, seed=3, start_iter=4)) == batches[4:]
    ranks = [list(TrainSampler(5, 1, 6, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert [r0 + r1 for r0, r1 in zip(*ranks)] == batches  # 2 processes x batch 1 == 1 process x batch 2
    tiny = list(TrainSampler(size=1, batch_size=3, max_iters=2))
    assert [i for i, _ in tiny[0]] == [0, 0, 0] and len({seed for _, seed in tiny[0]}) == 3
