"""The `sparseinst` dispatcher: lazy command imports, one-line user errors, tracebacks for bugs, Ctrl-C."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import types

import pytest

from sparseinst_zoo import cli
from sparseinst_zoo.errors import DataError, SparseInstError
from sparseinst_zoo.version import __version__


@pytest.fixture
def imported(monkeypatch):
    """The command names whose module the CLI imports (the real modules are still imported)."""
    names: list[str] = []
    real = cli.import_command

    def spy(name: str) -> types.ModuleType:
        names.append(name)
        return real(name)

    monkeypatch.setattr(cli, "import_command", spy)
    return names


def test_top_level_help_and_version_import_no_command(imported, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, entry in cli.COMMANDS.items():
        assert name in out and entry.help[:40] in " ".join(out.split())
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == f"sparseinst-zoo {__version__}"
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])
    assert "invalid choice" in capsys.readouterr().err
    assert imported == []


def test_a_command_imports_only_its_own_module(imported, capsys):
    with pytest.raises(SystemExit):
        cli.main(["--debug", "list", "--help"])
    assert imported == ["list"]
    assert "--pretrained" in capsys.readouterr().out
    assert cli.main(["list", "r50_giam"]) == 0
    assert imported == ["list", "list"]


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["predict", "M", "photos", "--frobnicate"], "usage: sparseinst predict "),
        (["list", "r50", "--frobnicate"], "usage: sparseinst list "),
        (["--frobnicate", "list"], "usage: sparseinst [-h]"),
    ],
)
def test_an_unknown_option_is_reported_by_the_parser_it_was_given_to(imported, capsys, argv, usage):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith(usage), err
    assert err.rstrip().endswith("error: unrecognized arguments: --frobnicate")
    assert imported == [name for name in argv[:2] if name in cli.COMMANDS]  # nothing ran, nothing else imported


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "COMMAND" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_command_table_matches_the_modules(name):
    module = cli.import_command(name)
    assert cli.COMMANDS[name].help == module.HELP
    assert callable(module.add_arguments) and callable(module.run)


# ---------------------------------------------------------------------------------------------------------------------
# errors and Ctrl-C through a command that raises what the test asks
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def raising_command(monkeypatch):
    """`sparseinst list` replaced by a command that raises ``args.exc`` (set through the returned function)."""
    state: dict[str, BaseException | str | None] = {"exc": None, "hint": None}

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--flag", action="store_true")

    def run(args: argparse.Namespace) -> int:
        if state["hint"]:
            args.resume_hint = state["hint"]
        exc = state["exc"]
        assert isinstance(exc, BaseException)
        raise exc

    module = types.ModuleType("fake_command")
    module.add_arguments = add_arguments  # type: ignore[attr-defined]
    module.run = run  # type: ignore[attr-defined]
    monkeypatch.setattr(cli, "import_command", lambda name: module)
    monkeypatch.delenv("SPARSEINST_DEBUG", raising=False)

    def with_error(exc: BaseException, hint: str | None = None) -> None:
        state.update(exc=exc, hint=hint)

    return with_error


@pytest.mark.parametrize(
    "error",
    [
        SparseInstError("model 'x' has no weights; pass --checkpoint PATH"),
        DataError("train.json: annotation 7 has no segmentation"),
        FileNotFoundError(2, "No such file or directory", "photo.jpg"),
        PermissionError(13, "Permission denied", "/root/out"),
    ],
)
def test_user_errors_are_one_line(raising_command, capsys, error):
    raising_command(error)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"sparseinst list: error: {error}"]  # one line: --help says --debug shows more


def test_the_cli_words_of_an_error_replace_the_python_ones(raising_command, capsys):
    raising_command(SparseInstError("pass model_name='x'", cli_message="pass --model x"))
    assert cli.main(["list"]) == 1
    assert capsys.readouterr().err == "sparseinst list: error: pass --model x\n"


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("shape mismatch in decoder"),
        ValueError("math domain error"),  # a plain ValueError is a bug: every user error is a SparseInstError
        json.JSONDecodeError("Expecting value", "", 0),  # so is a parse error not turned into DataError where read
        KeyError("pred_masks"),
        TypeError("unsupported operand"),
        ZeroDivisionError(),
    ],
)
def test_bugs_show_the_traceback_and_where_to_report(raising_command, capsys, error):
    raising_command(error)
    assert cli.main(["list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):")
    assert f"{type(error).__name__}" in err and "error:" not in err.splitlines()[-1]
    assert "this is a bug" in err and cli.ISSUES_URL in err and "the command you ran" in err


def test_debug_shows_the_traceback_of_user_errors(raising_command, monkeypatch):
    raising_command(SparseInstError("bad input"))
    with pytest.raises(SparseInstError, match="bad input"):
        cli.main(["--debug", "list"])
    monkeypatch.setenv("SPARSEINST_DEBUG", "1")
    with pytest.raises(SparseInstError, match="bad input"):
        cli.main(["list"])


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_interrupt_is_a_line_of_its_own_with_the_resume_hint(raising_command, monkeypatch, capsys):
    raising_command(KeyboardInterrupt())
    assert cli.main(["list"]) == 130
    assert capsys.readouterr().err == "sparseinst list: interrupted\n"
    raising_command(KeyboardInterrupt(), hint="resume with: sparseinst train --resume --out runs/x")
    terminal = _Terminal()
    terminal.write("train  42%|####      | 5/12")  # a progress bar left mid-line
    monkeypatch.setattr("sys.stderr", terminal)
    assert cli.main(["list"]) == 130
    lines = terminal.getvalue().splitlines()
    assert lines[-1] == "sparseinst list: interrupted; resume with: sparseinst train --resume --out runs/x"
    assert lines[0] == "train  42%|####      | 5/12"


def test_interrupt_while_the_command_module_loads(monkeypatch, capsys):
    def slow_import(name: str) -> types.ModuleType:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "import_command", slow_import)
    assert cli.main(["list", "r50"]) == 130
    assert capsys.readouterr().err == "sparseinst list: interrupted\n"


STARTUP_PROBE = """
import sys
from sparseinst_zoo import cli
for argv in (["--help"], ["--version"]):
    try:
        cli.main(argv)
    except SystemExit:
        pass
