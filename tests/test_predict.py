"""model.predict: sources, batching independence, options and clear errors."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sparseinst_zoo.errors import SparseInstError
from sparseinst_zoo.inference.postprocess import postprocess
from sparseinst_zoo.inference.predictor import Predictor, predict
from sparseinst_zoo.inference.results import Results
from sparseinst_zoo.inference.sources import load_image, sample_image_path
from sparseinst_zoo.inference.transforms import preprocess

# A low threshold so that the random tiny model yields instances to compare.
OPTS = {"score_threshold": 0.01}


def assert_same_results(a: Results, b: Results, atol: float = 1e-5) -> None:
    assert a.image_size == b.image_size
    assert a.labels.tolist() == b.labels.tolist()
    torch.testing.assert_close(a.scores, b.scores, atol=atol, rtol=0)
    assert a.masks.shape == b.masks.shape
    assert (a.masks != b.masks).float().mean() < 1e-3


def test_predict_equals_manual_pipeline(tiny_model, rgb_image):
    cfg = tiny_model.pretrained_cfg
    result = tiny_model.predict(rgb_image, **OPTS)[0]
    batch, resized, original = preprocess([rgb_image], cfg.min_size, cfg.max_size, cfg.mean, cfg.std)
    with torch.no_grad():
        expected = postprocess(tiny_model(batch), resized, original, score_threshold=0.01)[0]
    assert len(result) == len(expected["scores"]) > 0
    torch.testing.assert_close(result.scores, expected["scores"])
    assert torch.equal(result.masks, expected["masks"]) and torch.equal(result.labels, expected["labels"])
    assert result.masks.dtype == torch.bool and result.masks.shape[1:] == (75, 110)
    assert result.names == tiny_model.label_names
    assert result.orig_img is not None and result.orig_img.shape == (75, 110, 3)


def test_default_source_is_the_sample_image(tiny_model):
    (result,) = tiny_model.predict()
    assert result.path == sample_image_path() and result.image_size == (300, 451)


def test_path_folder_glob_and_list(tiny_model, tmp_path, rgb_image):
    Image.fromarray(rgb_image).save(tmp_path / "a.png")
    Image.fromarray(rgb_image[:, ::-1]).save(tmp_path / "b.jpg", quality=95)
    (tmp_path / "notes.txt").write_text("not an image")
    by_path = predict(tiny_model, str(tmp_path / "a.png"), **OPTS)
    by_folder = predict(tiny_model, tmp_path, **OPTS)
    by_glob = predict(tiny_model, str(tmp_path / "*.png"), **OPTS)
    by_list = predict(tiny_model, [tmp_path / "b.jpg", str(tmp_path / "a.png")], **OPTS)
    assert [r.path for r in by_folder] == [str(tmp_path / "a.png"), str(tmp_path / "b.jpg")]
    assert [r.path for r in by_glob] == [str(tmp_path / "a.png")]
    assert [r.path for r in by_list] == [str(tmp_path / "b.jpg"), str(tmp_path / "a.png")]
    assert_same_results(by_path[0], by_folder[0])
    assert_same_results(by_path[0], by_list[1])
    # a lossless file gives exactly what the array gives
    assert_same_results(by_path[0], predict(tiny_model, rgb_image, **OPTS)[0])


def test_in_memory_types_agree(tiny_model, rgb_image):
    reference = predict(tiny_model, rgb_image, **OPTS)[0]
    chw = torch.from_numpy(rgb_image).permute(2, 0, 1)
    for source in (
        Image.fromarray(rgb_image),
        chw,
        chw.float() / 255,
        chw[None],  # a BxCxHxW batch
        np.concatenate([rgb_image, np.full((75, 110, 1), 7, np.uint8)], axis=-1),  # RGBA: alpha dropped
        torch.cat([chw, torch.zeros(1, 75, 110, dtype=torch.uint8)]),  # CHW RGBA tensor
    ):
        result = predict(tiny_model, source, **OPTS)
        assert len(result) == 1 and result[0].path is None
        assert_same_results(reference, result[0])


def test_grayscale_is_replicated(tiny_model, rgb_image):
    gray = rgb_image[..., 1]
    expected = predict(tiny_model, np.repeat(gray[..., None], 3, axis=-1), **OPTS)[0]
    for source in (gray, gray[..., None], torch.from_numpy(gray)[None], Image.fromarray(gray)):
        assert_same_results(expected, predict(tiny_model, source, **OPTS)[0])


def test_mixed_size_batch_equals_one_by_one(tiny_model, rgb_image):
    rng = np.random.default_rng(1)
    images = [
        rgb_image,
        rgb_image[:70, :100],  # same padded size as rgb_image (64x96) -> may share a batch
        (rng.random((120, 90, 3)) * 255).astype(np.uint8),  # portrait: another padded size
        rgb_image[:60],
        np.ascontiguousarray(rgb_image[::-1]),
    ]
    alone = [predict(tiny_model, im, **OPTS)[0] for im in images]
    batched = predict(tiny_model, images, batch_size=4, **OPTS)
    assert len(batched) == len(images)
    for a, b in zip(alone, batched):
        assert_same_results(a, b)


def test_padding_to_a_larger_batch_would_change_outputs(tiny_model, rgb_image):
    """Why we group by padded size: zero-padding further shifts the raw outputs of the same image."""
    cfg = tiny_model.pretrained_cfg
    tall = np.zeros((120, 90, 3), np.uint8)
    alone, _, _ = preprocess([rgb_image], cfg.min_size, cfg.max_size, cfg.mean, cfg.std)
    together, _, _ = preprocess([rgb_image, tall], cfg.min_size, cfg.max_size, cfg.mean, cfg.std)
    with torch.no_grad():
        a = tiny_model(alone)["pred_logits"][0]
        b = tiny_model(together)["pred_logits"][0]
    assert alone.shape[-2:] != together.shape[-2:]
    assert not torch.allclose(a, b, atol=1e-4)


def test_stream_and_options(tiny_model, rgb_image):
    generator = predict(tiny_model, [rgb_image, rgb_image[:50]], stream=True, **OPTS)
    assert not isinstance(generator, list)
    assert [r.image_size for r in generator] == [(75, 110), (50, 110)]
    top = predict(tiny_model, rgb_image, max_detections=3, sort_by_score=True, score_threshold=0.0)[0]
    assert len(top) == 3 and torch.all(top.scores[:-1] >= top.scores[1:])
    bigger = predict(tiny_model, rgb_image, min_size=96, max_size=128, **OPTS)[0]
    assert bigger.image_size == (75, 110)
    light = predict(tiny_model, rgb_image, keep_image=False, **OPTS)[0]
    assert light.orig_img is None


def test_bf16_autocast_runs_on_cpu(tiny_model, rgb_image):
    fp32 = predict(tiny_model, rgb_image, score_threshold=0.0)[0]
    bf16 = predict(tiny_model, rgb_image, precision="bf16", score_threshold=0.0)[0]
    assert len(bf16) == len(fp32) and bf16.scores.dtype == torch.float32
    torch.testing.assert_close(bf16.scores, fp32.scores, atol=0.02, rtol=0)


def test_training_mode_is_restored(tiny_model, rgb_image):
    tiny_model.train()
    result = tiny_model.predict(rgb_image, **OPTS)[0]
    assert tiny_model.training
    tiny_model.eval()
    assert_same_results(result, tiny_model.predict(rgb_image, **OPTS)[0])


def test_predictor_is_reusable(tiny_model, rgb_image):
    predictor = Predictor(tiny_model, score_threshold=0.01, batch_size=2)
    first = predictor([rgb_image, rgb_image])
    assert len(first) == 2
    assert_same_results(first[0], first[1])
    assert_same_results(first[0], predictor.predict_images([rgb_image])[0])


def test_video_frames(tiny_model, tmp_path):
    av = pytest.importorskip("av")
    path = str(tmp_path / "clip.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(3):
            frame = np.zeros((64, 96, 3), np.uint8)
            frame[10 + 5 * i : 40 + 5 * i, 20:60] = (200, 50, 50)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    results = predict(tiny_model, path, **OPTS)
    assert not isinstance(results, list)  # videos are streamed lazily
    results = list(results)
    assert [r.frame for r in results] == [0, 1, 2]
    assert all(r.path == path and r.image_size == (64, 96) for r in results)


def test_a_video_named_twice_gets_two_overlay_videos(tiny_model, tmp_path):
    av = pytest.importorskip("av")
    from sparseinst_zoo.inference.visualise import VideoWriter

    path = str(tmp_path / "clip.mp4")
    writer = VideoWriter(path, fps=5)
    for i in range(3):
        writer.write(np.full((64, 96, 3), 50 * i, np.uint8))
    writer.close()
    results = list(predict(tiny_model, [path, path], save=True, out=tmp_path / "run", min_size=64, **OPTS))
    assert [r.frame for r in results] == [0, 1, 2, 0, 1, 2]
    assert sorted(os.listdir(tmp_path / "run")) == ["clip.mp4", "clip_2.mp4"]
    for name in ("clip.mp4", "clip_2.mp4"):  # not one video of six frames
        with av.open(str(tmp_path / "run" / name)) as container:
            assert sum(1 for _ in container.decode(video=0)) == 3


def test_a_saving_video_generator_makes_its_run_folder_when_iterated(tiny_model, tmp_path):
    pytest.importorskip("av")
    from sparseinst_zoo.inference.visualise import VideoWriter

    path = str(tmp_path / "clip.mp4")
    writer = VideoWriter(path, fps=5)
    for i in range(2):
        writer.write(np.full((64, 96, 3), 50 * i, np.uint8))
    writer.close()
    unused = predict(tiny_model, path, save=True, out=tmp_path / "unused", min_size=64, **OPTS)
    del unused  # never iterated: nothing written, and no empty folder that pushes the next run to "unused2"
    assert not (tmp_path / "unused").exists()
    results = predict(tiny_model, path, save=True, out=tmp_path / "run", min_size=64, **OPTS)
    assert not (tmp_path / "run").exists()
    assert [r.save_dir for r in results] == [str(tmp_path / "run")] * 2
    assert os.listdir(tmp_path / "run") == ["clip.mp4"]


def test_background_decoding_keeps_order_and_errors(tiny_model, tmp_path, rgb_image):
    for i in range(3):
        Image.fromarray(np.roll(rgb_image, 7 * i, axis=1)).save(tmp_path / f"{i}.png")
    inline = predict(tiny_model, tmp_path, background_decode=False, **OPTS)
    threaded = predict(tiny_model, tmp_path, batch_size=2, **OPTS)
    assert [r.path for r in threaded] == [r.path for r in inline]
    for a, b in zip(inline, threaded):
        assert_same_results(a, b)
    (tmp_path / "3.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match="3.png"):  # named files are never skipped: the error crosses the thread
        predict(tiny_model, sorted(tmp_path.glob("*.png")), **OPTS)


def test_prefetch_stops_when_the_consumer_stops():
    import threading

    from sparseinst_zoo.inference.sources import prefetch

    produced, closed = [], []

    def numbers():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.append(threading.current_thread().name)

    generator = prefetch(numbers(), depth=2)
    assert [next(generator) for _ in range(3)] == [0, 1, 2]
    generator.close()  # waits for the thread: a daemon thread killed at exit inside native code aborts the process
    assert not any(t.name == "sparseinst-decode" and t.is_alive() for t in threading.enumerate())
    assert len(produced) < 10 and closed == ["sparseinst-decode"]  # the decoder closed in its own thread


def test_sample_image_loads():
    image = load_image(sample_image_path())
    assert image.shape == (300, 451, 3) and image.dtype == np.uint8


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (np.zeros((0, 10, 3), np.uint8), ValueError, "empty"),
        (np.zeros((10, 10, 3), np.float64), ValueError, "uint8"),
        (np.zeros((10, 10, 2), np.uint8), ValueError, "HxWx3"),
        (np.zeros((3, 10, 10), np.uint8), ValueError, "channels must be last"),
        (torch.zeros(2, 10, 10), ValueError, "CxHxW"),
        (torch.full((3, 10, 10), 255.0), ValueError, r"\[0, 1\]"),
        (torch.zeros(3, 10, 10, dtype=torch.int32), ValueError, r"uint8 or float.*x\.clip\(0, 255\)\.to\(torch"),
        (np.zeros((10, 10), np.uint16), ValueError, r"uint16; convert it, e\.g\. \(x / 257\)"),  # not "* 255"
        (np.zeros((10, 10), bool), ValueError, r"x\.astype\(np\.uint8\) \* 255 for a bool mask"),
        (torch.zeros(3, 10, 10, dtype=torch.bool), ValueError, r"x\.to\(torch\.uint8\) \* 255"),
        ({"image": 1}, TypeError, "unsupported source type"),
        ([], ValueError, "empty list"),
        ("does/not/exist.jpg", FileNotFoundError, "does/not/exist.jpg"),
        ("nothing*.png", FileNotFoundError, "no files match"),
        ("https://example.com/photo.jpg", SparseInstError, "URLs are not supported as sources"),
        ("https://example.com/photo.jpg?size=large&v=2", SparseInstError, "URLs are not supported as sources"),
        ("rtsp://camera.local/stream?channel=1", SparseInstError, "URLs are not supported as sources"),
    ],
)
def test_bad_sources(tiny_model, source, error, match):
    with pytest.raises(error, match=match):
        predict(tiny_model, source)


def test_corrupt_file_and_empty_folder(tiny_model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        predict(tiny_model, bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images or videos"):
        predict(tiny_model, empty)


def test_unreadable_files_found_in_a_folder_or_glob_are_skipped(tiny_model, tmp_path, rgb_image, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb_image).save(folder / "a.png")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated download")
    (folder / "c.mp4").write_bytes(b"not a video")
    Image.fromarray(rgb_image[:40]).save(folder / "d.png")
    for source in (folder, str(folder / "*")):
        caplog.clear()
        results = predict(tiny_model, source, stream=True)  # a folder with a video streams
        results = list(results)
        assert [os.path.basename(r.path) for r in results] == ["a.png", "d.png"] and type(results[0].path) is str
        assert "skipped" in caplog.text and "b.jpg" in caplog.text and "c.mp4" in caplog.text
    (folder / "a.png").write_bytes(b"")
    (folder / "d.png").write_bytes(b"PNG?")
    with pytest.raises(ValueError, match=r"none of the 4 file\(s\) found could be read"):
        list(predict(tiny_model, folder, stream=True, background_decode=False))
    with pytest.raises(ValueError, match="b.jpg"):  # a file named explicitly is never skipped
        predict(tiny_model, [folder / "b.jpg"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"mask_threshold": 0.0}, "mask_threshold"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_detections": 0}, "max_detections"),
        ({"precision": "fp8"}, "precision"),
        ({"resize_backend": "cv2"}, "resize_backend"),
        ({"min_size": 0}, "min_size"),  # an explicit 0 is an error, not the model's default
        ({"max_size": 0}, "max_size"),
        pytest.param({"device": "cuda"}, "CUDA", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA")),
    ],
)
def test_bad_options(tiny_model, rgb_image, kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict(tiny_model, rgb_image, **kwargs)


# -- the caller's model is never modified; threads; the cached fast path ---------------------------------------------
def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_results(a, b):
    assert len(a) == len(b)
    torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)
    assert torch.equal(a.labels, b.labels)
    assert (a.masks != b.masks).float().mean() <= 1e-3  # a pixel may sit exactly at the 0.45 threshold


def test_predict_never_modifies_a_training_model_even_from_threads(tiny_model, rgb_image):
    """A training-mode model with trainable BatchNorm: mode, weights, running stats and requires_grad are kept, and
    concurrent predictions equal the sequential eval-mode ones."""
    import threading

    import sparseinst_zoo

    torch.manual_seed(0)
    tiny_model = sparseinst_zoo.create_model("sparseinst_tiny_test", frozen_bn=False).eval()
    with torch.no_grad():  # running statistics away from (0, 1), so a train-mode forward would change results
        for module in tiny_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    expected = tiny_model.predict(rgb_image, score_threshold=0.0, optimize=False)[0]
    tiny_model.train()
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in tiny_model.modules())
    before = _state(tiny_model)
    outputs: list = []

    def work():
        for _ in range(2):
            outputs.append(tiny_model.predict(rgb_image, score_threshold=0.0)[0])

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert tiny_model.training and all(p.requires_grad for p in tiny_model.parameters())
    for key, value in _state(tiny_model).items():
        assert torch.equal(value, before[key]), key
    assert len(outputs) == 6
    for result in outputs:
        _assert_same_results(result, expected)


def test_default_fast_path_is_exact_and_optimize_false_is_the_plain_model(tiny_model, rgb_image):
    fast = Predictor(tiny_model, score_threshold=0.0)
    eager = Predictor(tiny_model, score_threshold=0.0, optimize=False)
    assert fast.model is not tiny_model and eager.model is tiny_model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.model.modules())  # folded
    _assert_same_results(fast(rgb_image)[0], eager(rgb_image)[0])


def test_fast_copy_is_cached_and_rebuilt_when_the_weights_change(tiny_model, rgb_image):
    first = Predictor(tiny_model).model
    assert Predictor(tiny_model).model is first  # not folded again
    with torch.no_grad():
        tiny_model.decoder.inst_branch.cls_score.bias.add_(5.0)  # every class score goes up
    predictor = Predictor(tiny_model, score_threshold=0.0)
    assert predictor.model is not first
    changed = predictor(rgb_image)[0]
    _assert_same_results(changed, tiny_model.predict(rgb_image, score_threshold=0.0, optimize=False)[0])


def test_predictors_with_other_options_keep_their_own_copies(tiny_model, rgb_image):
    """Two option sets on one model used to evict each other's copy: every call deep-copied and folded again."""
    fp32, bf16 = Predictor(tiny_model).model, Predictor(tiny_model, precision="bf16").model
    assert fp32 is not bf16
    assert Predictor(tiny_model).model is fp32 and Predictor(tiny_model, precision="bf16").model is bf16
    with torch.no_grad():
        tiny_model.decoder.inst_branch.cls_score.bias.add_(1.0)
    assert Predictor(tiny_model).model is not fp32  # new weights: a new copy, the old ones are dropped


