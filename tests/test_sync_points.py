"""The end-to-end predict path synchronises the GPU at most once per batch (checked on the CPU with SyncCounter)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from sync_counter import SyncCounter

import sparseinst_zoo
from sparseinst_zoo.inference.predictor import Predictor


def test_the_counter_sees_reads_data_dependent_ops_and_uploads():
    layer = torch.nn.Linear(4, 3)
    with SyncCounter(layer) as counter:
        out = layer(torch.ones(2, 4).to("cpu"))  # an upload, then device work
        host = out.detach().cpu()
        host[host > 0].sum().item()  # host-side work is free
        out.sum().item()
        _ = out[out > 0]
        bool(out.max() > 0)
        torch.nonzero(out)
    assert counter.uploads == [(2, 4)]
    assert counter.syncs == ["cpu", "item", "__getitem__[bool mask]", "__bool__", "nonzero"]


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    # two landscape images share a padded size (one batch), the portrait one is a second batch
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((60, 90, 3), (58, 88, 3), (90, 60, 3))]


@pytest.mark.parametrize(
    ("resize_backend", "optimize", "sort_by_score", "score_threshold"),
    [
        ("pil", None, False, 0.005),
        ("torch", None, True, 0.005),
        ("torch", True, False, 0.5),  # BatchNorm folded; most images keep nothing
        ("pil", {"channels_last": True, "precision": "bf16"}, True, 0.005),
    ],
)
def test_predict_syncs_once_per_batch_and_uploads_only_the_images(
    resize_backend, optimize, sort_by_score, score_threshold
):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    predictor = Predictor(
        model,
        batch_size=2,
        min_size=64,
        max_size=96,
        resize_backend=resize_backend,
        optimize=optimize,
        sort_by_score=sort_by_score,
        score_threshold=score_threshold,
        keep_image=False,
    )
    images = _images()
    expected = predictor.predict_images(images)  # the first call may set up constants on the device
    with SyncCounter(predictor.model) as counter:
        results = predictor.predict_images(images)
    assert counter.syncs == ["cpu", "cpu"]  # two batches: one read of the instance counts each
    assert len(counter.uploads) == len(images)  # one copy per input image, nothing else goes to the device
    for got, want in zip(results, expected):
        torch.testing.assert_close(got.scores, want.scores)
        assert torch.equal(got.masks, want.masks)


@pytest.mark.parametrize("name", ["sparseinst_tiny_test", "sparseinst_r50_dcn_giam_aug", "sparseinst_pvt_v2_b1_giam"])
def test_network_forward_never_syncs(name):
    model = sparseinst_zoo.create_model(name).eval()
    batch = torch.randn(2, 3, 64, 96)
    with torch.inference_mode(), SyncCounter(model) as counter:
        model(batch.to("cpu"))
    assert counter.syncs == [] and len(counter.uploads) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    "optimize", [None, {"fold_bn": True, "channels_last": True, "precision": "bf16", "cuda_graphs": True}]
)
def test_cuda_predict_syncs_once_per_batch_and_matches_cpu(optimize):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    with torch.no_grad():  # random class weights give near-tied labels (2e-4 apart) that TF32/bf16 may flip
        model.decoder.inst_branch.cls_score.weight.mul_(30)
    # 0.005 keeps all 10 queries of each image (the default 0.25 keeps none: nothing to compare), in query order
    options = dict(
        batch_size=2, min_size=64, max_size=96, resize_backend="torch", keep_image=False, score_threshold=0.005
    )
    on_cpu = Predictor(model, **options).predict_images(_images())
    assert [len(r) for r in on_cpu] == [10, 10, 10]
    predictor = Predictor(copy.deepcopy(model).cuda(), optimize=optimize, **options)
    predictor.predict_images(_images())  # warm-up: cuDNN autotuning, graph capture, cached constants
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results = predictor.predict_images(_images())
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len([w for w in caught if "synchroniz" in str(w.message)]) == 2  # one per batch
    tolerance = 2e-3 if optimize is None else 3e-2  # TF32 convolutions / bf16
    assert [len(r) for r in results] == [10, 10, 10]
    for got, want in zip(results, on_cpu):
        assert got.masks.is_cuda
        got = got.cpu()
        torch.testing.assert_close(got.scores, want.scores, atol=tolerance, rtol=0)
        assert got.labels.tolist() == want.labels.tolist()
        assert (got.masks != want.masks).float().mean() < 0.01
