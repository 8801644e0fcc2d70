"""Training end to end on a synthetic shapes dataset: learning, CLI, resume, NaN handling, options."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import sparseinst_zoo
from sparseinst_zoo._device import select_device
from sparseinst_zoo.cli import main
from sparseinst_zoo.commands import plot as plot_command
from sparseinst_zoo.commands import train as train_command
from sparseinst_zoo.commands import val as val_command
from sparseinst_zoo.data.synthetic import SHAPE_CLASSES, make_shapes_dataset, make_shapes_yolo_dataset
from sparseinst_zoo.errors import DataError, SparseInstError
from sparseinst_zoo.evaluation import METRIC_KEYS, evaluate
from sparseinst_zoo.training import plot as training_plot
from sparseinst_zoo.training.config import TrainConfig, resolve_defaults
from sparseinst_zoo.training.engine import Trainer, TrainingDiverged
from sparseinst_zoo.training.losses import SparseInstCriterion
from sparseinst_zoo.training.metrics_log import ProgressBar, console_above_bar
from sparseinst_zoo.training.run_folder import claim_run_folder, discard_unstarted_run

_TWIN_ITERS = 60


def _parse(module, argv):
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """48 training and 16 validation 64x64 images with 1-2 large shapes each."""
    root = tmp_path_factory.mktemp("shapes")
    train = make_shapes_dataset(root / "train", num_images=48, max_shapes=2, radius=(0.2, 0.32), seed=0)
    val = make_shapes_dataset(root / "val", num_images=16, max_shapes=2, radius=(0.2, 0.32), seed=1)
    return {"train_json": train, "train_images": str(root / "train"), "val_json": val, "val_images": str(root / "val")}


def _tiny(shapes, out, **kwargs):
    args = dict(
        model="sparseinst_tiny_test",
        train_json=shapes["train_json"],
        train_images=shapes["train_images"],
        batch_size=4,
        lr=2e-3,
        min_sizes=(64,),
        max_size=96,
        out=str(out),
        workers=0,
        progress=False,
        log_period=1,
        tensorboard=False,
    )
    args.update(kwargs)
    return args


def test_cli_training_learns_and_the_result_predicts_and_evaluates(shapes, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="sparseinst_zoo")
    torch.manual_seed(0)
    start = evaluate(
        sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3), shapes["val_json"], shapes["val_images"]
    )["AP50"]
    out = tmp_path / "run"
    argv = [
        "--model",
        "sparseinst_tiny_test",
        "--train-json",
        shapes["train_json"],
        "--train-images",
        shapes["train_images"],
        "--val-json",
        shapes["val_json"],
        "--val-images",
        shapes["val_images"],
        "--iters",
        "120",
        "--batch-size",
        "8",
        "--lr",
        "2e-3",
        "--min-sizes",
        "64",
        "--max-size",
        "96",
        "--eval-period",
        "60",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-progress",
        "--no-tensorboard",
    ]
    assert train_command.run(_parse(train_command, argv)) == 0
    printed = capsys.readouterr().out
    assert "trained 120 iterations" in printed and "AP50" in printed

    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    losses = [r["loss"] for r in records if r["type"] == "train"]
    assert [r["step"] for r in evals] == [60, 120]
    assert losses[-1] < 0.6 * losses[0]
    final_ap50 = evals[-1]["AP50"]
    assert final_ap50 > start + 20, (start, final_ap50)  # random init scores ~0 on this data
    # --no-progress: a line per evaluation and per log period
    assert "step 60/120: AP " in caplog.text and "step 120/120: loss " in caplog.text
    with Image.open(out / "results.png") as png:  # drawn at each evaluation and at the end
        assert png.size[0] > 1000
    (out / "results.png").unlink()
    assert plot_command.run(_parse(plot_command, [str(out)])) == 0
    assert (out / "results.png").is_file()

    best = sparseinst_zoo.create_model(str(out / "best"))
    assert best.label_names == SHAPE_CLASSES and best.num_classes == 3
    assert best.pretrained_cfg.extra["category_ids"] == [3, 7, 11]
    # the run's checkpoint given as --checkpoint / checkpoint_path keeps them too (it gave class_0.. and ids 0..2)
    resumed = sparseinst_zoo.create_model("sparseinst_tiny_test", checkpoint_path=out / "checkpoints" / "last.pt")
    assert resumed.label_names == SHAPE_CLASSES and resumed.pretrained_cfg.extra["category_ids"] == [3, 7, 11]
    assert resumed.pretrained_cfg.min_size == best.pretrained_cfg.min_size
    results = best.predict(os.path.join(shapes["val_images"], "00001.png"), score_threshold=0.3)
    assert len(results) == 1 and len(results[0]) >= 1
    assert (out / "last" / "model.safetensors").is_file() and "mask AP" in (out / "best" / "README.md").read_text()

    metrics_path = tmp_path / "metrics.json"
    val_args = _parse(
        val_command,
        [
            str(out / "best"),
            "--json",
            shapes["val_json"],
            "--images",
            shapes["val_images"],
            "--out",
            str(metrics_path),
            "--workers",
            "0",
        ],
    )
    assert val_command.run(val_args) == 0
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) == {*METRIC_KEYS, "per_class"} and set(metrics["per_class"]) == set(SHAPE_CLASSES)
    assert metrics["AP50"] == pytest.approx(max(e["AP50"] for e in evals if e["AP"] == max(x["AP"] for x in evals)))


class _StopAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def __call__(self, trainer, step, record) -> None:
        if step == self.step:
            raise KeyboardInterrupt


def test_resume_continues_the_same_curve(shapes, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="sparseinst_zoo")
    full = Trainer(**_tiny(shapes, tmp_path / "full", iters=6, checkpoint_period=3))
    full.train()
    interrupted = Trainer(**_tiny(shapes, tmp_path / "cut", iters=6, checkpoint_period=3), callbacks=[_StopAt(5)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert "interrupted at step 5; to continue from the last checkpoint (step 3" in caplog.text
    assert f"sparseinst_zoo.train(resume=True, out={str(tmp_path / 'cut')!r})" in caplog.text  # a Python caller's words
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 3
    stale = tmp_path / "cut" / "checkpoints" / ".tmp-x1y2.pt"  # a checkpoint write killed half-way
    stale.write_bytes(b"PK\x03\x04 half a zip")
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as handle:  # a line cut off by a full disk
        handle.write('{"type": "train", "step": 6, "lo')
    Trainer(resume=True, out=str(tmp_path / "cut"), progress=False).train()
    assert not stale.exists() and "removed 1 unfinished temporary file" in caplog.text

    def curve(run):
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [value for r in map(json.loads, lines) for value in (r["step"], r["loss"], r["lr"])]

    assert curve("cut")[::3] == [1, 2, 3, 4, 5, 6]
    assert curve("cut") == pytest.approx(curve("full"), rel=1e-6, abs=1e-9)
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-6, atol=1e-7, msg=key)
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]


def test_resume_keeps_the_log_window_and_the_best_metrics(shapes, tmp_path, capsys):
    """A checkpoint inside a log window used to drop the window's first steps (the resumed run logged the mean of
    fewer steps), and a resumed run forgot its best evaluation (``summary["best"]`` None, no ``best`` line)."""
    settings = dict(iters=8, checkpoint_period=3, log_period=4, eval_period=3, val_json=shapes["val_json"])
    settings["val_images"] = shapes["val_images"]
    full = Trainer(**_tiny(shapes, tmp_path / "full", **settings)).train()
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, tmp_path / "cut", **settings), callbacks=[_StopAt(5)]).train()
    assert main(["train", "--resume", "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert f"best ({tmp_path / 'cut'}/best): AP {full['best']['AP']:.2f}" in capsys.readouterr().out
    resumed = Trainer(**_tiny(shapes, tmp_path / "cut2", **settings), callbacks=[_StopAt(7)])
    with pytest.raises(KeyboardInterrupt):
        resumed.train()
    summary = Trainer(resume=True, out=str(tmp_path / "cut2"), progress=False).train()
    assert summary["best"] == full["best"] and summary["last"] == full["last"]

    def curve(run):
        records = map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())
        return [(r["step"], r["loss"], r["lr"]) for r in records if r["type"] == "train"]

    assert [step for step, _, _ in curve("cut")] == [4, 8]
    assert curve("cut") == curve("full") == curve("cut2")


def test_resume_from_a_checkpoint_file_continues_its_own_run_not_the_default_folder(
    shapes, tmp_path, monkeypatch, capsys
):
    """``--resume runs/exp/checkpoints/last.pt`` without ``--out`` resumed into runs/train, overwriting the
    checkpoint, models and metrics.jsonl of the run there."""
    monkeypatch.chdir(tmp_path)
    sparseinst_zoo.train(**_tiny(shapes, "runs/train", iters=2))
    before = {p: p.read_bytes() for p in (tmp_path / "runs" / "train").rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, "runs/exp", iters=4, checkpoint_period=2), callbacks=[_StopAt(3)]).train()
    checkpoint = os.path.join("runs", "exp", "checkpoints", "last.pt")
    with pytest.raises(
        SparseInstError,
        match=r"runs/train holds another run .*; resume into .* with out='runs/exp', or give an out that",
    ):
        Trainer(resume=checkpoint, out=str(tmp_path / "runs" / "train"))
    assert main(["train", "--resume", checkpoint, "--no-progress"]) == 0
    assert "final model: runs/exp/last" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (tmp_path / "runs" / "train").rglob("*") if p.is_file()} == before


def test_resume_refuses_changed_settings_and_a_finished_run(shapes, tmp_path, capsys):
    """Settings given with --resume used to be ignored without a word (``--iters 400`` trained nothing more), and
    resuming a finished run rewrote its ``last/`` without its metrics."""
    out = tmp_path / "run"
    settings = _tiny(shapes, out, iters=4, checkpoint_period=2, val_json=shapes["val_json"])
    settings["val_images"] = shapes["val_images"]
    with pytest.raises(KeyboardInterrupt):
        Trainer(**settings, callbacks=[_StopAt(3)]).train()
    restart = re.escape(f"start a new run from its weights (checkpoint={str(out / 'best')!r})")  # no last/ yet
    with pytest.raises(
        SparseInstError, match=r"but iters=8 \(the checkpoint has 4\) was given; drop it to continue.*" + restart
    ):
        Trainer(resume=True, out=str(out), iters=8, workers=1)
    with pytest.raises(
        SparseInstError,
        match="is a model folder, .*" + re.escape(f"continue its run with resume=True, out={str(out)!r}, or"),
    ):
        Trainer(resume=str(out / "best"))
    assert main(["train", "--resume", "--out", str(out), "--lr", "1", "--min-sizes", "64,96"]) == 1
    err = capsys.readouterr().err
    assert "--min-sizes 64,96 (the checkpoint has [64]), --lr 1.0 (the checkpoint has 0.002) were given" in err
    argv = ["--model", "sparseinst_tiny_test", "--train-json", shapes["train_json"], "--train-images"]
    argv += [shapes["train_images"], "--val-json", shapes["val_json"], "--val-images", shapes["val_images"]]
    argv += ["--iters", "4", "--batch-size", "4", "--lr", "2e-3", "--min-sizes", "64", "--max-size", "96"]
    argv += ["--checkpoint-period", "2", "--log-period", "1", "--precision", "fp32", "--out", str(out), "--resume"]
    config = train_command.config_from_args(_parse(train_command, argv))  # the run's own command, plus --resume
    assert Trainer(resume=True, **config).train()["step"] == 4
    card = (out / "last" / "README.md").read_text()
    assert "mask AP" in card
    with pytest.raises(
        SparseInstError, match=r"end of a finished run \(step 4 of 4\): nothing to resume; .*\(checkpoint='"
    ):
        Trainer(resume=True, out=str(out)).train()
    assert (out / "last" / "README.md").read_text() == card
    with pytest.raises(
        SparseInstError, match=re.escape(f"new run from its weights (checkpoint={str(out / 'last')!r})")
    ):
        Trainer(resume=True, out=str(out), iters=8)


def test_a_run_resumes_from_any_working_directory(shapes, tmp_path, monkeypatch):
    """The data paths were saved as typed: resumed from another directory the run did not find its data, and the
    same files named by another path were refused as a changed setting."""
    monkeypatch.chdir(os.path.dirname(shapes["train_images"]))
    relative = {name: os.path.relpath(shapes[name]) for name in ("train_json", "train_images")}
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, out, iters=2, checkpoint_period=1, **relative), callbacks=[_StopAt(2)]).train()
    assert json.loads((out / "train_config.json").read_text())["train_json"] == str(shapes["train_json"])
    monkeypatch.chdir(tmp_path)
    checkpoint = str(out / "checkpoints" / "last.pt")  # neither best/ (no evaluation) nor last/ (not finished)
    with pytest.raises(
        SparseInstError, match=re.escape(f"start a new run from its weights (checkpoint={checkpoint!r})")
    ):
        Trainer(resume=True, out=str(out), lr=1.0)
    (tmp_path / "images").symlink_to(shapes["train_images"])
    same = {"train_json": str(shapes["train_json"]), "train_images": "images"}  # what the run started with
    assert Trainer(resume=True, out=str(out), progress=False, **same).train()["step"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(shapes, tmp_path, monkeypatch):
    original = SparseInstCriterion.forward
    calls = {"n": 0}

    def poisoned(self, outputs, targets, input_shape=None):
        calls["n"] += 1
        losses = original(self, outputs, targets, input_shape)
        if calls["n"] == 3:
            losses["loss_dice"] = losses["loss_dice"] * float("nan")
        return losses

    monkeypatch.setattr(SparseInstCriterion, "forward", poisoned)
    trainer = Trainer(**_tiny(shapes, tmp_path / "nan", iters=5, checkpoint_period=2))
    with pytest.raises(TrainingDiverged, match=r"loss is not finite at step 3 .*loss_dice=nan.*last.pt \(step 2\)"):
        trainer.train()
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_frozen_backbone_ema_clipping_bf16(shapes, tmp_path):
    torch.manual_seed(0)
    reference = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    summary = sparseinst_zoo.train(
        **_tiny(
            shapes,
            tmp_path / "opts",
            iters=3,
            freeze_backbone=True,
            ema=True,
            ema_decay=0.5,
            clip_grad=1.0,
            precision="bf16",
            schedule="cosine",
        )
    )
    assert summary["step"] == 3 and summary["best"] is None  # no validation set
    last = sparseinst_zoo.create_model(str(tmp_path / "opts" / "last"))
    for (name, before), after in zip(reference.backbone.state_dict().items(), last.backbone.state_dict().values()):
        torch.testing.assert_close(after, before, msg=name)  # same seed, frozen
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(reference.decoder.state_dict().values(), last.decoder.state_dict().values())
    )
    assert changed


def test_ema_warmup_makes_a_short_run_follow_training(shapes, tmp_path):
    """With a constant decay of 0.9998 a short run's EMA (what it evaluates and saves) stays at its first step."""
    behind = {}
    for warmup in (True, False):
        torch.manual_seed(0)
        sparseinst_zoo.train(**_tiny(shapes, tmp_path / str(warmup), iters=6, ema=True, ema_warmup=warmup))
        state = torch.load(tmp_path / str(warmup) / "checkpoints" / "last.pt", weights_only=True)
        weights = [k for k, v in state["model"].items() if v.is_floating_point()]
        behind[warmup] = float(sum((state["ema"][k] - state["model"][k]).norm() for k in weights))
    assert behind[True] < 0.5 * behind[False], behind  # warm-up decays 0, 0.37, 0.52, 0.60, 0.66, 0.70

    saved = TrainConfig.from_saved({}, **_tiny(shapes, tmp_path / "old", ema=True)).to_dict()
    del saved["ema_warmup"]  # a run saved before the warm-up existed resumes with its constant decay
    assert TrainConfig.from_saved(saved).ema_warmup is False