def test_a_fold_in_one_thread_lets_other_threads_predict(tiny_model, rgb_image):
    """fx patches nn.Module.__call__ for the whole process while it traces; a prediction in another thread during a
    fold went through the patch and died with NameError (module is not installed as a submodule)."""
    import threading

    from sparseinst_zoo.inference.optimize import fold_batch_norm

    expected = tiny_model.predict(rgb_image, **OPTS)[0]
    outcome: list = []

    class PredictElsewhere(torch.nn.Module):
        def forward(self, x):  # runs while fx traces the Sequential below
            def work():
                try:
                    outcome.append(tiny_model.predict(rgb_image, **OPTS)[0])
                except Exception as err:  # noqa: BLE001 - the test reports what the thread raised
                    outcome.append(err)

            thread = threading.Thread(target=work)
            thread.start()
            thread.join()
            return x

    root = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), PredictElsewhere()).eval()
    folded = fold_batch_norm(root)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # the trace itself still works
    assert len(outcome) == 1 and isinstance(outcome[0], Results), outcome
    _assert_same_results(outcome[0], expected)


def test_device_option_moves_a_copy_not_the_model(tiny_model, rgb_image):
    Predictor(tiny_model, device="cpu", optimize=False)
    tiny_model.train()
    predictor = Predictor(tiny_model, optimize=False)
    assert predictor.model is not tiny_model and not predictor.model.training and tiny_model.training


