"""Predict on many processes: sources shared by contiguous blocks, one run folder, one merged predictions.json.

The ``ddp`` tests launch two gloo processes on CPU with torchrun, as tests/test_ddp.py does, and compare with one
process on the same sources.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torchrun import run_torchrun

from sparseinst_zoo.cli import main
from sparseinst_zoo.inference.sharding import merge_predictions, shard_bounds, shard_sources
from sparseinst_zoo.inference.sources import flatten_sources
from sparseinst_zoo.inference.writer import ResultsWriter

API_SCRIPT = """
import json, sys, torch
import sparseinst_zoo
torch.set_num_threads(1)
model_dir, out, sources = sys.argv[1], sys.argv[2], sys.argv[3:]
model = sparseinst_zoo.create_model(model_dir)
results = model.predict(sources, save=True, save_json=True, out=out, distributed=True, score_threshold=0.0,
                        max_detections=3, sort_by_score=True, device="cpu")
print("RESULTS", json.dumps([r.path for r in results]))
torch.distributed.destroy_process_group()
"""


# -- sharding and merging ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("count", [0, 1, 5, 7, 12])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_contiguous_balanced_and_restore_the_order(count, world):
    sources = [f"img{i}.jpg" for i in range(count)]
    shares = [shard_sources(sources, rank, world) for rank in range(world)]
    assert [s for share in shares for s in share] == sources  # rank order gives the global order back
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    bounds = [shard_bounds(count, rank, world) for rank in range(world)]
    assert all(stop == start for (_, stop), (start, _) in zip(bounds, bounds[1:]))


def test_more_ranks_than_sources_leave_some_ranks_without_work():
    assert [shard_sources(["a.jpg", "b.jpg"], rank, 4) for rank in range(4)] == [["a.jpg"], ["b.jpg"], [], []]


@pytest.mark.parametrize(("rank", "world"), [(2, 2), (-1, 2), (0, 0)])
def test_an_impossible_rank_is_refused(rank, world):
    with pytest.raises(ValueError, match="rank must be in"):
        shard_bounds(4, rank, world)


def test_merge_renumbers_images_and_annotations_in_part_order():
    part0 = {
        "info": {"description": "d"},
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b"}],
        "annotations": [{"id": 1, "image_id": 2, "score": 0.5}],
    }
    scores = [{"id": 1, "image_id": 1, "score": 0.7}, {"id": 2, "image_id": 1, "score": 0.6}]
    part1 = {"info": {"description": "other"}, "images": [{"id": 1, "file_name": "c.jpg"}], "annotations": scores}
    empty = {"info": {}, "images": [], "annotations": []}
    merged = merge_predictions([part0, empty, part1])
    assert merged["info"] == {"description": "d"}
    assert [(i["id"], i["file_name"]) for i in merged["images"]] == [(1, "a.jpg"), (2, "b"), (3, "c.jpg")]
    assert [(a["id"], a["image_id"], a["score"]) for a in merged["annotations"]] == [
        (1, 2, 0.5),
        (2, 3, 0.7),
        (3, 3, 0.6),
    ]
    assert part1["annotations"][0]["id"] == 1  # the parts are not modified
    with pytest.raises(ValueError, match="at least one part"):
        merge_predictions([])


def test_overlay_names_are_planned_in_source_order_whatever_is_unreadable(tiny_model, tmp_path, rgb_image):
    """A file that cannot be read keeps its name unused: the next one's name does not depend on it (nor on ranks)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"not an image")
    Image.fromarray(rgb_image).save(tmp_path / "x.png")
    flat = flatten_sources([str(tmp_path / "a"), str(tmp_path / "x.png")])
    with ResultsWriter(tmp_path / "out", sources=flat) as writer:
        for result in tiny_model.predict(flat, score_threshold=0.0, on_skip=lambda path, error: None):
            writer.write(result)
    assert sorted(os.listdir(writer.save_dir)) == ["x_2.png"]


def test_in_memory_images_are_named_by_their_place_among_the_sources(tiny_model, tmp_path, rgb_image):
    flat = flatten_sources([rgb_image, rgb_image[:60]])
    with ResultsWriter(tmp_path / "out", sources=flat, save_json=True) as writer:
        for result in tiny_model.predict(flat, score_threshold=0.0):
            writer.write(result)
    assert sorted(os.listdir(writer.save_dir)) == ["image0.png", "image1.png", "predictions.json"]
    images = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"]
    assert [(i["id"], i["file_name"]) for i in images] == [(1, "image0"), (2, "image1")]


# -- two processes -----------------------------------------------------------------------------------------------
def _torchrun(args: list[str]) -> subprocess.CompletedProcess[str]:
    return run_torchrun(*args, timeout=180)