def test_fp16_gradient_scaling_trains_and_resumes(shapes, tmp_path, recwarn):
    torch.manual_seed(0)
    initial = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3).state_dict()
    Trainer(**_tiny(shapes, tmp_path / "full", iters=4, checkpoint_period=2, amp="fp16")).train()
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    assert full["scaler"]["scale"] <= 65536.0 and full["scaler"]["_growth_tracker"] >= 0  # a live GradScaler
    assert all(torch.isfinite(v).all() for v in full["model"].values() if v.is_floating_point())
    assert any(not torch.equal(full["model"][k], v) for k, v in initial.items() if v.is_floating_point())
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]  # skipped fp16 steps are expected

    with pytest.raises(KeyboardInterrupt):
        Trainer(
            **_tiny(shapes, tmp_path / "cut", iters=4, checkpoint_period=2, amp="fp16"), callbacks=[_StopAt(3)]
        ).train()
    Trainer(resume=True, out=str(tmp_path / "cut"), progress=False).train()
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert cut["scaler"] == full["scaler"]
    for key, value in full["model"].items():
        torch.testing.assert_close(cut["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_bad_settings_are_rejected(shapes, tmp_path):
    with pytest.raises(ValueError, match="iters or epochs"):
        TrainConfig(**_tiny(shapes, tmp_path, iters=2, epochs=1))
    with pytest.raises(SparseInstError, match="precision must be one of"):
        TrainConfig(**_tiny(shapes, tmp_path, precision="fp8"))
    with pytest.raises(SparseInstError, match="lr must be a finite number, got nan"):
        TrainConfig(**_tiny(shapes, tmp_path, lr=float("nan")))
    with pytest.raises(SparseInstError, match="lr must be a finite number"):
        train_command.config_from_args(
            _parse(train_command, ["--train-json", "a", "--train-images", "b", "--lr", "nan"])
        )
    with pytest.raises(ValueError, match="both val_json and val_images"):
        TrainConfig(**_tiny(shapes, tmp_path, val_json=shapes["val_json"]))
    with pytest.raises(ValueError, match="num_classes=2 but .* has 3 categories"):
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=1, num_classes=2))
    with pytest.raises(ValueError, match="num_classes=5 but .* has 3 categories"):  # not after training, at eval
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=1, num_classes=5))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        Trainer(resume=True, out=str(tmp_path / "never"))
    with pytest.raises(ValueError, match="name the training data: --data DATA.yaml, or --train-json"):
        train_command.run(_parse(train_command, ["--out", str(tmp_path)]))


