"""Conversion of reference checkpoints: key mapping for all 13 variants, independent numerical oracles, the CLI."""

from __future__ import annotations

import argparse
import collections
import json
import os
import pickle
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from reference_checkpoints import synthetic_reference
from torchvision.ops import deform_conv2d

import sparseinst_zoo
from sparseinst_zoo.commands import convert as convert_command
from sparseinst_zoo.convert import (
    REFERENCE_VARIANTS,
    ConversionError,
    convert_checkpoint,
    convert_state_dict,
    detect_model,
    read_checkpoint,
    rename_key,
    target_shapes,
)
from sparseinst_zoo.errors import SparseInstError
from sparseinst_zoo.training.checkpoint import load_checkpoint

VARIANTS = list(REFERENCE_VARIANTS)
# one variant per backbone family runs the full file round trip in the fast suite; the rest are marked slow
FAST_VARIANTS = {"sparseinst_r50_dcn_giam_aug", "sparseinst_cspdarknet53_giam", "sparseinst_pvt_v2_b1_giam"}


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * max(1.0, float(a.abs().max()))


# ---------------------------------------------------------------------------------------------------------------------
# Independent oracles: the reference backbones computed from the reference-format weights without our code
# ---------------------------------------------------------------------------------------------------------------------
def detectron2_resnet_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """res3, res4, res5 of a detectron2 ResNet (frozen BN, stride in the 3x3 conv, DCN v1 where conv2_offset exists)."""

    def conv_bn(x, prefix, stride=1, padding=0, relu=True, offset=None):
        weight = state[prefix + ".weight"]
        if offset is None:
            y = F.conv2d(x, weight, stride=stride, padding=padding)
        else:
            y = deform_conv2d(x, offset, weight, stride=stride, padding=padding)
        norm = prefix + ".norm."
        y = F.batch_norm(
            y,
            state[norm + "running_mean"],
            state[norm + "running_var"],
            state[norm + "weight"],
            state[norm + "bias"],
            False,
            0.0,
            1e-5,
        )
        return F.relu(y) if relu else y

    x = F.max_pool2d(conv_bn(x, "backbone.stem.conv1", stride=2, padding=3), 3, 2, 1)
    outputs = []
    for stage in range(2, 6):
        block = 0
        while f"backbone.res{stage}.{block}.conv1.weight" in state:
            prefix = f"backbone.res{stage}.{block}"
            stride = 2 if block == 0 and stage > 2 else 1
            shortcut = x
            if prefix + ".shortcut.weight" in state:
                shortcut = conv_bn(x, prefix + ".shortcut", stride=stride, relu=False)
            y = conv_bn(x, prefix + ".conv1")
            offset = None
            if prefix + ".conv2_offset.weight" in state:
                offset = F.conv2d(
                    y,
                    state[prefix + ".conv2_offset.weight"],
                    state[prefix + ".conv2_offset.bias"],
                    stride=stride,
                    padding=1,
                )
            y = conv_bn(y, prefix + ".conv2", stride=stride, padding=1, offset=offset)
            x = F.relu(conv_bn(y, prefix + ".conv3", relu=False) + shortcut)
            block += 1
        if stage >= 3:
            outputs.append(x)
    return outputs


def timm_reference_features(timm_name: str, state: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """Stage outputs at strides 8/16/32 of the plain timm model (no features_only) loaded with the reference names.

    PVTv2 goes through timm's own converter of the official checkpoints, an implementation independent of ours.
    """
    backbone = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
    model = timm.create_model(timm_name, pretrained=False).eval()
    if timm_name.startswith("pvt"):
        from timm.models.pvt_v2 import checkpoint_filter_fn

        backbone = checkpoint_filter_fn(backbone, model)
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("fc.", "head.")) for k in missing), missing
    reductions = [info["reduction"] for info in model.feature_info]
    indices = [max(i for i, r in enumerate(reductions) if r == s) for s in (8, 16, 32)]
    with torch.no_grad():
        return model.forward_intermediates(x, indices=indices, intermediates_only=True)


