"""Inference fast paths: each mode runs on CPU and matches the fp32 eager model within its documented tolerance."""

from __future__ import annotations

import copy
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import nn

import sparseinst_zoo
from sparseinst_zoo.inference.optimize import (
    CUDAGraphRunner,
    OptimizedModel,
    fold_batch_norm,
    optimize_for_inference,
    resolve_compile_mode,
)
from sparseinst_zoo.inference.precision import autocast_dtype


def _count_bn(model: nn.Module) -> int:
    from sparseinst_zoo.inference.optimize import _BN_TYPES

    return sum(isinstance(m, _BN_TYPES) for m in model.modules())


def _randomise_norm_stats(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine terms, so folding is really exercised."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "running_mean") and hasattr(module, "running_var") and module.running_mean is not None:
            n = module.running_mean.numel()
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            if getattr(module, "weight", None) is not None:
                module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)


def _assert_fold_exact(out: dict, ref: dict, rel: float = 2e-5) -> None:
    """Folding is exact up to float32 rounding: max |difference| <= rel x the output's largest magnitude."""
    for key in ref:
        scale = ref[key].abs().max().item()
        assert (out[key] - ref[key]).abs().max().item() <= rel * scale + 1e-6, key


def _mask_iou(reference: torch.Tensor, other: torch.Tensor, threshold: float = 0.45) -> torch.Tensor:
    """IoU per query of the stride-4 masks thresholded like the postprocessing (empty vs empty counts as 1)."""
    a, b = reference.sigmoid() > threshold, other.sigmoid() > threshold
    inter = (a & b).flatten(2).sum(-1).float()
    union = (a | b).flatten(2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def _assert_reduced_precision_close(ref: dict, out: dict, prob_tol: float) -> None:
    """The documented bf16/fp16 tolerance: same labels (where fp32's top-2 class margin exceeds 0.1 logit: random
    weights give near ties), probabilities within prob_tol, mean mask IoU >= 0.98."""
    assert set(out) == set(ref)
    for key in ref:
        assert out[key].dtype == torch.float32 and out[key].shape == ref[key].shape
    top2 = ref["pred_logits"].topk(2, dim=-1).values
    clear = (top2[..., 0] - top2[..., 1]) > 0.1
    same = out["pred_logits"].argmax(-1) == ref["pred_logits"].argmax(-1)
    assert same[clear].all() and same.float().mean() >= 0.9
    for key in ("pred_logits", "pred_scores"):
        assert (out[key].sigmoid() - ref[key].sigmoid()).abs().max() <= prob_tol, key
    assert _mask_iou(ref["pred_masks"], out["pred_masks"]).mean() >= 0.98


@pytest.fixture(scope="module")
def r50_dcn():
    """A real reference architecture (R-50 + DCN, frozen BN) with non-trivial BN statistics and DCN offsets."""
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_r50_dcn_giam_aug").eval()
    with torch.no_grad():
        _randomise_norm_stats(model)
        for name, param in model.named_parameters():
            if "conv2_offset" in name:
                param.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def x_small():
    # small on purpose: torchvision's CPU deformable conv is slow
    return torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------------------ BN folding
def test_fold_bn_is_exact_and_leaves_the_original_alone(tiny_model):
    with torch.no_grad():
        _randomise_norm_stats(tiny_model)
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    bn_before = _count_bn(tiny_model)
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        ref = tiny_model(x)
        folded = fold_batch_norm(tiny_model)
        out = folded(x)
    assert bn_before > 0 and _count_bn(folded) == 0
    assert _count_bn(tiny_model) == bn_before
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    _assert_fold_exact(out, ref)


def test_fold_bn_inplace_returns_the_same_model(tiny_model):
    folded = fold_batch_norm(tiny_model, inplace=True)
    assert folded is tiny_model and _count_bn(tiny_model) == 0


def test_fold_bn_dcn_backbone_exact(r50_dcn, x_small):
    """Checked in float64, where folding must be exact to ~1e-12: any real mistake would show far above that."""
    model = copy.deepcopy(r50_dcn).double()
    x = x_small.double()
    with torch.inference_mode():
        ref = model(x)
        folded = fold_batch_norm(model)
        out = folded(x)
    assert _count_bn(folded) == 0 and _count_bn(model) > 0
    # the BN after each deformable conv was folded into it (it gained a bias)
    deform = [m for m in folded.modules() if type(m).__name__.endswith("DeformConv2d")]
    assert deform and all(m.bias is not None for m in deform)
    _assert_fold_exact(out, ref, rel=1e-10)


def test_fold_bn_trainable_batchnorm_act():
    """CSPDarkNet-style conv -> BatchNormAct2d (trainable BN + activation) folds in eval mode, keeping the act."""
    from timm.layers import ConvNormAct

    torch.manual_seed(0)
    model = nn.Sequential(ConvNormAct(3, 8, 3, act_layer=nn.LeakyReLU), ConvNormAct(8, 4, 1)).eval()
    with torch.no_grad():
        _randomise_norm_stats(model)
    x = torch.randn(2, 3, 16, 16)
    folded = fold_batch_norm(model)
    assert _count_bn(folded) == 0
    assert any(isinstance(m, nn.LeakyReLU) for m in folded.modules())
    torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5)


