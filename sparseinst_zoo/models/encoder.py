"""The SparseInst instance context encoder: a small FPN with pyramid pooling, fused into one stride-8 map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ._init import init_msra_fill, init_xavier_fill

__all__ = [
    "PyramidPoolingModule",
    "InstanceContextEncoder",
    "adaptive_avg_pool2d_matmul",
    "adaptive_pooling_matrix",
]


def adaptive_pooling_matrix(
    in_size: int | torch.SymInt, out_size: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """The (out_size, in_size) averaging matrix of adaptive average pooling along one axis.

    Row ``i`` averages the input positions ``floor(i * in / out) <= j < ceil((i + 1) * in / out)``, the bins of
    :func:`torch.nn.functional.adaptive_avg_pool2d`. ``in_size`` may be symbolic (traced or exported shapes), so the
    matrix follows the input size at run time.
    """
    index = torch.arange(out_size, device=device)
    start = torch.div(index.mul(in_size), out_size, rounding_mode="floor")
    end = torch.div((index + 1).mul(in_size) + (out_size - 1), out_size, rounding_mode="floor")
    position = torch.arange(in_size, device=device)
    inside = (position[None, :] >= start[:, None]) & (position[None, :] < end[:, None])
    return inside.to(dtype) / (end - start).to(dtype)[:, None]


def adaptive_avg_pool2d_matmul(x: torch.Tensor, output_size: int | Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling of a (..., H, W) map to ``output_size`` as ``P_h @ x @ P_w^T``.

    Equal (to float rounding) to :func:`torch.nn.functional.adaptive_avg_pool2d` for every input size, also when
    the size is only known at run time. Exporters (ONNX, TensorRT) have no exact general adaptive pooling: the
    TorchScript ONNX exporter refuses sizes that are not multiples of the output size and the dynamo exporter bakes
    the traced size into index constants; two matrix products export exactly for static and dynamic shapes.
    """
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    height, width = x.shape[-2:]
    pool_h = adaptive_pooling_matrix(height, out_h, x.dtype, x.device)
    pool_w = adaptive_pooling_matrix(width, out_w, x.dtype, x.device)
    return torch.matmul(torch.matmul(pool_h, x), pool_w.transpose(0, 1))


class PyramidPoolingModule(nn.Module):
    """PSPNet pooling: average-pool to each size, 1x1 conv + ReLU, upsample back, concat with the input, 1x1 conv.

    In eager mode the pooling is :class:`torch.nn.AdaptiveAvgPool2d`; while tracing, compiling or exporting it is the
    equivalent :func:`adaptive_avg_pool2d_matmul`, which every exporter translates exactly for any input size.
    """

    def __init__(self, channels: int, pool_channels: int, pool_sizes: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.pool_sizes = tuple(pool_sizes)
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Conv2d(channels, pool_channels, 1)) for size in pool_sizes
        )
        self.bottleneck = nn.Conv2d(channels + len(self.pool_sizes) * pool_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        exporting = torch.jit.is_tracing() or torch.compiler.is_compiling()
        priors = []
        for pool_size, stage in zip(self.pool_sizes, cast(Sequence[nn.Sequential], self.stages)):
            pooled = adaptive_avg_pool2d_matmul(x, pool_size) if exporting else stage[0](x)
            prior = F.relu(stage[1](pooled))
            priors.append(F.interpolate(prior, size=size, mode="bilinear", align_corners=False))
        return F.relu(self.bottleneck(torch.cat([*priors, x], dim=1)))


class InstanceContextEncoder(nn.Module):
    """Lateral + output convs per level (index 0 = deepest), PPM on the deepest lateral, top-down sum, fusion.

    Args:
        in_channels: channels of the backbone levels, shallowest (stride 8) first.
        channels: width of every encoder map (256 in the reference).
        pool_sizes: output sizes of the pyramid pooling.
    """

    def __init__(self, in_channels: Sequence[int], channels: int = 256, pool_sizes: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.channels = channels
        self.fpn_laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in reversed(self.in_channels))
        self.fpn_outputs = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in self.in_channels)
        self.ppm = PyramidPoolingModule(channels, channels // 4, pool_sizes)
        self.fusion = nn.Conv2d(channels * len(self.in_channels), channels, 1)
        for conv in (*self.fpn_laterals, *self.fpn_outputs):
            init_xavier_fill(conv)
        init_msra_fill(self.fusion)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        deepest_first = list(features)[::-1]
        prev = self.ppm(self.fpn_laterals[0](deepest_first[0]))
        outputs = [self.fpn_outputs[0](prev)]
        for feature, lateral, output in zip(deepest_first[1:], self.fpn_laterals[1:], self.fpn_outputs[1:]):
            prev = lateral(feature) + F.interpolate(prev, scale_factor=2.0, mode="nearest")
            outputs.insert(0, output(prev))
        size = outputs[0].shape[-2:]
        upsampled = [F.interpolate(x, size=size, mode="bilinear", align_corners=False) for x in outputs[1:]]
        return self.fusion(torch.cat([outputs[0], *upsampled], dim=1))
