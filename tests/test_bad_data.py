"""Bad inputs give one line, never a traceback.

Bad dataset files give one DataError line naming the file and the entry, at load time (issue 12 rows 10, 14); a
file a third-party parser rejects (JSON, YAML, export metadata), a bad size or an unknown name is one ``error:`` line
through the CLI.
"""

from __future__ import annotations

import json
import re
import struct
import zlib

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from PIL import Image

import sparseinst_zoo
from sparseinst_zoo.cli import main
from sparseinst_zoo.data import CocoInstances
from sparseinst_zoo.data.yolo import image_size
from sparseinst_zoo.errors import DataError, SparseInstError
from sparseinst_zoo.evaluation import METRIC_KEYS, evaluate
from sparseinst_zoo.inference.backends.metadata import ExportMetadata
from sparseinst_zoo.inference.sources import load_image

_MASK = np.zeros((20, 30), np.uint8)
_MASK[4:9, 2:12] = 1
_COUNTS = mask_utils.encode(np.asfortranarray(_MASK))["counts"].decode()
_WIDER_COUNTS = mask_utils.encode(np.asfortranarray(np.pad(_MASK, ((0, 0), (0, 1)))))["counts"].decode()


def _dataset(tmp_path, mutate):
    Image.fromarray(np.full((20, 30, 3), 60, np.uint8)).save(tmp_path / "1.png")
    data = {
        "images": [{"id": 1, "file_name": "1.png", "height": 20, "width": 30}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 5, "segmentation": [[0, 0, 5, 0, 5, 5]], "area": 9}],
        "categories": [{"id": 5, "name": "a"}],
    }
    mutate(data)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _set_ann(**values):
    return lambda d: d["annotations"][0].update(values)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set_ann(category_id=3.9), "annotation id 7 has category_id 3.9; expected an integer"),
        (lambda d: d["images"][0].update(height=64.7), "image id 1 has height 64.7; expected an integer"),
        (lambda d: d["images"][0].update(id=True), "image has id True; expected an integer"),
        (_set_ann(segmentation={"size": 64, "counts": _COUNTS}), r"annotation id 7 .*RLE 'size' must be \[height, w"),
        (_set_ann(id=[1, 2]), r"annotation has id \[1, 2\]; expected an integer"),
        (
            _set_ann(segmentation={"size": [20, 30], "counts": "garbage"}),
            "annotation id 7 .*compressed RLE 'counts' is not a valid COCO encoding",
        ),
        (
            _set_ann(segmentation={"size": [20, 30], "counts": _WIDER_COUNTS}),
            "annotation id 7 .*compressed RLE 'counts' covers 620 pixels; the image has height x width = 600",
        ),
        (
            _set_ann(segmentation={"size": [20, 30], "counts": _COUNTS}, iscrowd=1, id=8),
            None,
        ),  # a valid crowd RLE loads
        (_set_ann(area="big"), "annotation id 7 .*'area' must be a non-negative number, got 'big'"),
        (_set_ann(area=float("nan")), "annotation id 7 .*'area' must be a non-negative number"),
        (_set_ann(iscrowd=2), "annotation id 7 .*'iscrowd' must be 0 or 1, got 2"),
    ],
)
def test_bad_coco_entries_are_one_line_data_errors(tmp_path, mutate, message):
    path = _dataset(tmp_path, mutate)
    for keep_crowd in (False, True):  # training drops crowd annotations, evaluation keeps them: both validate
        if message is None:
            CocoInstances(path, tmp_path, keep_crowd=keep_crowd)
            continue
        with pytest.raises(DataError, match=message) as err:
            CocoInstances(path, tmp_path, keep_crowd=keep_crowd)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_corrupt_crowd_rle_is_rejected_for_evaluation_too(tmp_path):
    path = _dataset(tmp_path, _set_ann(segmentation={"size": [20, 30], "counts": "garbage"}, iscrowd=1))
    with pytest.raises(DataError, match="annotation id 7"):
        CocoInstances(path, tmp_path, keep_crowd=True)


def test_non_utf8_json_names_the_file(tmp_path):
    path = _dataset(tmp_path, lambda d: d["categories"][0].update(name="caf\u00e9"))
    path.write_bytes(path.read_bytes().replace(b"caf\\u00e9", b"caf\xe9"))
    with pytest.raises(DataError, match=f"{path} is not UTF-8 text"):
        CocoInstances(path, tmp_path)