def test_fold_bn_leaves_unfoldable_patterns():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv_a = nn.Conv2d(3, 4, 3, padding=1)
            self.bn_a = nn.BatchNorm2d(4)  # conv_a's output is also used by the skip: not foldable
            self.conv_b = nn.Conv2d(4, 4, 1)
            self.bn_b = nn.BatchNorm2d(4)  # after a ReLU, not a conv: not foldable
            self.conv_c = nn.Conv2d(4, 4, 1)
            self.bn_c = nn.BatchNorm2d(4)  # foldable

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv_a(x)
            y = self.bn_a(a) + a
            y = self.bn_b(torch.relu(self.conv_b(y)))
            return self.bn_c(self.conv_c(y))

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        _randomise_norm_stats(net)
    folded = fold_batch_norm(net)
    assert isinstance(folded.bn_a, nn.BatchNorm2d) and isinstance(folded.bn_b, nn.BatchNorm2d)
    assert isinstance(folded.bn_c, nn.Identity)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------- optimised model
@pytest.mark.parametrize("kwargs", [dict(fold_bn=True), dict(fold_bn=True, channels_last=True), dict(fold_bn=False)])
def test_fp32_modes_match(tiny_model, kwargs):
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        ref = tiny_model(x)
    fast = optimize_for_inference(tiny_model, **kwargs)
    out = fast(x)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("precision, tol", [("bf16", 0.02), ("fp16", 0.005)])
def test_reduced_precision_tiny(tiny_model, precision, tol):
    x = torch.randn(2, 3, 64, 96)
    with torch.inference_mode():
        ref = tiny_model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CPUs without native fp16 warn that it is emulated
        fast = optimize_for_inference(tiny_model, precision=precision, channels_last=True)
    _assert_reduced_precision_close(ref, fast(x), tol)


def test_bf16_real_model_with_dcn(r50_dcn, x_small):
    """bf16 on R-50 + DCN (the deformable convs stay fp32: torchvision's CPU kernel has no bf16)."""
    with torch.inference_mode():
        ref = r50_dcn(x_small)
    fast = optimize_for_inference(r50_dcn, precision="bf16", channels_last=True)
    _assert_reduced_precision_close(ref, fast(x_small), 0.02)
    # the caller's model is untouched: its deformable convs are still plain torchvision ones, BNs still there
    assert _count_bn(r50_dcn) > 0
    assert {type(m).__name__ for m in r50_dcn.modules()} >= {"DeformConv2d"}