def test_a_model_or_device_without_values_is_a_one_line_error(tiny_model, rgb_image):
    with pytest.raises(SparseInstError, match=r"meta device .*to_empty") as err:
        copy.deepcopy(tiny_model).to("meta").predict(rgb_image)
    assert "\n" not in str(err.value)
    with pytest.raises(SparseInstError, match="device 'meta' holds shapes without values"):
        tiny_model.predict(rgb_image, device="meta")


@pytest.mark.parametrize(
    ("typed", "ours"), [("conf", "score_threshold"), ("imgsz", "min_size"), ("batchsize", "batch_size")]
)
def test_an_unknown_predict_option_names_ours(tiny_model, rgb_image, typed, ours):
    with pytest.raises(TypeError, match=rf"^predict got an unexpected argument '{typed}' \(did you mean {ours}\?\)"):
        tiny_model.predict(rgb_image, **{typed: 1})


def test_half_is_a_deprecated_alias_of_precision(tiny_model, rgb_image):
    with pytest.warns(FutureWarning, match=r"Predictor\(half=...\) is deprecated; use precision="):
        old = Predictor(tiny_model, half="bf16", score_threshold=0.0)
    assert old.precision == Predictor(tiny_model, precision="bf16").precision == "bf16"
    with pytest.warns(FutureWarning):  # half=False too: the spelling is what is deprecated
        assert Predictor(tiny_model, half=False).precision == "fp32"
    with pytest.raises(ValueError, match="precision= only"), pytest.warns(FutureWarning):
        Predictor(tiny_model, half="bf16", precision="fp16")


