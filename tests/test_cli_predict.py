"""`sparseinst predict` and `sparseinst list` end to end through sparseinst_zoo.cli.main."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from safetensors.torch import save_file

from sparseinst_zoo.cli import main
from sparseinst_zoo.inference.sources import sample_image_path


@pytest.fixture
def checkpoint(tiny_model, tmp_path):
    """The seeded tiny model's weights in a local safetensors file."""
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model.state_dict().items()}, str(path))
    return path


def test_predict_sample_image_with_random_weights(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "sparseinst_tiny_test", "--weights", "random", "--out", str(out), "--save-json"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM weights" in captured.err and "meaningless" in captured.err
    overlay = np.asarray(Image.open(out / "chelsea.png"))
    assert overlay.shape == (300, 451, 3)
    data = json.loads((out / "predictions.json").read_text())
    assert data["images"] == [{"id": 1, "file_name": sample_image_path(), "height": 300, "width": 451}]
    assert "wrote" in captured.out and "--score-threshold 0" in captured.err  # nothing passes 0.25: say how to see it
    assert "--score-threshold" not in captured.out  # stdout: the results only


def test_predict_with_local_checkpoint_matches_python_api(tiny_model, checkpoint, tmp_path, rgb_image, capsys):
    image_path = tmp_path / "photo.png"
    Image.fromarray(rgb_image).save(image_path)
    out = tmp_path / "out"
    # sources after options work too
    argv = [
        "predict",
        "sparseinst_tiny_test",
        "--checkpoint",
        str(checkpoint),
        str(image_path),
        "--out",
        str(out),
        "--save-json",
        "--threshold",
        "0.02",
    ]
    assert main(argv) == 0
    data = json.loads((out / "predictions.json").read_text())
    expected = tiny_model.predict(str(image_path), score_threshold=0.02, sort_by_score=True)[0]
    expected = expected[expected.scores > 0.02]
    annotations = data["annotations"]
    assert len(annotations) == len(expected) > 0
    assert [a["score"] for a in annotations] == pytest.approx(expected.scores.tolist(), abs=1e-6)
    assert [a["category_id"] for a in annotations] == expected.labels.tolist()
    for ann, mask in zip(annotations, expected.masks.numpy()):
        np.testing.assert_array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), mask)
        assert ann["area"] == int(mask.sum()) and ann["image_id"] == 1 and ann["iscrowd"] == 0
    assert len({a["id"] for a in annotations}) == len(annotations)
    overlay = np.asarray(Image.open(out / "photo.png"))
    np.testing.assert_array_equal(overlay, expected.plot())
    printed = capsys.readouterr()
    assert "instance(s) with score > 0.02" in printed.out
    # per image: the classes with their counts and best scores, not one entry per instance
    assert f"photo.png: {len(expected)} instance(s): {expected.summary()}" in printed.err


def test_predict_folder_video_and_name_clashes(checkpoint, tmp_path, rgb_image):
    av = pytest.importorskip("av")
    data = tmp_path / "data"
    (data / "more").mkdir(parents=True)
    Image.fromarray(rgb_image).save(data / "a.png")
    Image.fromarray(rgb_image[::-1]).save(data / "more" / "a.jpg")
    video = data / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for _ in range(2):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 96, 3), np.uint8), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    out = tmp_path / "out"
    argv = [
        "predict",
        "sparseinst_tiny_test",
        str(data),
        str(data / "more" / "*.jpg"),
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--save-json",
        "--quiet",
        "--batch-size",
        "2",
    ]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "a_2.png", "clip.mp4", "predictions.json"]
    frames = [f.to_ndarray(format="rgb24") for f in av.open(str(out / "clip.mp4")).decode(video=0)]
    assert len(frames) == 2 and frames[0].shape == (64, 96, 3)
    images = json.loads((out / "predictions.json").read_text())["images"]
    assert [im.get("frame") for im in images] == [None, 0, 1, None]


