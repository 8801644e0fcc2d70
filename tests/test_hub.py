"""Loading weights from a real loopback Hub (tests/hub_server.py), local files, save/load round trips, num_classes."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from hub_server import HubServer

import sparseinst_zoo
from sparseinst_zoo.errors import DownloadError, SparseInstError
from sparseinst_zoo.hub import CONFIG_NAME, WEIGHTS_NAME, load_state_dict_strict

TINY = "sparseinst_tiny_test"
R50_REPO = "sparseinst-zoo/sparseinst_r50_giam.coco"


@pytest.fixture
def hub(monkeypatch):
    """A running loopback Hub with HF_ENDPOINT pointing at it and offline mode off."""
    from huggingface_hub import constants

    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the library read it at import time (conftest: 1)
        yield server


def go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def outputs(model, size=64):
    torch.manual_seed(123)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return model.eval()(x)


def same_outputs(a, b) -> bool:
    out_a, out_b = outputs(a), outputs(b)
    return all(torch.equal(out_a[k], out_b[k]) for k in ("pred_logits", "pred_masks", "pred_scores"))


def publish(hub, model, repo_id, tmp_path, metrics=None):
    folder = model.save_pretrained(tmp_path / repo_id.replace("/", "--"), metrics=metrics, repo_id=repo_id)
    hub.add_folder(repo_id, folder)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# pretrained=True against the loopback Hub
# ---------------------------------------------------------------------------------------------------------------------
def test_pretrained_downloads_once_then_uses_the_cache_and_works_offline(hub, tmp_path, monkeypatch):
    torch.manual_seed(0)
    source = sparseinst_zoo.create_model("sparseinst_r50_giam")
    for module in source.modules():  # non-trivial frozen-BN statistics must travel too
        if hasattr(module, "running_var") and module.running_var is not None:
            module.running_var.uniform_(0.5, 1.5)
    publish(hub, source, R50_REPO, tmp_path)

    model = sparseinst_zoo.create_model("sparseinst_r50_giam", pretrained=True)
    assert hub.count("GET", f"/{R50_REPO}/resolve/main/{WEIGHTS_NAME}") == 1
    assert hub.count("GET", f"/{R50_REPO}/resolve/main/{CONFIG_NAME}") == 1
    assert hub.count("GET") == 2  # exactly the two pinned files, nothing else (no README, no backbone weights)
    assert same_outputs(model, source)
    assert model.label_names[0] == "person" and model.pretrained_cfg.min_size == 608

    expected = source.state_dict()
    again = sparseinst_zoo.create_model("sparseinst_r50_giam", pretrained=True)
    assert hub.count("GET") == 2  # cache reuse: metadata checks only
    assert all(torch.equal(again.state_dict()[k], v) for k, v in expected.items())

    go_offline(monkeypatch)
    hub.clear_log()
    offline = sparseinst_zoo.create_model("sparseinst_r50_giam", pretrained=True)
    assert hub.count() == 0
    assert all(torch.equal(offline.state_dict()[k], v) for k, v in expected.items())


def test_cache_dir_argument_is_used(hub, tmp_path, tiny_model):
    publish(hub, tiny_model, "org/tiny", tmp_path)
    cache = tmp_path / "my-cache"
    model = sparseinst_zoo.create_model("hf-hub:org/tiny", cache_dir=cache)
    assert same_outputs(model, tiny_model)
    assert (cache / "models--org--tiny" / "blobs").is_dir()


def test_offline_without_cache_says_what_to_do(monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(DownloadError, match=r"HF_HUB_OFFLINE is set and it is not in the cache"):
        sparseinst_zoo.from_pretrained("org/never-downloaded")
    with pytest.raises(DownloadError) as info:
        sparseinst_zoo.create_model("sparseinst_r50_giam", pretrained=True)
    message = str(info.value)
    assert R50_REPO in message and WEIGHTS_NAME in message and "HF_HUB_OFFLINE" in message
    assert "drive.google.com/file/d/1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL" in message
    assert "sparseinst convert" in message and "checkpoint_path" in message


def test_unresolvable_hub_host_fails_fast_and_uses_the_cache(hub, tmp_path, tiny_model, request):
    """No DNS (no network): no half-minute of retries; cached files still load, uncached ones say why at once."""
    publish(hub, tiny_model, "org/tiny", tmp_path)
    sparseinst_zoo.create_model("hf-hub:org/tiny")  # fills the cache through the loopback Hub
    request.getfixturevalue("loopback_name_does_not_resolve")  # only after the cache was filled
    hub.clear_log()
    cached = sparseinst_zoo.create_model("hf-hub:org/tiny")
    assert same_outputs(cached, tiny_model) and hub.count() == 0
    with pytest.raises(DownloadError, match="does not resolve") as info:
        sparseinst_zoo.create_model("sparseinst_r50_giam", pretrained=True)
    assert "sparseinst convert" in str(info.value) and hub.count() == 0


@pytest.mark.parametrize("status", [404, 401])
def test_unpublished_repo_explains_how_to_get_the_original(monkeypatch, status):
    from huggingface_hub import constants

    with HubServer(missing_repo_status=status) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        with pytest.raises(DownloadError) as info:
            sparseinst_zoo.create_model("sparseinst_pvt_v2_b1_giam", pretrained=True)
        assert server.count("HEAD") >= 1  # it really asked the loopback Hub
    message = str(info.value)
    assert "sparseinst-zoo/sparseinst_pvt_v2_b1_giam.coco" in message and f"HTTP {status}" in message
    assert "does not exist" in message and "13l9JgTz3sF6j3vSVHOOhAYJnCf-QuNe_" in message
    assert "sparseinst convert FILE.pth --model sparseinst_pvt_v2_b1_giam" in message


def test_missing_file_and_revision(hub, tmp_path, tiny_model):
    hub.add_file("org/empty", CONFIG_NAME, b'{"model_name": "sparseinst_tiny_test"}')
    with pytest.raises(DownloadError, match=r"'model.safetensors' of Hub repository 'org/empty'.*no such file"):
        sparseinst_zoo.create_model("hf-hub:org/empty")
    publish(hub, tiny_model, "org/tiny", tmp_path)
    with pytest.raises(DownloadError, match="revision does not exist"):
        sparseinst_zoo.create_model("hf-hub:org/tiny@v9")
    overlay = {"hf_hub_id": "org/tiny", "revision": "v9"}
    with pytest.raises(DownloadError, match="revision does not exist"):
        sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay=overlay)
    commit = hub.add_file("org/tiny", "notes.txt", b"second commit", revision="v2")
    model = sparseinst_zoo.create_model("hf-hub:org/tiny@v2")  # branch
    assert same_outputs(model, tiny_model)
    model = sparseinst_zoo.from_pretrained("org/tiny", revision=commit)  # commit sha
    assert same_outputs(model, tiny_model)
    assert model.pretrained_cfg.revision == commit
    model = sparseinst_zoo.from_pretrained("org/tiny@v2")  # the revision of 'repo@rev' is recorded too
    assert (model.pretrained_cfg.hf_hub_id, model.pretrained_cfg.revision) == ("org/tiny", "v2")
    assert (
        json.loads((model.save_pretrained(tmp_path / "again") / CONFIG_NAME).read_text())["pretrained_cfg"]["revision"]
        == "v2"
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_weights_on_the_hub(hub, tmp_path, tiny_model, damage):
    folder = publish(hub, tiny_model, "org/tiny", tmp_path)
    data = (folder / WEIGHTS_NAME).read_bytes()
    bad = data[: len(data) // 2] if damage == "truncated" else b"\x00" * 8 + b"not a safetensors file"
    hub.add_file("org/tiny", WEIGHTS_NAME, bad)
    overlay = {"hf_hub_id": "org/tiny"}
    with pytest.raises(ValueError) as info:
        sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay=overlay)
    message = str(info.value)
    assert "truncated or corrupt" in message and "org/tiny" in message and "delete" in message


def test_tag_without_weights_is_a_clear_error():
    with pytest.raises(ValueError, match="has no pretrained weights"):
        sparseinst_zoo.create_model(TINY, pretrained=True)


# ---------------------------------------------------------------------------------------------------------------------
# num_classes surgery
# ---------------------------------------------------------------------------------------------------------------------
def test_num_classes_surgery_keeps_every_other_tensor(hub, tmp_path, caplog):
    torch.manual_seed(0)
    coco = sparseinst_zoo.create_model(TINY)
    coco.pretrained_cfg = sparseinst_zoo.get_pretrained_cfg("sparseinst_r50_giam")  # 80 COCO names
    publish(hub, coco, "org/tiny-coco", tmp_path)
    with caplog.at_level(logging.INFO, logger="sparseinst_zoo"):
        model = sparseinst_zoo.create_model("hf-hub:org/tiny-coco", num_classes=3)
    assert "decoder.inst_branch.cls_score.weight" in caplog.text and "differs from the weights (80)" in caplog.text
    assert model.num_classes == 3 and model.label_names == ("class_0", "class_1", "class_2")
    state, reference = model.state_dict(), coco.state_dict()
    assert set(state) == set(reference)
    for key, value in reference.items():
        if key.startswith("decoder.inst_branch.cls_score."):
            assert state[key].shape[0] == 3
        else:
            assert torch.equal(state[key], value), key
    assert model.decoder.inst_branch.cls_score.bias.allclose(torch.full((3,), -4.59512), atol=1e-4)
    assert outputs(model)["pred_logits"].shape == (1, 10, 3)
    assert sparseinst_zoo.create_model("hf-hub:org/tiny-coco").label_names[0] == "person"


# ---------------------------------------------------------------------------------------------------------------------
# save_pretrained / from_pretrained / push_to_hub / checkpoint_path
# ---------------------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path, tiny_model):
    folder = tiny_model.save_pretrained(tmp_path / "saved", metrics={"mask AP (val)": 12.345})
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["model_name"] == TINY and config["model_args"]["frozen_bn"] is True
    assert config["pretrained_cfg"]["num_classes"] == 80
    for model in (
        sparseinst_zoo.from_pretrained(str(folder)),
        sparseinst_zoo.create_model(str(folder)),
        sparseinst_zoo.create_model(TINY, checkpoint_path=folder),
        sparseinst_zoo.create_model(TINY, checkpoint_path=folder / WEIGHTS_NAME),
        sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay={"file": str(folder)}),
    ):
        assert same_outputs(model, tiny_model)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in tiny_model.state_dict().items())
        assert model.pretrained_cfg.min_size == 64
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: sparseinst-zoo" in card and "license: mit" in card
    assert "| mask AP (val) | 12.35 |" in card and "@inproceedings{Cheng2022SparseInst" in card
    assert 'from_pretrained("path/to/this/folder")' in card


def test_save_pretrained_keeps_a_readme_that_is_not_its_model_card(tmp_path, tiny_model, caplog):
    (tmp_path / "README.md").write_text("# my project notes\n")
    with caplog.at_level(logging.WARNING, logger="sparseinst_zoo"):
        tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# my project notes\n"
    assert "kept the README.md" in caplog.text and (tmp_path / WEIGHTS_NAME).is_file()
    folder = tiny_model.save_pretrained(tmp_path / "saved")
    tiny_model.save_pretrained(folder, metrics={"mask AP (val)": 1.5})  # its own card is rewritten
    assert "| mask AP (val) | 1.50 |" in (folder / "README.md").read_text()


def test_reference_pth_loads_directly(tmp_path, tiny_model):
    torch.save({"model": tiny_model.state_dict()}, tmp_path / "model_final.pth")
    model = sparseinst_zoo.create_model(TINY, checkpoint_path=tmp_path / "model_final.pth")
    assert same_outputs(model, tiny_model)


def test_a_training_checkpoint_loads_the_weights_the_run_saved(tmp_path):
    """`sparseinst train --ema` saves the EMA in last/ and best/; its checkpoints/last.pt loads the same weights."""
    from sparseinst_zoo.data.synthetic import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "data", num_images=4, max_shapes=1, radius=(0.2, 0.3), seed=0)
    torch.manual_seed(0)
    sparseinst_zoo.train(
        model=TINY, train_json=data, train_images=str(tmp_path / "data"), iters=2, batch_size=2, min_sizes=(64,),
        max_size=96, ema=True, ema_decay=0.5, out=str(tmp_path / "run"), workers=0, progress=False, tensorboard=False,
    )  # fmt: skip
    saved = sparseinst_zoo.create_model(str(tmp_path / "run" / "last"))
    loaded = sparseinst_zoo.create_model(TINY, checkpoint_path=tmp_path / "run" / "checkpoints" / "last.pt")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.state_dict().items())


def test_frozen_bn_and_dcn_offsets_round_trip(tmp_path):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model(
        "sparseinst_giam",
        backbone="resnet26",
        frozen_bn=True,
        dcn_stages=(4,),
        encoder_channels=32,
        inst_channels=32,
        mask_channels=32,
        kernel_dim=16,
        inst_convs=1,
        mask_convs=1,
        num_masks=5,
        num_classes=4,
    ).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if "conv2_offset" in name or "running" in name:
                tensor.copy_(torch.rand_like(tensor) * 0.5 + 0.5)  # non-zero offsets and BN statistics
    folder = model.save_pretrained(tmp_path / "dcn")
    loaded = sparseinst_zoo.from_pretrained(str(folder))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert any("conv2_offset" in k for k in loaded.state_dict())
    assert not any(k.endswith("num_batches_tracked") for k in loaded.state_dict() if k.startswith("backbone."))
    assert same_outputs(loaded, model)


def test_saved_config_never_downloads_backbone_weights(tmp_path, tiny_model, monkeypatch):
    go_offline(monkeypatch)
    folder = tiny_model.save_pretrained(tmp_path / "saved")
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["model_args"]["pretrained_backbone"] = True  # as if written by hand or an older version
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    model = sparseinst_zoo.from_pretrained(str(folder))  # would fail offline if timm tried to fetch ImageNet weights
    assert model.config["pretrained_backbone"] is False and same_outputs(model, tiny_model)


def test_push_to_hub_then_create_model_from_hf_hub(hub, tiny_model):
    url = tiny_model.push_to_hub("org/pushed", metrics={"mask AP": 1.5})
    assert url.startswith(hub.url) and "/org/pushed/commit/" in url
    assert sorted(hub.files("org/pushed")) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    card = hub.files("org/pushed")["README.md"].decode()
    assert 'create_model("hf-hub:org/pushed")' in card
    model = sparseinst_zoo.create_model("hf-hub:org/pushed")
    assert same_outputs(model, tiny_model)
    assert model.pretrained_cfg.hf_hub_id == "org/pushed"


def test_loading_errors_name_the_problem(tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sparseinst_zoo.create_model(TINY, checkpoint_path=tmp_path / "nothing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        sparseinst_zoo.create_model(TINY, checkpoint_path=tmp_path / "empty")
    with pytest.raises(SparseInstError, match="needs a Hub repository id"):
        sparseinst_zoo.from_pretrained("not a repo")
    folder = tiny_model.save_pretrained(tmp_path / "tiny")
    assert same_outputs(sparseinst_zoo.from_pretrained(str(folder / WEIGHTS_NAME)), tiny_model)  # config beside it
    with pytest.raises(TypeError, match=r"^SparseInst got an unexpected argument 'num_clases' \(did you mean num_cl"):
        sparseinst_zoo.create_model(str(folder), num_clases=3)  # the caller's typo, not the folder's config.json
    config = json.loads((folder / "config.json").read_text())
    config["model_args"]["num_clases"] = 3
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "config.json").write_text(json.dumps(config))
    shutil.copy(folder / WEIGHTS_NAME, tmp_path / "edited")
    with pytest.raises(SparseInstError, match=r"edited/config.json: model_args do not fit sparseinst_tiny_test"):
        sparseinst_zoo.create_model(str(tmp_path / "edited"))
    with pytest.raises(
        ValueError, match=r"not fit sparseinst_giam: .*missing.*unexpected.* saved from 'sparseinst_tiny"
    ):
        sparseinst_zoo.create_model("sparseinst_giam", backbone="resnet18", checkpoint_path=folder)
    state = dict(tiny_model.state_dict())
    state["decoder.inst_branch.fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"decoder\.inst_branch\.fc\.weight: \(3, 3\) in the weights"):
        load_state_dict_strict(tiny_model, state)


# ---------------------------------------------------------------------------------------------------------------------
# hub/publish.py
# ---------------------------------------------------------------------------------------------------------------------
def _publish_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "hub" / "publish.py"
    spec = importlib.util.spec_from_file_location("sparseinst_publish", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_publish_sources_come_from_the_package_cfgs():
    manifest = _publish_module().build_manifest()["models"]
    assert len(manifest) == 14 and not any(entry["hub_published"] for entry in manifest.values())
    entry = manifest["sparseinst_r50_giam.coco"]
    assert entry["hf_hub_id"] == R50_REPO and entry["test_size"]["min_size"] == 608
    assert entry["sources"] == [("hub", R50_REPO), ("google_drive", "1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL")]
    assert entry["weights_origin"] == "original"
    mmdet = manifest["sparseinst_r50_iam.coco_mmdet"]
    assert mmdet["sources"][1][0] == "url" and mmdet["original_sha256"] == "72c711cd"


def test_publish_dry_run_converts_verifies_and_writes_cards(tmp_path, tiny_model, capsys):
    originals = tmp_path / "originals"
    originals.mkdir()
    torch.save({"model": tiny_model.state_dict()}, originals / "tiny_final.pth")
    publish_tool = _publish_module()
    code = publish_tool.main(
        ["convert", str(originals), "--out", str(tmp_path / "out"), "--map", "tiny_final.pth=sparseinst_tiny_test"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "outputs identical to the .pth" in printed and "dry run: would upload" in printed
    folder = tmp_path / "out" / TINY
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_NAME, WEIGHTS_NAME]
    assert 'create_model("hf-hub:sparseinst-zoo/sparseinst_tiny_test")' in (folder / "README.md").read_text()
    report = json.loads((tmp_path / "out" / "publish_report.json").read_text())
    assert report[0]["verification"]["identical"] and not report[0]["pushed"]


def test_publish_reports_a_bad_file_in_one_line_and_converts_the_others(tmp_path, tiny_model, capsys):
    originals = tmp_path / "originals"
    originals.mkdir()
    torch.save({"model": tiny_model.state_dict()}, originals / "tiny_final.pth")
    (originals / "a_broken.pth").write_text("not a checkpoint")
    code = _publish_module().main(
        ["convert", str(originals), "--out", str(tmp_path / "out"), "--map", "tiny_final.pth=sparseinst_tiny_test"]
    )
    assert code == 1
    captured = capsys.readouterr()
    assert "a_broken.pth: error:" in captured.err and "not a PyTorch checkpoint" in captured.err
    assert "Traceback" not in captured.err and "tiny_final.pth -> sparseinst_tiny_test" in captured.out
    assert [entry["file"] for entry in json.loads((tmp_path / "out" / "publish_report.json").read_text())] == [
        "tiny_final.pth"
    ]