def test_default_score_threshold_shows_confident_instances(tiny_model, rgb_image):
    """0.25 (Ultralytics' default), not the evaluation's 0.005 which keeps every query."""
    import inspect

    from sparseinst_zoo.evaluation import evaluate

    assert Predictor(tiny_model).score_threshold == 0.25
    assert inspect.signature(predict).parameters.get("score_threshold") is None  # one default: the Predictor's
    assert inspect.signature(evaluate).parameters["score_threshold"].default == 0.005
    with torch.no_grad():
        tiny_model.decoder.inst_branch.cls_score.bias.fill_(-10.0)  # no confident query
    assert len(tiny_model.predict(rgb_image)[0]) == 0
    assert len(tiny_model.predict(rgb_image, score_threshold=0.0)[0]) == tiny_model.num_masks


# -- inputs ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, mode):
    from sparseinst_zoo.inference.sources import to_rgb_uint8

    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    if mode == "I":  # PNG cannot store mode I: an in-memory PIL image in that mode
        assert to_rgb_uint8(Image.fromarray(values.astype(np.int32), mode="I"))[0, :, 0].tolist() == [0, 100, 255]
        return
    Image.fromarray(values).save(tmp_path / "depth.png")
    with Image.open(tmp_path / "depth.png") as check:
        assert check.mode == "I;16"
    assert load_image(tmp_path / "depth.png")[0, :, 0].tolist() == [0, 100, 255]