class _Built(Exception):
    pass


def test_pretrained_backbone_option_reaches_the_model_builder(shapes, tmp_path, monkeypatch, caplog):
    seen = []

    def fake_create_model(name, **kwargs):
        seen.append((name, kwargs))
        raise _Built

    monkeypatch.setattr("sparseinst_zoo._factory.create_model", fake_create_model)
    argv = [
        "--model",
        "sparseinst_giam",
        "--backbone",
        "resnet18",
        "--pretrained-backbone",
        "--train-json",
        shapes["train_json"],
        "--train-images",
        shapes["train_images"],
        "--out",
        str(tmp_path / "a"),
    ]
    with pytest.raises(_Built):
        train_command.run(_parse(train_command, argv))
    assert seen[-1][0] == "sparseinst_giam"
    assert seen[-1][1]["backbone"] == "resnet18" and seen[-1][1]["pretrained_backbone"] is True
    with pytest.raises(_Built):  # without any weights: no download, and a warning says so
        sparseinst_zoo.train(**_tiny(shapes, tmp_path / "b", model="sparseinst_giam", backbone="resnet18", iters=1))
    assert "pretrained_backbone" not in seen[-1][1] and "from random initialisation" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # a model that cannot be built: no run


def test_an_evaluation_is_one_line_even_with_the_root_logger_at_info(shapes, tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)  # what `sparseinst train` sets up (logging.basicConfig(level=INFO))
    val = {"val_json": shapes["val_json"], "val_images": shapes["val_images"]}
    sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=1, log_period=10, **val))
    assert not [r for r in caplog.records if r.name.startswith("faster_coco_eval")]
    assert [r.getMessage() for r in caplog.records if r.name == "sparseinst_zoo"][-1].startswith("step 1/1: AP ")
    captured = capfd.readouterr()
    for noise in ("Evaluate annotation type", "COCOeval_opt", "Average Precision", "DONE"):
        assert noise not in captured.err + captured.out + caplog.text
    assert logging.getLogger("faster_coco_eval").level == logging.NOTSET  # restored after the evaluation


