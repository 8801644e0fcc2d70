"""A file another thread or process creates after a writer chose its name is never replaced: the writer's file takes
the next free name. Each race is made deterministic by creating the chosen file before the writer publishes."""

from __future__ import annotations

import errno
import json
import os
import threading

import numpy as np
from PIL import Image

from sparseinst_zoo._io import publish, staged_path, temporary_path, write_new_json
from sparseinst_zoo.inference.results import Results
from sparseinst_zoo.inference.tracking import TrackWriter
from sparseinst_zoo.inference.writer import ResultsWriter

THEIRS = "written by someone else"


def _result(path=None, frame=None):
    masks = np.zeros((1, 8, 12), bool)
    masks[0, 2:6, 3:9] = True
    image = np.zeros((8, 12, 3), np.uint8)
    return Results(masks, np.array([0.9]), np.array([0]), ["thing"], path=path, orig_img=image, frame=frame)


def _theirs(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(THEIRS)
    return path


def _no_temporary_files(folder):
    return not [p for p in folder.rglob("*") if p.name.startswith(".tmp-")]


def test_publish_takes_the_next_free_name_when_the_target_appeared_meanwhile(tmp_path):
    tmp = temporary_path(tmp_path / "a.txt")
    with open(tmp, "w") as handle:
        handle.write("mine")
    _theirs(tmp_path / "a.txt")
    assert publish(tmp, tmp_path / "a.txt", replace=False) == str(tmp_path / "a_2.txt")
    assert (tmp_path / "a.txt").read_text() == THEIRS and (tmp_path / "a_2.txt").read_text() == "mine"
    assert oct((tmp_path / "a_2.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # not mkstemp's 0600
    assert _no_temporary_files(tmp_path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_publish_follows_next_path_and_replaces_only_when_asked(tmp_path):
    for name in ("a.txt", "b.txt"):
        _theirs(tmp_path / name)
    tmp = temporary_path(tmp_path / "a.txt")
    names = iter([tmp_path / "b.txt", tmp_path / "c.txt"])
    assert publish(tmp, tmp_path / "a.txt", replace=False, next_path=lambda: str(next(names))).endswith("c.txt")
    assert (tmp_path / "b.txt").read_text() == THEIRS
    assert publish(temporary_path(tmp_path / "a.txt"), tmp_path / "a.txt") == str(tmp_path / "a.txt")
    assert (tmp_path / "a.txt").read_text() == ""  # replace=True (save_pretrained, export_onnx) replaces


def test_a_taken_companion_moves_the_whole_export_to_the_next_name(tmp_path):
    target = tmp_path / "model.xml"
    with staged_path(target, (".bin",), replace=False) as staged:
        xml = staged.path
        with open(xml, "w") as handle:
            handle.write("<net/>")
        with open(os.path.splitext(xml)[0] + ".bin", "w") as handle:
            handle.write("weights")
        _theirs(tmp_path / "model.bin")  # another export took the weights file's name while this one ran
    assert staged.target == str(tmp_path / "model_2.xml")
    assert (tmp_path / "model.bin").read_text() == THEIRS and not (tmp_path / "model.xml").exists()
    assert (tmp_path / "model_2.bin").read_text() == "weights"
    assert _no_temporary_files(tmp_path)


def test_without_hard_links_the_name_is_claimed_before_the_move(tmp_path, monkeypatch):
    def no_links(source, target):
        raise OSError(errno.EPERM, "Operation not permitted")  # as on filesystems without hard links

    monkeypatch.setattr(os, "link", no_links)
    _theirs(tmp_path / "r.json")
    assert os.path.basename(write_new_json(tmp_path / "r.json", {"a": 1})) == "r_2.json"
    assert (tmp_path / "r.json").read_text() == THEIRS and json.loads((tmp_path / "r_2.json").read_text()) == {"a": 1}


def test_results_save_never_replaces_a_file_not_even_the_photo(tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((8, 12, 3), 7, np.uint8)).save(photo)
    before = photo.read_bytes()
    result = _result(str(photo))
    assert result.save(photo) == str(tmp_path / "photo_2.png")
    assert photo.read_bytes() == before
    assert [os.path.basename(result.save_txt(tmp_path / "photo.txt")) for _ in range(2)] == ["photo.txt", "photo_2.txt"]


def test_predict_writer_files_created_meanwhile_are_kept(tmp_path):
    source = tmp_path / "in" / "a.png"
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(source.parent.mkdir() or source)
    run = tmp_path / "run"
    with ResultsWriter(run, save_json=True, save_txt=True, sources=[str(source)], names=["thing"]) as writer:
        # another process writing into the same folder (--exist-ok) creates the names this run planned
        for name in ("a.png", "labels/a.txt", "predictions.json"):
            _theirs(run / name)
        writer.write(_result(str(source)))
    assert sorted(os.path.relpath(p, run) for p in writer.written) == [
        "a_2.png",
        os.path.join("labels", "a_2.txt"),
        "predictions_2.json",
    ]
    for name in ("a.png", "labels/a.txt", "predictions.json"):
        assert (run / name).read_text() == THEIRS
    assert json.loads((run / "predictions_2.json").read_text())["images"][0]["file_name"] == str(source)
    assert _no_temporary_files(run)


def test_video_frame_labels_retry_under_the_frame_name(tmp_path):
    run = tmp_path / "run"
    with ResultsWriter(run, overlays=False, save_txt=True, names=["thing"]) as writer:
        writer.write(_result("clip.mp4", frame=0))
        _theirs(run / "labels" / "clip_1.txt")
        writer.write(_result("clip.mp4", frame=1))
    assert [os.path.basename(p) for p in writer.written] == ["clip_0.txt", "clip_1_2.txt"]


def test_track_writer_files_created_meanwhile_are_kept(tmp_path):
    run = tmp_path / "track"
    with TrackWriter(run, save_json=True) as writer:
        _theirs(run / "tracks.jsonl")
        _theirs(run / "frame000000.png")
        writer.write(_result())
    assert sorted(os.path.basename(p) for p in writer.written) == ["frame000000_2.png", "tracks_2.jsonl"]
    assert (run / "tracks.jsonl").read_text() == THEIRS


def test_threads_writing_into_one_folder_lose_nothing(tmp_path):
    run, images, threads = tmp_path / "run", 5, 4
    run.mkdir()
    sources = [f"img{i}.png" for i in range(images)]
    start = threading.Barrier(threads)
    errors: list[BaseException] = []
    written: list[str] = []

    def one_run():
        try:
            start.wait()
            with ResultsWriter(run, exist_ok=True, save_json=True, save_txt=True, names=["thing"]) as writer:
                for name in sources:
                    writer.write(_result(name))
            written.extend(writer.written)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    workers = [threading.Thread(target=one_run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors
    assert len(written) == len(set(written)) == threads * (2 * images + 1)
    assert all(os.path.exists(path) for path in written)
    assert len(list(run.glob("predictions*.json"))) == threads and _no_temporary_files(run)


def test_publishing_from_threads_never_sets_the_process_umask(tmp_path, monkeypatch):
    """Reading the umask by setting it (``os.umask(0)``, then back) gave another thread's files mode 0o666 meanwhile,
    and two threads interleaving there left the process umask at 0. Files still follow the umask of the moment."""
    real_umask = os.umask
    old = real_umask(0o027)
    try:
        calls: list[int] = []
        monkeypatch.setattr(os, "umask", lambda mask: calls.append(mask) or real_umask(mask))
        path = publish(temporary_path(tmp_path / "a.txt"), tmp_path / "a.txt", replace=False)
        _result().save_txt(tmp_path / "b.txt")
    finally:
        real_umask(old)
    assert calls == []
    assert {oct(os.stat(p).st_mode & 0o777) for p in (path, tmp_path / "b.txt")} == {"0o640"}