heavy = sorted(m for m in ("torch", "timm", "numpy", "PIL") if m in sys.modules)
commands = sorted(m for m in sys.modules if m.startswith("sparseinst_zoo.commands."))
print("IMPORTED", heavy, commands, file=sys.stderr)
"""


def test_help_and_version_import_neither_torch_nor_commands():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", STARTUP_PROBE], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "IMPORTED [] []"


def test_a_reader_that_closes_the_pipe_ends_the_command_quietly():
    read, write = os.pipe()
    os.close(read)  # as `sparseinst list | head -1` once head has its line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sparseinst_zoo", "list"], stdout=write, stderr=subprocess.PIPE, text=True
        )
    finally:
        os.close(write)
    assert (proc.returncode, proc.stderr) == (141, "")


def test_a_conversion_error_names_the_argument_of_its_caller(tmp_path, capsys):
    """Python callers are told model_name=, `sparseinst convert` users --model (a CLI flag means nothing to Python)."""
    import torch

    from sparseinst_zoo import create_model
    from sparseinst_zoo.convert import convert_checkpoint
    from sparseinst_zoo.errors import ConversionError

    path = tmp_path / "unknown.pth"
    torch.save({"model": create_model("sparseinst_tiny_test").state_dict()}, path)
    with pytest.raises(ConversionError, match=r"fits none of the reference models") as info:
        convert_checkpoint(path)
    assert "model_name=" in str(info.value) and "--model" not in str(info.value)
    assert cli.main(["convert", str(path), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sparseinst convert: error: could not recognise") and err.count("\n") == 1
    assert "(--model NAME)" in err and "model_name" not in err


def test_download_failures_go_to_stderr_and_json_output_stays_json(tmp_path, capsys):
    """A failure was printed on stdout, and --json output ended in a 'cache: ...' line no JSON reader takes."""
    argv = ["download", "sparseinst_r50_gaim", "sparseinst_tiny_test", "--cache-dir", str(tmp_path)]
    assert cli.main([*argv, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[0].startswith("sparseinst download: error: sparseinst_r50_gaim: Unknown model")
    assert "Did you mean 'sparseinst_r50_giam'" in captured.err
    assert captured.err.splitlines()[1:] == [
        "sparseinst download: error: sparseinst_tiny_test: 'sparseinst_tiny_test' has no released weights "
        "(see `sparseinst list --pretrained`)",
        "sparseinst download: 2 of 2 model(s) failed",
    ]
    assert cli.main(argv[:2] + argv[3:]) == 1
    assert capsys.readouterr().out == f"cache: {tmp_path / 'sparseinst-zoo'}\n"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--workers", "-1"], "workers must be >= 0 (0 loads the data in the main process), got -1"),  # a traceback
        (["--test-size", "-1"], "test_size must be >= 1, got -1"),  # was accepted
        (["--num-classes", "0"], "num_classes must be >= 1, got 0"),
    ],
)
def test_train_refuses_bad_numbers_in_one_line(flags, message, capsys):
    assert cli.main(["train", "--train-json", "t.json", "--train-images", "images", *flags]) == 1
    assert capsys.readouterr().err == f"sparseinst train: error: {message}\n"


def test_train_draws_its_bar_on_a_terminal_only_unless_told():
    from sparseinst_zoo.commands import train as train_command

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    data = ["--train-json", "t.json", "--train-images", "images", "--device", "cpu"]
    assert train_command.config_from_args(parser.parse_args(data)).progress is False  # pytest's stderr: no terminal
    assert train_command.config_from_args(parser.parse_args([*data, "--progress"])).progress is True
    assert train_command.config_from_args(parser.parse_args([*data, "--no-progress"])).progress is False


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_help_example_is_shown_and_parses(name, capsys):
    """The examples of `sparseinst COMMAND --help` (its module's docstring) name only options that exist."""
    import shlex

    lines = cli.examples(cli.import_command(name))
    assert lines, f"`sparseinst {name} --help` shows no example"
    with pytest.raises(SystemExit):
        cli.main([name, "--help"])
    shown = capsys.readouterr().out
    for line in lines:
        assert f"  {line}" in shown
        argv = shlex.split(line, comments=True)
        if argv[0] == "sparseinst":
            assert argv[1] == name
            cli._parse(cli.build_parser(name), argv[1:])  # an unknown option or bad value exits here
        else:  # python -c / torchrun -m: the module they name can be run
            assert argv[0] in ("python", "torchrun") and (
                "-c" in argv or argv[argv.index("-m") + 1] == "sparseinst_zoo.cli"
            )


def test_val_names_a_long_class_mismatch_in_a_short_line(tmp_path, caplog):
    """80 model classes against 80 other names: the warning listed all 160 (1,800 characters)."""
    from sparseinst_zoo.evaluation import _check_classes

    model = types.SimpleNamespace(num_classes=80, label_names=tuple(f"class_{i}" for i in range(80)))
    dataset = types.SimpleNamespace(num_classes=80, label_names=tuple(f"c{i}" for i in range(80)), source="gt.json")
    _check_classes(model, dataset)  # type: ignore[arg-type]
    assert "['class_0', 'class_1', 'class_2', 'class_3', 'class_4', 'class_5' and 74 more]" in caplog.text
    assert "class_6" not in caplog.text and len(caplog.text) < 400