def test_optimized_model_behaves_like_the_model(tiny_model):
    fast = optimize_for_inference(tiny_model, channels_last=True)
    assert isinstance(fast, OptimizedModel) and not fast.training
    assert fast.pretrained_cfg is fast.model.pretrained_cfg
    assert fast.label_names == tiny_model.label_names and fast.num_classes == tiny_model.num_classes
    assert fast.options["channels_last"] and fast.options["precision"] == "fp32"
    assert all(not p.requires_grad for p in fast.parameters())
    assert all(p.requires_grad for p in tiny_model.parameters())
    assert all(k.startswith("model.") for k in fast.state_dict())  # parameters appear once
    with pytest.raises(ValueError, match="divisible by 32"):
        fast(torch.randn(1, 3, 60, 64))
    with pytest.raises(RuntimeError, match="inference only"):
        fast.train()
    with pytest.raises(ValueError, match="already optimised"):
        optimize_for_inference(fast)


def test_optimized_model_predict_matches(tiny_model, rgb_image):
    fast = optimize_for_inference(tiny_model, fold_bn=True, channels_last=True)
    ref = tiny_model.predict(rgb_image, score_threshold=0.0, optimize=False)[0]
    out = fast.predict(rgb_image, score_threshold=0.0)[0]
    assert len(out) == len(ref)
    torch.testing.assert_close(out.scores, ref.scores, atol=1e-5, rtol=1e-5)
    assert torch.equal(out.labels, ref.labels)
    differing = (out.masks != ref.masks).float().mean()
    assert differing <= 1e-4  # a pixel can sit exactly at the 0.45 threshold


# ---------------------------------------------------------------------------------------------- option errors
def test_cuda_only_options_fail_clearly_on_cpu(tiny_model):
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        optimize_for_inference(tiny_model, cuda_graphs=True)
    runner = CUDAGraphRunner(lambda x: {"x": x})
    with pytest.raises(ValueError, match="CUDA graphs need the input on a CUDA device"):
        runner(torch.zeros(1, 3, 32, 32))


def test_bad_options(tiny_model):
    with pytest.raises(ValueError, match="precision must be one of"):
        optimize_for_inference(tiny_model, precision="int8")
    with pytest.raises(ValueError, match="compile must be"):
        optimize_for_inference(tiny_model, compile="fastest")
    with pytest.raises(ValueError, match="expects a torch.nn.Module"):
        optimize_for_inference("sparseinst_tiny_test")  # type: ignore[arg-type]
    assert resolve_compile_mode(True) == "default" and resolve_compile_mode(None) is None
    assert resolve_compile_mode("max-autotune") == "max-autotune"
    assert autocast_dtype("fp32", "cpu") is None and autocast_dtype(False, "cpu") is None
    with pytest.raises(ValueError, match="max_graphs"):
        CUDAGraphRunner(lambda x: {"x": x}, max_graphs=0)


def test_cuda_graph_batch_buckets():
    runner = CUDAGraphRunner(lambda x: {"x": x}, batch_buckets=(1, 2, 4, 8))
    assert [runner.bucket(b) for b in (1, 2, 3, 5, 8, 9)] == [1, 2, 4, 8, 8, 9]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_match_eager_on_gpu(tiny_model, monkeypatch):
    # TF32 off: the padded batch of 4 may get other cuDNN algorithms than eager's 3, whose TF32 roundings differ ~1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    model = tiny_model.cuda()
    # no folding: the graph replays the same kernels as eager (cuDNN may still pick other algorithms)
    fast = optimize_for_inference(model, fold_bn=False, cuda_graphs=True, batch_buckets=(1, 4))
    for batch in (1, 3, 3, 4):
        x = torch.randn(batch, 3, 64, 96, device="cuda")
        with torch.inference_mode():
            ref = model(x)
        out = fast(x)
        _assert_fold_exact(out, ref, rel=1e-3)
    assert fast._runner.num_graphs == 2  # batches 1 and 3/4 (3 padded to the bucket 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graphs_give_each_thread_its_own_results(tiny_model):
    fast = optimize_for_inference(tiny_model.cuda(), cuda_graphs=True, batch_buckets=(2,))
    inputs = [
        torch.randn(2, 3, 64, 96, device="cuda", generator=torch.Generator("cuda").manual_seed(i)) for i in range(8)
    ]
    expected = [fast(x)["pred_masks"].cpu() for x in inputs]  # one graph, captured by the first call
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: [fast(x)["pred_masks"].cpu() for _ in range(5)], inputs))
    for runs, want in zip(got, expected):
        for out in runs:
            torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert fast._runner.num_graphs == 1