# ---------------------------------------------------------------------------------------------------------------------
# Key mapping
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("backbone.stem.conv1.weight", "backbone.conv1.weight"),
        ("backbone.stem.conv1.norm.running_mean", "backbone.bn1.running_mean"),
        ("backbone.res2.0.shortcut.weight", "backbone.layer1.0.downsample.0.weight"),
        ("backbone.res2.0.shortcut.norm.bias", "backbone.layer1.0.downsample.1.bias"),
        ("backbone.res5.2.conv3.norm.weight", "backbone.layer4.2.bn3.weight"),
        ("backbone.res4.5.conv2_offset.bias", "backbone.layer3.5.conv2_offset.bias"),
        ("backbone.layer1.0.downsample.1.weight", "backbone.layer1.0.downsample.1.weight"),  # ResNet-vd / MMDet
        ("backbone.stages.3.blocks.1.conv2.bn.running_var", "backbone.stages_3.blocks.1.conv2.bn.running_var"),
        ("backbone.stem.conv1.conv.weight", "backbone.stem_conv1.conv.weight"),
        ("backbone.patch_embed1.proj.weight", "backbone.patch_embed.proj.weight"),
        ("backbone.patch_embed3.norm.bias", "backbone.stages_2.downsample.norm.bias"),
        ("backbone.block4.2.attn.kv.weight", "backbone.stages_3.blocks.2.attn.kv.weight"),
        ("backbone.norm2.weight", "backbone.stages_1.norm.weight"),
        ("backbone.block1.0.mlp.dwconv.dwconv.bias", "backbone.stages_0.blocks.0.mlp.dwconv.bias"),
        ("encoder.fpn_laterals.0.weight", "encoder.fpn_laterals.0.weight"),
        ("decoder.inst_branch.iam_conv.weight", "decoder.inst_branch.iam_conv.weight"),
    ],
)
def test_rename_key(source, target):
    assert rename_key(source) == target
    assert rename_key(target) == target  # our own names are fixed points


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_maps_every_key(variant):
    reference = synthetic_reference(variant)
    converted, report = convert_state_dict(reference, variant, source_layout="detectron2")
    target = target_shapes(variant)
    assert set(converted) == set(target)  # every target key filled
    assert {k: tuple(v.shape) for k, v in converted.items()} == target
    # every source key consumed: each one reappears under its new name with the same values
    assert report.num_tensors == len(reference) - len(report.dropped) + len(report.filled)
    assert not report.dropped and not report.filled  # released checkpoints have exactly the counters the model needs
    for key, value in reference.items():
        assert torch.equal(converted[rename_key(key)], value), key
    assert report.num_classes == 80 and report.num_masks == 100


@pytest.mark.parametrize(
    "variant", [v if v in FAST_VARIANTS else pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS]
)
def test_reference_file_and_converted_folder_give_identical_outputs(variant, tmp_path, capsys):
    torch.manual_seed(0)
    reference = synthetic_reference(variant)
    pth = tmp_path / f"{sparseinst_zoo.get_pretrained_cfg(variant).reference_config}_abc123.pth"
    torch.save({"model": reference, "__author__": "synthetic"}, pth)

    direct = sparseinst_zoo.create_model(variant, checkpoint_path=pth).eval()  # converted on the fly

    args = argparse.ArgumentParser()
    convert_command.add_arguments(args)
    assert convert_command.run(args.parse_args([str(pth), "--model", variant, "--out", str(tmp_path / "out")])) == 0
    summary = capsys.readouterr().out
    assert variant in summary and "every key used" in summary and "classes:      80" in summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]
    converted = sparseinst_zoo.from_pretrained(str(tmp_path / "out")).eval()
    assert converted.label_names == direct.label_names and len(direct.label_names) == 80

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out_direct, out_converted = direct(x), converted(x)
        features = direct.backbone(x)
    for key in ("pred_logits", "pred_masks", "pred_scores"):
        assert torch.isfinite(out_direct[key]).all()
        assert torch.equal(out_direct[key], out_converted[key]), key

    # the converted backbone computes what the reference backbone computes from the reference weights
    if "backbone.stem.conv1.weight" in reference:  # detectron2 ResNet names
        expected = detectron2_resnet_features(reference, x)
    elif not direct.config["dcn_stages"]:  # timm / official PVT names
        expected = timm_reference_features(direct.config["backbone"], reference, x)
    else:
        expected = None  # ResNet-vd + DCN: timm has no DCN; its names are those of r50vd_iam, its offsets as r50 DCN
    if expected is not None:
        assert len(features) == 3
        for ours, theirs in zip(features, expected):
            assert close(ours, theirs), float((ours - theirs).abs().max())
            assert float(theirs.std()) > 1e-3  # the oracle is not comparing vanished activations


