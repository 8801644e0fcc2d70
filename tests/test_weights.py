"""pretrained=True through every source, over real HTTP on 127.0.0.1: a loopback Hub (tests/hub_server.py) and a
loopback original-release server (tests/release_server.py) serving a reference-format .pth made here."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hub_server import HubServer
from release_server import ReleaseServer

import sparseinst_zoo
from sparseinst_zoo import cli
from sparseinst_zoo.commands import download as download_command
from sparseinst_zoo.errors import DownloadError, SparseInstError

TINY = "sparseinst_tiny_test"
REPO = "sparseinst-zoo/sparseinst_tiny_test.coco"
PTH = "sparse_inst_tiny_abc123.pth"


@pytest.fixture
def online(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("SPARSEINST_DOWNLOAD_TIMEOUT", "2")


@pytest.fixture
def hub(online, monkeypatch):
    """A loopback Hub with no repositories: every pretrained repo answers RepoNotFound."""
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


@pytest.fixture
def reference(tmp_path):
    """A reference-format checkpoint of the tiny model ({"model": state_dict}) and its bytes."""
    torch.manual_seed(0)
    state = sparseinst_zoo.create_model(TINY).state_dict()
    path = tmp_path / PTH
    torch.save({"model": state}, path)
    return path


@pytest.fixture
def release(reference):
    with ReleaseServer({PTH: reference.read_bytes()}) as server:
        yield server


def overlay(release, **extra):
    return {"hf_hub_id": REPO, "url": f"{release.url}/{PTH}", "original_filename": PTH, **extra}


def go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def outputs(model):
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(1, 3, 64, 64))


def same(a, b):
    out_a, out_b = outputs(a), outputs(b)
    return all(torch.equal(out_a[k], out_b[k]) for k in out_a)


def fetch(release, cache, **extra):
    return sparseinst_zoo.create_model(
        TINY, pretrained=True, pretrained_cfg_overlay=overlay(release, **extra), cache_dir=cache
    )


def converted(release, cache, **extra):
    """The converted-weights cache folder of ``fetch(release, cache, **extra)``."""
    from sparseinst_zoo._builder import resolve_pretrained_cfg
    from sparseinst_zoo._cache import converted_folder

    return converted_folder(resolve_pretrained_cfg(TINY, pretrained_cfg_overlay=overlay(release, **extra)), cache)


def test_fallback_to_the_original_then_offline_from_the_cache(hub, release, reference, tmp_path, monkeypatch):
    model = fetch(release, tmp_path / "cache")
    assert hub.count(suffix="model.safetensors") >= 1  # the Hub was asked first and said RepoNotFound
    assert [r[:2] for r in release.requests] == [("GET", f"/{PTH}")]
    assert same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))
    cached = converted(release, tmp_path / "cache")
    assert sorted(p.name for p in cached.iterdir()) == ["config.json", "model.safetensors", "source.json"]
    assert json.loads((cached / "source.json").read_text())["origin"].endswith(PTH)

    go_offline(monkeypatch)
    hub.clear_log()
    release.requests.clear()
    again = fetch(release, tmp_path / "cache")
    assert hub.requests == [] and release.requests == []
    assert same(again, model)


def test_published_hub_weights_win_and_the_original_is_not_asked(hub, release, tmp_path):
    torch.manual_seed(5)
    published = sparseinst_zoo.create_model(TINY)
    hub.add_folder(REPO, published.save_pretrained(tmp_path / "pub", repo_id=REPO))
    model = fetch(release, tmp_path / "cache")
    assert release.requests == []
    assert same(model, published)


def test_weights_cached_from_one_source_are_never_served_for_another(hub, release, reference, tmp_path):
    """An overlay naming another Hub repository or release file gets those weights, not what an earlier call cached."""
    fetch(release, tmp_path / "cache")  # the release, converted and cached
    torch.manual_seed(5)
    mine = sparseinst_zoo.create_model(TINY, num_classes=4)
    hub.add_folder("me/finetuned", mine.save_pretrained(tmp_path / "mine", repo_id="me/finetuned"))
    model = fetch(release, tmp_path / "cache", hf_hub_id="me/finetuned")
    assert model.num_classes == 4 and same(model, mine)
    torch.manual_seed(6)
    other = sparseinst_zoo.create_model(TINY)
    release.files["other.pth"] = _pth_bytes(other, tmp_path / "other.pth")
    model = fetch(release, tmp_path / "cache", url=f"{release.url}/other.pth")  # same original_filename
    assert same(model, other)
    assert same(fetch(release, tmp_path / "cache"), sparseinst_zoo.create_model(TINY, checkpoint_path=reference))


def _pth_bytes(model, path):
    torch.save({"model": model.state_dict()}, path)
    return path.read_bytes()


def test_a_truncated_download_fails_in_one_line_then_resumes(hub, release, reference, tmp_path):
    release.truncate_to = 1_500_000  # of about 2 MB
    with pytest.raises(DownloadError, match="dropped mid-download") as info:
        fetch(release, tmp_path / "cache")
    assert "\n" not in str(info.value) and "does not exist" in str(info.value)  # the Hub's reason is listed too
    release.truncate_to = None
    model = fetch(release, tmp_path / "cache")
    assert release.requests[-1][2].startswith("bytes=") and release.requests[-1][2] != "bytes=0-"  # resumed
    assert same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))


def test_server_error_and_not_found_are_reported_as_what_they_are(hub, release, tmp_path):
    release.status = 500
    with pytest.raises(DownloadError, match=r"answered HTTP 500 \(server error\)"):
        fetch(release, tmp_path / "cache")
    release.status = None
    with pytest.raises(DownloadError, match=r"HTTP 404 \(not found\)"):
        fetch(release, tmp_path / "cache", url=f"{release.url}/absent.pth")


def test_a_server_that_never_answers_times_out_within_the_limit(hub, release, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEINST_DOWNLOAD_TIMEOUT", "1")
    release.hang = True
    start = time.monotonic()
    with pytest.raises(DownloadError, match="did not answer within 1 s"):
        fetch(release, tmp_path / "cache")
    assert time.monotonic() - start < 10


def test_a_wrong_sha256_is_refused_and_the_file_deleted(hub, release, tmp_path):
    with pytest.raises(DownloadError, match="sha256 .* but 00000000 is pinned"):
        fetch(release, tmp_path / "cache", original_sha256="00000000")
    assert not list((tmp_path / "cache" / "sparseinst-zoo" / "originals").rglob("*.pth"))


def test_a_corrupted_cached_original_is_downloaded_again(hub, release, reference, tmp_path, caplog):
    """A cached original that fails its pinned sha256 (a damaged disk, a cut copy) was deleted with "run again"."""
    pinned = hashlib.sha256(reference.read_bytes()).hexdigest()[:8]
    fetch(release, tmp_path / "cache", original_sha256=pinned)
    shutil.rmtree(converted(release, tmp_path / "cache", original_sha256=pinned))
    (original,) = (tmp_path / "cache" / "sparseinst-zoo" / "originals").rglob("*.pth")
    original.write_bytes(original.read_bytes()[:-100] + b"\xff" * 100)
    release.requests.clear()
    model = fetch(release, tmp_path / "cache", original_sha256=pinned)
    assert "fails its pinned sha256 (corrupt): deleted, downloading it again" in caplog.text
    assert [r[:2] for r in release.requests] == [("GET", f"/{PTH}")]
    assert same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))


def test_a_corrupted_cached_safetensors_is_reported_and_fetched_again(hub, release, reference, tmp_path, caplog):
    fetch(release, tmp_path / "cache")
    cached = converted(release, tmp_path / "cache") / "model.safetensors"
    data = bytearray(cached.read_bytes())
    data[-100:] = b"\xff" * 100  # same size, wrong content (NaNs)
    cached.write_bytes(bytes(data))
    model = fetch(release, tmp_path / "cache")
    assert "fail their sha256 check" in caplog.text
    assert same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))


def test_offline_without_cache_says_it_used_the_cache_only(hub, release, tmp_path, monkeypatch):
    go_offline(monkeypatch)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE is set: only the cache was used") as info:
        fetch(release, tmp_path / "cache")
    assert "By hand: download" in str(info.value)
    assert hub.requests == [] and release.requests == []


def test_offline_converts_an_original_already_in_the_cache(hub, release, reference, tmp_path, monkeypatch):
    """The converted weights gone (deleted, or corrupt and dropped) but the original .pth cached: offline mode said
    "only the cache was used" and asked to download by hand the file it had."""
    fetch(release, tmp_path / "cache")
    shutil.rmtree(converted(release, tmp_path / "cache"))
    go_offline(monkeypatch)
    hub.clear_log()
    release.requests.clear()
    model = fetch(release, tmp_path / "cache")
    assert same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))
    assert hub.requests == [] and release.requests == []  # nothing asked of the network
    shutil.rmtree(converted(release, tmp_path / "cache"))
    original = next((tmp_path / "cache").rglob(PTH))
    original.write_bytes(original.read_bytes()[:-10] + b"corrupted!")  # same size, fails the pinned sha256
    digest = hashlib.sha256(reference.read_bytes()).hexdigest()
    with pytest.raises(DownloadError, match="fails its pinned sha256 .corrupt., and HF_HUB_OFFLINE is set"):
        fetch(release, tmp_path / "cache", original_sha256=digest)
    assert release.requests == [] and original.is_file()  # kept for the user to see; replaced only online


def read_only(monkeypatch, root):
    """Make writes under ``root`` fail as on a read-only mount (EROFS), also for root, whom chmod does not stop."""
    real_open, real_mkdir = os.open, os.mkdir

    def refuse(path, dir_fd):
        where = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), path) if dir_fd is not None else os.fspath(path)
        if os.path.abspath(where).startswith(str(root)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), where)

    def open_(path, flags, mode=0o777, *, dir_fd=None):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            refuse(path, dir_fd)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def mkdir(path, mode=0o777, *, dir_fd=None):
        refuse(path, dir_fd)
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="resolves dir_fd paths through /proc")
def test_a_read_only_cache_serves_what_it_holds_and_says_what_to_do_otherwise(
    hub, release, reference, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    fetch(release, cache)
    read_only(monkeypatch, cache)
    release.requests.clear()
    model = fetch(release, cache)  # no lock can be taken there, and none is needed to read a finished entry
    assert release.requests == [] and same(model, sparseinst_zoo.create_model(TINY, checkpoint_path=reference))
    with pytest.raises(OSError, match=r"weights cache .* is read-only .*; point SPARSEINST_CACHE \(or cache_dir=\)"):
        fetch(release, cache, url=f"{release.url}/elsewhere.pth")


def test_two_processes_download_once(hub, release, tmp_path):
    script = (
        "import sparseinst_zoo, json, sys; "
        f"sparseinst_zoo.create_model({TINY!r}, pretrained=True, cache_dir=sys.argv[1], "
        "pretrained_cfg_overlay=json.loads(sys.argv[2]))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [sys.executable, "-c", script, str(tmp_path / "cache"), json.dumps(overlay(release))]
    procs = [subprocess.Popen(args, env=env) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sum(1 for method, _, _ in release.requests if method == "GET") == 1


def test_a_corrupt_blob_in_the_hub_cache_is_fetched_again(hub, tmp_path):
    torch.manual_seed(5)
    published = sparseinst_zoo.create_model(TINY)
    hub.add_folder(REPO, published.save_pretrained(tmp_path / "pub", repo_id=REPO))
    hub_only = {"hf_hub_id": REPO}
    model = sparseinst_zoo.create_model(
        TINY, pretrained=True, pretrained_cfg_overlay=hub_only, cache_dir=tmp_path / "hf"
    )
    blob = next(p for p in (tmp_path / "hf").rglob("blobs/*") if p.stat().st_size > 10000)
    blob.write_bytes(b"\x00" * blob.stat().st_size)  # same size, same name, wrong content
    before = hub.count("GET", "model.safetensors")
    again = sparseinst_zoo.create_model(
        TINY, pretrained=True, pretrained_cfg_overlay=hub_only, cache_dir=tmp_path / "hf"
    )
    assert hub.count("GET", "model.safetensors") == before + 1  # fetched again, not loaded silently
    assert same(again, model)


def test_hub_errors_are_one_line_and_say_what_happened(online, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "not a url")
    with pytest.raises(DownloadError, match="HF_ENDPOINT='not a url' is not an http"):
        sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": REPO})
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the block ends
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with pytest.raises(DownloadError, match="cannot be reached: the connection was refused"):
        sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": REPO})
    assert time.monotonic() - start < 5
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        server.add_files(REPO, {"config.json": b"{garbage", "model.safetensors": b"x" * 10})
        with pytest.raises(SparseInstError, match="config.json of Hub repository") as info:
            sparseinst_zoo.create_model(TINY, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": REPO})
        assert "save the model again" not in str(info.value)


def test_download_command_fills_the_cache_and_prints_sha256(hub, release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEINST_PRETRAINED_CFG_OVERLAY", json.dumps(overlay(release)))
    parser = download_command.argparse.ArgumentParser()
    download_command.add_arguments(parser)
    args = parser.parse_args([TINY, "--cache-dir", str(tmp_path / "cache"), "--delete-original"])
    assert download_command.run(args) == 0
    out = capsys.readouterr().out
    assert "sha256" in out and PTH in out and "original release:" in out
    assert not list((tmp_path / "cache" / "sparseinst-zoo" / "originals").rglob("*.pth"))  # --delete-original
    go_offline(monkeypatch)
    release.requests.clear()
    assert download_command.run(args) == 0  # already cached: no request
    assert release.requests == []


def test_quiet_download_prints_only_the_json_asked_for(hub, release, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPARSEINST_PRETRAINED_CFG_OVERLAY", json.dumps(overlay(release)))
    argv = ["download", TINY, "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert cli.main(argv) == 0
    assert capsys.readouterr() == ("", "")
    assert cli.main([*argv, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == TINY
    assert cli.main(["download", "no_such_model", *argv[2:]]) == 1  # errors still show
    assert "sparseinst download: error: no_such_model" in capsys.readouterr().err


def test_delete_original_also_removes_the_original_an_earlier_download_kept(hub, release, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEINST_PRETRAINED_CFG_OVERLAY", json.dumps(overlay(release)))
    parser = download_command.argparse.ArgumentParser()
    download_command.add_arguments(parser)
    originals = tmp_path / "cache" / "sparseinst-zoo" / "originals"
    assert download_command.run(parser.parse_args([TINY, "--cache-dir", str(tmp_path / "cache")])) == 0
    assert list(originals.rglob("*.pth"))
    args = parser.parse_args([TINY, "--cache-dir", str(tmp_path / "cache"), "--delete-original"])
    assert download_command.run(args) == 0
    assert not list(originals.rglob("*.pth"))
    go_offline(monkeypatch)
    assert fetch(release, tmp_path / "cache").num_classes == 80  # the converted weights stay


def test_download_refuses_a_bad_overlay_in_one_line(monkeypatch, capsys):
    monkeypatch.setenv("SPARSEINST_PRETRAINED_CFG_OVERLAY", '{"colour": "red"}')
    from sparseinst_zoo.cli import main

    assert main(["download", "sparseinst_r50_giam"]) == 1
    assert "pretrained_cfg_overlay has unknown field(s) colour" in capsys.readouterr().err


def test_google_drive_code_path_against_loopback(release, reference, tmp_path):
    """Drive ids cannot point at 127.0.0.1; gdown's download (used for both kinds) is exercised with its URL form."""
    from sparseinst_zoo._download import download_original, file_sha256

    got = download_original(tmp_path / "x.pth", url=f"{release.url}/{PTH}", sha256=file_sha256(reference)[:8])
    assert got.sha256 == file_sha256(reference) and got.size == reference.stat().st_size


