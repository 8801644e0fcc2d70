"""postprocess() against a plain per-image, per-instance implementation of the SPEC formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparseinst_zoo.errors import SparseInstError
from sparseinst_zoo.inference.postprocess import postprocess


def loop_postprocess(outputs, resized_sizes, original_sizes, score_threshold=0.005, mask_threshold=0.45):
    """SPEC 'Postprocessing (per image)', written with loops over images, queries and classes."""
    results = []
    logits, scores_logits, masks_logits = outputs["pred_logits"], outputs["pred_scores"], outputs["pred_masks"]
    padded = (masks_logits.shape[-2] * 4, masks_logits.shape[-1] * 4)
    for b in range(logits.shape[0]):
        scores, labels, masks = [], [], []
        h, w = resized_sizes[b]
        for q in range(logits.shape[1]):
            obj = 1 / (1 + math.exp(-float(scores_logits[b, q, 0])))
            best, label = -1.0, -1
            for c in range(logits.shape[2]):
                s = math.sqrt(1 / (1 + math.exp(-float(logits[b, q, c]))) * obj)
                if s > best:
                    best, label = s, c
            if not best > score_threshold:
                continue
            p = torch.sigmoid(masks_logits[b, q].double())
            above = (p > mask_threshold).double()
            best *= float((p * above).sum() / (above.sum() + 1e-6))
            up = F.interpolate(p[None, None].float(), size=padded, mode="bilinear", align_corners=False)
            up = up[:, :, :h, :w]
            up = F.interpolate(up, size=original_sizes[b], mode="bilinear", align_corners=False)[0, 0]
            scores.append(best)
            labels.append(label)
            masks.append(up > mask_threshold)
        height, width = original_sizes[b]
        results.append(
            {
                "scores": torch.tensor(scores, dtype=torch.float64),
                "labels": torch.tensor(labels, dtype=torch.int64),
                "masks": torch.stack(masks) if masks else torch.zeros((0, height, width), dtype=torch.bool),
            }
        )
    return results


def random_outputs(batch=3, queries=12, classes=7, hm=10, wm=14, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, queries, classes, generator=g) * 3 - 2
    scores = torch.randn(batch, queries, 1, generator=g) * 2
    masks = torch.randn(batch, queries, hm, wm, generator=g) * 4
    # masks that touch the padding: strong foreground right up to the padded border (bottom/right)
    masks[:, 0, :, -3:] = 8.0
    masks[:, 1, -3:, :] = 8.0
    return {"pred_logits": logits, "pred_scores": scores, "pred_masks": masks}


def assert_same(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g["labels"].tolist() == e["labels"].tolist()
        torch.testing.assert_close(g["scores"].double(), e["scores"], atol=1e-5, rtol=0)
        assert g["masks"].dtype == torch.bool and g["masks"].shape == e["masks"].shape
        # identical up to pixels whose probability lies within float rounding of the threshold
        assert (g["masks"] != e["masks"]).sum() <= 2


def test_matches_loop_implementation_with_padding():
    outputs = random_outputs()
    padded = (40, 56)
    resized = [(40, 56), (37, 50), (33, 41)]  # full, cropped right/bottom, and more padding
    original = [(40, 56), (75, 101), (20, 25)]  # same, upsampled, downsampled
    got = postprocess(outputs, resized, original, score_threshold=0.2)
    expected = loop_postprocess(outputs, resized, original, score_threshold=0.2)
    assert_same(got, expected)
    assert any(len(e["scores"]) for e in expected) and any(len(e["scores"]) < 12 for e in expected)
    assert outputs["pred_masks"].shape[-2] * 4 == padded[0]
    # query order is kept, and the query index is reported
    for g in got:
        assert torch.all(g["queries"][1:] > g["queries"][:-1])


def test_default_threshold_and_sorting():
    outputs = random_outputs(seed=1)
    resized, original = [(40, 56)] * 3, [(41, 57)] * 3
    got = postprocess(outputs, resized, original, sort_by_score=True)
    expected = loop_postprocess(outputs, resized, original)
    for g, e in zip(got, expected):
        order = torch.sort(e["scores"], descending=True, stable=True).indices
        e["scores"], e["labels"], e["masks"] = e["scores"][order], e["labels"][order], e["masks"][order]
        assert torch.all(g["scores"][1:] <= g["scores"][:-1])
    assert_same(got, expected)


def test_max_detections_keeps_the_best_in_query_order():
    outputs = random_outputs(seed=2)
    resized, original = [(40, 56)] * 3, [(40, 56)] * 3
    full = postprocess(outputs, resized, original, score_threshold=0.0)
    top = postprocess(outputs, resized, original, score_threshold=0.0, max_detections=4)
    for f, t in zip(full, top):
        assert len(t["scores"]) == 4
        best = torch.sort(f["scores"], descending=True, stable=True).indices[:4].sort().values
        assert t["queries"].tolist() == f["queries"][best].tolist()
        torch.testing.assert_close(t["scores"], f["scores"][best])


def test_nothing_kept_gives_empty_results():
    outputs = random_outputs()
    outputs["pred_logits"].fill_(-20.0)
    got = postprocess(outputs, [(40, 56)] * 3, [(30, 31)] * 3)
    for g in got:
        assert g["scores"].shape == (0,) and g["labels"].shape == (0,) and g["masks"].shape == (0, 30, 31)


def test_half_precision_outputs_are_accepted():
    outputs = {k: v.half() for k, v in random_outputs().items()}
    got = postprocess(outputs, [(40, 56)] * 3, [(40, 56)] * 3)
    assert got[0]["scores"].dtype == torch.float32


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (lambda o: o.pop("pred_scores"), SparseInstError, "pred_scores"),
        (lambda o: o.__setitem__("pred_logits", o["pred_logits"][:2]), SparseInstError, "batch sizes differ"),
    ],
)
def test_bad_outputs(change, error, match):
    outputs = random_outputs()
    change(outputs)
    with pytest.raises(error, match=match):
        postprocess(outputs, [(40, 56)] * 3, [(40, 56)] * 3)


def test_resized_larger_than_padded_is_rejected():
    with pytest.raises(SparseInstError, match="exceeds the padded"):
        postprocess(random_outputs(), [(41, 56)] * 3, [(40, 56)] * 3)


def test_chunked_upsampling_gives_the_same_masks():
    """Upsampling a mask or two at a time (bounded memory) gives exactly the all-at-once masks, as bool."""
    import torch.nn.functional as F

    from sparseinst_zoo.inference.postprocess import upsample_masks

    torch.manual_seed(0)
    probs = torch.rand(7, 16, 24)
    padded, resized, original = (64, 96), (60, 90), (123, 181)
    whole = F.interpolate(probs[:, None], size=padded, mode="bilinear", align_corners=False)[:, :, :60, :90]
    whole = F.interpolate(whole, size=original, mode="bilinear", align_corners=False)[:, 0] > 0.45
    chunked = upsample_masks(probs, padded, resized, original, 0.45, chunk_pixels=2 * 123 * 181)
    assert chunked.dtype == torch.bool and torch.equal(chunked, whole)
    assert torch.equal(upsample_masks(probs, padded, resized, original, 0.45, chunk_pixels=1), whole)


def test_masks_that_cannot_cross_the_threshold_are_skipped_exactly():
    """Skipping the masks whose probabilities all stay below the threshold gives exactly the masks of upsampling all."""
    from sparseinst_zoo.inference.postprocess import VISIBLE_MARGIN, upsample_masks

    torch.manual_seed(0)
    probs = torch.rand(6, 16, 24) * 0.45  # all below the threshold ...
    probs[1, 3:9, 4:12] = 0.9  # ... but two masks
    probs[4, 0, 0] = 0.45 - VISIBLE_MARGIN / 2  # within the margin: upsampled, and still empty
    padded, resized, original = (64, 96), (60, 90), (123, 181)
    everything = upsample_masks(probs, padded, resized, original, 0.45)
    skipped = upsample_masks(probs, padded, resized, original, 0.45, visible=[1, 4], chunk_pixels=1)
    assert torch.equal(skipped, everything) and everything[1].any() and not everything[[0, 2, 3, 4, 5]].any()


@pytest.mark.parametrize("sort_by_score", [False, True])
def test_postprocess_with_empty_masks_matches_upsampling_every_kept_mask(sort_by_score):
    """Through postprocess: the kept queries with empty masks keep their place, scores and (all False) masks."""
    from sparseinst_zoo.inference.postprocess import upsample_masks

    torch.manual_seed(1)
    outputs = random_outputs()
    outputs["pred_masks"][:, ::2] -= 40.0  # every other query: no pixel anywhere near 0.45
    results = postprocess(outputs, [(40, 56)] * 3, [(37, 61)] * 3, score_threshold=0.0, sort_by_score=sort_by_score)
    padded = (outputs["pred_masks"].shape[-2] * 4, outputs["pred_masks"].shape[-1] * 4)
    for image, result in enumerate(results):
        probs = outputs["pred_masks"][image, result["queries"]].sigmoid()
        assert torch.equal(result["masks"], upsample_masks(probs, padded, (40, 56), (37, 61), 0.45))
        assert not result["masks"][result["queries"] % 2 == 0].any()


@pytest.mark.parametrize("longest", [1, 2, 3, 100])
def test_runs_cover_each_position_once_in_order(longest):
    """The stretches upsampled together: consecutive positions only, never longer than a chunk, none left out."""
    from sparseinst_zoo.inference.postprocess import _runs

    positions = [0, 1, 2, 3, 7, 8, 10, 11, 12, 13, 14, 20]
    runs = list(_runs(positions, longest))
    assert [p for start, stop in runs for p in range(start, stop)] == positions
    assert all(0 < stop - start <= longest for start, stop in runs)
    assert list(_runs([], longest)) == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("sort_by_score", [False, True])
def test_postprocess_on_cuda_matches_the_cpu(sort_by_score):
    outputs = random_outputs(seed=2)
    resized, original = [(40, 56), (37, 50), (33, 41)], [(40, 56), (75, 101), (20, 25)]
    want = postprocess(outputs, resized, original, score_threshold=0.2, sort_by_score=sort_by_score)
    on_gpu = {key: value.cuda() for key, value in outputs.items()}
    got = postprocess(on_gpu, resized, original, score_threshold=0.2, sort_by_score=sort_by_score)
    for g, w in zip(got, want):
        assert g["masks"].is_cuda
        assert g["queries"].tolist() == w["queries"].tolist() and g["labels"].tolist() == w["labels"].tolist()
        torch.testing.assert_close(g["scores"].cpu(), w["scores"], atol=1e-5, rtol=0)
        assert (g["masks"].cpu() != w["masks"]).sum() <= 2  # pixels within float rounding of the threshold