# ---------------------------------------------------------------------------------------------------------------------
# Other layouts and errors
# ---------------------------------------------------------------------------------------------------------------------
def _mmdet_r50_iam() -> dict[str, torch.Tensor]:
    """An MMDetection SparseInst R-50 state dict: torchvision ResNet names, BN counters everywhere."""
    gen = torch.Generator().manual_seed(1)
    state = {}
    for key, shape in target_shapes("sparseinst_r50_iam").items():
        state[key] = (
            torch.rand(shape, generator=gen) + 0.5
            if key.endswith("running_var")
            else torch.randn(shape, generator=gen) * 0.05
        )
        if key.endswith("running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = torch.tensor(270000)
    return state


def test_mmdetection_checkpoint(tmp_path):
    """Key names as MMDetection's own modules write them (ResNet: conv1/bn1/layerN.i.convK/bnK/downsample.{0,1};
    projects/SparseInst: encoder.fpn_laterals/fpn_outputs/ppm.stages.i.1/ppm.bottleneck/fusion, decoder.inst_branch /
    mask_branch), BN counters everywhere, plus data-preprocessor buffers we do not need."""
    state = _mmdet_r50_iam()
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)
    assert {
        "encoder.ppm.stages.0.1.weight",
        "encoder.ppm.bottleneck.weight",
        "decoder.inst_branch.inst_convs.6.weight",
        "decoder.mask_branch.projection.weight",
        "backbone.layer4.0.downsample.1.running_var",
    } <= set(state)
    path = tmp_path / "sparseinst_r50_iam_8xb8-ms-270k_coco_20221111_181051-72c711cd.pth"
    meta = {"mmdet_version": "3.0.0", "dataset_meta": {"classes": ("person",)}}
    torch.save({"meta": meta, "state_dict": state}, path)
    loaded, layout = read_checkpoint(path)
    assert layout == "mmdetection"
    converted, report = convert_checkpoint(path)  # architecture detected from the keys
    assert report.model_name == "sparseinst_r50_iam"
    assert len(report.dropped) == sum(k.endswith("num_batches_tracked") for k in state) + 2 > 50
    assert "data_preprocessor.mean" in report.dropped
    assert all(torch.equal(converted[k], state[k]) for k in converted)
    model = sparseinst_zoo.create_model("sparseinst_r50_iam", checkpoint_path=path).eval()
    assert torch.equal(model.backbone.layer2[0].bn1.running_var, state["backbone.layer2.0.bn1.running_var"])


def test_trainable_bn_counters_are_kept_or_started_at_zero():
    reference = synthetic_reference("sparseinst_cspdarknet53_giam")
    reference = {k: (torch.tensor(7) if k.endswith("num_batches_tracked") else v) for k, v in reference.items()}
    converted, report = convert_state_dict(reference, "sparseinst_cspdarknet53_giam")
    assert int(converted["backbone.stages_2.conv_down.bn.num_batches_tracked"]) == 7
    without = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    converted, report = convert_state_dict(without, "sparseinst_cspdarknet53_giam")
    assert len(report.filled) == sum(k.endswith("num_batches_tracked") for k in reference)
    assert int(converted["backbone.stages_2.conv_down.bn.num_batches_tracked"]) == 0


