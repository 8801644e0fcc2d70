"""Registry semantics (timm-like): names, tags, filters, pretrained cfgs and helpful errors."""

from __future__ import annotations

import json

import pytest

import sparseinst_zoo
from sparseinst_zoo._coco import COCO_CLASSES
from sparseinst_zoo._registry import PretrainedCfg, split_model_name_tag

REFERENCE_VARIANTS = [
    "sparseinst_r50_iam",
    "sparseinst_r50vd_iam",
    "sparseinst_r50_giam",
    "sparseinst_r50_giam_soft",
    "sparseinst_r50_giam_aug",
    "sparseinst_r50_dcn_giam_aug",
    "sparseinst_r50vd_giam_aug",
    "sparseinst_r50vd_dcn_giam_aug",
    "sparseinst_r101_giam",
    "sparseinst_r101_dcn_giam",
    "sparseinst_cspdarknet53_giam",
    "sparseinst_pvt_v2_b1_giam",
    "sparseinst_pvt_v2_b2_li_giam",
]


def test_all_reference_variants_are_listed():
    names = sparseinst_zoo.list_models("sparseinst_*")
    assert set(REFERENCE_VARIANTS) <= set(names)
    assert {"sparseinst_iam", "sparseinst_giam", "sparseinst_giam_soft", "sparseinst_tiny_test"} <= set(names)
    assert names == sorted(names)


def test_list_models_filters():
    assert sparseinst_zoo.list_models("sparseinst_r50_giam*") == [
        "sparseinst_r50_giam",
        "sparseinst_r50_giam_aug",
        "sparseinst_r50_giam_soft",
    ]
    assert sparseinst_zoo.list_models(["*r101*", "*pvt*"]) == [
        "sparseinst_pvt_v2_b1_giam",
        "sparseinst_pvt_v2_b2_li_giam",
        "sparseinst_r101_dcn_giam",
        "sparseinst_r101_giam",
    ]
    assert "sparseinst_r50_dcn_giam_aug" not in sparseinst_zoo.list_models("sparseinst_r50*", exclude_filters="*dcn*")
    assert sparseinst_zoo.list_models("no_such_*") == []
    assert sparseinst_zoo.list_models(module="sparseinst") == sparseinst_zoo.list_models()


def test_list_models_pretrained_uses_tags():
    pretrained = sparseinst_zoo.list_models(pretrained=True)
    assert pretrained == sorted([*(f"{name}.coco" for name in REFERENCE_VARIANTS), "sparseinst_r50_iam.coco_mmdet"])
    assert sparseinst_zoo.list_pretrained() == pretrained
    assert sparseinst_zoo.list_pretrained("*r50_giam.*") == ["sparseinst_r50_giam.coco"]
    assert "sparseinst_tiny_test" not in " ".join(pretrained)
    assert sparseinst_zoo.list_models("sparseinst_r50_iam", include_tags=True) == [
        "sparseinst_r50_iam.coco",
        "sparseinst_r50_iam.coco_mmdet",
    ]


def test_is_model_and_tags():
    assert sparseinst_zoo.is_model("sparseinst_r50_giam")
    assert sparseinst_zoo.is_model("sparseinst_r50_giam.coco")
    assert not sparseinst_zoo.is_model("resnet50")
    assert split_model_name_tag("a.b") == ("a", "b")
    assert split_model_name_tag("a") == ("a", "")


@pytest.mark.parametrize("name", REFERENCE_VARIANTS)
def test_pretrained_cfg_fields(name):
    cfg = sparseinst_zoo.get_pretrained_cfg(name)
    assert cfg == sparseinst_zoo.get_pretrained_cfg(f"{name}.coco")
    assert cfg.hf_hub_id == f"sparseinst-zoo/{name}.coco"
    assert cfg.hf_hub_filename == "model.safetensors"
    assert cfg.num_classes == 80 and cfg.label_names == COCO_CLASSES
    assert cfg.mean == (123.675, 116.280, 103.530) and cfg.std == (58.395, 57.120, 57.375)
    assert cfg.min_size in (608, 640) and cfg.max_size == 853
    assert cfg.license == "mit" and cfg.paper_ids == "arXiv:2203.12827"
    assert cfg.reference_ap is not None and 30 < cfg.reference_ap < 40
    assert cfg.classifier == ("decoder.inst_branch.cls_score",)
    assert cfg.original_filename.endswith(".pth")
    # JSON round trip (the cfg is saved with the weights)
    assert PretrainedCfg.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_reference_table_values():
    cfg = sparseinst_zoo.get_pretrained_cfg("sparseinst_r50vd_dcn_giam_aug")
    assert (cfg.reference_ap, cfg.reference_ap_test_dev, cfg.reference_fps, cfg.min_size) == (37.4, 37.9, 40.0, 608)
    cfg = sparseinst_zoo.get_pretrained_cfg("sparseinst_r50_iam")
    assert (cfg.reference_ap, cfg.reference_fps, cfg.min_size) == (32.8, 44.3, 640)


def test_unknown_name_suggests_close_names():
    with pytest.raises(ValueError, match="sparseinst_r50_giam") as info:
        sparseinst_zoo.create_model("sparseinst_r50_gaim")
    assert "list_models" in str(info.value)
    with pytest.raises(ValueError, match="Unknown model"):
        sparseinst_zoo.get_pretrained_cfg("totally_unknown")
    assert sparseinst_zoo.get_pretrained_cfg("totally_unknown", allow_unregistered=True) is None


def test_unknown_tag_lists_tags():
    with pytest.raises(ValueError, match="'coco'"):
        sparseinst_zoo.create_model("sparseinst_r50_giam.imagenet")


def test_register_twice_is_an_error():
    from sparseinst_zoo._registry import register_model

    def sparseinst_r50_giam():  # same name as a registered model
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(sparseinst_r50_giam)


def test_suggestions_are_not_repeated():
    with pytest.raises(ValueError) as info:
        sparseinst_zoo.create_model("sparseinst_tiny_tset")
    message = str(info.value)
    assert message.count("'sparseinst_tiny_test'") == 1


def test_weights_arguments_are_rejected_for_hub_and_folder_models(tmp_path):
    with pytest.raises(ValueError, match="already carries its weights"):
        sparseinst_zoo.create_model("hf-hub:org/repo", pretrained=True)
    sparseinst_zoo.create_model("sparseinst_tiny_test").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="already carries its weights"):
        sparseinst_zoo.create_model(str(tmp_path), checkpoint_path="model.safetensors")


def test_a_path_that_is_not_a_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a registered model nor an existing folder"):
        sparseinst_zoo.create_model(str(tmp_path / "runs" / "x" / "bets"))


def test_listing_imports_no_torch():
    """`sparseinst list` reads the torch-free cfgs: no torch import (2 s), so listing stays instant."""
    import subprocess
    import sys

    code = (
        "import sys; from sparseinst_zoo.cli import main; code = main(['list', '--pretrained']); "
        "assert code == 0; assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "sparseinst_r50_iam.coco_mmdet" in result.stdout and "original release (URL)" in result.stdout
    assert "original release (Google Drive)" in result.stdout and "cached" in result.stdout
