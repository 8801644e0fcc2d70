"""YOLO-format (Ultralytics) segmentation datasets and dataset YAML files: reading, validation, same AP as COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from detections import perturbed_detections
from PIL import Image

import sparseinst_zoo
from sparseinst_zoo.cli import main
from sparseinst_zoo.data import (
    Augmentation,
    AugmentConfig,
    CocoInstances,
    InstanceDataset,
    YoloInstances,
    build_dataset,
    load_dataset_spec,
    load_instances,
)
from sparseinst_zoo.data.synthetic import SHAPE_CLASSES, make_shapes_yolo_dataset
from sparseinst_zoo.errors import DataError
from sparseinst_zoo.evaluation import evaluate, score_detections


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("yolo_shapes")
    make_shapes_yolo_dataset(root, "train", num_images=3, seed=1)
    return root, make_shapes_yolo_dataset(root, "val", num_images=6, seed=2)


def _coco_twin(root):
    return CocoInstances(root / "images/val/annotations.json", root / "images/val", keep_crowd=True)


def test_yolo_split_reads_the_same_instances_as_its_coco_twin(shapes):
    root, data_yaml = shapes
    yolo, coco = load_instances(data_yaml, split="val"), _coco_twin(root)
    assert isinstance(yolo, YoloInstances) and yolo.label_names == coco.label_names == SHAPE_CLASSES
    assert [(i.file_name, i.height, i.width) for i in yolo.images] == [
        (f"images/val/{i.file_name}", i.height, i.width) for i in coco.images
    ]
    for y_image, c_image in zip(yolo.images, coco.images):
        y_labels, y_masks = yolo.load_targets(y_image)
        c_labels, c_masks = coco.load_targets(c_image)
        assert y_labels.tolist() == c_labels.tolist() and np.array_equal(y_masks, c_masks)
    assert len(build_dataset(load_dataset_spec(data_yaml), "train").images) == 3


def test_yolo_and_coco_give_the_same_mask_ap(shapes):
    root, data_yaml = shapes
    yolo, coco = load_instances(data_yaml), _coco_twin(root)
    by_name = {i.file_name: i.id for i in coco.images}
    yolo_detections = perturbed_detections(yolo)
    to_coco_id = {y.id: by_name[y.file_name.split("/")[-1]] for y in yolo.images}
    coco_detections = [
        {
            **d,
            "image_id": to_coco_id[d["image_id"]],
            "category_id": coco.category_ids[yolo.category_to_label[d["category_id"]]],
        }
        for d in yolo_detections
    ]
    for backend in ("pycocotools", "faster"):
        from_yolo = score_detections(yolo, yolo_detections, backend)
        assert 5.0 < from_yolo["AP"] < 95.0
        assert from_yolo == score_detections(coco, coco_detections, backend)
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).eval()
    kwargs = {"batch_size": 3, "backend": "pycocotools"}
    assert evaluate(model, data_yaml, **kwargs) == evaluate(
        model, root / "images/val/annotations.json", root / "images/val", **kwargs
    )


def test_cli_val_takes_a_data_yaml(shapes, tmp_path, capsys):
    root, data_yaml = shapes
    sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).save_pretrained(tmp_path / "model")
    out = tmp_path / "metrics.json"
    argv = ["val", str(tmp_path / "model"), "--data", str(data_yaml), "--workers", "0", "--out", str(out)]
    assert main([*argv, "--coco-eval", "pycocotools"]) == 0
    assert "triangle" in capsys.readouterr().out and set(json.loads(out.read_text())["per_class"]) == set(SHAPE_CLASSES)
    assert main([*argv, "--split", "test"]) == 1
    assert "has no 'test' split" in capsys.readouterr().err


def _layout(tmp_path, labels, names=("a", "b"), yaml_text=None):
    """One 32x16 image ``images/val/x.png`` with label file content ``labels`` (None: no file) and a data.yaml."""
    (tmp_path / "images/val").mkdir(parents=True)
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(tmp_path / "images/val/x.png")
    if labels is not None:
        (tmp_path / "labels/val").mkdir(parents=True)
        (tmp_path / "labels/val/x.txt").write_text(labels)
    path = tmp_path / "data.yaml"
    path.write_text(yaml_text if yaml_text is not None else yaml.safe_dump({"val": "images/val", "names": list(names)}))
    return path


@pytest.mark.parametrize("labels", [None, "", "\n\n"])
def test_missing_or_empty_label_files_are_images_without_objects(tmp_path, labels):
    dataset = load_instances(_layout(tmp_path, labels))
    assert len(dataset.images) == 1 and dataset.images[0].annotations == []
    assert (dataset.images[0].height, dataset.images[0].width) == (16, 32)


def test_polygons_scale_to_pixels_and_short_ones_are_dropped_with_a_warning(tmp_path, caplog):
    dataset = load_instances(_layout(tmp_path, "1 0 0 0.5 0 0.5 1\n0 0.5 0.5 0.25 0.75\n"))
    (annotation,) = dataset.images[0].annotations
    assert annotation["label"] == 1 and annotation["segmentation"] == [[0.0, 0.0, 16.0, 0.0, 16.0, 16.0]]
    assert dataset.num_dropped == 1 and "x.txt:2" in caplog.text and "fewer than 3 points" in caplog.text


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("2 0 0 1 0 1 1\n", r"x.txt:1: class 2 is not one of the dataset's class indices \[0, 1\]"),
        ("0 0 0 1 0 1 1\n0.5 0 0 1 0 1 1\n", "x.txt:2: class 0.5 is not one of"),
        ("cat 0 0 1 0 1 1\n", "x.txt:1: class 'cat' is not an integer"),
        ("0 0 0 1 0 1\n", "x.txt:1: 5 coordinates after the class"),
        ("0 0 0 1 0 1 x\n", "x.txt:1: coordinates must be numbers"),
        ("0 0 0 1.5 0 1 1\n", "x.txt:1: coordinates must be normalised to 0..1"),
        ("0 0 0 nan 0 1 1\n", "x.txt:1: coordinates must be normalised"),
    ],
)
def test_bad_label_lines_name_the_file_and_line(tmp_path, labels, message):
    with pytest.raises(DataError, match=message):
        load_instances(_layout(tmp_path, labels))


def test_coordinates_up_to_1_percent_outside_the_image_are_kept_as_ultralytics_keeps_them(tmp_path):
    """Annotation tools round border vertices to -0.001 or 1.0005; Ultralytics accepts 1% either side."""
    dataset = load_instances(_layout(tmp_path, "0 -0.01 0 1.01 0 1.005 1\n"))
    assert dataset.images[0].annotations[0]["segmentation"] == [[-0.32, 0.0, 32.32, 0.0, 32.16, 16.0]]


def test_a_roboflow_data_yaml_with_parent_relative_splits(tmp_path):
    """Roboflow writes ``train: ../train/images`` next to ``train/``; Ultralytics reads a missing ``../x`` as ``x``."""
    for split in ("train", "valid"):
        (tmp_path / split / "images" / "nested").mkdir(parents=True)
        (tmp_path / split / "labels").mkdir(parents=True)
        Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(tmp_path / split / "images" / "nested" / "a.JPG", "JPEG")
        Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(tmp_path / split / "images" / "b.PNG")
        (tmp_path / split / "labels" / "b.txt").write_text("1 0 0 1 0 1 1\n")
    path = tmp_path / "data.yaml"
    roboflow = "train: ../train/images\nval: ../valid/images\n\nnc: 2\nnames: ['cat', 'dog']\n\nroboflow:\n  v: 1\n"
    path.write_text(roboflow)
    train = load_instances(path, split="train")
    assert [img.file_name for img in train.images] == ["train/images/b.PNG", "train/images/nested/a.JPG"]
    assert [len(img.annotations) for img in train.images] == [1, 0]
    assert len(load_instances(path, split="val").images) == 2
    path.write_text("train: ../elsewhere/images\nnames: [cat, dog]\n")
    with pytest.raises(FileNotFoundError, match="elsewhere/images is not an image folder"):
        load_instances(path, split="train")


def test_unreadable_images_in_a_yolo_folder_are_skipped_with_a_warning(tmp_path, caplog):
    """As Ultralytics, and as predict skips the files it finds in a folder; a truncated file's header still reads,
    so it used to stop training when a batch first decoded it."""
    path = _layout(tmp_path, "1 0 0 1 0 1 1\n")
    (tmp_path / "images/val/bad.png").write_bytes(b"not an image")
    Image.fromarray(np.full((16, 32, 3), 90, np.uint8)).save(tmp_path / "images/val/cut.jpg", quality=95)
    raw = (tmp_path / "images/val/cut.jpg").read_bytes()
    (tmp_path / "images/val/cut.jpg").write_bytes(raw[: len(raw) // 2])
    dataset = load_instances(path)
    assert [(img.id, img.file_name) for img in dataset.images] == [(1, "images/val/x.png")]
    assert dataset.num_unreadable == 2 and "skipped 2 image(s) that cannot be read" in caplog.text
    assert "bad.png" in caplog.text and "cut.jpg" in caplog.text
    (tmp_path / "images/val/x.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"none of its 3 image file\(s\) can be read"):
        load_instances(path)


def test_image_lists_name_dicts_and_coco_splits_in_one_yaml(tmp_path):
    path = _layout(tmp_path, "1 0 0 1 0 1 1\n")
    (tmp_path / "val.txt").write_text("./images/val/x.png\n")
    Image.fromarray(np.zeros((16, 32, 3), np.uint8)).save(tmp_path / "solo.png")
    coco = {
        "images": [{"id": 4, "file_name": "x.png", "height": 16, "width": 32}],
        "annotations": [],
        "categories": [{"id": 1, "name": "a"}, {"id": 9, "name": "b"}],
    }
    (tmp_path / "test.json").write_text(json.dumps(coco))
    spec = {
        "path": ".",
        "train": ["val.txt", "solo.png"],
        "val": "val.txt",
        "test": {"json": "test.json", "images": "images/val"},
        "names": {0: "a", 1: "b"},
    }
    path.write_text(yaml.safe_dump(spec))
    assert [i.path for i in load_instances(path, split="train").images] == [
        str(tmp_path / "images/val/x.png"),
        str(tmp_path / "solo.png"),
    ]
    assert load_instances(path, split="val").images[0].annotations[0]["label"] == 1
    test = load_instances(path, split="test")
    assert isinstance(test, CocoInstances) and test.category_ids == (1, 9)
    with pytest.raises(DataError, match="'names' .* differ from the categories of"):
        path.write_text(yaml.safe_dump({**spec, "names": ["a", "c"]}))
        load_instances(path, split="test")


def test_nc_without_names_gives_ultralytics_class_names(tmp_path):
    dataset = load_instances(_layout(tmp_path, "2 0 0 0.5 0 0.5 1\n", yaml_text="val: images/val\nnc: 3\n"))
    assert dataset.label_names == ("class_0", "class_1", "class_2")
    assert dataset.images[0].annotations[0]["label"] == 2


@pytest.mark.parametrize(
    ("yaml_text", "error", "message"),
    [
        ("val: images/val\n", DataError, "YOLO-format splits need 'names' .* or 'nc'"),
        ("val: images/val\nnc: 0\n", DataError, "nc must be a number of classes >= 1, got 0"),
        ("names: [a]\n", DataError, "names no split"),
        ("val: [images/val\n", DataError, "is not valid YAML"),
        ("- a\n", DataError, "a dataset YAML file is a mapping"),
        ("val: images/val\nnames: [a, b]\nnc: 3\n", DataError, "nc is 3 but 'names' lists 2 classes"),
        ("val: images/val\nnames: {a: b}\n", DataError, "'names' entry 'a'"),
        ("val: {json: x.json}\nnames: [a]\n", DataError, "a COCO split is"),
        ("val: images/nope\nnames: [a]\n", FileNotFoundError, r"\(val\): .*images/nope is not an image folder"),
        ("path: nowhere\nval: images/val\nnames: [a]\n", FileNotFoundError, "dataset folder 'path: nowhere'"),
    ],
)
def test_bad_dataset_yaml_files(tmp_path, yaml_text, error, message):
    path = _layout(tmp_path, None, yaml_text=yaml_text)
    with pytest.raises(error, match=message) as err:
        load_instances(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("key", "meant"), [("vall", "val"), ("trian", "train"), ("Val", "val"), ("valid", "val"), ("name", "names")]
)
def test_a_misspelled_key_is_an_error_naming_the_key_it_looks_like(tmp_path, key, meant):
    path = _layout(tmp_path, None, yaml_text=f"val: images/val\nnames: [a]\n{key}: images/val\n")
    message = f"unknown key '{key}' in .*data.yaml; did you mean '{meant}'\\? known keys: path,"
    with pytest.raises(DataError, match=message):
        load_instances(path)


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ("download: https://example.com/x.zip\nkpt_shape: [17, 3]\nflip_idx: [0]\nchannels: 3\n", None),
        ("roboflow: {workspace: w, project: p}\n", None),
        ("author: me\nlicense: MIT\n", "ignoring unknown keys 'author', 'license'"),
    ],
)
def test_other_keys_are_ignored_with_one_warning_unless_ultralytics_uses_them(tmp_path, caplog, extra, warned):
    path = _layout(tmp_path, None, yaml_text=f"val: images/val\nnames: [a]\n{extra}")
    for _ in range(2):
        assert len(load_instances(path).images) == 1
    messages = [record.getMessage() for record in caplog.records]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and str(path) in messages[0]


def test_a_yaml_takes_no_image_folder_and_a_json_needs_one(tmp_path):
    with pytest.raises(DataError, match="dataset YAML file: it names its own image folders"):
        load_instances(tmp_path / "data.yaml", tmp_path)
    with pytest.raises(DataError, match="COCO JSON file: also give its image folder"):
        load_instances(tmp_path / "ann.json")


def test_training_samples_of_a_yolo_split_equal_those_of_its_coco_twin(shapes):
    root, data_yaml = shapes
    augmentation = Augmentation(AugmentConfig(min_sizes=(48, 64), max_size=96))
    yolo = InstanceDataset(load_instances(data_yaml, split="train"), augmentation)
    coco = InstanceDataset(CocoInstances(root / "images/train/annotations.json", root / "images/train"), augmentation)
    assert len(yolo) == len(coco) == 3
    for index in range(3):
        a, b = yolo[(index, 7 + index)], coco[(index, 7 + index)]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["masks"], b["masks"])
        assert torch.equal(a["labels"], b["labels"]) and a["image_id"] == b["image_id"]