def test_leftover_missing_and_mismatched_keys_are_named():
    reference = synthetic_reference("sparseinst_r50_giam")
    extra = dict(reference, **{"backbone.res5.9.conv1.weight": torch.zeros(1), "pixel_mean": torch.zeros(3)})
    pattern = r"does not fit sparseinst_r50_giam: 2 unexpected: backbone\.res5\.9\.conv1\.weight"
    with pytest.raises(ConversionError, match=pattern) as info:
        convert_state_dict(extra, "sparseinst_r50_giam")
    assert "pixel_mean" in str(info.value)
    missing = {k: v for k, v in reference.items() if k != "backbone.res3.1.conv2.norm.running_var"}
    with pytest.raises(ConversionError, match=r"backbone\.layer2\.1\.bn2\.running_var"):
        convert_state_dict(missing, "sparseinst_r50_giam")
    wrong = dict(reference, **{"encoder.fusion.weight": torch.zeros(256, 700, 1, 1)})
    with pytest.raises(ConversionError, match=r"encoder\.fusion\.weight: \(256, 700, 1, 1\) in the weights"):
        convert_state_dict(wrong, "sparseinst_r50_giam")
    with pytest.raises(ConversionError, match="does not fit sparseinst_r50_iam"):  # G-IAM weights into an IAM model
        convert_state_dict(reference, "sparseinst_r50_iam")


def test_detect_model_uses_keys_then_file_name():
    r50 = synthetic_reference("sparseinst_r50_giam")
    assert detect_model(r50, "sparse_inst_r50_giam_aug_2b7d68.pth") == "sparseinst_r50_giam_aug"
    assert detect_model(r50, "sparse_inst_r50_giam_abcdef.pth") == "sparseinst_r50_giam"
    with pytest.raises(ConversionError, match="sparseinst_r50_giam, sparseinst_r50_giam_aug"):
        detect_model(r50, "model_final.pth")
    assert detect_model(synthetic_reference("sparseinst_r50_giam_soft")) == "sparseinst_r50_giam_soft"


def test_class_count_and_queries_come_from_the_weights(tmp_path):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=5, num_masks=7)
    torch.save({"model": model.state_dict()}, tmp_path / "custom.pth")
    converted, report = convert_checkpoint(tmp_path / "custom.pth", "sparseinst_tiny_test", out_dir=tmp_path / "out")
    assert (report.num_classes, report.num_masks) == (5, 7)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_args"]["num_classes"] == 5 and config["model_args"]["num_masks"] == 7
    again = sparseinst_zoo.from_pretrained(str(tmp_path / "out"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


class TrainerState:  # a global that weights_only unpickling refuses
    pass


def test_unreadable_checkpoints_fail_clearly(tmp_path):
    torch.save({"model": {"a": torch.zeros(1)}, "trainer": TrainerState()}, tmp_path / "pickled.pth")
    with pytest.raises(ConversionError, match="weights_only=True"):
        read_checkpoint(tmp_path / "pickled.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ConversionError, match="not a checkpoint dict"):
        read_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3, "weights": "x"}, tmp_path / "other.pth")
    with pytest.raises(ConversionError, match="top-level keys are 'epoch', 'weights'"):
        read_checkpoint(tmp_path / "other.pth")
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ConversionError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "absent.pth")


class Weights(collections.OrderedDict):  # a harmless global that weights_only unpickling refuses
    pass


