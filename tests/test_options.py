"""The shared CLI options (commands/_options.py) and the device chooser (_device.py)."""

from __future__ import annotations

import argparse

import pytest
import torch

from sparseinst_zoo._device import select_device
from sparseinst_zoo.commands import _options
from sparseinst_zoo.errors import SparseInstError
from sparseinst_zoo.inference.precision import PRECISIONS


def parser_with(*adders, **kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparseinst test", exit_on_error=False)
    for add in adders:
        add(parser, **kwargs.get(add.__name__, {}))
    return parser


def test_precision_choices_are_the_precision_vocabulary():
    assert set(_options.PRECISION_CHOICES) == set(PRECISIONS) | {"auto"}


def test_precision_and_its_deprecated_aliases(capsys):
    parser = parser_with(_options.add_precision_argument, add_precision_argument={"aliases": ("--half", "--amp")})
    assert parser.parse_args([]).precision == "fp32"
    assert parser.parse_args(["--precision", "BF16"]).precision == "bf16"
    assert capsys.readouterr().err == ""
    assert parser.parse_args(["--half"]).precision == "auto"
    assert "--half is deprecated" in capsys.readouterr().err
    assert parser.parse_args(["--half", "fp16"]).precision == "fp16"
    assert parser.parse_args(["--amp", "none"]).precision == "fp32"
    assert "use --precision fp32" in capsys.readouterr().err
    assert "--half" not in parser.format_help()  # deprecated spellings stay out of --help


def test_bad_values_are_argparse_errors(capsys):
    parser = argparse.ArgumentParser(prog="sparseinst test")
    _options.add_precision_argument(parser)
    _options.add_score_threshold_argument(parser, default=0.25)
    _options.add_batch_size_argument(parser, default=1)
    for argv, message in [
        (["--precision", "fp8"], "expected one of fp32, fp16, bf16, auto, got 'fp8'"),
        (["--score-threshold", "2"], "argument --score-threshold: must be in [0, 1), got 2"),
        (["--threshold", "nan"], "argument --threshold: must be in [0, 1), got nan"),
        (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
        (["--batch-size", "two"], "expected a whole number, got 'two'"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            parser.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_score_threshold_alias_fills_the_same_attribute(capsys):
    parser = parser_with(_options.add_score_threshold_argument, add_score_threshold_argument={"default": 0.25})
    assert parser.parse_args([]).score_threshold == 0.25
    assert parser.parse_args(["--threshold", "0.5"]).score_threshold == 0.5
    assert "--threshold is deprecated and will be removed; use --score-threshold 0.5" in capsys.readouterr().err


def test_resize_speed_and_the_rest():
    parser = argparse.ArgumentParser()
    _options.add_device_argument(parser)
    _options.add_resize_arguments(parser, test_size_alias=True)
    _options.add_speed_arguments(parser)
    _options.add_precision_argument(parser)
    _options.add_threads_argument(parser)
    _options.add_workers_argument(parser)
    _options.add_mask_threshold_argument(parser)
    args = parser.parse_args(["--test-size", "320", "--compile", "--channels-last", "--threads", "2"])
    assert (args.min_size, args.max_size, args.device, args.threads, args.workers) == (320, None, None, 2, 2)
    assert args.mask_threshold == 0.45
    assert _options.speed_kwargs(args) == {
        "fold_bn": False,
        "channels_last": True,
        "compile": "default",
        "cuda_graphs": False,
        "precision": "fp32",
    }


# ---------------------------------------------------------------------------------------------------------------------
# select_device
# ---------------------------------------------------------------------------------------------------------------------
def test_auto_picks_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device(None).type == select_device("auto").type == select_device(" AUTO ").type == expected
    assert select_device("cpu") == select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.fixture
def two_gpus(monkeypatch):
    """Pretend PyTorch sees two CUDA GPUs (select_device only asks; nothing is allocated)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cuda_indices_are_checked(two_gpus):
    assert select_device(None) == torch.device("cuda")
    assert select_device("cuda:1") == torch.device("cuda", 1)
    assert select_device("auto", local_rank=1) == select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)  # an explicit index wins
    with pytest.raises(
        SparseInstError, match=r"'cuda:2' does not exist: this machine has 2 CUDA GPU\(s\) \(cuda:0, cuda:1\)"
    ):
        select_device("cuda:2")
    with pytest.raises(SparseInstError, match="does not exist"):
        select_device("auto", local_rank=5)


def test_missing_cuda_and_unknown_names_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device(None) == torch.device("cpu")
    with pytest.raises(SparseInstError, match=r"'cuda:0' was requested but this machine has .*use device='cpu'"):
        select_device("cuda:0")
    with pytest.raises(SparseInstError, match=r"unknown device 'gpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'"):
        select_device("gpu")
    with pytest.raises(SparseInstError, match="unknown device"):
        select_device("cuda:x")


def test_every_train_switch_that_is_on_says_so():
    """--tensorboard and --ema-warmup did not say they are on unless --no-... is given."""
    from sparseinst_zoo.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    for action in parser._actions:
        if isinstance(action, argparse.BooleanOptionalAction):
            assert "default:" in (action.help or ""), action.option_strings
