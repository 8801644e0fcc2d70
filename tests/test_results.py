"""Results: boxes, polygons, COCO export, JSON, conversions, indexing, plot and save."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from sparseinst_zoo._coco import COCO_CATEGORY_IDS, COCO_CLASSES
from sparseinst_zoo.errors import MissingDependency
from sparseinst_zoo.inference.results import Results, mask_to_polygons, masks_to_boxes
from sparseinst_zoo.inference.visualise import VideoWriter, draw_instances, instance_colors


def make_results(names=COCO_CLASSES, image=None) -> Results:
    masks = torch.zeros(3, 40, 60, dtype=torch.bool)
    masks[0, 5:20, 10:30] = True
    masks[1, 22:38, 35:58] = True
    masks[1, 28:32, 40:45] = False  # a hole
    # masks[2] stays empty
    return Results(masks, torch.tensor([0.9, 0.6, 0.1]), torch.tensor([15, 0, 2]), names, (40, 60), "x.jpg", image)


def test_boxes_from_masks():
    results = make_results()
    assert results.boxes.tolist() == [[10, 5, 30, 20], [35, 22, 58, 38], [0, 0, 0, 0]]
    np.testing.assert_array_equal(masks_to_boxes(results.masks.numpy()), results.boxes.numpy())


def _area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def test_polygons_are_exact_outlines():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = rng.random((30, 40)) > 0.5
        polygons = mask_to_polygons(mask, include_holes=True)
        # outer loops count positive, holes negative: the areas add up to the pixel count exactly
        assert sum(_area(p) for p in polygons) == pytest.approx(mask.sum())
        for polygon in polygons:
            assert polygon.shape[1] == 2 and len(polygon) >= 4
            assert polygon.min() >= 0 and polygon[:, 0].max() <= 40 and polygon[:, 1].max() <= 30
    polys = make_results().polygons()
    assert [len(p) for p in polys] == [1, 1, 0]
    assert polys[0][0].tolist() == [[10, 5], [30, 5], [30, 20], [10, 20]]
    with_holes = make_results().polygons(include_holes=True)
    assert len(with_holes[1]) == 2 and sum(_area(p) for p in with_holes[1]) == make_results().masks[1].sum()


def test_diagonal_pixels_are_separate_polygons():
    mask = np.array([[1, 0], [0, 1]], bool)
    assert sorted(_area(p) for p in mask_to_polygons(mask)) == [1.0, 1.0]


def test_to_coco_uses_coco_category_ids_and_rle():
    results = make_results()
    coco = results.to_coco(image_id=42)
    assert [d["category_id"] for d in coco] == [COCO_CATEGORY_IDS[15], COCO_CATEGORY_IDS[0], COCO_CATEGORY_IDS[2]]
    assert coco[0]["image_id"] == 42 and coco[0]["bbox"] == [10.0, 5.0, 20.0, 15.0]
    assert coco[0]["score"] == pytest.approx(0.9)
    for d, mask in zip(coco, results.masks.numpy()):
        np.testing.assert_array_equal(mask_utils.decode(d["segmentation"]).astype(bool), mask)
        assert isinstance(d["segmentation"]["counts"], str)
        if mask.any():
            assert d["bbox"] == pytest.approx(mask_utils.toBbox(d["segmentation"]).tolist())
    json.dumps(coco)  # JSON serialisable


def test_to_coco_custom_labels():
    results = make_results(names=tuple(f"c{i}" for i in range(20)))
    assert [d["category_id"] for d in results.to_coco(1)] == [15, 0, 2]
    mapping = list(range(100, 120))
    assert [d["category_id"] for d in results.to_coco(1, category_ids=mapping)] == [115, 100, 102]
    with pytest.raises(ValueError, match="category_ids"):
        results.to_coco(1, category_ids=[1, 2])


def test_to_json_cpu_numpy_and_indexing():
    results = make_results()
    data = json.loads(results.to_json())
    assert data["path"] == "x.jpg" and data["image_size"] == [40, 60]
    assert [i["name"] for i in data["instances"]] == ["cat", "person", "car"]
    assert results.classes == ["cat", "person", "car"]
    as_numpy = results.numpy()
    assert isinstance(as_numpy.masks, np.ndarray) and as_numpy.boxes.tolist() == results.boxes.tolist()
    assert as_numpy.to_coco(1) == results.to_coco(1)
    back = as_numpy.cpu()
    assert isinstance(back.masks, torch.Tensor) and torch.equal(back.masks, results.masks)
    confident = results[results.scores > 0.5]
    assert len(confident) == 2 and confident.classes == ["cat", "person"]
    assert len(results[1]) == 1 and len(results[:1]) == 1 and len(as_numpy[as_numpy.scores > 0.5]) == 2
    assert "1 cat" in repr(results) and "x.jpg" in repr(results)


def test_an_empty_index_list_keeps_no_instance():
    results = make_results()
    results.track_ids = np.array([4, 5, 6])
    for r in (results, results.numpy()):
        for index in ([], (), [i for i, s in enumerate(r.scores.tolist()) if s > 2]):
            none = r[index]
            assert len(none) == 0 and tuple(none.masks.shape) == (0, 40, 60) and none.track_ids.tolist() == []


def test_scalar_index_keeps_one_instance():
    results = make_results()
    for r in (results, results.numpy()):
        for index in (r.scores.argmax(), np.int64(1), 1):
            one = r[index]
            assert len(one) == 1 and tuple(one.masks.shape) == (1, 40, 60) and one.boxes.shape == (1, 4)
    assert results[results.scores.argmax()].classes == ["cat"] and results[np.int64(1)].classes == ["person"]


def test_bad_results():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        Results(torch.zeros(2, 4, 4, dtype=torch.bool), torch.zeros(3), torch.zeros(2), ())


def test_plot_and_save(tmp_path):
    image = np.full((40, 60, 3), 128, np.uint8)
    results = make_results(image=image)
    plotted = results.plot()
    assert plotted.shape == image.shape and plotted.dtype == np.uint8
    colours = instance_colors(3)
    assert len({tuple(c) for c in colours}) == 3
    # mask interiors are tinted with their own colour, the background is untouched
    assert not np.array_equal(plotted[12, 20], plotted[25, 50]) and tuple(plotted[2, 2]) == (128, 128, 128)
    assert np.array_equal(plotted[30, 42], image[30, 42])  # the hole stays clear
    # outline pixels carry the instance colour exactly
    assert tuple(plotted[37, 50]) == tuple(colours[1])
    no_labels = results.plot(labels=False)
    assert not np.array_equal(no_labels, plotted)  # labels were drawn
    out = results.save(tmp_path / "sub" / "overlay.png")
    np.testing.assert_array_equal(np.asarray(Image.open(out)), plotted)
    assert list((tmp_path / "sub").iterdir()) == [tmp_path / "sub" / "overlay.png"]
    with pytest.raises(ValueError, match="extension"):
        results.save(tmp_path / "overlay.unknown")


def test_plot_accepts_a_pil_image():
    image = np.full((40, 60, 3), 128, np.uint8)
    np.testing.assert_array_equal(make_results().plot(Image.fromarray(image)), make_results(image=image).plot())


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "CMYK"])
def test_plot_takes_a_pil_image_of_any_mode_as_predict_does(mode):
    pil = Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).convert(mode)
    rgb = np.asarray(pil.convert("RGB")) if mode != "I;16" else np.full((40, 60, 3), round(128 / 257), np.uint8)
    np.testing.assert_array_equal(make_results().plot(pil), make_results(image=rgb).plot())
    gray = np.full((40, 60), 128, np.uint8)  # and a grayscale array, replicated
    np.testing.assert_array_equal(make_results().plot(gray), make_results(image=np.dstack([gray] * 3)).plot())


def test_plot_needs_an_image():
    with pytest.raises(ValueError, match="orig_img"):
        make_results().plot()
    with pytest.raises(ValueError, match="differs"):
        make_results().plot(image=np.zeros((10, 10, 3), np.uint8))


def test_draw_instances_rejects_bad_images():
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        draw_instances(np.zeros((4, 4), np.uint8), np.zeros((0, 4, 4), bool), [], [])


@pytest.mark.parametrize("alpha", [2.0, -0.1])
def test_plot_refuses_an_opacity_outside_0_1(alpha):
    image = np.zeros((40, 60, 3), np.uint8)
    with pytest.raises(
        ValueError, match=rf"alpha is the masks' opacity, from 0 \(invisible\) to 1 \(opaque\); got {alpha}"
    ):
        make_results(image=image).plot(alpha=alpha)
    assert make_results(image=image).plot(alpha=1.0).shape == image.shape


@pytest.mark.filterwarnings("ignore:OpenCV:UserWarning")  # supervision's notice when opencv-python is absent
def test_to_supervision_detections_work_with_its_annotators_and_filters():
    sv = pytest.importorskip("supervision")
    image = np.full((40, 60, 3), 90, np.uint8)
    results = make_results(image=image)
    detections = results.to_supervision()
    assert isinstance(detections, sv.Detections) and len(detections) == 3
    np.testing.assert_array_equal(detections.xyxy, results.boxes.numpy())
    np.testing.assert_array_equal(detections.mask, results.masks.numpy())
    np.testing.assert_allclose(detections.confidence, [0.9, 0.6, 0.1], rtol=1e-6)
    assert detections.class_id.tolist() == [15, 0, 2]
    assert detections.data["class_name"].tolist() == ["cat", "person", "car"]
    confident = detections[detections.confidence > 0.5]
    assert confident.data["class_name"].tolist() == ["cat", "person"]
    overlay = sv.MaskAnnotator().annotate(image.copy(), confident)
    assert (overlay[10, 20] != image[10, 20]).any() and (overlay[0, 0] == image[0, 0]).all()
    empty = results[results.scores > 1].to_supervision()
    assert len(empty) == 0 and empty.mask.shape == (0, 40, 60)


def test_to_coco_and_predictions_json_use_the_model_category_ids(tmp_path, rgb_image):
    """A model fine-tuned on a dataset with ids [1, 2, 5] (as training stores them) reports those ids, not 0..2."""
    import json

    import sparseinst_zoo

    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(label_names=("a", "b", "c"), extra={"category_ids": [1, 2, 5]})
    result = model.predict(rgb_image, score_threshold=0.0)[0]
    ids = [1, 2, 5]
    assert [a["category_id"] for a in result.to_coco(1)] == [ids[label] for label in result.labels.tolist()]
    assert result[:2].category_ids() == [ids[label] for label in result.labels[:2].tolist()]  # kept when indexed
    results = model.predict(rgb_image, score_threshold=0.0, save_json=True, out=tmp_path / "run")
    data = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert data["categories"] == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 5, "name": "c"}]
    assert {a["category_id"] for a in data["annotations"]} <= {1, 2, 5}
    assert len(data["annotations"]) == len(results[0]) and results[0].save_dir == str(tmp_path / "run")


def test_a_missing_optional_package_is_a_user_error_that_says_what_to_install(monkeypatch):
    """MissingDependency is both a SparseInstError (one CLI line) and an ImportError (``except ImportError`` works)."""
    import sys

    monkeypatch.setitem(sys.modules, "supervision", None)
    with pytest.raises(MissingDependency, match=r'pip install "sparseinst-zoo\[supervision\]"') as error:
        make_results().to_supervision()
    assert isinstance(error.value, ImportError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize("size", [(1, 1), (65, 97), (3, 40)])
def test_video_writer_keeps_every_pixel_of_odd_sized_frames(tmp_path, size):
    """4:2:0 video needs even sides: odd ones grow by a repeated edge (a 1-pixel video was a libx264 crash)."""
    av = pytest.importorskip("av")
    frame = np.zeros((*size, 3), np.uint8)
    frame[:, -1] = (255, 255, 255)  # the last column, which cropping to even sides lost
    writer = VideoWriter(tmp_path / "clip.mp4", fps=5)
    for _ in range(3):
        writer.write(frame)
    writer.close()
    with av.open(str(tmp_path / "clip.mp4")) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    height, width = size[0] + size[0] % 2, size[1] + size[1] % 2
    assert len(decoded) == 3 and decoded[0].shape == (height, width, 3)
    assert decoded[-1][: size[0], size[1] - 1].mean() > 200  # lossy codec: near white, not dropped
