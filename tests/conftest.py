"""Shared fixtures. Tests never touch the network: HF_HUB_OFFLINE is on unless a test serves a loopback Hub."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Each test sees an empty Hugging Face cache, so nothing leaks between tests or from the user's cache."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hub"))


@pytest.fixture
def tiny_model():
    """A randomly initialised ``sparseinst_tiny_test`` in eval mode (seeded)."""
    import sparseinst_zoo

    torch.manual_seed(0)
    return sparseinst_zoo.create_model("sparseinst_tiny_test").eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> str:
    """:func:`tiny_model`'s weights exported to a dynamic ONNX file (traced at the 64x96 test size), shared by the test
    modules that only read it (an export takes ~10 s on 2 cores)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    import sparseinst_zoo
    from sparseinst_zoo.export import export_onnx

    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    return export_onnx(model, tmp_path_factory.mktemp("tiny_onnx") / "tiny.onnx", dynamic=True)


@pytest.fixture
def rgb_image() -> np.ndarray:
    """A 75x110 uint8 RGB image with a few coloured shapes (odd size on purpose)."""
    rng = np.random.default_rng(0)
    image = (rng.random((75, 110, 3)) * 60).astype(np.uint8)
    image[10:40, 15:50] = (220, 40, 40)
    image[45:70, 60:100] = (40, 200, 60)
    return image


@pytest.fixture
def loopback_name_does_not_resolve(monkeypatch):
    """Make the name lookup of 127.0.0.1 fail as it does without network (DNS only: no HTTP is mocked)."""
    import socket

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "127.0.0.1":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