def test_float_image_must_hold_grey_levels_not_clipped_to_black(tmp_path):
    from sparseinst_zoo.inference.sources import to_rgb_uint8

    levels = Image.fromarray(np.array([[0.0, 100.0, 255.0]], np.float32))
    assert to_rgb_uint8(levels)[0, :, 0].tolist() == [0, 100, 255]  # as PIL's convert (detectron2's read_image)
    for values in ([[0.0, 0.5, 1.0]], [[0.0, 300.0]], [[-1.0, 3.0]], [[0.0, np.nan]]):
        image = Image.fromarray(np.array(values, np.float32))
        with pytest.raises(SparseInstError, match=r"source 0.*mode F.*0\.\.255"):
            to_rgb_uint8(image, "source 0")
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32)).save(tmp_path / "unit.tif")
    with pytest.raises(SparseInstError, match=r"unit\.tif.*holds values from 0 to 1;"):
        load_image(tmp_path / "unit.tif")  # the file's values are named, not called corrupt


def test_extreme_aspect_ratio_is_named_and_skipped_in_a_folder(tiny_model, rgb_image, tmp_path):
    from sparseinst_zoo.errors import DataError

    Image.fromarray(np.zeros((1, 5000, 3), np.uint8)).save(tmp_path / "line.png")
    Image.fromarray(rgb_image).save(tmp_path / "photo.png")
    with pytest.raises(DataError, match=r"line\.png.*too elongated"):
        tiny_model.predict(str(tmp_path / "line.png"))
    skipped: list = []
    results = tiny_model.predict(str(tmp_path), on_skip=lambda path, err: skipped.append((path, str(err))))
    assert [os.path.basename(r.path) for r in results] == ["photo.png"]
    assert skipped[0][0].endswith("line.png") and "too elongated" in skipped[0][1]


