"""Preprocessing: the reference size rule, PIL bilinear resize, normalisation and padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sparseinst_zoo.inference.transforms import (
    get_output_shape,
    padded_shape,
    preprocess,
    resize_images,
    resize_shortest_edge,
)

MEAN = (123.675, 116.280, 103.530)
STD = (58.395, 57.120, 57.375)


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((480, 640), (640, 853)),  # long side capped: 853.33 -> 853
        ((427, 640), (569, 853)),  # typical COCO landscape, cap applies
        ((640, 427), (853, 569)),  # portrait
        ((500, 500), (640, 640)),
        ((300, 451), (567, 853)),  # 961.9 > 853 -> scale 0.8868
        ((1000, 1200), (640, 768)),  # downscale, no cap
        ((640, 853), (640, 853)),  # unchanged
    ],
)
def test_output_shape_rule(size, expected):
    assert get_output_shape(*size, 640, 853) == expected


def test_output_shape_rounding_matches_formula():
    # int(old * scale + 0.5) on both sides, independent re-computation over many sizes
    for h in range(50, 700, 37):
        for w in range(60, 900, 53):
            scale = 608 / min(h, w)
            nh, nw = h * scale, w * scale
            if max(nh, nw) > 853:
                s2 = 853 / max(nh, nw)
                nh, nw = nh * s2, nw * s2
            assert get_output_shape(h, w, 608, 853) == (int(nh + 0.5), int(nw + 0.5))


def test_padded_shape():
    assert padded_shape(567, 853) == (576, 864)
    assert padded_shape(64, 96) == (64, 96)


def test_resize_is_pil_bilinear_on_uint8(rgb_image):
    out = resize_shortest_edge(rgb_image, 64, 96)
    expected = np.asarray(Image.fromarray(rgb_image).resize((94, 64), Image.BILINEAR))
    assert out.dtype == np.uint8 and out.shape == (64, 94, 3)
    np.testing.assert_array_equal(out, expected)


def test_preprocess_normalises_and_pads(rgb_image):
    small = rgb_image[:40, :50]
    batch, resized, original = preprocess([rgb_image, small], 64, 96, MEAN, STD)
    assert original == [(75, 110), (40, 50)]
    assert resized == [(64, 94), (64, 80)]
    assert batch.shape == (2, 3, 64, 96) and batch.dtype == torch.float32
    expected = (
        torch.from_numpy(resize_shortest_edge(rgb_image, 64, 96)).permute(2, 0, 1).float()
        - torch.tensor(MEAN).view(3, 1, 1)
    ) / torch.tensor(STD).view(3, 1, 1)
    torch.testing.assert_close(batch[0, :, :64, :94], expected, rtol=0, atol=0)
    assert torch.all(batch[0, :, :, 94:] == 0) and torch.all(batch[1, :, :, 80:] == 0)


def test_torch_backend_within_one_grey_level(rgb_image):
    big = np.array(Image.fromarray(rgb_image).resize((330, 225), Image.BICUBIC))
    for image, sizes in ((rgb_image, (64, 96)), (big, (100, 150))):  # downscale and upscale
        pil, _ = resize_images([image], *sizes, resize_backend="pil")
        tch, _ = resize_images([torch.from_numpy(image)], *sizes, resize_backend="torch")
        assert pil[0].shape == tch[0].shape
        diff = (pil[0].float() - tch[0]).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.03


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((10, 10, 3), np.float32), "uint8 HxWx3"),
        (np.zeros((10, 10), np.uint8), "uint8 HxWx3"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_images(image, match):
    with pytest.raises(ValueError, match=match):
        preprocess([image], 64, 96)


def test_no_images():
    with pytest.raises(ValueError, match="at least one"):
        preprocess([], 64, 96)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("resize_backend", ["pil", "torch"])
def test_preprocess_on_cuda_matches_the_cpu(rgb_image, resize_backend):
    """Pinned uploads (numpy arrays and tensors) and the resize on the GPU give the CPU's batch."""
    big = np.array(Image.fromarray(rgb_image).resize((330, 225), Image.BICUBIC))
    images = [rgb_image, torch.from_numpy(big), big[::-1]]  # an array, a tensor, a non-contiguous view
    want, want_resized, want_original = preprocess(images, 64, 96, resize_backend=resize_backend)
    got, resized, original = preprocess(images, 64, 96, device="cuda", resize_backend=resize_backend)
    assert got.is_cuda and (resized, original) == (want_resized, want_original)
    diff = (got.cpu() - want).abs()
    if resize_backend == "pil":  # resized on the host either way: only the normalisation ran elsewhere
        assert diff.max() <= 1e-4
    else:  # CUDA's bilinear may round a level the other way: one grey level (1/std) on a few pixels
        assert diff.max() <= 1 / min(STD) + 1e-4 and (diff > 1e-4).float().mean() < 0.01
