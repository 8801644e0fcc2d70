"""The benchmark command: runs a couple of iterations, writes valid JSON, fails clearly on bad options (no timing)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess

import pytest
import torch

import sparseinst_zoo
from sparseinst_zoo.benchmark import RESULT_KEYS, count_flops, input_size_for, parse_size, run_benchmark
from sparseinst_zoo.commands import benchmark as command

TINY = ["sparseinst_tiny_test", "--device", "cpu", "--size", "75x110", "--iters", "2", "--warmup", "1"]


def _check_result(result: dict, batch: int) -> None:
    assert set(result) == set(RESULT_KEYS)
    lat = result["latency_ms"]
    assert set(lat) == {"median", "p10", "p90", "mean", "min", "max"}
    assert 0 < lat["min"] <= lat["p10"] <= lat["median"] <= lat["p90"] <= lat["max"]
    assert result["images_per_s"] == pytest.approx(batch * 1000 / lat["median"], rel=1e-3)
    assert result["batch_size"] == batch and result["iters"] == 2 and result["warmup"] == 1
    assert result["image_size"] == [75, 110] and result["input_size"] == [64, 96]  # tiny cfg: min 64, max 96
    assert result["peak_memory_mb"] is None or result["peak_memory_mb"] > 0
    env = result["env"]
    assert env["torch"] == torch.__version__ and env["threads"] >= 1
    assert {"timm", "torchvision", "device_name", "cpu_count"} <= set(env)


def test_command_json_never_replaces_a_file_and_a_folder_fails_before_the_run(tmp_path, capsys):
    out = tmp_path / "result.json"
    out.write_text("my notes")
    assert command.main([*TINY, "--iters", "1", "--warmup", "0", "--no-flops", "--out", str(out)]) == 0
    assert out.read_text() == "my notes"
    assert json.loads((tmp_path / "result_2.json").read_text())["iters"] == 1
    assert f"{out} exists; wrote {tmp_path / 'result_2.json'}" in capsys.readouterr().out
    for bad, match in ((tmp_path, "is a folder"), (tmp_path / "result.txt", "name a .json file")):
        assert command.main([*TINY, "--out", str(bad)]) == 1
        printed = capsys.readouterr()
        assert match in printed.err and printed.out == ""  # said at once: nothing was run


def test_command_writes_json(tmp_path, capsys):
    out = tmp_path / "sub" / "result.json"
    threads = torch.get_num_threads()
    assert command.main([*TINY, "--batch-size", "2", "--threads", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    _check_result(result, batch=2)
    assert result["what"] == "forward" and result["weights"] == "random" and result["device"] == "cpu"
    assert result["gflops_per_image"] > 0 and result["env"]["threads"] == 1
    assert torch.get_num_threads() == threads  # --threads applies to the run only
    assert result["options"] == {
        "backend": "torch",
        "precision": "fp32",
        "fold_bn": False,
        "channels_last": False,
        "compile": None,
        "cuda_graphs": False,
    }
    assert not [p for p in os.listdir(out.parent) if p != "result.json"]  # atomic write left no temp file
    printed = capsys.readouterr().out
    assert "latency ms: median" in printed and "images/s" in printed


def test_command_predict_with_fast_paths(tmp_path):
    out = tmp_path / "predict.json"
    flags = ["--what", "predict", "--fold-bn", "--channels-last", "--precision", "bf16", "--no-flops"]
    assert command.main([*TINY, *flags, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    _check_result(result, batch=1)
    assert result["what"] == "predict" and result["resize_backend"] == "pil" and result["gflops_per_image"] is None
    assert result["options"]["precision"] == "bf16" and result["options"]["fold_bn"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--cuda-graphs"], "needs a CUDA device"),
        (["--size", "640by480"], "HEIGHTxWIDTH"),
        (["--what", "predict", "--min-size", "0"], "min-size >= 1"),
        (["--backend", "onnxruntime", "--precision", "bf16"], "use --precision fp32 with --backend onnxruntime"),
        (["--backend", "openvino", "--fold-bn"], "are PyTorch fast paths"),
    ],
)
def test_command_errors_are_one_clear_line(flags, message, capsys):
    assert command.main([*TINY, *flags, "--no-flops"]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_device_without_gpu(capsys):
    assert command.main(["sparseinst_tiny_test", "--device", "cuda", "--iters", "1"]) == 1
    assert "no usable CUDA GPU" in capsys.readouterr().err


def test_sizes():
    assert parse_size("640x853") == (640, 853) and parse_size("64,96") == (64, 96) and parse_size((3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="HEIGHTxWIDTH"):
        parse_size("640")
    with pytest.raises(ValueError, match="positive"):
        parse_size("0x5")
    assert input_size_for((640, 853), 640, 853) == (640, 864)  # the 640x853 -> padded 640x864
    assert input_size_for((480, 640), 608, 853) == (608, 832)
    assert input_size_for((75, 110), 0, 1) == (96, 128)  # min_size 0: no resize, only padding


def test_flops_count_deformable_convs():
    """DCN layers are counted as dense convs: R-50 DCN has the FLOPs of R-50 plus its small offset convs."""
    x = torch.randn(1, 3, 64, 64)
    plain = count_flops(sparseinst_zoo.create_model("sparseinst_r50_giam").eval(), x)
    dcn = count_flops(sparseinst_zoo.create_model("sparseinst_r50_dcn_giam_aug").eval(), x)
    assert plain < dcn < plain * 1.05


def test_run_benchmark_with_model_instance(tiny_model):
    result = run_benchmark(tiny_model, device="cpu", image_size=(64, 64), min_size=0, iters=1, warmup=0, flops=False)
    assert result["model"] == "sparseinst_tiny_test" and result["weights"] == "given"
    assert result["input_size"] == [64, 64] and result["latency_ms"]["median"] > 0


def _matrix_module():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "run_matrix.py")
    spec = importlib.util.spec_from_file_location("run_matrix", path)
    matrix = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(matrix)
    return matrix


def test_matrix_script_table(tmp_path):
    """benchmarks/run_matrix.py: one real row in a fresh process, one failing row, both in the Markdown table."""
    matrix = _matrix_module()
    out, json_out = tmp_path / "table.md", tmp_path / "rows.json"
    argv = [
        "sparseinst_tiny_test",
        "--device",
        "cpu",
        "--size",
        "75x110",
        "--iters",
        "1",
        "--warmup",
        "0",
        "--batch-sizes",
        "1",
        "--modes",
        "fp32",
        "fp32-fold-cl-graphs",
        "--out",
        str(out),
        "--json-out",
        str(json_out),
    ]
    assert matrix.main(argv) == 1  # the CUDA-graphs row fails on a CPU
    text = out.read_text()
    assert "| fp32 | forward | 1 |" in text and "needs a CUDA device" in text and "GFLOPs per image" in text
    rows = json.loads(json_out.read_text())
    assert [r["mode"] for r in rows] == ["fp32", "fp32-fold-cl-graphs"]
    assert set(rows[0]["result"]) == set(RESULT_KEYS)


def test_matrix_past_its_deadline_still_writes_every_row(tmp_path):
    out, json_out = tmp_path / "table.md", tmp_path / "rows.json"
    argv = ["sparseinst_tiny_test", "--device", "cpu", "--batch-sizes", "1", "8", "--modes", "fp32", "bf16-cl"]
    assert _matrix_module().main([*argv, "--deadline", "0", "--out", str(out), "--json-out", str(json_out)]) == 1
    assert out.read_text().count("failed: skipped: --deadline") == 4
    assert [(r["mode"], r["batch"]) for r in json.loads(json_out.read_text())] == [
        ("fp32", 1),
        ("fp32", 8),
        ("bf16-cl", 1),
        ("bf16-cl", 8),
    ]


def test_sparseinst_cli_benchmark(tmp_path, capsys):
    from sparseinst_zoo import cli

    out = tmp_path / "cli.json"
    assert cli.main(["benchmark", *TINY, "--no-flops", "--channels-last", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["options"]["channels_last"] is True
    assert cli.main(["benchmark", *TINY, "--cuda-graphs"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err


def test_onnx_file_as_model_through_the_cli(tiny_onnx, tmp_path, capsys):
    """``sparseinst benchmark model.onnx``: onnxruntime by the suffix, end to end, no FLOPs (no PyTorch model)."""
    from sparseinst_zoo import cli

    out = tmp_path / "onnx.json"
    argv = [
        "benchmark",
        tiny_onnx,
        "--size",
        "75x110",
        "--iters",
        "2",
        "--warmup",
        "1",
        "--what",
        "predict",
        "--threads",
        "1",
        "--out",
        str(out),
    ]
    assert cli.main(argv) == 0
    result = json.loads(out.read_text())
    _check_result(result, batch=1)
    assert result["options"]["backend"] == "onnxruntime" and result["weights"] == "exported"
    assert result["gflops_per_image"] is None and "backend=onnxruntime" in capsys.readouterr().out


@pytest.fixture(scope="module")
def fixed_onnx(tmp_path_factory) -> str:
    """The tiny model exported at a fixed 64x64 input."""
    pytest.importorskip("onnxruntime")
    from sparseinst_zoo.export import export_onnx

    path = tmp_path_factory.mktemp("fixed") / "fixed.onnx"
    return export_onnx(sparseinst_zoo.create_model("sparseinst_tiny_test").eval(), path, 64, 64, verify=False)


@pytest.mark.parametrize("what", ["forward", "predict"])
def test_a_fixed_size_export_runs_and_reports_its_own_input_size(fixed_onnx, what):
    """A 64x64 export and a 40x100 image: every image runs padded to 64x64; the row said the 64x160 the dynamic model
    would take, and forward refused that batch."""
    result = run_benchmark(fixed_onnx, backend="onnxruntime", image_size=(40, 100), what=what, iters=1, warmup=0)
    assert result["image_size"] == [40, 100] and result["input_size"] == [64, 64]
    assert result["latency_ms"]["median"] > 0


def test_openvino_backend_runs_the_model_file_and_a_model_name(tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    result = run_benchmark(tiny_onnx, backend="openvino", image_size=(75, 110), iters=2, warmup=1, threads=1)
    assert result["options"]["backend"] == "openvino" and result["options"]["precision"] == "fp32"
    assert result["input_size"] == [64, 96] and result["latency_ms"]["median"] > 0
    out = tmp_path / "ov.json"
    argv = [*TINY, "--backend", "openvino", "--precision", "bf16", "--what", "predict", "--out", str(out)]
    assert command.main(argv) == 0  # exported to OpenVINO IR at the input size first
    result = json.loads(out.read_text())
    _check_result(result, batch=1)
    assert result["options"]["precision"] == "bf16" and result["options"]["model_file"].endswith("model.xml")
    assert result["gflops_per_image"] > 0  # counted on the PyTorch model it was exported from


def test_gpu_session_script_uses_only_options_that_exist():
    """benchmarks/gpu_session.sh runs once per GPU lease, unattended: a renamed flag must fail here, not there."""
    script = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "gpu_session.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    assert subprocess.run(["bash", script, "no-such-step"], capture_output=True).returncode == 2
    known: set[str] = set()
    for add in (command.add_arguments, _matrix_module().add_arguments):
        parser = argparse.ArgumentParser()
        add(parser)
        known.update(s for action in parser._actions for s in action.option_strings)
    pytest_and_tools = {"--format", "--query-gpu", "--no-deps", "--only-binary", "--python-version", "--implementation"}
    pytest_and_tools |= {"--platform", "--no-index", "--no-compile", "--no-cache-dir", "--upgrade", "--target"}
    with open(script, encoding="utf-8") as file:
        code = "\n".join(line.split("#", 1)[0] for line in file)  # options named in comments are not run
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", code))
    assert used - known - pytest_and_tools == set()
