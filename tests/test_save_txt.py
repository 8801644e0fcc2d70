"""Predictions written as YOLO segmentation label files (``save_txt``), read back by the project's own YOLO reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import sparseinst_zoo
from sparseinst_zoo.cli import main
from sparseinst_zoo.data import load_instances
from sparseinst_zoo.errors import DataError, SparseInstError
from sparseinst_zoo.inference.masks import mask_to_polygons
from sparseinst_zoo.inference.results import Results, trained_labels_extra
from sparseinst_zoo.inference.writer import ResultsWriter

NAMES = ("square", "ring", "specks")


def _masks(height=48, width=64):
    """A rectangle, a ring (a hole) plus a separate blob, diagonal-only specks, and an empty mask."""
    masks = np.zeros((4, height, width), bool)
    masks[0, 5:20, 4:30] = True
    masks[1, 24:44, 30:56] = True
    masks[1, 30:38, 38:48] = False  # the hole
    masks[1, 2:8, 50:62] = True  # a second part, far from the first
    masks[2, 40, 2] = masks[2, 41, 3] = masks[2, 42, 4] = True  # three pixels touching only at corners
    return masks


def _dataset(root, name, height, width, names=NAMES):
    """An image ``root/images/<name>.png`` and a data.yaml reading ``root/images`` (labels in ``root/labels``)."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(root / "images" / f"{name}.png")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"val": "images", "names": names if isinstance(names, dict) else list(names)})
    )
    return root / "data.yaml"


def _read_back(data_yaml):
    """(labels, masks) of the first image, as the YOLO reader (the one training uses) decodes the label file."""
    dataset = load_instances(data_yaml)
    labels, masks = dataset.load_targets(dataset.images[0])
    return labels.tolist(), np.asarray(masks, bool)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_masks_of_several_parts_and_holes_come_back_whole(tmp_path):
    masks = _masks()
    result = Results(masks, np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 1, 2, 1]), NAMES)
    data_yaml = _dataset(tmp_path, "x", 48, 64)
    path = result.save_txt(tmp_path / "labels" / "x.txt")
    assert path == str(tmp_path / "labels" / "x.txt")
    lines = (tmp_path / "labels" / "x.txt").read_text().splitlines()
    assert len(lines) == 3  # the empty mask has no outline, so no line (the reader would drop it)
    labels, read = _read_back(data_yaml)
    assert labels == [0, 1, 2]
    assert len(mask_to_polygons(masks[1], include_holes=True)) == 3  # two parts and a hole, on one line
    for original, back in zip(masks[:3], read):
        assert _iou(original, back) > 0.99
        np.testing.assert_array_equal(back, original)  # the pixel outlines come back exactly


def test_save_conf_adds_the_score_and_coordinates_are_normalised(tmp_path):
    scores = np.array([0.912345678, 0.5, 0.25, 0.125])
    result = Results(_masks(), scores, np.array([0, 1, 2, 1]), NAMES)
    plain = result.yolo_lines()
    with_conf = [line.split() for line in result.yolo_lines(save_conf=True)]
    assert [fields[:-1] for fields in with_conf] == [line.split() for line in plain]
    assert [float(fields[-1]) for fields in with_conf] == pytest.approx(scores[:3], abs=1e-6)
    for line in plain:
        values = [float(v) for v in line.split()[1:]]
        assert len(values) % 2 == 0 and len(values) >= 6
        assert all(0.0 <= v <= 1.0 for v in values)
    assert plain[0].split()[:3] == ["0", "0.0625", "0.104167"]  # x1 = 4 / 64, y1 = 5 / 48, 6 decimals