def _pickled_objects(path):
    """Files holding a refused global, in each way torch reports it (or fails to name it)."""
    return {
        "zip, dict subclass": (
            lambda: torch.save({"model": Weights(a=torch.zeros(1))}, path),
            r"test_convert\.Weights",
        ),
        "zip, function": (lambda: torch.save({"model": os.getcwd}, path), r"\w+\.getcwd"),
        # protocol 4 frames stop torch's reader before it meets the global ("Unsupported operand 149"): found by parsing
        "legacy protocol 4": (lambda: path.write_bytes(pickle.dumps(os.getcwd, protocol=4)), r"\w+\.getcwd"),
    }


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
@pytest.mark.parametrize("kind", ["zip, dict subclass", "zip, function", "legacy protocol 4"])
@pytest.mark.parametrize(
    ("reader", "advice"),
    [
        (read_checkpoint, r"; if you trust it, re-save just its weights on a trusted machine: torch.save\("),
        (load_checkpoint, r": it is not a weights-only training checkpoint of sparseinst-zoo; resume from"),
    ],
)
def test_pickled_python_objects_are_named_in_one_line_without_torchs_advice(tmp_path, kind, reader, advice):
    path = tmp_path / "objects.pth"
    write, name = _pickled_objects(path)[kind]
    write()
    with pytest.raises(SparseInstError) as err:
        reader(path)
    message = str(err.value)
    assert re.fullmatch(
        rf"{re.escape(str(path))} holds pickled Python objects \({name}\) that sparseinst-zoo does not load "
        rf"\(weights_only=True\){advice}.*",
        message,
    ), message
    assert "\n" not in message and "will likely succeed" not in message


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_pickle_torch_cannot_parse_is_not_reported_as_objects(tmp_path):
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "p4.pth", pickle_protocol=4)
    try:
        torch.load(tmp_path / "p4.pth", weights_only=True)
    except pickle.UnpicklingError:
        pass
    else:
        pytest.skip("this torch reads protocol 4 weights-only")
    with pytest.raises(
        ConversionError, match=r"weights-only PyTorch checkpoint \(.+\); it is truncated or corrupt"
    ) as err:
        read_checkpoint(tmp_path / "p4.pth")
    assert "weights_only` set to `False`" not in str(err.value) and "Python objects" not in str(err.value)


def test_files_that_are_not_checkpoints_or_are_truncated_say_so(tmp_path):
    (tmp_path / "notes.pth").write_text("hello, not a checkpoint\n")
    with pytest.raises(ConversionError, match="notes.pth is not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "notes.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ConversionError, match="not a PyTorch checkpoint"):
        read_checkpoint(tmp_path / "empty.pth")
    torch.save({"model": {"a": torch.zeros(1000)}}, tmp_path / "full.pth")
    (tmp_path / "cut.pth").write_bytes((tmp_path / "full.pth").read_bytes()[:1500])
    with pytest.raises(ConversionError, match="cut.pth is an incomplete zip archive: the checkpoint is truncated"):
        read_checkpoint(tmp_path / "cut.pth")
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert read_checkpoint(tmp_path / "legacy.pth")[1] == "detectron2"  # pre-1.6 pickles still load


def test_converting_our_own_folder_keeps_labels_category_ids_and_test_size(tmp_path):
    torch.manual_seed(0)
    overlay = {
        "label_names": ("cat", "dog", "fox"),
        "min_size": 96,
        "max_size": 128,
        "extra": {"category_ids": [1, 2, 3]},
    }
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3, pretrained_cfg_overlay=overlay)
    source = model.save_pretrained(tmp_path / "best")
    convert_checkpoint(source, out_dir=tmp_path / "y")
    again = sparseinst_zoo.from_pretrained(tmp_path / "y")
    cfg = again.pretrained_cfg
    assert again.label_names == ("cat", "dog", "fox") and cfg.extra["category_ids"] == [1, 2, 3]
    assert (cfg.min_size, cfg.max_size) == (96, 128)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())