def test_default_eval_period_gives_five_evaluations(shapes, tmp_path, monkeypatch):
    steps = []

    def fake_evaluate(model, *args, **kwargs):
        steps.append(len(steps))
        return {**dict.fromkeys(METRIC_KEYS, 1.0), "per_class": dict.fromkeys(SHAPE_CLASSES, 1.0)}

    monkeypatch.setattr("sparseinst_zoo.training.engine.evaluate", fake_evaluate)
    sparseinst_zoo.train(
        **_tiny(shapes, tmp_path, iters=9, val_json=shapes["val_json"], val_images=shapes["val_images"])
    )
    assert len(steps) == 5  # at 2, 4, 6, 8 and the end (not every step of a 9-step run)


def test_a_new_run_never_touches_an_earlier_one(shapes, tmp_path):
    out = tmp_path / "runs" / "train"
    first = sparseinst_zoo.train(**_tiny(shapes, out, iters=1))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    second = sparseinst_zoo.train(**_tiny(shapes, out, iters=2))
    assert first["out"] == str(out) and second["out"] == str(out) + "2"
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    assert json.loads((out.parent / "train2" / "train_config.json").read_text())["iters"] == 2
    third = sparseinst_zoo.train(**_tiny(shapes, out, iters=1, exist_ok=True))
    assert third["out"] == str(out) and not (out / "best").exists()


def test_trainings_started_at_the_same_moment_never_share_a_run_folder(tmp_path):
    """A parallel sweep into ``runs/train``: each run reserves its folder before writing anything, so none shares
    one (claiming by "holds a run" alone gave all of them ``runs/train``)."""
    out, start, chosen = str(tmp_path / "runs" / "train"), threading.Barrier(4), []

    def claim() -> None:
        start.wait()
        chosen.append(claim_run_folder(out, exist_ok=False))

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(folder for folder, _ in chosen) == [out, out + "2", out + "3", out + "4"]
    folder, created = next((folder, created) for folder, created in chosen if folder == out + "4")
    discard_unstarted_run(folder, created)  # a run that stopped before its first result gives its name back
    assert not os.path.exists(folder) and claim_run_folder(out, exist_ok=False)[0] == out + "4"


def test_exist_ok_drops_the_earlier_runs_tensorboard_events(shapes, tmp_path):
    """The earlier run's TensorBoard events stayed in ``tensorboard/``: its curves showed as the new run's."""
    out = tmp_path / "run"
    sparseinst_zoo.train(**_tiny(shapes, out, iters=1))
    events = out / "tensorboard" / "events.out.tfevents.1700000000.host.1.0"
    events.parent.mkdir()
    events.write_bytes(b"an earlier run's scalars")
    notes = out / "tensorboard" / "notes.txt"  # not ours: kept
    notes.write_text("mine")
    sparseinst_zoo.train(**_tiny(shapes, out, iters=1, exist_ok=True))
    assert not events.exists() and notes.read_text() == "mine"