@pytest.fixture
def seven_sources(tmp_path) -> list[str]:
    """Two folders of three small photos with the same names (their overlays compete for names) and one more file."""
    rng = np.random.default_rng(3)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for i, (h, w) in enumerate([(64, 96), (80, 64), (72, 100)]):
            image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
            image[h // 4 : h // 2, w // 4 : w // 2] = (230, 30, 30)
            Image.fromarray(image).save(tmp_path / folder / f"p{i}.png")
    Image.fromarray((rng.random((70, 90, 3)) * 255).astype(np.uint8)).save(tmp_path / "c.jpg")
    return [str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c.jpg")]


@pytest.fixture
def model_dir(tiny_model, tmp_path) -> str:
    tiny_model.save_pretrained(str(tmp_path / "model"))
    return str(tmp_path / "model")


def _assert_same_predictions(merged: dict, single: dict) -> None:
    assert merged["images"] == single["images"]  # same images, same order, same ids
    assert merged["categories"] == single["categories"] and merged["info"] == single["info"]
    assert len(merged["annotations"]) == len(single["annotations"]) > 0
    for a, b in zip(merged["annotations"], single["annotations"]):
        assert (a["id"], a["image_id"], a["category_id"]) == (b["id"], b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1.0)
        mask_a, mask_b = (mask_utils.decode(x["segmentation"]).astype(bool) for x in (a, b))
        assert (mask_a ^ mask_b).sum() <= max(2, 0.01 * mask_b.sum())  # float noise may flip a border pixel


def _run_files(folder) -> list[str]:
    return sorted(os.listdir(folder))


def _write_video(path, frames: int = 3) -> str:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for i in range(frames):
            frame = np.zeros((64, 96, 3), np.uint8)
            frame[10:40, 10 + 10 * i : 40 + 10 * i] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.mark.ddp
def test_two_processes_write_what_one_process_writes(model_dir, seven_sources, tmp_path):
    """Eight sources (the last a video, which one rank predicts whole) on two processes, then on one."""
    sources = [*seven_sources, _write_video(tmp_path / "clip.mp4")]
    runs = tmp_path / "runs"
    (runs / "predict").mkdir(parents=True)
    (runs / "predict" / "keep.txt").write_text("an earlier run")
    options = ["--save-json", "--score-threshold", "0", "--max-detections", "3", "--device", "cpu"]
    proc = _torchrun(["-m", "sparseinst_zoo", "predict", model_dir, *sources, "--out", str(runs / "predict"), *options])
    torch.set_num_threads(1)
    assert main(["predict", model_dir, *sources, "--out", str(tmp_path / "one"), "--quiet", *options]) == 0

    ddp = runs / "predict2"  # chosen once by rank 0: both ranks wrote here
    assert _run_files(runs) == ["predict", "predict2"]
    assert _run_files(runs / "predict") == ["keep.txt"]
    expected = [
        "c.png",
        "clip.mp4",
        "p0.png",
        "p0_2.png",
        "p1.png",
        "p1_2.png",
        "p2.png",
        "p2_2.png",
        "predictions.json",
    ]
    assert _run_files(ddp) == _run_files(tmp_path / "one") == expected  # every overlay once, no collision
    for name in [n for n in expected if n.endswith(".png")]:  # the same photo behind each name (a/p0, b/p0 differ)
        ours, theirs = (np.asarray(Image.open(folder / name), np.float32) for folder in (ddp, tmp_path / "one"))
        assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 1.0, name
    merged = json.loads((ddp / "predictions.json").read_text())
    single = json.loads((tmp_path / "one" / "predictions.json").read_text())
    _assert_same_predictions(merged, single)
    assert [image.get("frame") for image in merged["images"]] == [None] * 7 + [0, 1, 2]  # the video on rank 1, whole
    assert "rank 0/2: " in proc.stdout and "rank 1/2: " in proc.stdout


@pytest.mark.ddp
def test_python_api_shares_the_sources_the_same_way(model_dir, seven_sources, tmp_path):
    script = tmp_path / "predict_ddp.py"
    script.write_text(API_SCRIPT)
    proc = _torchrun([str(script), model_dir, str(tmp_path / "api"), *seven_sources])
    per_rank = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULTS")]
    flat = [os.fspath(s) for s in flatten_sources(seven_sources)]
    assert sorted(per_rank, key=len, reverse=True) == [flat[:4], flat[4:]]  # contiguous blocks, 4 + 3

    import sparseinst_zoo

    model = sparseinst_zoo.create_model(model_dir)
    model.predict(
        seven_sources,
        save=True,
        save_json=True,
        out=tmp_path / "one",
        score_threshold=0.0,
        max_detections=3,
        sort_by_score=True,
        device="cpu",
    )
    assert _run_files(tmp_path / "api") == _run_files(tmp_path / "one")
    merged = json.loads((tmp_path / "api" / "predictions.json").read_text())
    _assert_same_predictions(merged, json.loads((tmp_path / "one" / "predictions.json").read_text()))