def test_predict_save_pretrained_folder(tiny_model, tmp_path):
    folder = tmp_path / "best"
    tiny_model.save_pretrained(str(folder))
    out = tmp_path / "out"
    assert main(["predict", str(folder), sample_image_path(), "--out", str(out), "--quiet"]) == 0
    assert (out / "chelsea.png").is_file()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--weights", "random"], "already carries its weights; --weights random and --checkpoint only apply"),
        (["--checkpoint", "model.safetensors"], "already carries its weights"),
    ],
)
def test_a_folder_refuses_other_weights(options, message, tiny_model, tmp_path, capsys):
    tiny_model.save_pretrained(str(tmp_path / "best"))
    argv = ["predict", str(tmp_path / "best"), sample_image_path(), *options, "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "out").exists()


def test_track_refuses_an_exported_file_in_one_line(tmp_path, capsys):
    exported = tmp_path / "model.onnx"
    exported.write_bytes(b"")
    assert main(["track", str(exported), sample_image_path(), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "is an exported model" in err and "this command runs PyTorch models only" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["predict", "{pt2}"],
        ["val", "{pt2}", "--data", "gt.json", "--images", "."],
        ["predict", "sparseinst_tiny_test", "--checkpoint", "{pt2}"],
    ],
)
def test_a_torch_export_program_is_named_as_such_not_as_weights(argv, tmp_path, capsys):
    """A .pt2 written by `sparseinst export --format pt2` was called weights without a config.json (or corrupt)."""
    program = tmp_path / "best.pt2"
    program.write_bytes(b"PK\x03\x04")  # the suffix decides, whatever the archive holds
    assert main([arg.format(pt2=program) for arg in argv]) == 1
    err = capsys.readouterr().err
    assert "is a torch.export program" in err and "torch.export.load" in err and "Traceback" not in err
    assert "config.json" not in err and "corrupt" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sparseinst_tiny_test"], "has no released weights"),
        (["sparseinst_r50_giam"], "--weights random"),  # the Hub is offline in tests
        (["sparseinst_r50_gam", "--weights", "random"], "Did you mean"),
        (["sparseinst_tiny_test", "missing.jpg", "--weights", "random"], "missing.jpg"),
    ],
)
def test_predict_errors_are_one_clear_line(argv, message, tmp_path, capsys):
    assert main(["predict", *argv, "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("quiet", [[], ["--quiet"]])
@pytest.mark.parametrize(
    ("flags", "warning"),
    [
        (["--threshold", "0.3"], "warning: --threshold is deprecated and will be removed; use --score-threshold 0.3"),
        (["--half", "bf16"], "warning: --half is deprecated and will be removed; use --precision bf16"),
        (["--half"], "warning: --half is deprecated and will be removed; use --precision auto"),
    ],
)
def test_deprecated_predict_flags_warn_as_every_deprecated_flag_does(capsys, flags, warning, quiet):
    from sparseinst_zoo.commands import predict as predict_command

    parser = argparse.ArgumentParser()
    predict_command.add_arguments(parser)
    predict_command._options(parser.parse_args(["m", *flags, *quiet]))
    assert capsys.readouterr().err.splitlines() == [warning]  # the words of val's --half and train's --amp too


def test_bare_half_before_a_source(tmp_path, capsys):
    from sparseinst_zoo.commands import predict as predict_command

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"")
    parser = argparse.ArgumentParser()
    predict_command.add_arguments(parser)
    args, extras = parser.parse_known_args(["m", "a.png", "--half", str(photo), "--out", "o"])
    assert (args.precision, args.sources, extras) == ("auto", ["a.png", str(photo)], [])  # the path is a SOURCE
    args, _ = parser.parse_known_args(["m", "--half", "bf16", str(photo)])
    assert (args.precision, args.sources) == ("bf16", [str(photo)])
    with pytest.raises(SystemExit):
        parser.parse_known_args(["m", "--half", "fp8", str(photo)])
    assert "argument --half: expected one of fp32, fp16, bf16, auto, got 'fp8'" in capsys.readouterr().err


def test_corrupt_image_is_named(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["predict", "sparseinst_tiny_test", str(bad), "--weights", "random", "--out", str(tmp_path)]) == 1
    assert "broken.jpg" in capsys.readouterr().err


def test_a_failed_run_leaves_no_folder_and_the_next_run_gets_the_first_name(checkpoint, tmp_path, rgb_image, capsys):
    (tmp_path / "fake.mp4").write_bytes(b"not a video")
    (tmp_path / "corrupt.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(rgb_image).save(tmp_path / "good.png")
    out = tmp_path / "runs" / "e"
    base = ["predict", "sparseinst_tiny_test", "--checkpoint", str(checkpoint), "--out", str(out), "--save-json"]
    for bad in ("fake.mp4", "corrupt.jpg"):
        assert main([*base, str(tmp_path / bad)]) == 1
        assert bad in capsys.readouterr().err
        assert not (tmp_path / "runs").exists()  # neither the run folder nor the parent made for it
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("mine")
    assert main([*base, str(tmp_path / "corrupt.jpg")]) == 1
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["notes.txt"]  # the user's folder stays
    assert main([*base, str(tmp_path / "good.png"), "--quiet"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["e", "notes.txt"]
    assert sorted(p.name for p in out.iterdir()) == ["good.png", "predictions.json"]


def test_unreadable_file_in_a_folder_is_skipped_with_a_warning(tmp_path, rgb_image, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(rgb_image).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    assert main(["predict", "sparseinst_tiny_test", str(folder), "--weights", "random", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "broken.jpg" in captured.err
    assert "in 1 image(s) (1 unreadable file(s) skipped)" in captured.out
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_list_table(capsys):
    assert main(["list", "r50_giam", "--pretrained"]) == 0
    out = capsys.readouterr().out
    assert "sparseinst_r50_giam.coco" in out and "33.4" in out and "44.6" in out and "608/853" in out
    assert "sparseinst_r101" not in out
    assert main(["list"]) == 0
    assert "sparseinst_tiny_test" in capsys.readouterr().out
    assert main(["list", "nothing_like_this"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("sparseinst list: no models match 'nothing_like_this'")
    assert "run `sparseinst list` for all names" in captured.err
    assert main(["list", "r50*"]) == 1  # anchored at the start, as timm users write it
    assert "try 'sparseinst_r50*'" in capsys.readouterr().err


def test_device_option_keeps_cpu(checkpoint, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("checks the explicit cpu path only")
    argv = [
        "predict",
        "sparseinst_tiny_test",
        "--checkpoint",
        str(checkpoint),
        "--device",
        "cpu",
        "--half",
        "bf16",
        "--out",
        str(tmp_path),
        "--quiet",
        "--min-size",
        "96",
        "--max-size",
        "128",
    ]
    assert main(argv) == 0


def test_a_source_folder_as_out_is_never_overwritten(checkpoint, tmp_path, rgb_image):
    """`predict M --out photos photos`: a new run goes to photos2; with --exist-ok the overlay gets a free name."""
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(rgb_image).save(photos / "a.png")
    original = (photos / "a.png").read_bytes()
    base = ["predict", "sparseinst_tiny_test", "--checkpoint", str(checkpoint), "--out", str(photos), str(photos)]
    assert main([*base, "--quiet"]) == 0
    assert (photos / "a.png").read_bytes() == original
    assert sorted(p.name for p in (tmp_path / "photos2").iterdir()) == ["a.png"]
    assert main([*base, "--quiet", "--exist-ok"]) == 0
    assert (photos / "a.png").read_bytes() == original
    assert sorted(p.name for p in photos.iterdir()) == ["a.png", "a_2.png"]


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_a_file_where_the_run_folder_goes_is_a_one_line_error(checkpoint, tmp_path, rgb_image, capsys, out):
    (tmp_path / "afile").write_text("mine")
    Image.fromarray(rgb_image).save(tmp_path / "a.png")
    argv = ["predict", "sparseinst_tiny_test", "--checkpoint", str(checkpoint), str(tmp_path / "a.png"), "--exist-ok"]
    assert main([*argv, "--out", str(tmp_path / out)]) == 1
    err = capsys.readouterr().err
    assert err.rstrip().endswith(f"{tmp_path / 'afile'} is a file where a folder is needed; choose another folder"), err
    assert "\n" not in err.strip() and (tmp_path / "afile").read_text() == "mine"


def test_each_run_gets_a_new_folder_and_old_flags_still_work(checkpoint, tmp_path, rgb_image, capsys):
    Image.fromarray(rgb_image).save(tmp_path / "p.png")
    out = tmp_path / "runs" / "predict"
    argv = [
        "predict",
        "sparseinst_tiny_test",
        "--checkpoint",
        str(checkpoint),
        str(tmp_path / "p.png"),
        "--out",
        str(out),
        "--save-json",
    ]
    assert main([*argv, "--threshold", "0.01"]) == 0
    assert "--threshold is deprecated" in capsys.readouterr().err
    first = json.loads((out / "predictions.json").read_text())
    assert first["info"]["score_threshold"] == 0.01
    assert main([*argv, "--score-threshold", "0.01"]) == 0
    second = json.loads((tmp_path / "runs" / "predict2" / "predictions.json").read_text())
    assert second["annotations"] == first["annotations"]


def test_predict_runs_an_exported_onnx_file_like_the_model(tiny_onnx, tmp_path, rgb_image, capsys):
    image_path = tmp_path / "photo.png"
    Image.fromarray(rgb_image).save(image_path)
    onnx_path = tiny_onnx  # the seeded tiny_model, exported dynamic
    runs = {}
    for name, model in (("torch", "sparseinst_tiny_test"), ("onnx", onnx_path)):
        extra = ["--weights", "random"] if name == "torch" else []
        torch.manual_seed(0)  # the seeded tiny_model's weights for the registered name too
        argv = [
            "predict",
            model,
            *extra,
            str(image_path),
            "--out",
            str(tmp_path / name),
            "--save-json",
            "--score-threshold",
            "0.02",
        ]
        assert main(argv) == 0
        runs[name] = json.loads((tmp_path / name / "predictions.json").read_text())["annotations"]
    assert len(runs["onnx"]) == len(runs["torch"]) > 0
    assert [a["score"] for a in runs["onnx"]] == pytest.approx([a["score"] for a in runs["torch"]], abs=1e-4)
    assert [a["category_id"] for a in runs["onnx"]] == [a["category_id"] for a in runs["torch"]]
    capsys.readouterr()
    assert main(["predict", onnx_path, "--device", "cpu", str(image_path), "--out", str(tmp_path / "x")]) == 1
    assert "is an exported model: it carries its weights" in capsys.readouterr().err
    assert main(["predict", onnx_path, "--weights", "random", str(image_path), "--out", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.rstrip().endswith("own runtime; drop --weights random")  # it was ignored


def test_an_interrupted_folder_run_keeps_valid_files_and_says_what_it_kept(checkpoint, tmp_path, monkeypatch, capsys):
    """Ctrl-C at the 4th of 6 images: the JSON of the first three is complete and the last line names what was kept."""
    from sparseinst_zoo.inference.writer import ResultsWriter

    (tmp_path / "photos").mkdir()
    for i in range(6):
        Image.fromarray(np.full((40, 56, 3), 40 * i, np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    write = ResultsWriter.write

    def interrupt_at_the_fourth(self, result):
        if len(self.written) == 3:
            raise KeyboardInterrupt
        return write(self, result)

    monkeypatch.setattr(ResultsWriter, "write", interrupt_at_the_fourth)
    out = tmp_path / "run"
    args = ["sparseinst_tiny_test", "--checkpoint", str(checkpoint), str(tmp_path / "photos"), "--out", str(out)]
    assert main(["predict", *args, "--save-json", "--score-threshold", "0"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert (
        err[-1]
        == f"sparseinst predict: interrupted; 3 of 6 image(s) predicted; kept in {out}: predictions.json, 3 overlay(s)"
    )
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png", "predictions.json"]
    images = json.loads((out / "predictions.json").read_text())["images"]
    assert [image["file_name"].rsplit("/", 1)[-1] for image in images] == ["p0.png", "p1.png", "p2.png"]


def test_an_interrupt_while_an_overlay_is_written_leaves_no_json_entry_without_its_overlay(
    checkpoint, tmp_path, monkeypatch, capsys
):
    """Ctrl-C inside the 3rd overlay's write: predictions.json names the two images whose overlays are on disk."""
    from sparseinst_zoo.inference import writer

    (tmp_path / "photos").mkdir()
    for i in range(4):
        Image.fromarray(np.full((40, 56, 3), 50 * i, np.uint8)).save(tmp_path / "photos" / f"p{i}.png")
    save, calls = writer.save_image, []

    def interrupt_in_the_third(image, path, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return save(image, path, **kwargs)

    monkeypatch.setattr(writer, "save_image", interrupt_in_the_third)
    out = tmp_path / "run"
    args = ["sparseinst_tiny_test", "--checkpoint", str(checkpoint), str(tmp_path / "photos"), "--out", str(out)]
    assert main(["predict", *args, "--save-json", "--score-threshold", "0"]) == 130
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"kept in {out}: predictions.json, 2 overlay(s)")
    images = json.loads((out / "predictions.json").read_text())["images"]
    assert [image["file_name"].rsplit("/", 1)[-1] for image in images] == ["p0.png", "p1.png"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "M", "--threshold", "2"], "argument --threshold: must be in [0, 1), got 2"),
        (["predict", "M", "--mask-threshold", "2"], "argument --mask-threshold: must be in (0, 1), got 2"),
        (["predict", "M", "--max-detections", "0"], "argument --max-detections: must be at least 1, got 0"),
        (["predict", "M", "--batch-size", "-2"], "argument --batch-size: must be at least 1, got -2"),
        (["predict", "M", "--min-size", "-5"], "argument --min-size: must be at least 1, got -5"),
        (["predict", "M", "--precision", "fp8"], "--precision: expected one of fp32, fp16, bf16, auto, got 'fp8'"),
        (["track", "M", "x.mp4", "--score-threshold", "2"], "argument --score-threshold: must be in [0, 1), got 2"),
        (["track", "M", "x.mp4", "--lost-track-buffer", "-3"], "--lost-track-buffer: must be 0 or more, got -3"),
        (["track", "M", "x.mp4", "--match-threshold", "0"], "argument --match-threshold: must be in (0, 1], got 0"),
        (["track", "M", "x.mp4", "--max-detections", "0"], "argument --max-detections: must be at least 1, got 0"),
        (["val", "M", "--workers", "-1"], "argument --workers: must be 0 or more, got -1"),  # was a traceback
        (["val", "M", "--test-size", "-1"], "argument --min-size/--test-size: must be at least 1, got -1"),
        (["export", "M", "--mask-threshold", "3"], "argument --mask-threshold: must be in (0, 1), got 3"),
        (["benchmark", "M", "--iters", "0"], "argument --iters: must be at least 1, got 0"),
        (["benchmark", "M", "--warmup", "-1"], "argument --warmup: must be 0 or more, got -1"),
        (["benchmark", "M", "--threads", "0"], "argument --threads: must be at least 1, got 0"),
        (["benchmark", "M", "--max-size", "0"], "argument --max-size: must be at least 1, got 0"),
    ],
)
def test_bad_numbers_are_refused_by_the_flag_that_took_them(argv, message, capsys):
    """Before any model is built, and in the flag's name (not the Python argument's, as `mask_threshold must ...`)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.rstrip().endswith(message), err


@pytest.mark.parametrize("command", ["predict", "track", "export", "val"])
def test_random_weights_and_a_checkpoint_contradict_each_other(command, checkpoint, tmp_path, capsys):
    """The checkpoint was taken silently, the explicit --weights random ignored."""
    extra = {"predict": [sample_image_path()], "track": [sample_image_path()], "val": ["--data", "d.yaml"]}
    out = tmp_path / ("out.onnx" if command == "export" else "out.json")
    argv = [command, "sparseinst_tiny_test", "--weights", "random", "--checkpoint", str(checkpoint)]
    assert main([*argv, *extra.get(command, []), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sparseinst {command}: error: --weights random and --checkpoint ") and err.count("\n") == 1
    assert not out.exists()


def test_no_progress_bar_frames_when_stderr_is_not_a_terminal(tmp_path, rgb_image, capsys):
    """A piped stderr got the bar's carriage-return frames, and the next line was written onto the last one."""
    for name in ("a.png", "b.png"):
        Image.fromarray(rgb_image).save(tmp_path / name)
    argv = ["predict", "sparseinst_tiny_test", "--weights", "random", str(tmp_path / "*.png"), "--out", str(tmp_path)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "a.png: 0 instance(s)" in err


def test_predict_lists_no_flag_that_changes_nothing(capsys):
    """--fold-bn and --channels-last are what predict does by default: hidden, accepted with a warning."""
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    shown = capsys.readouterr().out
    assert "--fold-bn" not in shown and "--channels-last" not in shown and "--compile" in shown
    from sparseinst_zoo.commands import predict as predict_command

    parser = argparse.ArgumentParser(prog="sparseinst predict")
    predict_command.add_arguments(parser)
    assert predict_command._options(parser.parse_args(["m", "--fold-bn"]))["optimize"] is None  # the default path
    assert capsys.readouterr().err == (
        "warning: --fold-bn is what sparseinst predict does by default; drop it (--no-optimize runs the plain eager "
        "model)\n"
    )


def test_no_optimize_with_a_fast_path_is_refused(tmp_path, capsys):
    """--compile and --cuda-graphs were silently dropped under --no-optimize."""
    argv = [
        "predict",
        "sparseinst_tiny_test",
        "--weights",
        "random",
        "--no-optimize",
        "--compile",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("sparseinst predict: error: --no-optimize runs the plain eager model")
