"""Tracking: ByteTrack ids on synthetic moving objects, Results.track_ids, overlays by id, `sparseinst track`."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import nn

from sparseinst_zoo._io import next_run_dir
from sparseinst_zoo.cli import main
from sparseinst_zoo.inference.results import Results
from sparseinst_zoo.inference.tracking import InstanceTracker, TrackWriter, track, track_results
from sparseinst_zoo.inference.visualise import draw_instances, track_colors

HEIGHT, WIDTH, SIDE = 100, 160, 20


def square(x: int, y: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[y : y + SIDE, x : x + SIDE] = True
    return mask


def frame_results(objects: dict[str, tuple[int, int]], scores: dict[str, float] | None = None) -> Results:
    """One frame: a square per named object at its (x, y); ``names`` records which object each instance is."""
    names = sorted(objects)
    masks = np.stack([square(*objects[n]) for n in names]) if names else np.zeros((0, HEIGHT, WIDTH), bool)
    score = np.array([(scores or {}).get(n, 0.9) for n in names], np.float32)
    result = Results(masks, score, np.zeros(len(names), np.int64), ["square"])
    result.path = ",".join(names)  # test bookkeeping: which object is which instance (not a file)
    return result


def scene(t: int) -> dict[str, tuple[int, int]]:
    """Objects at frame t: a and b move all along, c enters at frame 4, a leaves after frame 6, d enters at 9."""
    objects = {"b": (120 - 3 * t, 60)}
    if t <= 6:
        objects["a"] = (10 + 3 * t, 10)
    if t >= 4:
        objects["c"] = (70, 5 + 2 * t)
    if t >= 9:
        objects["d"] = (10, 70)
    return objects


def ids_by_object(result: Results, source: Results) -> dict[str, int]:
    """Map each tracked instance back to its object through its mask."""
    names = source.path.split(",")
    out = {}
    for mask, track_id in zip(result.masks, result.track_ids):
        (index,) = [i for i, m in enumerate(source.masks) if np.array_equal(m, mask)]
        out[names[index]] = int(track_id)
    return out


def run_scene(frames: int = 12, **tracker_options) -> list[dict[str, int]]:
    tracker = InstanceTracker(**tracker_options)
    seen = []
    for t in range(frames):
        source = frame_results(scene(t))
        seen.append(ids_by_object(tracker.update(source), source))
    return seen


def test_ids_stay_while_objects_stay_and_new_objects_get_new_ids():
    seen = run_scene()
    first = seen[0]
    assert sorted(first) == ["a", "b"] and len(set(first.values())) == 2
    for t, ids in enumerate(seen):
        assert ids["b"] == first["b"], t
        if "a" in ids:
            assert ids["a"] == first["a"], t
    assert "a" not in seen[7]  # a left the picture
    # an object entering later is confirmed on its second frame (ByteTrack), then keeps one new id
    assert "c" not in seen[4] and {seen[t]["c"] for t in range(5, 12)} == {seen[5]["c"]}
    assert seen[5]["c"] not in (first["a"], first["b"])
    # d enters after a left: a fresh id, not a's
    assert seen[10]["d"] not in (first["a"], first["b"], seen[5]["c"])


def test_an_object_hidden_for_a_few_frames_gets_its_id_back():
    tracker = InstanceTracker(lost_track_buffer=5)
    ids = []
    for t in range(10):
        objects = {"b": (120 - 3 * t, 60)}
        if not 3 <= t <= 5:  # a is hidden for three frames
            objects["a"] = (10 + 3 * t, 10)
        source = frame_results(objects)
        ids.append(ids_by_object(tracker.update(source), source))
    assert {frame["a"] for frame in ids if "a" in frame} == {ids[0]["a"]} and "a" in ids[6]


def test_untracked_instances_are_dropped_or_kept_with_minus_one():
    objects, scores = {"a": (10, 10), "noise": (100, 60)}, {"noise": 0.05}  # below ByteTrack's 0.1 floor
    dropped = InstanceTracker().update(frame_results(objects, scores))
    kept = InstanceTracker(keep_untracked=True).update(frame_results(objects, scores))
    assert len(dropped) == 1 and dropped.track_ids.tolist() == [1]
    assert len(kept) == 2 and kept.track_ids.tolist() == [1, -1]
    np.testing.assert_array_equal(kept.masks, frame_results(objects).masks)  # masks kept, order kept


def test_each_video_is_a_sequence_and_the_json_frame_counts_within_it(tmp_path):
    results = []
    for path in ("one.mp4", "two.mp4"):
        for frame in range(3):
            r = frame_results({"a": (10 + 4 * frame, 10)})
            r.path, r.frame = path, frame
            results.append(r)
    images = [frame_results({"a": (10, 10)}) for _ in range(2)]
    for image in images:
        image.path = None
    tracked = list(track_results(results + images, lambda first: InstanceTracker()))
    assert [r.frame for r in tracked] == [0, 1, 2, 0, 1, 2, None, None]  # as predict gives them
    assert [r.track_ids.tolist() for r in tracked] == [[1]] * 8  # a new tracker (ids from 1) for each sequence
    with TrackWriter(tmp_path / "run", save_json=True, overlays=False) as writer:
        for result in tracked:
            writer.write(result)
    lines = [json.loads(line) for line in (tmp_path / "run" / "tracks.jsonl").read_text().splitlines()]
    assert [(line["source"], line["frame"]) for line in lines] == [
        ("one.mp4", 0),
        ("one.mp4", 1),
        ("one.mp4", 2),
        ("two.mp4", 0),
        ("two.mp4", 1),
        ("two.mp4", 2),
        (None, 0),
        (None, 1),
    ]
    assert len(writer.tracks) == 3 and writer.frames == 8


@pytest.mark.parametrize("container", ["numpy", "torch"])
def test_track_ids_follow_indexing_and_exports(container):
    masks = np.stack([square(0, 0), square(50, 50), square(100, 20)])
    result = Results(masks, np.array([0.9, 0.5, 0.7]), np.array([0, 0, 0]), ["square"], track_ids=[4, 9, 2])
    if container == "torch":
        result = result.cpu()
    assert result[result.scores > 0.6].track_ids.tolist() == [4, 2]
    assert result[1].track_ids.tolist() == [9] and result[1:].track_ids.tolist() == [9, 2]
    assert result[np.array([2, 0])].track_ids.tolist() == [2, 4]
    assert result.numpy().track_ids.tolist() == result.cpu().track_ids.tolist() == [4, 9, 2]
    assert [i["track_id"] for i in result.to_dict()["instances"]] == [4, 9, 2]
    assert result.to_supervision().tracker_id.tolist() == [4, 9, 2]
    untracked = Results(masks, np.ones(3), np.zeros(3, np.int64), ["square"])
    assert untracked[:2].track_ids is None and "track_id" not in untracked.to_dict()["instances"][0]
    with pytest.raises(ValueError, match="2 track_ids for 3 instances"):
        Results(masks, np.ones(3), np.zeros(3, np.int64), ["square"], track_ids=[1, 2])


def test_overlay_colour_follows_the_track_id_and_draws_it():
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    masks = np.stack([square(10, 40), square(100, 40)])
    first = draw_instances(image, masks, [0.9, 0.9], ["a", "b"], track_ids=[7, 3], alpha=1.0, labels=False)
    swapped = draw_instances(image, masks[::-1], [0.9, 0.9], ["b", "a"], track_ids=[3, 7], alpha=1.0, labels=False)
    np.testing.assert_array_equal(first, swapped)  # the colour belongs to the id, not to the position in the list
    np.testing.assert_array_equal(first[50, 20], track_colors([7])[0])
    with_ids = draw_instances(image, masks, [0.9, 0.9], ["a", "b"], track_ids=[7, 3])
    without_ids = draw_instances(image, masks, [0.9, 0.9], ["a", "b"], track_ids=[7, 3], show_ids=False)
    assert not np.array_equal(with_ids, without_ids)  # "#7 a 0.90" is wider than "a 0.90"
    untracked = draw_instances(image, masks[:1], [0.9], ["a"], track_ids=[-1], alpha=1.0, labels=False)
    np.testing.assert_array_equal(untracked[50, 20], [128, 128, 128])


class ColourSegmenter(nn.Module):
    """A deterministic stand-in network: query k segments the pixels where colour channel k alone is bright."""

    label_names = ("red", "green", "blue")

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # the predictor finds the device from the parameters

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        bright = batch > 0  # normalised: 255 is about +2, 0 about -2, padding 0
        alone = torch.stack([bright[:, k] & ~bright[:, [j for j in range(3) if j != k]].any(1) for k in range(3)], 1)
        fraction = F.avg_pool2d(alone.float(), 4)
        present = fraction.flatten(2).amax(-1, keepdim=True) > 0.5
        return {
            "pred_logits": (10 * torch.eye(3) - 5).expand(len(batch), 3, 3),
            "pred_masks": 20 * (fraction - 0.5),
            "pred_scores": torch.where(present, 10.0, -10.0),
        }


def colour_frames(count: int) -> list[np.ndarray]:
    """Red moves right, green moves left, blue enters at frame 3."""
    frames = []
    for t in range(count):
        frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        frame[10:30, 10 + 4 * t : 30 + 4 * t] = (255, 0, 0)
        frame[60:80, 130 - 4 * t : 150 - 4 * t] = (0, 255, 0)
        if t >= 3:
            frame[40:60, 70:90] = (0, 0, 255)
        frames.append(frame)
    return frames


def test_track_through_the_predictor_follows_moving_objects(tmp_path):
    tracked = track(ColourSegmenter(), colour_frames(6), min_size=HEIGHT, max_size=WIDTH, stream=False)
    assert len(tracked) == 6
    by_class = [dict(zip(r.classes, r.track_ids.tolist())) for r in tracked]
    assert all(ids["red"] == by_class[0]["red"] and ids["green"] == by_class[0]["green"] for ids in by_class)
    assert "blue" not in by_class[3] and {ids["blue"] for ids in by_class[4:]} == {3}
    red = np.asarray(tracked[5][[c == "red" for c in tracked[5].classes]].masks[0])
    truth = square(30, 10)
    assert (red & truth).sum() / (red | truth).sum() > 0.9  # the instance's mask is kept, not only its id
    with TrackWriter(tmp_path / "run", save_json=True) as writer:  # in-memory frames: one overlay image each
        for result in tracked:
            writer.write(result)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [f"frame{i:06d}.png" for i in range(6)] + [
        "tracks.jsonl"
    ]
    lines = [json.loads(line) for line in (tmp_path / "run" / "tracks.jsonl").read_text().splitlines()]
    assert [(line["frame"], line["name"], line["track_id"]) for line in lines if line["name"] == "blue"] == [
        (4, "blue", 3),
        (5, "blue", 3),
    ]


def test_model_track_is_the_library_function(tiny_model):
    frames = [np.zeros((64, 96, 3), np.uint8)] * 2
    options = dict(score_threshold=0.0, keep_untracked=True, stream=False)
    via_method = tiny_model.track(frames, **options)
    via_function = track(tiny_model, frames, **options)
    assert [r.track_ids.tolist() for r in via_method] == [r.track_ids.tolist() for r in via_function]
    assert [len(r) for r in via_method] == [len(r) for r in tiny_model.predict(frames, score_threshold=0.0)]


@pytest.mark.parametrize(
    ("module", "message"),
    [(None, "needs the supervision package"), (types.SimpleNamespace(__version__="0.31.2"), "no longer has")],
)
def test_missing_tracker_says_how_to_install(monkeypatch, tiny_model, module, message):
    monkeypatch.setitem(sys.modules, "supervision", module)
    with pytest.raises(ImportError, match=message) as error:
        track(tiny_model, [np.zeros((64, 96, 3), np.uint8)])
    assert 'pip install "sparseinst-zoo[track]"' in str(error.value)


def test_cli_without_the_tracker_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "supervision", None)
    assert main(["track", "sparseinst_tiny_test", "--weights", "random", str(tmp_path / "clip.mp4")]) == 1
    error = capsys.readouterr().err
    assert 'error: tracking needs the supervision package: pip install "sparseinst-zoo[track]"' in error
    assert "Traceback" not in error


def test_bad_tracker_options_fail_before_the_first_frame(tiny_model):
    with pytest.raises(ValueError, match="lost_track_buffer must be >= 0"):
        track(tiny_model, [np.zeros((64, 96, 3), np.uint8)], lost_track_buffer=-1)  # no iteration needed
    with pytest.raises(ValueError, match="track_activation_threshold must be in"):
        InstanceTracker(track_activation_threshold=1.5)
    with pytest.raises(ValueError, match="drop sort_by_score"):
        tiny_model.track([np.zeros((64, 96, 3), np.uint8)], sort_by_score=False)


def test_run_folders_and_files_are_never_reused(tmp_path):
    base = tmp_path / "track"
    assert next_run_dir(base) == str(base)
    base.mkdir()
    (base / "tracks.jsonl").write_text("mine\n")
    assert next_run_dir(base) == f"{base}2" and next_run_dir(base, exist_ok=True) == str(base)
    (tmp_path / "track2").mkdir()
    assert next_run_dir(base) == f"{base}3"
    with TrackWriter(base, save_json=True, overlays=False, exist_ok=True) as writer:
        writer.write(frame_results({"a": (10, 10)}))
    assert (base / "tracks.jsonl").read_text() == "mine\n" and (base / "tracks_2.jsonl").is_file()


def test_a_run_that_stops_before_its_first_frame_leaves_no_folder(tmp_path):
    out = tmp_path / "runs" / "track"
    with pytest.raises(RuntimeError), TrackWriter(out, save_json=True):
        raise RuntimeError("the video could not be decoded")
    assert not (tmp_path / "runs").exists()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    TrackWriter(out, save_json=True).close()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["notes.txt"]  # the user's folder stays


def write_video(path, frames: list[np.ndarray], fps: int = 5) -> None:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture
def confident_model_folder(tiny_model, tmp_path):
    """The tiny model with class and objectness biases raised, so that its (meaningless) masks score ~0.5."""
    branch = tiny_model.decoder.inst_branch
    with torch.no_grad():
        branch.cls_score.bias.fill_(8.0)
        branch.objectness.bias.fill_(8.0)
    folder = tmp_path / "model"
    tiny_model.save_pretrained(str(folder))
    return folder


def test_cli_track_writes_overlay_video_and_json_lines(confident_model_folder, tmp_path, capsys):
    import av

    video = tmp_path / "clip.mp4"
    write_video(video, [frame[:64, :96] for frame in colour_frames(3)])
    original = video.read_bytes()
    out = tmp_path / "runs" / "track"
    argv = ["track", str(confident_model_folder), str(video), "--out", str(out), "--save-json", "--max-detections", "3"]
    assert main(argv) == 0
    assert "track(s) in 3 frame(s)" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "tracks.jsonl"]
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(out / "clip.mp4")).decode(video=0)]
    assert len(frames) == 3 and frames[0].shape == (64, 96, 3)
    lines = [json.loads(line) for line in (out / "tracks.jsonl").read_text().splitlines()]
    assert {line["frame"] for line in lines} == {0, 1, 2} and len(lines) == 9
    assert all(
        line["source"] == str(video) and isinstance(line["track_id"], int) and line["track_id"] >= 1 for line in lines
    )
    assert {line["track_id"] for line in lines if line["frame"] == 0} == {1, 2, 3}
    assert mask_utils.decode(lines[0]["mask"]).shape == (64, 96)
    assert set(lines[0]) == {"source", "frame", "track_id", "label", "name", "score", "box", "mask"}
    # a second run never touches the first one, and nothing overwrites the source video
    assert main(argv + ["--quiet"]) == 0
    assert (tmp_path / "runs" / "track2" / "tracks.jsonl").is_file()
    assert main(["track", str(confident_model_folder), str(video), "--out", str(tmp_path), "--exist-ok"]) == 0
    assert video.read_bytes() == original and (tmp_path / "clip_2.mp4").is_file()  # beside the source, not over it


class Terminated(Exception):
    """What SIGTERM raises in this test when the command does not handle it (its default would kill pytest)."""


def test_cli_track_killed_with_sigterm_keeps_the_frames_done(confident_model_folder, tmp_path, monkeypatch):
    import os
    import signal
    import threading
    import time

    import av

    video = tmp_path / "clip.mp4"
    write_video(video, [frame[:64, :96] for frame in colour_frames(6)] * 10)
    out = tmp_path / "run"

    def raise_terminated(signum, frame):
        raise Terminated

    def kill_after_the_first_frame():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out.is_dir() and any(out.glob(".tmp-*.mp4"))):
            time.sleep(0.01)
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGTERM)  # as kill, timeout or a batch scheduler end a run

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    killer = threading.Thread(target=kill_after_the_first_frame)
    try:
        killer.start()
        code = main(["track", str(confident_model_folder), str(video), "--out", str(out), "--save-json", "--quiet"])
        killer.join()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130  # handled as Ctrl-C: the files are finished and moved into place, no hidden temporaries
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4", "tracks.jsonl"]
    with av.open(str(out / "clip.mp4")) as container:
        done = sum(1 for _ in container.decode(video=0))
    frames = {json.loads(line)["frame"] for line in (out / "tracks.jsonl").read_text().splitlines()}
    # every frame done is in both files; the signal may land between a frame's JSON line and its overlay (one more)
    assert 0 < done < 60 and set(range(done)) <= frames <= set(range(done + 1))


def test_an_interrupted_track_run_says_how_far_it_got_and_what_it_kept(
    confident_model_folder, tmp_path, monkeypatch, capsys
):
    """Ctrl-C at the 5th of 12 frames: the video and tracks.jsonl hold the 4 frames done, and the last line says so."""
    import av

    video = tmp_path / "clip.mp4"
    write_video(video, [frame[:64, :96] for frame in colour_frames(6)] * 2)
    write = TrackWriter.write

    def interrupt_at_the_fifth(self, result):
        if self.frames == 4:
            raise KeyboardInterrupt
        return write(self, result)

    monkeypatch.setattr(TrackWriter, "write", interrupt_at_the_fifth)
    out = tmp_path / "run"
    assert main(["track", str(confident_model_folder), str(video), "--out", str(out), "--save-json"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == f"sparseinst track: interrupted; 4 frame(s) tracked; kept in {out}: clip.mp4, tracks.jsonl"
    with av.open(str(out / "clip.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 4
    assert {json.loads(line)["frame"] for line in (out / "tracks.jsonl").read_text().splitlines()} == {0, 1, 2, 3}
