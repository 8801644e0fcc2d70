"""One flag name per concept: the new names, the old spellings as deprecated aliases (one warning each), ``--quiet``
meaning the same in every command, and library messages in the words of their caller (Python or the CLI)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

import sparseinst_zoo
from sparseinst_zoo import cli
from sparseinst_zoo.benchmark import run_benchmark
from sparseinst_zoo.commands.val import format_metrics
from sparseinst_zoo.data.synthetic import make_shapes_dataset
from sparseinst_zoo.errors import Argument, SparseInstError, Words, argument_words, caller_words, command_line_words
from sparseinst_zoo.evaluation import evaluate
from sparseinst_zoo.training.run_folder import claim_run_folder

TINY = "sparseinst_tiny_test"
BENCH = [TINY, "--device", "cpu", "--size", "75x110", "--iters", "1", "--warmup", "0", "--no-flops"]


def _parse(argv: list[str]):
    return cli._parse(cli.build_parser(argv[0]), argv)


@pytest.mark.parametrize(
    ("old", "new", "attribute", "value", "warning"),
    [
        (
            ["val", "m", "--json", "gt.json"],
            ["val", "m", "--data", "gt.json"],
            "data",
            "gt.json",
            "--json|--data gt.json",
        ),
        (
            ["benchmark", "m", "--json", "r.json"],
            ["benchmark", "m", "--out", "r.json"],
            "out",
            "r.json",
            "--json|--out r.json",
        ),
        (
            ["export", "m", "--half"],
            ["export", "m", "--precision", "fp16"],
            "precision",
            "fp16",
            "--half|--precision fp16",
        ),
        (
            ["export", "--half", "m"],
            ["export", "m", "--precision", "half"],
            "precision",
            "fp16",
            "--half|--precision fp16",
        ),
        (
            ["val", "m", "--half", "bf16"],
            ["val", "m", "--precision", "bf16"],
            "precision",
            "bf16",
            "--half|--precision bf16",
        ),
        (["train", "--amp", "bf16"], ["train", "--precision", "bf16"], "precision", "bf16", "--amp|--precision bf16"),
    ],
)
def test_an_old_spelling_fills_the_new_name_and_warns_once(capsys, old, new, attribute, value, warning):
    assert getattr(_parse(new), attribute) == value
    assert capsys.readouterr().err == ""  # the new name: no warning
    args = _parse(old)
    assert getattr(args, attribute) == value and args.model in ("m", None)  # a bare --half takes no MODEL
    flag, replacement = warning.split("|")
    assert capsys.readouterr().err.splitlines() == [  # one line, the words of every deprecated flag
        f"warning: {flag} is deprecated and will be removed; use {replacement}"
    ]


@pytest.mark.parametrize(("command", "old"), [("val", "--json"), ("benchmark", "--json"), ("export", "--half")])
def test_deprecated_spellings_stay_out_of_help(capsys, command, old):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert old not in text and "--quiet" in text


def test_export_precision_is_fp32_or_fp16(capsys):
    assert _parse(["export", "m"]).precision == "fp32"
    with pytest.raises(SystemExit):
        _parse(["export", "m", "--precision", "bf16"])
    assert "expected one of fp32, fp16, got 'bf16'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("flag_shapes")
    return make_shapes_dataset(root, num_images=4, seed=4), str(root)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("flag_model") / "model"
    sparseinst_zoo.create_model(TINY, num_classes=3).save_pretrained(folder)
    return str(folder)


def test_val_reads_a_coco_json_through_data_and_the_old_json_still_works(shapes, tiny_folder, tmp_path, capsys):
    annotations, images = shapes
    table = format_metrics(evaluate(tiny_folder, annotations, images, workers=0))
    base = ["val", tiny_folder, "--images", images, "--workers", "0"]
    assert cli.main([*base, "--data", annotations]) == 0
    assert capsys.readouterr().out.startswith(table)
    assert cli.main([*base, "--json", annotations]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(table)
    assert captured.err.splitlines() == [f"warning: --json is deprecated and will be removed; use --data {annotations}"]
    yaml_file = tmp_path / "data.yaml"
    yaml_file.write_text(f"val: {{json: {annotations}, images: {images}}}\nnames: [square, disc, triangle]\n")
    assert cli.main([*base, "--data", str(yaml_file)]) == 1  # a YAML names its own images
    assert "--images goes with a COCO JSON --data" in capsys.readouterr().err
    assert cli.main(["val", tiny_folder]) == 1
    assert "--data ANNOTATIONS.json with --images FOLDER" in capsys.readouterr().err


def test_quiet_val_prints_only_the_metrics(shapes, tiny_folder, tmp_path, capsys):
    annotations, images = shapes
    argv = ["val", tiny_folder, "--data", annotations, "--images", images, "--workers", "0"]
    assert cli.main([*argv, "--out", str(tmp_path / "m.json")]) == 0
    assert "wrote " in capsys.readouterr().out
    assert cli.main([*argv, "--out", str(tmp_path / "n.json"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == format_metrics(json.loads((tmp_path / "n.json").read_text())) + "\n"  # the result asked for
    assert captured.err == ""


def test_benchmark_writes_its_out_file_and_quiet_keeps_the_table(tmp_path, capsys):
    from sparseinst_zoo.commands import benchmark as command

    assert command.main([*BENCH, "--out", str(tmp_path / "a.json")]) == 0
    assert f"wrote {tmp_path / 'a.json'}" in capsys.readouterr().out
    assert command.main([*BENCH, "--json", str(tmp_path / "b.json"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads((tmp_path / "b.json").read_text())["iters"] == 1
    assert "latency" in captured.out and "wrote" not in captured.out  # the measurements, not the info line
    assert captured.err.splitlines() == [
        f"warning: --json is deprecated and will be removed; use --out {tmp_path}/b.json"
    ]
    assert command.main([*BENCH, "--out", str(tmp_path / "b.json"), "--quiet"]) == 0  # a taken name is still said
    assert f"{tmp_path / 'b.json'} exists; wrote {tmp_path / 'b_2.json'}" in capsys.readouterr().out


def test_quiet_export_and_convert_print_nothing_but_json_asked_for(tiny_folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "tiny.onnx"
    argv = ["export", tiny_folder, "--height", "64", "--width", "64", "--out", str(out), "--quiet"]
    assert cli.main(argv) == 0
    assert capsys.readouterr() == ("", "") and out.is_file()
    assert cli.main(["convert", tiny_folder, "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "") and (tmp_path / "a" / "model.safetensors").is_file()
    assert cli.main(["convert", tiny_folder, "--out", str(tmp_path / "b"), "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["out"] == str(tmp_path / "b")


def test_quiet_train_prints_no_info_lines(shapes, tmp_path):
    """In a fresh process, as a user runs it: the CLI's logging shows info lines, which --quiet turns off."""
    annotations, images = shapes
    argv = [
        *("train", "--model", TINY, "--train-json", annotations, "--train-images", images, "--iters", "1"),
        *("--batch-size", "2", "--min-sizes", "64", "--max-size", "96", "--workers", "0", "--no-tensorboard"),
    ]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}

    def start(*extra: str) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", "sparseinst_zoo.cli", *argv, *extra]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    # both at once: each spends most of its time importing, on one core
    runs = start("--out", str(tmp_path / "loud")), start("--out", str(tmp_path / "quiet"), "--quiet")
    (loud_out, loud_err), (quiet_out, quiet_err) = (run.communicate(timeout=300) for run in runs)
    warning = f"training {TINY} from random initialisation (no --pretrained, --checkpoint or --pretrained-backbone)"
    assert runs[0].returncode == 0 and "trained 1 iterations" in loud_out
    assert warning in loud_err.splitlines() and len(loud_err.splitlines()) > 1  # and info lines
    assert runs[1].returncode == 0, quiet_err
    assert (quiet_out, quiet_err.splitlines()) == ("", [warning])  # a warning, in the CLI's words
    assert (tmp_path / "quiet" / "last" / "model.safetensors").is_file()