def test_bad_cfgs_and_names_are_one_line_errors(tmp_path):
    with pytest.raises(SparseInstError, match="std must be > 0"):
        sparseinst_zoo.create_model(TINY, pretrained_cfg_overlay={"std": (58.4, 0, 57.4)})
    with pytest.raises(SparseInstError, match="needs a Hub repository id after 'hf-hub:'"):
        sparseinst_zoo.create_model("hf-hub:")
    (tmp_path / "m.onnx").write_bytes(b"onnx")
    with pytest.raises(SparseInstError, match="exported model: run it with the exported-model backend") as info:
        sparseinst_zoo.create_model(str(tmp_path / "m.onnx"))
    assert "Unknown model" not in str(info.value) and "hf-hub:" not in str(info.value)
    folder = sparseinst_zoo.create_model(TINY).save_pretrained(tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    for bad in ([1, 2], {**config["model_args"], "colour": "red"}):
        (folder / "config.json").write_text(json.dumps({**config, "model_args": bad}))
        with pytest.raises(SparseInstError, match="model_args"):
            sparseinst_zoo.from_pretrained(folder)


def test_val_refuses_a_registered_name_without_weights_like_predict(tmp_path, capsys):
    from sparseinst_zoo.cli import main

    argv = ["val", TINY, "--json", str(tmp_path / "gt.json"), "--images", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "has no released weights" in err and "--checkpoint PATH" in err


def test_a_hub_that_accepts_and_never_answers_is_given_up_fast(online, tmp_path, monkeypatch):
    import socket
    import threading

    sockets = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        threading.Thread(target=lambda: sockets.extend(server.accept() for _ in range(8)), daemon=True).start()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        monkeypatch.setenv("SPARSEINST_DOWNLOAD_TIMEOUT", "1")
        sparseinst_zoo.create_model(TINY)  # import and build once, so the timing below is the network's
        start = time.monotonic()
        with pytest.raises(DownloadError, match="did not answer within 1 s"):
            sparseinst_zoo.create_model(
                TINY, pretrained=True, pretrained_cfg_overlay={"hf_hub_id": REPO}, cache_dir=tmp_path
            )
        assert time.monotonic() - start < 8  # huggingface_hub alone retries for minutes


def test_r50_giam_release_keys_through_the_fallback(hub, tmp_path):
    """The one full-size check: a .pth with the exact keys of the released sparseinst_r50_giam file (130 MB)."""
    from reference_checkpoints import reference_pth_bytes, synthetic_reference

    name = "sparse_inst_r50_giam.pth"
    data = reference_pth_bytes(synthetic_reference("sparseinst_r50_giam"))
    (tmp_path / name).write_bytes(data)
    with ReleaseServer({name: data}) as server:
        model = sparseinst_zoo.create_model(
            "sparseinst_r50_giam",
            pretrained=True,
            cache_dir=tmp_path / "cache",
            pretrained_cfg_overlay={"url": f"{server.url}/{name}"},
        )
    direct = sparseinst_zoo.create_model("sparseinst_r50_giam", checkpoint_path=tmp_path / name)
    assert same(model, direct) and model.label_names[0] == "person" and model.pretrained_cfg.min_size == 608


def test_a_cache_variable_naming_a_file_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    """SPARSEINST_CACHE pointing at a file ended with a bare `[Errno 20] Not a directory: '.../locks'`."""
    from sparseinst_zoo.cli import main

    (tmp_path / "file").write_text("mine")
    monkeypatch.setenv("SPARSEINST_CACHE", str(tmp_path / "file"))
    assert main(["download", TINY]) == 1
    error = capsys.readouterr().err
    assert error.strip().endswith(f"SPARSEINST_CACHE={tmp_path / 'file'} is a file; point it at a folder for the cache")
    assert (tmp_path / "file").read_text() == "mine"


def test_a_downloaded_original_is_readable_like_every_cached_file(hub, release, tmp_path):
    """gdown moves its 0o600 temporary file into place: on a shared cache only the downloader could read the .pth."""
    old = os.umask(0o022)
    try:
        fetch(release, tmp_path / "cache")
    finally:
        os.umask(old)
    original = next((tmp_path / "cache").rglob(PTH))
    converted_weights = converted(release, tmp_path / "cache") / "model.safetensors"
    assert oct(original.stat().st_mode & 0o777) == oct(converted_weights.stat().st_mode & 0o777) == "0o644"