def test_unreadable_folder_file_goes_to_on_skip(tiny_model, rgb_image, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(rgb_image).save(tmp_path / "photo.png")
    skipped: list = []
    results = tiny_model.predict(str(tmp_path), on_skip=lambda path, err: skipped.append(path))
    assert len(results) == 1 and skipped == [str(tmp_path / "broken.jpg")]


@pytest.mark.parametrize(
    ("batch", "match"),
    [
        (torch.zeros(0, 3, 64, 64), "empty batch"),
        (torch.zeros(1, 3, 0, 0), "empty batch"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.float64), "float64"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.float16), r"got torch.float16; cast the images with images.float\(\)"),
    ],
)
def test_forward_rejects_empty_and_mismatched_dtype_batches(tiny_model, batch, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(batch)


@pytest.mark.parametrize(("dtype", "cast"), [(torch.float16, "half"), (torch.bfloat16, "bfloat16")])
def test_forward_of_a_16_bit_model_names_a_cast_that_works(tiny_model, dtype, cast):
    model = copy.deepcopy(tiny_model).to(dtype)
    images = torch.zeros(1, 3, 64, 64)
    with pytest.raises(SparseInstError, match=rf"cast the images with images.{cast}\(\), or call model.predict"):
        model(images)
    assert model(getattr(images, cast)())["pred_logits"].dtype == dtype  # the fix the message names works


@pytest.mark.filterwarnings("ignore:this CPU has no native")
@pytest.mark.parametrize(("dtype", "precision"), [(torch.float16, "fp16"), (torch.bfloat16, "bf16")])
@pytest.mark.parametrize("optimize", [None, False])
def test_predict_runs_a_16_bit_model_as_float32_under_autocast_and_leaves_it_alone(
    tiny_model, rgb_image, dtype, precision, optimize
):
    """The default precision is the model's dtype; an explicit one is honoured; the weights convert exactly."""
    model = copy.deepcopy(tiny_model).to(dtype).train()
    twin = copy.deepcopy(model).float().eval()
    before = _state(model)
    for asked, run in ((None, precision), ("fp32", "fp32")):
        result = model.predict(rgb_image, score_threshold=0.0, optimize=optimize, precision=asked)[0]
        expected = twin.predict(rgb_image, score_threshold=0.0, optimize=optimize, precision=run)[0]
        assert torch.equal(result.scores, expected.scores) and torch.equal(result.masks, expected.masks)
    assert model.training and all(p.dtype == dtype and p.requires_grad for p in model.parameters())
    assert all(torch.equal(value, before[key]) for key, value in _state(model).items())


def test_animated_gif_says_it_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="only the first"):
        load_image(tmp_path / "anim.gif")