def test_exist_ok_drops_the_exports_of_the_earlier_runs_models(tmp_path):
    """`sparseinst export RUN/best` writes RUN/best.onnx; after an --exist-ok rerun it stayed, and `val RUN/best.onnx`
    measured the earlier run's model while a new export went to best_2.onnx."""
    out = tmp_path / "run"
    (out / "best").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        (out / "best" / name).write_text("{}")
    stale = ["best.onnx", "best_2.onnx", "best.xml", "best.bin", "best.pt2", "last.onnx", "best_640x864_2.onnx"]
    mine = ["best_model.onnx", "notes.txt", "best.onnx.txt"]
    for name in stale + mine:
        (out / name).write_text(name)
    assert claim_run_folder(str(out), exist_ok=True)[0] == str(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(mine)


def test_a_resumed_run_hides_the_tensorboard_steps_it_logs_again(shapes, tmp_path):
    """TensorBoard showed the steps between the checkpoint and the interruption twice (old and new values)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, out, iters=4, checkpoint_period=2, tensorboard=True), callbacks=[_StopAt(4)]).train()
    Trainer(resume=True, out=str(out), progress=False).train()
    runs = EventMultiplexer().AddRunsFromDirectory(str(out / "tensorboard"))
    runs.Reload()
    assert [event.step for event in runs.Scalars(".", "train/loss")] == [1, 2, 3, 4]


def test_a_run_that_fails_before_its_first_result_leaves_no_folder(shapes, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    with pytest.raises(ValueError, match="num_classes=2 but"):  # rejected data / settings: nothing is made
        sparseinst_zoo.train(**_tiny(shapes, runs / "t", iters=1, num_classes=2))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError):
        sparseinst_zoo.train(**_tiny(shapes, runs / "t", iters=1, train_json=str(tmp_path / "broken.json")))
    assert not runs.exists()
    stop = _StopAt(1)  # Ctrl-C after the first step: before any log record (log_period) or checkpoint
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, runs / "t", iters=4, log_period=10, tensorboard=True), callbacks=[stop]).train()
    assert not runs.exists()  # the run folder and the parent made for it are taken back
    mine = tmp_path / "mine"  # a folder of the user's: only what the run wrote there goes
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        Trainer(**_tiny(shapes, mine, iters=4, log_period=10), callbacks=[stop]).train()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    summary = sparseinst_zoo.train(**_tiny(shapes, runs / "t", iters=1))
    assert summary["out"] == str(runs / "t")  # the next good run gets the name, not runs/t2


def test_bad_checkpoints_to_resume_from_say_what_they_are(tmp_path):
    pickled = tmp_path / "pickled.pt"
    torch.save({"config": argparse.Namespace(lr=1)}, pickled)  # needs real unpickling: refused
    with pytest.raises(SparseInstError, match="not a weights-only training checkpoint of sparseinst-zoo"):
        Trainer(resume=str(pickled), out=str(tmp_path))
    no_config = tmp_path / "weights.pt"
    torch.save({"step": 3, "model": {}}, no_config)
    with pytest.raises(
        SparseInstError,
        match=r"not a training checkpoint .*no 'optimizer', .*'config'.* use checkpoint instead of resume",
    ):
        Trainer(resume=str(no_config), out=str(tmp_path))
    not_torch = tmp_path / "annotations.json"
    not_torch.write_text("{}")
    with pytest.raises(SparseInstError, match="is not a training checkpoint .it is not a torch file"):
        Trainer(resume=str(not_torch), out=str(tmp_path))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(no_config.read_bytes()[:100])
    with pytest.raises(SparseInstError, match="cannot be read as a training checkpoint"):
        Trainer(resume=str(truncated), out=str(tmp_path))


def test_exploding_lr_ends_in_the_divergence_message_not_in_the_matcher(shapes, tmp_path):
    with pytest.raises(TrainingDiverged, match=r"training stopped: the (model's outputs|loss) (are|is) not finite"):
        sparseinst_zoo.train(**_tiny(shapes, tmp_path / "lr", iters=6, lr=1e6))


def test_checkpoint_period_scales_to_the_run_and_ctrl_c_gives_the_command(shapes, tmp_path, caplog, capsys):
    trainer = Trainer(**_tiny(shapes, tmp_path / "short", iters=4, progress=True), callbacks=[_StopAt(2)])
    handler = logging.StreamHandler(sys.stderr)  # the console handler a CLI run has
    logging.getLogger("sparseinst_zoo").addHandler(handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            trainer.train()
    finally:
        logging.getLogger("sparseinst_zoo").removeHandler(handler)
    assert re.search(r"(^|\n)interrupted at step 2; ", capsys.readouterr().err)  # not glued to the bar
    assert torch.load(tmp_path / "short" / "checkpoints" / "last.pt", weights_only=True)["step"] == 1  # ceil(4/5)
    assert f"run `sparseinst_zoo.train(resume=True, out={str(tmp_path / 'short')!r})`" in caplog.text


def test_sigterm_stops_training_as_ctrl_c_does(shapes, tmp_path, monkeypatch, caplog, capsys):
    """SIGTERM (kill, timeout, a scheduler's preemption) killed the run without the line saying how to resume."""
    caplog.set_level(logging.INFO, logger="sparseinst_zoo")
    save_checkpoint = Trainer._save_checkpoint

    def save_then_terminate(trainer, run):
        save_checkpoint(trainer, run)
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in this (main) thread, right after the call

    monkeypatch.setattr(Trainer, "_save_checkpoint", save_then_terminate)
    out = tmp_path / "run"
    argv = ["train", "--model", "sparseinst_tiny_test", "--train-json", str(shapes["train_json"]), "--train-images"]
    argv += [shapes["train_images"], "--iters", "2", "--checkpoint-period", "1", "--batch-size", "4", "--min-sizes"]
    argv += ["64", "--max-size", "96", "--workers", "0", "--no-progress", "--no-tensorboard", "--out", str(out)]
    ignored: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: ignored.append(signum))  # without the fix
    try:
        assert main(argv) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not ignored and "sparseinst train: interrupted" in capsys.readouterr().err
    command = f"sparseinst train --resume --out {shlex.quote(str(out))}"
    assert "interrupted at step 1; to continue from the last checkpoint (step 1, " in caplog.text
    assert f"run `{command}`" in caplog.text
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 1
    assert not list((out / "checkpoints").glob(".tmp-*"))
    monkeypatch.setattr(Trainer, "_save_checkpoint", save_checkpoint)
    assert main(shlex.split(command)[1:] + ["--no-progress"]) == 0
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2


def test_log_lines_and_warnings_go_above_the_progress_bar(capsys):
    logger = logging.getLogger("sparseinst_zoo")
    handler = logging.StreamHandler(sys.stderr)  # the console handler a CLI run has
    logger.addHandler(handler)
    try:
        bar = ProgressBar(total=3, initial=0, enabled=True)
        bar.step({"step": 1, "lr": 1e-3, "loss": 1.0})
        with console_above_bar(True):
            logger.warning("a log line")
            warnings.warn("a warning", UserWarning, stacklevel=1)
        bar.close()
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert re.search(r"(^|[\r\n])a log line\n", err), err
    assert re.search(r"(^|[\r\n])\S+\.py:\d+: UserWarning: a warning", err), err


def test_precision_is_the_one_name_and_amp_a_deprecated_alias(shapes, tmp_path, capsys):
    with pytest.warns(DeprecationWarning, match="amp is deprecated"):
        config = TrainConfig(**_tiny(shapes, tmp_path, amp="fp16"))
    assert config.precision == "fp16" and "amp" not in config.to_dict()
    old = {**TrainConfig(**_tiny(shapes, tmp_path)).to_dict(), "amp": "bf16"}  # a checkpoint of an older version
    del old["precision"]
    assert TrainConfig.from_saved(old).precision == "bf16"
    coco = ["--train-json", "a", "--train-images", "b"]
    assert train_command.config_from_args(_parse(train_command, [*coco, "--amp", "none"])).precision == "fp32"
    assert "--amp is deprecated and will be removed; use --precision fp32" in capsys.readouterr().err
    auto = "fp16" if torch.cuda.is_available() else "bf16"
    assert train_command.config_from_args(_parse(train_command, [*coco, "--amp"])).precision == auto
    assert train_command.config_from_args(_parse(train_command, [*coco, "--precision", "auto"])).precision == auto
    with pytest.raises(SystemExit):  # the shared option's check
        _parse(train_command, [*coco, "--precision", "fp8"])


def test_the_device_is_chosen_and_checked_by_the_shared_chooser(shapes, tmp_path, capsys):
    assert Trainer(TrainConfig(**_tiny(shapes, tmp_path, device="auto")))._device() == select_device(None, local_rank=0)
    with pytest.raises(SparseInstError, match=r"'cuda:99' (was requested|does not exist)"):
        TrainConfig(**_tiny(shapes, tmp_path, device="cuda:99"))  # refused before any work starts
    coco = ["--train-json", shapes["train_json"], "--train-images", shapes["train_images"], "--out", str(tmp_path)]
    assert main(["train", *coco, "--device", "tpu"]) == 1
    assert "unknown device 'tpu'; use 'cpu', 'cuda', 'cuda:N' or 'auto'" in capsys.readouterr().err
    assert main(["val", "sparseinst_tiny_test", "--json", shapes["val_json"], "--images", "x", "--device", "tpu"]) == 1
    assert "unknown device 'tpu'" in capsys.readouterr().err


def test_defaults_fit_the_machine(shapes, tmp_path):
    config = TrainConfig(**{**_tiny(shapes, tmp_path), "model": None, "min_sizes": None, "max_size": None})
    cpu, gpu = resolve_defaults(config, "cpu"), resolve_defaults(config, "cuda")
    assert (cpu.model, cpu.backbone, cpu.max_size) == ("sparseinst_giam", "resnet18", 533)
    assert (gpu.model, gpu.backbone, gpu.min_sizes[0], gpu.max_size) == ("sparseinst_r50_giam", None, 416, 853)
    named = resolve_defaults(dataclasses.replace(config, model="sparseinst_r50_giam"), "cpu")
    assert named.min_sizes[0] == 416 and named.backbone is None  # a chosen model keeps the reference sizes


def test_the_cpu_starter_recipe_trains(shapes, tmp_path):
    argv = shlex.split(train_command.STARTER_RECIPE.replace("\\\n", " "))[2:]
    assert "--pretrained-backbone" in argv and "resnet18" in argv
    argv.remove("--pretrained-backbone")  # no network in the tests: same model from random initialisation
    text = " ".join(argv).replace("DATA/train.json", shapes["train_json"]).replace("DATA/val.json", shapes["val_json"])
    text = text.replace("--train-images DATA/images", f"--train-images {shapes['train_images']}")
    text = text.replace(f"--val-json {shapes['val_json']} --val-images DATA/images ", "")  # evaluation: tested above
    text = text.replace("--epochs 12", "--iters 2").replace("runs/starter", str(tmp_path / "starter"))
    args = _parse(train_command, [*text.split(), "--workers", "0", "--no-progress", "--no-tensorboard"])
    assert train_command.run(args) == 0
    model = sparseinst_zoo.create_model(str(tmp_path / "starter" / "last"))
    assert model.pretrained_cfg.min_size == 320 and model.pretrained_cfg.max_size == 533


DISK_FULL = """
mount -t tmpfs -o size={size} tmpfs {out} && exec {python} -m sparseinst_zoo.cli train --model sparseinst_tiny_test \
    --train-json {train_json} --train-images {train_images} --iters 1 --batch-size 2 --min-sizes 64 --max-size 96 \
    --workers 0 --no-progress --no-tensorboard --out {out}
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare for a private tmpfs")
@pytest.mark.parametrize(("size", "what"), [("3m", "the checkpoint"), ("7m", "the model folder")])
def test_a_full_disk_is_one_line_saying_so(shapes, tmp_path, size, what):
    out = tmp_path / "disk"
    out.mkdir()
    script = DISK_FULL.format(size=size, out=out, python=sys.executable, **shapes)
    try:
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", script],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
    except OSError:
        pytest.skip("unshare is not usable here")
    if "mount:" in proc.stderr or "unshare:" in proc.stderr:
        pytest.skip(f"no private tmpfs here: {proc.stderr.strip()}")
    assert proc.returncode == 1, proc.stderr
    assert re.search(rf"error: \[Errno 28\] .*disk is (probably )?full: could not write {what} ", proc.stderr), (
        proc.stderr
    )
    assert "free some space" in proc.stderr
    assert "Traceback" not in proc.stderr and "inline_container" not in proc.stderr


def test_kill_9_then_resume_is_bit_exact(shapes, tmp_path):
    options = (
        "--model sparseinst_tiny_test --iters 24 --batch-size 4 --lr 2e-3 --min-sizes 64 --max-size 96 "
        "--log-period 1 --checkpoint-period 3 --workers 0 --no-progress --no-tensorboard"
    ).split()

    def command(out):
        data = ["--train-json", shapes["train_json"], "--train-images", shapes["train_images"]]
        return [sys.executable, "-m", "sparseinst_zoo.cli", "train", *options, *data, "--out", str(out)]

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    # the uninterrupted run is independent of the other two: one thread each, so it runs on the other core meanwhile
    with (tmp_path / "full.stderr").open("w") as full_log:
        full = subprocess.Popen(command(tmp_path / "full"), env=env, stdout=subprocess.DEVNULL, stderr=full_log)
        victim = subprocess.Popen(
            command(tmp_path / "cut"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        checkpoint = tmp_path / "cut" / "checkpoints" / "last.pt"
        while victim.poll() is None and not checkpoint.exists():
            time.sleep(0.005)
        victim.kill()  # SIGKILL: no handler runs, possibly in the middle of a checkpoint write
        victim.wait()
        assert victim.returncode == -9 and torch.load(checkpoint, weights_only=True)["step"] < 24
        resumed = subprocess.run([*command(tmp_path / "cut"), "--resume"], env=env, capture_output=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-2000:]
        assert full.wait(timeout=300) == 0, (tmp_path / "full.stderr").read_text()[-2000:]

    def curve(run):
        records = [r for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
        return [(r["step"], r["loss"], r["lr"]) for r in records if r["type"] == "train"]

    assert curve("cut") == curve("full")  # exactly
    uninterrupted = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=True)
    cut = torch.load(checkpoint, weights_only=True)
    assert all(torch.equal(cut["model"][k], v) for k, v in uninterrupted["model"].items())
    assert not list(checkpoint.parent.glob(".tmp-*"))


def test_without_matplotlib_training_warns_once_and_skips_the_figure(tmp_path, monkeypatch, caplog):
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 1.0, "lr": 0.1}\n')
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if not installed
    monkeypatch.setattr(training_plot, "_warned_missing", False)
    assert training_plot.try_plot_run(str(tmp_path)) is None and training_plot.try_plot_run(str(tmp_path)) is None
    assert caplog.text.count("matplotlib is not installed") == 1 and not (tmp_path / "results.png").exists()
    with pytest.raises(ValueError, match=r'needs matplotlib: pip install "sparseinst-zoo\[plot\]"'):
        plot_command.run(_parse(plot_command, [str(tmp_path)]))
    with pytest.raises(FileNotFoundError, match="give the output folder of a `sparseinst train` run"):
        training_plot.plot_run(str(tmp_path / "nowhere"))


def test_plot_out_is_the_file_it_writes_or_one_line_refusing_it(tmp_path, capsys):
    """``--out curves`` wrote curves.png but printed ``curves``, ``--out FOLDER`` wrote FOLDER.png beside it, and
    ``--out curves.txt`` ended in a traceback calling itself a bug."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"type": "train", "step": 1, "loss": 1.0, "lr": 0.1}\n')
    assert main(["plot", str(run), "--out", str(tmp_path / "curves")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "curves.png") and (tmp_path / "curves.png").is_file()
    figures = tmp_path / "figures"
    figures.mkdir()
    assert training_plot.plot_run(str(run), str(figures)) == str(figures / "results.png")
    assert (figures / "results.png").is_file() and not (tmp_path / "figures.png").exists()
    for name in ("curves.txt", "run/metrics.jsonl"):
        assert main(["plot", str(run), "--out", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err
        assert f"{tmp_path / name}: not an image format matplotlib writes (use .png, .jpg, .pdf, .svg" in err
        assert "Traceback" not in err and "this is a bug" not in err
    assert (run / "metrics.jsonl").read_text().startswith('{"type": "train"')


@pytest.fixture(scope="module")
def twin_shapes(tmp_path_factory):
    """The same shapes twice: a YOLO-format data.yaml and COCO JSON files of exactly the same polygons."""
    root = tmp_path_factory.mktemp("twin_shapes")
    make_shapes_yolo_dataset(root, "train", num_images=16, seed=0)
    data_yaml = make_shapes_yolo_dataset(root, "val", num_images=8, seed=1)
    coco = {}
    for split in ("train", "val"):
        coco[f"{split}_json"] = str(root / "images" / split / "annotations.json")
        coco[f"{split}_images"] = str(root / "images" / split)
    return data_yaml, coco


def _yaml(path, data_yaml, **splits):
    """A copy of ``data_yaml`` at ``path`` with some of its splits replaced (its root kept)."""
    with open(data_yaml, encoding="utf-8") as handle:
        spec = yaml.safe_load(handle)
    spec = {**spec, "path": os.path.dirname(data_yaml), **splits}
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_a_yolo_copy_trains_to_the_same_mask_ap_and_weights_as_its_coco_copy(twin_shapes, tmp_path):
    data_yaml, coco = twin_shapes
    # on CPU: deterministic kernels, so the same samples give bit-identical runs (CUDA's atomics would not)
    common = _tiny(coco, tmp_path, iters=_TWIN_ITERS, seed=3, eval_period=_TWIN_ITERS, device="cpu")
    del common["train_json"], common["train_images"]
    from_yolo = sparseinst_zoo.train(**{**common, "data": pathlib.Path(data_yaml), "out": tmp_path / "yolo"})
    from_coco = sparseinst_zoo.train(**{**common, **coco, "out": str(tmp_path / "coco")})
    mixed = _yaml(tmp_path / "mixed.yaml", data_yaml, val={"json": coco["val_json"], "images": coco["val_images"]})
    from_mixed = sparseinst_zoo.train(**{**common, "data": mixed, "out": str(tmp_path / "mixed")})  # YOLO + COCO
    assert from_yolo["last"]["AP50"] > 0  # a model that finds something: equal metrics say more than 0 == 0
    assert from_yolo["last"] == from_coco["last"] == from_mixed["last"]  # same samples, same order: same training
    yolo_weights, coco_weights = (load_file(tmp_path / run / "last" / "model.safetensors") for run in ("yolo", "coco"))
    assert yolo_weights.keys() == coco_weights.keys()
    for key, value in yolo_weights.items():
        assert torch.equal(value, coco_weights[key]), key
    card = sparseinst_zoo.create_model(str(tmp_path / "yolo" / "last")).pretrained_cfg
    assert card.dataset == "data.yaml (train)" and card.label_names == SHAPE_CLASSES
    coco_card = sparseinst_zoo.create_model(str(tmp_path / "coco" / "last")).pretrained_cfg
    assert card.extra["yolo_classes"] is True and "yolo_classes" not in coco_card.extra  # how save_txt numbers classes
    assert "mask AP50 (data.yaml (val))" in (tmp_path / "yolo" / "last" / "README.md").read_text()


def test_cli_trains_and_validates_from_a_data_yaml_and_resume_keeps_it(twin_shapes, tmp_path, capsys):
    data_yaml, _ = twin_shapes
    out = tmp_path / "run"
    train_argv = [
        "train",
        "--data",
        data_yaml,
        "--model",
        "sparseinst_tiny_test",
        "--iters",
        "4",
        "--batch-size",
        "4",
        "--min-sizes",
        "64",
        "--max-size",
        "96",
        "--workers",
        "0",
        "--no-progress",
        "--no-tensorboard",
        "--precision",
        "fp32",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    assert main(train_argv) == 0
    assert "trained 4 iterations" in capsys.readouterr().out
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in logged if r["type"] == "eval"][-1]
    metrics_path = tmp_path / "metrics.json"
    assert main(["val", str(out / "last"), "--data", data_yaml, "--workers", "0", "--out", str(metrics_path)]) == 0
    assert "triangle" in capsys.readouterr().out
    validated = json.loads(metrics_path.read_text())
    assert {k: validated[k] for k in METRIC_KEYS} == pytest.approx({k: trained[k] for k in METRIC_KEYS})
    assert Trainer(resume=True, out=str(out)).config.data == data_yaml  # the checkpoint's settings name the YAML


def test_data_yaml_or_coco_json_not_both_and_the_same_classes(twin_shapes, shapes, tmp_path, capsys):
    data_yaml, _ = twin_shapes
    with pytest.raises(SparseInstError, match="give data .* or train_json/train_images .*, not both"):
        TrainConfig(**_tiny(shapes, tmp_path, data=data_yaml))
    with pytest.raises(SparseInstError, match="name the training data"):
        TrainConfig(**_tiny(shapes, tmp_path, train_json="", train_images=""))
    assert main(["train", "--data", data_yaml, "--val-json", shapes["val_json"], "--out", str(tmp_path)]) == 1
    assert "give either --data DATA.yaml or --val-json, not both" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path)]) == 1
    assert "name the training data: --data DATA.yaml, or --train-json" in capsys.readouterr().err
    data_only = {"train_json": "", "train_images": "", "iters": 1}
    no_train = _yaml(tmp_path / "val_only.yaml", data_yaml, train=None)
    with pytest.raises(DataError, match="has no 'train' split"):
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, data=no_train, **data_only))
    reordered = [SHAPE_CLASSES[1], SHAPE_CLASSES[0], SHAPE_CLASSES[2]]  # YOLO train indices no longer the COCO order
    coco_val = {"json": os.path.join(os.path.dirname(data_yaml), "images/val/annotations.json"), "images": "images/val"}
    shuffled = _yaml(tmp_path / "shuffled.yaml", data_yaml, names=reordered, val=coco_val)
    with pytest.raises(ValueError, match=r"annotations.json and .*shuffled.yaml \(train\) have different classes"):
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, data=shuffled, **data_only))


class _Joined(Exception):
    """Raised by the stand-in for init_process_group once it has seen the backend."""


@pytest.mark.parametrize(("device", "backend"), [("cpu", "gloo"), ("auto", "nccl")])
def test_torchrun_training_on_cpu_joins_gloo_even_on_a_gpu_machine(device, backend, tmp_path, monkeypatch):
    """--device cpu under torchrun on a GPU machine: NCCL cannot reduce CPU tensors, so the group must be gloo."""
    seen: list[str] = []

    def init_process_group(chosen: str) -> None:
        seen.append(chosen)
        raise _Joined

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = Trainer(
        model="sparseinst_tiny_test", train_json="t.json", train_images=".", out=str(tmp_path), device=device
    )
    with pytest.raises(_Joined):
        trainer.train()
    assert seen == [backend]