def test_a_model_trained_on_a_yaml_whose_names_skip_numbers_writes_that_yaml_s_classes(tmp_path):
    """names {0: square, 3: ring, 5: specks}: the labels 0, 1, 2 are written as the classes 0, 3, 5, so the
    pseudo-labels read back with the YAML the model was trained on (label 1 was written as 1, which it refuses)."""
    sparse = {0: "square", 3: "ring", 5: "specks"}
    data_yaml = _dataset(tmp_path, "x", 48, 64, names=sparse)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).eval()
    cfg = model.pretrained_cfg
    model.pretrained_cfg = cfg.replace(extra=trained_labels_extra(cfg.extra, tuple(sparse), yolo_classes=True))
    predicted = model.predict(np.zeros((48, 64, 3), np.uint8), score_threshold=0)[0]
    assert predicted.yolo_classes == (0, 3, 5) and predicted[:2].yolo_classes == (0, 3, 5)
    result = Results(_masks(), np.ones(4), np.array([0, 1, 2, 1]), NAMES, yolo_classes=predicted.yolo_classes)
    result.save_txt(tmp_path / "labels" / "x.txt")
    assert [line.split()[0] for line in (tmp_path / "labels" / "x.txt").read_text().splitlines()] == ["0", "3", "5"]
    labels, _ = _read_back(data_yaml)
    assert labels == [0, 1, 2]


def test_labels_with_scores_are_refused_for_training_with_the_way_out(tmp_path):
    data_yaml = _dataset(tmp_path, "x", 48, 64)
    Results(_masks(), np.ones(4), np.zeros(4, np.int64), NAMES).save_txt(tmp_path / "labels" / "x.txt", save_conf=True)
    with pytest.raises(DataError, match=r"x.txt:1: .* write them without --save-conf to train on them"):
        load_instances(data_yaml)


def test_no_instances_is_an_empty_file_and_an_existing_file_is_never_replaced(tmp_path):
    empty = Results(np.zeros((0, 16, 32), bool), np.zeros(0), np.zeros(0, np.int64), NAMES)
    data_yaml = _dataset(tmp_path, "x", 16, 32)
    path = tmp_path / "labels" / "x.txt"
    assert empty.save_txt(path) == str(path) and path.read_text() == ""
    assert _read_back(data_yaml)[0] == []  # a background image to a YOLO dataset
    path.write_text("0 0 0 1 0 1 1\n")  # a label the user corrected
    second = empty.save_txt(path)
    assert second == str(tmp_path / "labels" / "x_2.txt") and path.read_text() == "0 0 0 1 0 1 1\n"


@pytest.fixture
def confident_model(tiny_model):
    """The tiny model with class and objectness biases raised, so that its (meaningless) masks score ~0.5."""
    branch = tiny_model.decoder.inst_branch
    with torch.no_grad():
        branch.cls_score.bias.fill_(8.0)
        branch.objectness.bias.fill_(8.0)
    return tiny_model