@pytest.mark.slow
def test_compile_matches_eager(tiny_model):
    """torch.compile (inductor, needs a C++ compiler on CPU; compiling takes ~a minute on 2 cores)."""
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = tiny_model(x)
    fast = optimize_for_inference(tiny_model, compile=True)
    out = fast(x)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], atol=1e-4, rtol=1e-4)


def test_predict_optimize_option_and_cli_flags(tiny_model, rgb_image, tmp_path):
    """predict(optimize=...) and `sparseinst predict --fold-bn --channels-last --half bf16` use the fast paths."""
    from sparseinst_zoo.cli import main
    from sparseinst_zoo.inference.predictor import Predictor

    reference = tiny_model.predict(rgb_image, score_threshold=0.0, sort_by_score=True)[0]
    fast = tiny_model.predict(rgb_image, score_threshold=0.0, sort_by_score=True, optimize=dict(channels_last=True))[0]
    torch.testing.assert_close(fast.scores, reference.scores, rtol=1e-4, atol=1e-5)
    assert torch.equal(fast.labels, reference.labels)
    assert (fast.masks != reference.masks).float().mean() < 1e-3
    predictor = Predictor(tiny_model, precision="bf16", optimize=True)
    assert isinstance(predictor.model, OptimizedModel) and predictor.autocast_dtype is None  # the copy autocasts
    assert predictor.model.options["precision"] == "bf16"
    image = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(rgb_image).save(image)
    args = [
        "predict",
        "sparseinst_tiny_test",
        str(image),
        "--weights",
        "random",
        "--out",
        str(tmp_path / "out"),
        "--fold-bn",
        "--channels-last",
        "--half",
        "bf16",
        "--quiet",
    ]
    assert main(args) == 0
    assert (tmp_path / "out" / "image.png").is_file()


def test_create_model_optimize_option(rgb_image):
    torch.manual_seed(0)
    model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    torch.manual_seed(0)
    fast = sparseinst_zoo.create_model("sparseinst_tiny_test", optimize=dict(channels_last=True))
    assert isinstance(fast, OptimizedModel) and fast.options["fold_bn"] and fast.options["channels_last"]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fast(x)["pred_logits"], model(x)["pred_logits"], rtol=1e-4, atol=1e-5)
    assert len(fast.predict(rgb_image, score_threshold=0.0)[0]) == 10


@pytest.mark.parametrize(
    ("module", "must_not_import"),
    [
        ("sparseinst_zoo.inference.optimize", "sparseinst_zoo.inference.predictor"),
        ("sparseinst_zoo.inference.visualise", "sparseinst_zoo.inference.results"),
        ("sparseinst_zoo.inference.masks", "sparseinst_zoo.inference.results"),
    ],
)
def test_inference_modules_import_one_way(module, must_not_import):
    """No import circle: optimize never imports the predictor back, the visualiser never imports Results."""
    import subprocess
    import sys

    code = f"import sys, {module}; print({must_not_import!r} in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_optimized_model_predict_needs_no_function_level_import():
    import inspect
    import re

    from sparseinst_zoo.inference import optimize

    assert not re.search(r"^\s+(from \S+ )?import ", inspect.getsource(optimize.OptimizedModel), re.MULTILINE)