def test_argument_words_for_each_reader():
    python, cli_words = argument_words(
        "lower {lr}, add {clip}, use {fp32}, {ema}, {sizes}, {fp16}",
        lr=Argument("lr"),
        clip=Argument("clip_grad", True),
        fp32=Argument("precision", "fp32"),
        ema=Argument("ema", False),
        sizes=Argument("min_sizes", (256, 288)),
        fp16=Words("half=True", "--precision fp16"),
    )
    assert python == "lower lr, add clip_grad=True, use precision='fp32', ema=False, min_sizes=(256, 288), half=True"
    assert (
        cli_words
        == "lower --lr, add --clip-grad, use --precision fp32, --no-ema, --min-sizes 256,288, --precision fp16"
    )
    assert caller_words("{x}", x=Argument("exist_ok", True)) == "exist_ok=True"
    with command_line_words():
        assert caller_words("{x}", x=Argument("exist_ok", True)) == "--exist-ok"
    assert caller_words("{x}", x=Argument("exist_ok", True)) == "exist_ok=True"  # reset on the way out


def test_a_python_caller_reads_python_arguments_and_the_cli_its_flags(capsys):
    with pytest.raises(SparseInstError) as caught:
        run_benchmark(TINY, device="cpu", image_size="75x110", min_size=0, what="predict", iters=1, warmup=0)
    assert str(caught.value) == "what='predict' resizes like the predictor; give min_size >= 1 (0 is for forward)"
    assert cli.main(["benchmark", *BENCH, "--what", "predict", "--min-size", "0"]) == 1
    assert capsys.readouterr().err == (
        "sparseinst benchmark: error: --what predict resizes like the predictor; give --min-size >= 1 (0 is for "
        "forward)\n"
    )