def test_predicted_masks_round_trip_through_predict_save_txt(confident_model, tmp_path, rgb_image):
    data_yaml = _dataset(tmp_path, "photo", *rgb_image.shape[:2], names=confident_model.label_names)
    Image.fromarray(rgb_image).save(tmp_path / "images" / "photo.png")
    kwargs = {"score_threshold": 0.1, "max_detections": 5, "sort_by_score": True}
    (result,) = confident_model.predict(
        str(tmp_path / "images" / "photo.png"), save_txt=True, out=tmp_path / "run", **kwargs
    )
    assert len(result) == 5 and sorted(p.name for p in (tmp_path / "run").iterdir()) == ["labels"]
    (tmp_path / "labels").mkdir()
    (tmp_path / "run" / "labels" / "photo.txt").rename(tmp_path / "labels" / "photo.txt")
    labels, read = _read_back(data_yaml)
    kept = [i for i, m in enumerate(result.masks.numpy()) if m.any()]
    assert labels == result.labels[kept].tolist()
    for original, back in zip(result.masks.numpy()[kept], read):
        assert _iou(original, back) > 0.9
    with pytest.raises(SparseInstError, match="save_conf adds the score to the label files of save_txt"):
        confident_model.predict(str(tmp_path / "images" / "photo.png"), save_conf=True, out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_a_run_that_writes_nothing_leaves_no_labels_folder(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError), ResultsWriter(tmp_path / "run", save_txt=True):
        raise RuntimeError("the first source failed")
    assert not (tmp_path / "run").exists()

    def disk_full(tmp, path, **options):
        raise OSError("No space left on device")

    monkeypatch.setattr("sparseinst_zoo._io.publish", disk_full)
    result = Results(_masks(), np.ones(4), np.zeros(4, np.int64), NAMES)
    with pytest.raises(OSError, match="No space"), ResultsWriter(tmp_path / "run", save_txt=True) as writer:
        writer.write(result)  # makes labels/ for its temporary file, then fails
    assert not (tmp_path / "run").exists()


def _video(path, frames=2):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 96, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_cli_save_txt_names_clashes_frames_and_never_replaces(confident_model, tmp_path, rgb_image, capsys):
    confident_model.save_pretrained(str(tmp_path / "model"))
    data = tmp_path / "data"
    (data / "more").mkdir(parents=True)
    Image.fromarray(rgb_image).save(data / "a.png")
    Image.fromarray(rgb_image[::-1]).save(data / "more" / "a.jpg")  # the same stem, another folder
    _video(data / "clip.mp4")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "model"), str(data), str(data / "more" / "*.jpg"), "--out", str(out)]
    argv += ["--save-txt", "--save-conf"]
    argv += ["--no-overlay", "--max-detections", "3", "--score-threshold", "0.1"]
    assert main(argv) == 0
    labels = out / "labels"
    assert sorted(p.name for p in out.iterdir()) == ["labels"]
    assert sorted(p.name for p in labels.iterdir()) == ["a.txt", "a_2.txt", "clip_0.txt", "clip_1.txt"]
    lines = (labels / "a.txt").read_text().splitlines()
    assert len(lines) == 3 and all(len(line.split()) % 2 == 0 for line in lines)  # class, x y pairs, score
    assert f"wrote 4 label file(s) in {labels}" in capsys.readouterr().out
    before = {p.name: p.read_bytes() for p in labels.iterdir()}
    assert main([*argv, "--exist-ok", "--quiet"]) == 0
    after = {p.name: p.read_bytes() for p in labels.iterdir()}
    assert {name: after[name] for name in before} == before  # nothing replaced
    assert sorted(set(after) - set(before)) == ["a_3.txt", "a_4.txt", "clip_0_2.txt", "clip_1_2.txt"]


def test_cli_save_conf_without_save_txt_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "sparseinst_tiny_test", "--weights", "random", "--save-conf", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(
        "--save-conf adds the score to the label files of --save-txt: add --save-txt, or drop --save-conf"
    )
    assert "\n" not in err and "RANDOM" not in err and not out.exists()  # refused before the model is built


def test_an_interrupted_run_counts_its_label_files(confident_model, tmp_path, monkeypatch, capsys):
    confident_model.save_pretrained(str(tmp_path / "model"))
    (tmp_path / "photos").mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 56, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    write = ResultsWriter.write

    def interrupt_at_the_third(self, result):
        if len(self.written) == 4:  # two overlays and two label files
            raise KeyboardInterrupt
        return write(self, result)

    monkeypatch.setattr(ResultsWriter, "write", interrupt_at_the_third)
    out = tmp_path / "run"
    assert main(["predict", str(tmp_path / "model"), str(tmp_path / "photos"), "--out", str(out), "--save-txt"]) == 130
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.endswith(f"2 of 4 image(s) predicted; kept in {out}: 2 overlay(s), 2 label file(s)")
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["p0.txt", "p1.txt"]


def test_parts_too_far_apart_for_the_nearest_neighbour_candidates_are_joined_too():
    """Two discs of many vertices: no vertex's nearest neighbours reach the other disc, the fallback bridges them."""
    from sparseinst_zoo.data.instances import decode_segmentation
    from sparseinst_zoo.inference.masks import mask_to_segment

    rows, cols = np.mgrid[:60, :160]
    mask = ((rows - 30) ** 2 + (cols - 30) ** 2 < 25**2) | ((rows - 30) ** 2 + (cols - 130) ** 2 < 20**2)
    segment = mask_to_segment(mask)
    back = decode_segmentation([segment.reshape(-1).tolist()], 60, 160).astype(bool)
    np.testing.assert_array_equal(back, mask)