def test_python_writer_takes_a_new_run_folder_and_never_replaces_a_file(tiny_model, rgb_image, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rgb_image).save(photos / "a.png")
    original = (photos / "a.png").read_bytes()
    first = tiny_model.predict(str(photos / "a.png"), save=True, save_json=True, out=photos)
    assert first[0].save_dir == str(tmp_path / "photos2")  # photos exists: a new run folder
    assert sorted(os.listdir(tmp_path / "photos2")) == ["a.png", "predictions.json"]
    again = tiny_model.predict(str(photos / "a.png"), save=True, save_json=True, out=photos, exist_ok=True)
    assert again[0].save_dir == str(photos) and (photos / "a.png").read_bytes() == original
    assert sorted(os.listdir(photos)) == ["a.png", "a_2.png", "predictions.json"]


@pytest.mark.parametrize("writer", ["predict", "track"])
def test_a_run_folder_made_by_another_run_after_the_check_is_not_shared(tmp_path, monkeypatch, writer):
    from sparseinst_zoo.inference.tracking import TrackWriter
    from sparseinst_zoo.inference.writer import ResultsWriter

    out, stat, started = tmp_path / "runs", os.stat, []

    def another_run_starts(path, *args, **kwargs):  # it makes the folder just after this run found the name free
        if os.fspath(path) == str(out) and not started:
            started.append(os.mkdir(out))
            raise FileNotFoundError(path)
        return stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", another_run_starts)
    make = ResultsWriter if writer == "predict" else TrackWriter
    with make(out) as made:
        chosen = made.save_dir if isinstance(made, ResultsWriter) else made.directory
    assert chosen == f"{out}2"