def test_converting_into_a_model_folder_rewrites_its_card(tmp_path):
    old = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=5)
    folder = old.save_pretrained(tmp_path / "out", metrics={"mask AP": 99.0})
    torch.save({"model": sparseinst_zoo.create_model("sparseinst_tiny_test").state_dict()}, tmp_path / "new.pth")
    convert_checkpoint(tmp_path / "new.pth", "sparseinst_tiny_test", out_dir=folder)
    card = (folder / "README.md").read_text()
    assert "99.00" not in card and "Classes (80)" in card  # the card describes the new weights, not the old ones


def test_the_cli_never_replaces_a_saved_model_and_a_failed_conversion_leaves_no_folder(tmp_path, capsys):
    from sparseinst_zoo.cli import main

    fine_tuned = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=5).save_pretrained(tmp_path / "best")
    before = {p.name: p.read_bytes() for p in fine_tuned.iterdir()}
    torch.save({"model": sparseinst_zoo.create_model("sparseinst_tiny_test").state_dict()}, tmp_path / "new.pth")
    convert = ["convert", str(tmp_path / "new.pth"), "--model", "sparseinst_tiny_test", "--out"]
    assert main([*convert, str(fine_tuned)]) == 1
    error = capsys.readouterr().err
    assert "already holds model.safetensors, config.json, README.md" in error and "choose another --out" in error
    assert {p.name: p.read_bytes() for p in fine_tuned.iterdir()} == before
    notes = tmp_path / "notes"  # a folder of the user's without a model: written into, the README.md refused
    notes.mkdir()
    (notes / "README.md").write_text("mine")
    assert main([*convert, str(notes)]) == 1 and (notes / "README.md").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    assert main([*convert, str(tmp_path / "file")]) == 1 and "is a file" in capsys.readouterr().err
    assert main([*convert, str(tmp_path / "out.safetensors")]) == 1  # made a folder named out.safetensors
    assert (
        f"give e.g. --out {tmp_path / 'out'}" in capsys.readouterr().err and not (tmp_path / "out.safetensors").exists()
    )
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "new" / "model")]) == 1
    assert not (tmp_path / "new").exists()  # nor the parent it would have needed
    assert main([*convert, str(tmp_path / "fresh"), "--card"]) == 0
    assert sorted(p.name for p in (tmp_path / "fresh").iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_converting_a_training_checkpoint_keeps_its_architecture_classes_and_test_size(tmp_path, capsys):
    """`sparseinst convert RUN/checkpoints/last.pt` refused every architecture outside the reference zoo (the CPU
    starter, sparseinst_tiny_test) and lost the class names and test size of the run."""
    from sparseinst_zoo.cli import main
    from sparseinst_zoo.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", num_images=4, max_shapes=1, radius=(0.2, 0.3), seed=0)
    torch.manual_seed(0)
    sparseinst_zoo.train(
        model="sparseinst_tiny_test", train_json=data, train_images=str(tmp_path / "data"), iters=1, batch_size=2,
        min_sizes=(64,), max_size=96, test_size=64, out=str(tmp_path / "run"), workers=0, progress=False,
        tensorboard=False,
    )  # fmt: skip
    checkpoint = tmp_path / "run" / "checkpoints" / "last.pt"
    assert main(["convert", str(checkpoint), "--out", str(tmp_path / "mine")]) == 0
    assert "(sparseinst train layout)" in capsys.readouterr().out
    saved, converted = (json.loads((tmp_path / f / "config.json").read_text()) for f in ("run/last", "mine"))
    assert converted == saved
    weights = sparseinst_zoo.create_model(str(tmp_path / "mine")).state_dict()
    assert all(
        torch.equal(weights[k], v)
        for k, v in sparseinst_zoo.create_model(str(tmp_path / "run" / "last")).state_dict().items()
    )
    state = load_checkpoint(str(checkpoint))
    del state["folder_config"]  # a checkpoint of an earlier version: the architecture still comes from its settings
    torch.save(state, tmp_path / "old.pt")
    _, report = convert_checkpoint(tmp_path / "old.pt")
    assert report.model_name == "sparseinst_tiny_test"