def test_a_training_log_line_names_the_arguments_of_its_caller(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="sparseinst_zoo")
    out = str(tmp_path / "run")
    claim_run_folder(out, exist_ok=False)
    claim_run_folder(out, exist_ok=False)
    assert "(exist_ok=True reuses" in caplog.text and "resume=True continues it)" in caplog.text
    caplog.clear()
    with command_line_words():
        claim_run_folder(out, exist_ok=False)
    assert "(--exist-ok reuses" in caplog.text and "--resume continues it)" in caplog.text
    assert "exist_ok" not in caplog.text


def test_a_training_error_names_the_arguments_of_its_caller(shapes, tmp_path, capsys):
    annotations, images = shapes
    options = dict(model=TINY, train_json=annotations, train_images=images, iters=1, num_classes=2, workers=0)
    with pytest.raises(SparseInstError, match=r"^num_classes=2 but .* has 3 categories; leave num_classes out"):
        sparseinst_zoo.train(**options, out=str(tmp_path / "py"), progress=False)
    argv = ["train", "--model", TINY, "--train-json", annotations, "--train-images", images, "--iters", "1"]
    assert cli.main([*argv, "--num-classes", "2", "--workers", "0", "--out", str(tmp_path / "cli")]) == 1
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("sparseinst train: error: --num-classes 2 but ") and "leave --num-classes out" in err


def test_quiet_predict_and_track_still_show_warnings(tmp_path, capsys):
    from sparseinst_zoo.commands._model import RANDOM_WEIGHTS_WARNING
    from sparseinst_zoo.inference.sources import sample_image_path

    warning = RANDOM_WEIGHTS_WARNING.format(name=TINY)
    base = [TINY, sample_image_path(), "--weights", "random", "--quiet"]
    assert cli.main(["predict", *base, "--out", str(tmp_path / "p")]) == 0
    assert capsys.readouterr() == ("", warning + "\n")  # no summary, no bar; the warning stays
    pytest.importorskip("supervision")
    assert cli.main(["track", *base, "--out", str(tmp_path / "t")]) == 0
    assert capsys.readouterr() == ("", warning + "\n")


def test_bare_weights_are_refused_in_the_words_of_each_caller(tiny_folder, tmp_path, capsys):
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(open(os.path.join(tiny_folder, "model.safetensors"), "rb").read())
    with pytest.raises(SparseInstError, match=r"name the architecture: create_model\(name, checkpoint_path='"):
        sparseinst_zoo.create_model(str(weights))
    assert cli.main(["predict", str(weights), "--out", str(tmp_path / "p")]) == 1
    err = capsys.readouterr().err
    assert f"name the architecture: a registered MODEL name with --checkpoint {weights}\n" in err
    assert "checkpoint_path" not in err
