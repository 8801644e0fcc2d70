"""Training end to end on a synthetic shapes dataset: learning, CLI, resume, NaN handling, options."""

from __future__ import annotations

import argparse
import json
import os

import pytest
import torch

import sparseinst_zoo
from sparseinst_zoo.commands import train as train_command
from sparseinst_zoo.commands import val as val_command
from sparseinst_zoo.training.engine import TrainConfig, Trainer, TrainingDiverged
from sparseinst_zoo.training.evaluate import METRIC_KEYS, evaluate
from sparseinst_zoo.training.losses import SparseInstCriterion
from sparseinst_zoo.training.synthetic import SHAPE_CLASSES, make_shapes_dataset


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
    return {"train_json": train, "train_images": str(root / "train"), "val_json": val,
            "val_images": str(root / "val")}  # fmt: skip


def _tiny(shapes, out, **kwargs):
    args = dict(model="sparseinst_tiny_test", train_json=shapes["train_json"], train_images=shapes["train_images"],
                batch_size=4, lr=2e-3, min_sizes=(64,), max_size=96, out=str(out), workers=0, progress=False,
                log_period=1, tensorboard=False)  # fmt: skip
    args.update(kwargs)
    return args


def test_cli_training_learns_and_the_result_predicts_and_evaluates(shapes, tmp_path, capsys):
    torch.manual_seed(0)
    start = evaluate(sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3), shapes["val_json"],
                     shapes["val_images"])["AP50"]  # fmt: skip
    out = tmp_path / "run"
    argv = ["--model", "sparseinst_tiny_test", "--train-json", shapes["train_json"], "--train-images",
            shapes["train_images"], "--val-json", shapes["val_json"], "--val-images", shapes["val_images"],
            "--iters", "120", "--batch-size", "8", "--lr", "2e-3", "--min-sizes", "64", "--max-size", "96",
            "--eval-period", "60", "--workers", "0", "--out", str(out), "--no-progress",
            "--no-tensorboard"]  # fmt: skip
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

    best = sparseinst_zoo.create_model(str(out / "best"))
    assert best.label_names == SHAPE_CLASSES and best.num_classes == 3
    assert best.pretrained_cfg.extra["category_ids"] == [3, 7, 11]
    results = best.predict(os.path.join(shapes["val_images"], "00001.png"), score_threshold=0.3)
    assert len(results) == 1 and len(results[0]) >= 1
    assert (out / "last" / "model.safetensors").is_file() and "mask AP" in (out / "best" / "README.md").read_text()

    metrics_path = tmp_path / "metrics.json"
    val_args = _parse(val_command, [str(out / "best"), "--json", shapes["val_json"], "--images",
                                    shapes["val_images"], "--out", str(metrics_path), "--workers", "0"])  # fmt: skip
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
    full = Trainer(**_tiny(shapes, tmp_path / "full", iters=6, checkpoint_period=3))
    full.train()
    interrupted = Trainer(**_tiny(shapes, tmp_path / "cut", iters=6, checkpoint_period=3), callbacks=[_StopAt(5)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train()
    assert "interrupted at step 5; to continue from the last checkpoint (step 3" in caplog.text
    assert f"sparseinst train --resume --out {tmp_path / 'cut'}" in caplog.text
    state = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 3
    Trainer(resume=True, out=str(tmp_path / "cut"), progress=False).train()

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
    with pytest.raises(TrainingDiverged, match=r"not finite at step 3 .*loss_dice=nan.*last.pt \(step 2\)"):
        trainer.train()
    state = torch.load(tmp_path / "nan" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_frozen_backbone_ema_clipping_bf16(shapes, tmp_path):
    torch.manual_seed(0)
    reference = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    summary = sparseinst_zoo.train(**_tiny(shapes, tmp_path / "opts", iters=3, freeze_backbone=True, ema=True,
                                           ema_decay=0.5, clip_grad=1.0, amp="bf16", schedule="cosine"))  # fmt: skip
    assert summary["step"] == 3 and summary["best"] is None  # no validation set
    last = sparseinst_zoo.create_model(str(tmp_path / "opts" / "last"))
    for (name, before), after in zip(reference.backbone.state_dict().items(), last.backbone.state_dict().values()):
        torch.testing.assert_close(after, before, msg=name)  # same seed, frozen
    changed = any(not torch.equal(a, b) for a, b in zip(reference.decoder.state_dict().values(),
                                                         last.decoder.state_dict().values()))  # fmt: skip
    assert changed


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
        Trainer(**_tiny(shapes, tmp_path / "cut", iters=4, checkpoint_period=2, amp="fp16"),
                callbacks=[_StopAt(3)]).train()  # fmt: skip
    Trainer(resume=True, out=str(tmp_path / "cut"), progress=False).train()
    cut = torch.load(tmp_path / "cut" / "checkpoints" / "last.pt", weights_only=True)
    assert cut["scaler"] == full["scaler"]
    for key, value in full["model"].items():
        torch.testing.assert_close(cut["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_bad_settings_are_rejected(shapes, tmp_path):
    with pytest.raises(ValueError, match="iters or epochs"):
        TrainConfig(**_tiny(shapes, tmp_path, iters=2, epochs=1))
    with pytest.raises(ValueError, match="amp must be"):
        TrainConfig(**_tiny(shapes, tmp_path, amp="fp8"))
    with pytest.raises(ValueError, match="both val_json and val_images"):
        TrainConfig(**_tiny(shapes, tmp_path, val_json=shapes["val_json"]))
    with pytest.raises(ValueError, match="num_classes=2 but .* has 3 categories"):
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=1, num_classes=2))
    with pytest.raises(ValueError, match="num_classes=5 but .* has 3 categories"):  # not after training, at eval
        sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=1, num_classes=5))
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        Trainer(resume=True, out=str(tmp_path / "never"))
    with pytest.raises(ValueError, match="required"):
        train_command.run(_parse(train_command, ["--out", str(tmp_path)]))


class _Built(Exception):
    pass


def test_pretrained_backbone_option_reaches_the_model_builder(shapes, tmp_path, monkeypatch, caplog):
    seen = []

    def fake_create_model(name, **kwargs):
        seen.append((name, kwargs))
        raise _Built

    monkeypatch.setattr("sparseinst_zoo._factory.create_model", fake_create_model)
    argv = ["--model", "sparseinst_giam", "--backbone", "resnet18", "--pretrained-backbone", "--train-json",
            shapes["train_json"], "--train-images", shapes["train_images"], "--out", str(tmp_path / "a")]
    with pytest.raises(_Built):
        train_command.run(_parse(train_command, argv))
    assert seen[-1][0] == "sparseinst_giam"
    assert seen[-1][1]["backbone"] == "resnet18" and seen[-1][1]["pretrained_backbone"] is True
    with pytest.raises(_Built):  # without any weights: no download, and a warning says so
        sparseinst_zoo.train(**_tiny(shapes, tmp_path / "b", model="sparseinst_giam", backbone="resnet18", iters=1))
    assert "pretrained_backbone" not in seen[-1][1] and "from random initialisation" in caplog.text


def test_default_eval_period_gives_five_evaluations(shapes, tmp_path, monkeypatch):
    steps = []

    def fake_evaluate(model, *args, **kwargs):
        steps.append(len(steps))
        return {**dict.fromkeys(METRIC_KEYS, 1.0), "per_class": dict.fromkeys(SHAPE_CLASSES, 1.0)}

    monkeypatch.setattr("sparseinst_zoo.training.engine.evaluate", fake_evaluate)
    sparseinst_zoo.train(**_tiny(shapes, tmp_path, iters=9, val_json=shapes["val_json"],
                                 val_images=shapes["val_images"]))  # fmt: skip
    assert len(steps) == 5  # at 2, 4, 6, 8 and the end (not every step of a 9-step run)
