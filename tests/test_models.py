"""The SparseInst model family: shapes, gradients, initialisation, frozen BN, DCN, backbones and input checks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_registry import REFERENCE_VARIANTS
from torch import nn
from torchvision.ops import DeformConv2d

import sparseinst_zoo
from sparseinst_zoo.inference.results import model_category_ids
from sparseinst_zoo.models.backbones import (
    DeformableBottleneck,
    create_backbone,
    outputs_channels_last,
    select_feature_levels,
)
from sparseinst_zoo.models.decoder import coordinate_channels
from sparseinst_zoo.models.encoder import PyramidPoolingModule

KEYS_DIR = Path(__file__).resolve().parent / "data" / "checkpoint-keys"


def reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (KEYS_DIR / f"{name}.txt").read_text().splitlines():
        key, shape, _dtype = line.split("\t")
        keys[key] = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
    return keys


def forward_backward(model: nn.Module, size: tuple[int, int] = (64, 96), batch: int = 2) -> dict[str, torch.Tensor]:
    model.train()
    outputs = model(torch.randn(batch, 3, *size))
    loss = sum(v.float().sum() for v in outputs.values())
    loss.backward()
    return outputs


@pytest.mark.parametrize("name", [*REFERENCE_VARIANTS, "sparseinst_iam", "sparseinst_giam", "sparseinst_giam_soft"])
def test_every_registered_model_forward_backward(name):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model(name)
    outputs = forward_backward(model)
    assert outputs["pred_logits"].shape == (2, 100, 80)
    assert outputs["pred_masks"].shape == (2, 100, 16, 24)
    assert outputs["pred_scores"].shape == (2, 100, 1)
    assert all(torch.isfinite(v).all() for v in outputs.values())
    decoder_grads = [p.grad for p in model.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in decoder_grads)
    assert model.encoder.fusion.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_tiny_test_model_shapes(tiny_model):
    out = tiny_model(torch.randn(1, 3, 64, 64))
    assert out["pred_logits"].shape == (1, 10, 80)
    assert out["pred_masks"].shape == (1, 10, 16, 16)
    assert out["pred_scores"].shape == (1, 10, 1)
    assert sum(p.numel() for p in tiny_model.parameters()) < 1_000_000


@pytest.mark.skipif(not KEYS_DIR.is_dir(), reason="../shared/checkpoint-keys is not beside the repository")
@pytest.mark.parametrize("name", REFERENCE_VARIANTS)
def test_state_dict_holds_exactly_the_reference_tensors(name):
    reference = reference_keys(name)
    ours = {k: tuple(v.shape) for k, v in sparseinst_zoo.create_model(name).state_dict().items()}
    ours_head = {k: v for k, v in ours.items() if not k.startswith("backbone.")}
    reference_head = {k: v for k, v in reference.items() if not k.startswith("backbone.")}
    assert ours_head == reference_head  # encoder/decoder keys are the reference names
    ours_backbone = sorted(v for k, v in ours.items() if k.startswith("backbone."))
    reference_backbone = sorted(v for k, v in reference.items() if k.startswith("backbone."))
    assert ours_backbone == reference_backbone  # same tensors, timm names


def test_initialisation_follows_the_reference():
    model = sparseinst_zoo.create_model("sparseinst_r50_giam_soft")
    branch = model.decoder.inst_branch
    prior = -math.log((1 - 0.01) / 0.01)
    assert torch.allclose(branch.iam_conv.bias, torch.full_like(branch.iam_conv.bias, prior))
    assert torch.allclose(branch.cls_score.bias, torch.full_like(branch.cls_score.bias, prior))
    assert abs(branch.iam_conv.weight.std().item() - 0.01) < 1e-3
    assert abs(branch.cls_score.weight.std().item() - 0.01) < 1e-3
    assert torch.count_nonzero(branch.mask_kernel.bias) == 0
    assert branch.softmax_bias.item() == 1.0
    assert torch.count_nonzero(branch.fc.bias) == 0
    assert torch.count_nonzero(model.encoder.fusion.bias) == 0
    for conv in (*model.encoder.fpn_laterals, *model.encoder.fpn_outputs):
        assert torch.count_nonzero(conv.bias) == 0
    # kaiming_normal(fan_out): std = sqrt(2 / fan_out)
    conv = model.decoder.mask_branch.mask_convs[2]
    expected = math.sqrt(2.0 / (conv.out_channels * 9))
    assert abs(conv.weight.std().item() - expected) / expected < 0.05
    dcn = sparseinst_zoo.create_model("sparseinst_r50_dcn_giam_aug")
    offsets = [m.conv2_offset for m in dcn.modules() if isinstance(m, DeformableBottleneck)]
    assert len(offsets) == 6 + 3  # every block of the last two stages
    assert all(torch.count_nonzero(o.weight) == 0 and torch.count_nonzero(o.bias) == 0 for o in offsets)


def test_frozen_bn_is_frozen_in_train_mode():
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    bn_state = {k: v.clone() for k, v in model.backbone.state_dict().items() if "bn" in k or "running" in k}
    assert bn_state and not any("num_batches_tracked" in k for k in bn_state)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    forward_backward(model)
    optimizer.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(bn_state[k], after[k]) for k in bn_state)
    assert not any("bn" in name for name, _ in model.backbone.named_parameters())


def test_cspdarknet_bn_is_trainable():
    model = sparseinst_zoo.create_model("sparseinst_cspdarknet53_giam")
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert any(k.endswith("num_batches_tracked") for k in model.state_dict())


def test_zero_offset_dcn_equals_plain_bottleneck():
    torch.manual_seed(0)
    plain = create_backbone("resnet50", frozen_bn=True).eval()
    deformable = create_backbone("resnet50", frozen_bn=True, dcn_stages=(3, 4)).eval()
    with torch.no_grad():  # timm zero-initialises the last BN of each block, which would hide the 3x3 conv
        for name, module in plain.named_modules():
            if name.endswith("bn3"):
                module.weight.fill_(1.0)
    state = {k: v for k, v in plain.state_dict().items()}
    missing, unexpected = deformable.load_state_dict(state, strict=False)
    assert unexpected == [] and all("conv2_offset" in k for k in missing)
    assert isinstance(deformable.layer3[0].conv2, DeformConv2d)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), deformable(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        # and non-zero offsets really deform
        deformable.layer4[0].conv2_offset.bias.fill_(0.5)
        assert not torch.allclose(plain(x)[-1], deformable(x)[-1], atol=1e-3)


@pytest.mark.parametrize(
    "backbone", ["resnet18", "efficientnet_b0", "mobilenetv3_large_100", "regnety_002", "convnext_atto"]
)
def test_generic_architectures_take_any_hierarchical_backbone(backbone):
    model = sparseinst_zoo.create_model("sparseinst_giam", backbone=backbone, num_classes=3).eval()
    assert model.backbone.feature_info.reduction() == [8, 16, 32]
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["pred_logits"].shape == (1, 100, 3)
    assert model.config["backbone"] == backbone


@pytest.mark.parametrize(
    "backbone, kwargs",
    [
        ("test_mambaout", {}),  # NHWC features
        ("swin_tiny_patch4_window7_224", dict(embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))),  # + 224 only
    ],
)
def test_channels_last_and_fixed_size_backbones_run_at_any_multiple_of_32(backbone, kwargs):
    model = sparseinst_zoo.create_model("sparseinst_giam", backbone=backbone, num_classes=3, backbone_kwargs=kwargs)
    model.eval()
    assert outputs_channels_last(model.backbone)
    x = torch.randn(1, 3, 96, 160)
    with torch.no_grad():
        out = model(x)
        features = [f.permute(0, 3, 1, 2) for f in model.backbone(x)]  # timm's NHWC maps, read as NCHW
        expected = model.decoder(model.encoder(features))["pred_masks"]
    assert out["pred_masks"].shape == (1, 100, 24, 40)
    torch.testing.assert_close(out["pred_masks"], expected)
    result = model.predict(np.zeros((70, 90, 3), np.uint8), score_threshold=0.0)[0]  # the default fast path
    assert result.masks.shape == (100, 70, 90)


def test_backbone_without_stride_levels_is_a_clear_error():
    with pytest.raises(ValueError, match="stride 8"):
        sparseinst_zoo.create_model("sparseinst_giam", backbone="test_vit")
    with pytest.raises(ValueError, match="unknown timm backbone"):
        sparseinst_zoo.create_model("sparseinst_giam", backbone="resnet_999")
    with pytest.raises(ValueError, match="offers strides"):
        select_feature_levels([4, 8, 16])


def test_dcn_needs_a_resnet():
    with pytest.raises(ValueError, match="ResNet"):
        sparseinst_zoo.create_model("sparseinst_giam", backbone="efficientnet_b0", dcn_stages=(3, 4))


@pytest.mark.parametrize(
    ("images", "match"),
    [
        (torch.randn(3, 64, 64), "batch"),
        (torch.randn(1, 1, 64, 64), "3-channel"),
        (torch.randn(1, 3, 64, 70), "divisible by 32"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "floating-point"),
        ([[0.0]], "torch.Tensor"),
    ],
)
def test_bad_inputs_raise_helpful_errors(tiny_model, images, match):
    with pytest.raises(ValueError, match=match):
        tiny_model(images)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="decoder must be one of"):
        sparseinst_zoo.create_model("sparseinst_tiny_test", decoder="transformer")
    with pytest.raises(ValueError, match="num_classes"):
        sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=0)
    with pytest.raises(ValueError, match=r"num_classes must be an int, got '3' \(str\)"):
        sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes="3")
    with pytest.raises(ValueError, match="groups=3 must divide inst_channels=32"):
        sparseinst_zoo.create_model("sparseinst_tiny_test", groups=3)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=np.int64(3))  # numpy ints are fine
    assert type(model.config["num_classes"]) is int and model.num_classes == 3


def test_pretrained_backbone_without_network_says_what_to_do():
    # conftest sets HF_HUB_OFFLINE=1 with an empty HF_HOME: timm cannot fetch the ImageNet weights
    with pytest.raises(
        OSError, match="timm's ImageNet weights for backbone 'test_resnet'.*pretrained_backbone=False"
    ) as err:
        sparseinst_zoo.create_model("sparseinst_giam", backbone="test_resnet", pretrained_backbone=True)
    assert "drop --pretrained-backbone" in str(err.value) and "\n" not in str(err.value)  # the CLI user's fix too


def test_config_is_json_serialisable_and_rebuilds_the_same_architecture(tiny_model):
    import json

    config = json.loads(json.dumps(tiny_model.config))
    rebuilt = sparseinst_zoo.SparseInst(**config)
    assert rebuilt.state_dict().keys() == tiny_model.state_dict().keys()


def test_num_classes_override_and_reset_classifier():
    model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    assert model.decoder.inst_branch.cls_score.out_features == 3 and model.num_classes == 3
    assert model.label_names == ("class_0", "class_1", "class_2")
    model.reset_classifier(5)
    assert model.decoder.inst_branch.cls_score.out_features == 5 and model.config["num_classes"] == 5
    coco = sparseinst_zoo.create_model("sparseinst_r50_iam")
    assert coco.label_names[0] == "person" and len(coco.label_names) == 80


def test_a_new_class_head_drops_the_old_heads_names_and_dataset_ids(tmp_path):
    trained = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    trained.pretrained_cfg = trained.pretrained_cfg.replace(
        label_names=("a", "b", "c"), extra={"category_ids": [1, 5, 9], "note": "kept"}
    )
    folder = trained.save_pretrained(tmp_path / "trained")
    finetune = sparseinst_zoo.create_model(os.fspath(folder), num_classes=5)
    assert finetune.label_names == tuple(f"class_{i}" for i in range(5))
    assert finetune.pretrained_cfg.extra == {"note": "kept"}
    assert model_category_ids(finetune) is None  # predictions.json lists the 5 new classes, not the 3 old ids
    same = sparseinst_zoo.create_model(os.fspath(folder))
    same.reset_classifier(3)  # a fresh head for the same classes keeps their names and ids
    assert same.label_names == ("a", "b", "c") and model_category_ids(same) == (1, 5, 9)


def test_an_unknown_model_argument_names_the_close_ones():
    expected = r"^SparseInst got an unexpected argument 'num_clases' \(did you mean num_classes"
    with pytest.raises(TypeError, match=expected) as err:
        sparseinst_zoo.create_model("sparseinst_tiny_test", num_clases=3)
    assert "it takes: backbone, " in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TypeError, match="unexpected arguments 'foo', 'bar'; it takes"):
        sparseinst_zoo.SparseInst(foo=1, bar=2)


def test_coordinates_and_ppm_match_the_spec():
    coords = coordinate_channels(torch.zeros(2, 4, 3, 5))
    assert coords.shape == (2, 2, 3, 5)
    torch.testing.assert_close(coords[0, 0, 0], torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))  # x along width
    torch.testing.assert_close(coords[0, 1, :, 0], torch.tensor([-1.0, 0.0, 1.0]))  # y along height
    ppm = PyramidPoolingModule(8, 2)
    x = torch.randn(1, 8, 10, 7)
    expected_prior = nn.functional.interpolate(
        torch.relu(ppm.stages[2][1](nn.functional.adaptive_avg_pool2d(x, 3))),
        size=(10, 7),
        mode="bilinear",
        align_corners=False,
    )
    priors = [
        nn.functional.interpolate(
            torch.relu(s[1](nn.functional.adaptive_avg_pool2d(x, size))),
            size=(10, 7),
            mode="bilinear",
            align_corners=False,
        )
        for s, size in zip(ppm.stages, (1, 2, 3, 6))
    ]
    torch.testing.assert_close(priors[2], expected_prior)
    expected = torch.relu(ppm.bottleneck(torch.cat([*priors, x], 1)))
    torch.testing.assert_close(ppm(x), expected)


def test_giam_instance_features_concatenate_groups_in_order():
    """Instance i of G-IAM concatenates maps i, N+i, 2N+i, 3N+i (group order) before fc."""
    from sparseinst_zoo.models.decoder import InstanceBranch

    torch.manual_seed(0)
    branch = InstanceBranch(in_channels=6, channels=4, num_convs=1, num_masks=3, num_classes=2, kernel_dim=2, groups=4)
    captured = {}
    branch.fc.register_forward_hook(lambda m, inputs, out: captured.setdefault("x", inputs[0]))
    features = torch.randn(1, 6, 5, 5)
    branch(features)
    inst = branch.inst_convs(features)
    prob = branch.iam_conv(inst).sigmoid().flatten(2)
    prob = prob / prob.sum(-1, keepdim=True)
    per_map = prob @ inst.flatten(2).transpose(1, 2)  # (1, 12, 4)
    expected = torch.cat([per_map[:, g * 3 + 1] for g in range(4)], dim=-1)  # instance 1
    torch.testing.assert_close(captured["x"][:, 1], expected)


def test_backbone_weights_without_network_fail_at_once_with_advice(monkeypatch, loopback_name_does_not_resolve):
    """timm's ImageNet download goes to the cache only when the Hub's host name does not resolve (no retries)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(OSError, match="does not resolve.*pretrained_backbone=False .on the command line: drop --pretr"):
        sparseinst_zoo.create_model("sparseinst_giam", backbone="test_resnet", pretrained_backbone=True)
    assert constants.HF_HUB_OFFLINE is False  # restored