def test_dataset_without_images_has_undefined_metrics(tmp_path, capsys):
    path = _dataset(tmp_path, lambda d: d.update(images=[], annotations=[]))
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=1)
    metrics = evaluate(model, path, tmp_path)
    assert all(metrics[key] is None for key in METRIC_KEYS) and metrics["per_class"] == {"a": None}
    model.save_pretrained(tmp_path / "model")
    assert main(["val", str(tmp_path / "model"), "--data", str(path), "--images", str(tmp_path), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "0.00" not in out and "every metric is undefined" in out


def test_images_without_annotations_have_undefined_metrics(tmp_path):
    path = _dataset(tmp_path, lambda d: d.update(annotations=[]))
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=1)
    metrics = evaluate(model, path, tmp_path)
    assert all(metrics[key] is None for key in METRIC_KEYS)


def _write(name, text):
    """A row's input file: ``text`` written to ``name`` in the test's folder (bytes as they are)."""

    def make(folder):
        path = folder / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    return make


def _val(make):
    """``sparseinst val MODEL`` on the file ``make`` writes: --data for a YAML file, else --data with --images."""

    def argv(folder, model):
        path = make(folder)
        data = ["--data", str(path)] if path.suffix == ".yaml" else ["--data", str(path), "--images", str(folder)]
        return ["val", str(model), *data, "--workers", "0"]

    return argv


_COCO = '{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (_val(_write("ann.json", '{"images": [')), r"ann\.json is not valid JSON: Expecting value"),
        (_val(_write("ann.json", _COCO[:-1] + ', "x": ' + "9" * 5000 + "}")), r"ann\.json cannot be read as COCO JSON"),
        (_val(_write("ann.json", b"\xff\xfe{}")), r"ann\.json is not UTF-8 text"),
        (_val(_write("ann.json", "[]")), r"ann\.json: a COCO instances file is a JSON object, got list"),
        (_val(_write("data.yaml", "val: [images\n")), r"data\.yaml is not valid YAML"),
        (_val(_write("data.yaml", "val: 2024-13-01\nnames: [a]\n")), r"data\.yaml holds a value YAML cannot read"),
        (_val(_write("data.yaml", "val: !!int many\nnames: [a]\n")), r"data\.yaml holds a value YAML cannot read"),
        (lambda folder, model: ["benchmark", str(model), "--size", "640"], "size must be HEIGHTxWIDTH"),
        (lambda folder, model: ["benchmark", str(model), "--size", "0x64"], "size must be positive, got 0x64"),
        (lambda folder, model: ["val", "no_such_model", "--data", "d.yaml"], "Unknown model 'no_such_model'"),
        (lambda folder, model: ["benchmark", "sparseinst_r50_giam.nope"], "has no pretrained tag 'nope'"),
    ],
)
def test_bad_inputs_through_the_cli_are_one_line(tmp_path, capsys, argv, message):
    """Each bad input ends as one ``error:`` line: a SparseInstError, never a traceback."""
    model = tmp_path / "model"
    sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=1).save_pretrained(model)
    assert main(argv(tmp_path, model)) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("sparseinst ") and ": error: " in lines[0] and re.search(message, lines[0]), lines


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mean": "[1, 2"}, r"damaged sparseinst-zoo metadata \(JSONDecodeError"),
        ({"input_height": "tall"}, r"damaged sparseinst-zoo metadata \(ValueError"),
        ({"input_width": None}, r"damaged sparseinst-zoo metadata \(KeyError"),
        ({"std": "[1, 2]"}, r"damaged sparseinst-zoo metadata \(mean/std are not 3 numbers each\)"),
    ],
)
def test_damaged_export_metadata_is_one_line(change, message):
    props = {
        "model_name": "sparseinst_tiny_test",
        "mean": "[1, 2, 3]",
        "std": "[1, 2, 3]",
        "input_dtype": "float32",
        "input_height": "64",
        "input_width": "64",
    }
    props = {k: v for k, v in {**props, **change}.items() if v is not None}
    with pytest.raises(SparseInstError, match=message) as err:
        ExportMetadata.from_props(props, "'model.onnx'")
    assert "'model.onnx'" in str(err.value) and "\n" not in str(err.value)


def test_image_too_large_to_decode_is_one_line(tmp_path, monkeypatch, capsys):
    """Pillow's DecompressionBombError is no OSError: where an image file is read it becomes one line too."""
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels: over twice the limit, refused
    with pytest.raises(SparseInstError, match=r"big\.png.*too large to decode"):
        load_image(tmp_path / "big.png")
    with pytest.raises(DataError, match=r"big\.png cannot be read as an image"):
        image_size(str(tmp_path / "big.png"))
    argv = ["predict", "sparseinst_tiny_test", str(tmp_path / "big.png"), "--weights", "random", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "RANDOM weights" not in line]
    assert len(lines) == 1 and "error: " in lines[0] and "too large to decode" in lines[0], lines


def test_a_png_turned_by_an_exif_chunk_after_its_pixels_says_so(tmp_path):
    """The dataset reads PNG headers only (a late eXIf chunk needs a decode), so such a file passed the size check and
    failed at its first decode blaming the JSON's size; the error now names the EXIF orientation."""
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(tmp_path / "plain.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    payload = exif.tobytes().removeprefix(b"Exif\x00\x00")
    data = (tmp_path / "plain.png").read_bytes()
    end = data.rindex(b"IEND") - 4
    chunk = struct.pack(">I", len(payload)) + b"eXIf" + payload + struct.pack(">I", zlib.crc32(b"eXIf" + payload))
    (tmp_path / "late.png").write_bytes(data[:end] + chunk + data[end:])
    polygon = [[0, 0, 20, 0, 20, 10, 0, 10]]
    coco = {
        "images": [{"id": 1, "file_name": "late.png", "height": 64, "width": 96}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": polygon, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "a"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    dataset = CocoInstances(str(tmp_path / "a.json"), str(tmp_path))
    with pytest.raises(DataError, match=r"late.png is 96x64 \(HxW\) once its EXIF orientation \(stored after the"):
        dataset.load_image(dataset.images[0])
