"""Backbones: any timm ``features_only`` model, cut to its stride 8/16/32 levels.

Models built for one input size (Swin) are created with ``strict_img_size=False``: SparseInst runs at any multiple
of 32. Backbones whose features are channels-last tensors (timm ``output_fmt`` ``NHWC``: Swin, MambaOut) are read
through :func:`channels_first_features`.

Extras used by the reference variants: frozen BatchNorm (detectron2 ``FrozenBN``) and DCN v1 bottlenecks in chosen
ResNet stages, built on :func:`torchvision.ops.deform_conv2d`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal, overload

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from timm.models import FeatureInfo
from torch import nn
from torchvision.ops import DeformConv2d

from .._hub import offline_if_unreachable
from ..errors import SparseInstError

__all__ = [
    "DeformableBottleneck",
    "channels_first_features",
    "create_backbone",
    "feature_info",
    "make_deformable",
    "outputs_channels_last",
    "select_feature_levels",
]

DEFAULT_STRIDES: tuple[int, ...] = (8, 16, 32)


@overload
def _child(block: nn.Module, name: str) -> nn.Module: ...
@overload
def _child(block: nn.Module, name: str, optional: Literal[True]) -> nn.Module | None: ...


def _child(block: nn.Module, name: str, optional: bool = False) -> nn.Module | None:
    """The submodule ``name`` of a timm bottleneck (``None`` where an optional one is absent or ``None``)."""
    child = getattr(block, name, None)
    if child is None and optional:
        return None
    if not isinstance(child, nn.Module):
        raise SparseInstError(f"{type(block).__name__} has no submodule {name!r}; DCN needs a timm ResNet bottleneck")
    return child


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    """A conv's (height, width) stride/padding/dilation."""
    return values[0], values[1]


class DeformableBottleneck(nn.Module):
    """A timm ResNet ``Bottleneck`` whose 3x3 conv is a deformable conv (DCN v1, not modulated).

    The offsets come from a plain 3x3 conv with bias (``conv2_offset``, 2 * 3 * 3 = 18 channels, zero-initialised, so
    a fresh block computes exactly the plain bottleneck); ``conv2`` is the deformable conv without bias. Offsets use
    the layout of :func:`torchvision.ops.deform_conv2d`, which is also detectron2's.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        plain = _child(block, "conv2")
        if not isinstance(plain, nn.Conv2d) or plain.groups != 1:
            raise SparseInstError(
                "deformable bottlenecks support a plain 3x3 conv2 with groups=1 only (ResNet, ResNet-D)"
            )
        kernel_size = plain.kernel_size[0]
        stride, dilation = _pair(plain.stride), _pair(plain.dilation)
        padding = plain.padding if isinstance(plain.padding, str) else _pair(plain.padding)
        self.conv1, self.bn1, self.act1 = _child(block, "conv1"), _child(block, "bn1"), _child(block, "act1")
        self.conv2_offset = nn.Conv2d(
            plain.in_channels,
            2 * kernel_size * kernel_size,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=True,
        )
        for parameter in self.conv2_offset.parameters():  # weight and bias
            nn.init.zeros_(parameter)
        self.conv2 = DeformConv2d(
            plain.in_channels,
            plain.out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            bias=False,
        )
        with torch.no_grad():
            self.conv2.weight.copy_(plain.weight)
        self.bn2 = _child(block, "bn2")
        self.drop_block = _child(block, "drop_block", optional=True)
        self.act2 = _child(block, "act2")
        self.aa = _child(block, "aa", optional=True)
        self.conv3, self.bn3 = _child(block, "conv3"), _child(block, "bn3")
        self.se = _child(block, "se", optional=True)
        self.act3 = _child(block, "act3")
        self.downsample = _child(block, "downsample", optional=True)
        self.drop_path = _child(block, "drop_path", optional=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.act1(self.bn1(self.conv1(x)))
        x = self.conv2(x, self.conv2_offset(x))
        x = self.bn2(x)
        if self.drop_block is not None:
            x = self.drop_block(x)
        x = self.act2(x)
        if self.aa is not None:
            x = self.aa(x)
        x = self.bn3(self.conv3(x))
        if self.se is not None:
            x = self.se(x)
        if self.drop_path is not None:
            x = self.drop_path(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        return self.act3(x + shortcut)


def make_deformable(backbone: nn.Module, stages: Sequence[int]) -> None:
    """Replace every bottleneck of ResNet ``layer{i}`` (i in ``stages``, 1-based like timm) by a deformable one."""
    for stage in stages:
        layer = getattr(backbone, f"layer{stage}", None)
        if not isinstance(layer, nn.Sequential):
            raise SparseInstError(
                f"dcn_stages={tuple(stages)} needs a timm ResNet backbone with 'layer{stage}'; "
                f"got {type(backbone).__name__}. Use dcn_stages=() for other backbones."
            )
        for index, block in enumerate(layer):
            if not hasattr(block, "conv3"):
                raise SparseInstError(f"layer{stage}.{index} is not a bottleneck block; DCN needs ResNet-50 or deeper")
            layer[index] = DeformableBottleneck(block)


def feature_info(backbone: nn.Module) -> FeatureInfo:
    """The timm ``feature_info`` of a ``features_only`` backbone: the channels and stride of each returned level.

    Example:
        >>> feature_info(create_backbone("resnet18")).channels()
        [128, 256, 512]
    """
    info = backbone.__dict__.get("feature_info")
    if not isinstance(info, FeatureInfo):
        raise SparseInstError(
            f"{type(backbone).__name__} is not a timm features_only backbone (it has no feature_info)"
        )
    return info


def outputs_channels_last(backbone: nn.Module) -> bool:
    """Whether the timm feature model returns ``(B, H, W, C)`` tensors (``output_fmt`` NHWC) instead of NCHW.

    Example:
        >>> outputs_channels_last(create_backbone("resnet18"))
        False
    """
    return str(getattr(backbone, "output_fmt", "NCHW")).rsplit(".", 1)[-1].upper() == "NHWC"


def channels_first_features(features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """NHWC feature maps as NCHW views (channels-last in memory, which convolutions take as they are)."""
    return [feature.permute(0, 3, 1, 2) for feature in features]


def _create_features_only(name: str, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)``, sizes not fixed where the model would assert one."""
    try:
        return timm.create_model(name, features_only=True, **{"strict_img_size": False, **kwargs})
    except TypeError as err:
        if "strict_img_size" not in str(err):
            raise
    return timm.create_model(name, features_only=True, **kwargs)


def select_feature_levels(reductions: Sequence[int], strides: Sequence[int] = DEFAULT_STRIDES) -> tuple[int, ...]:
    """Indices of the feature levels with the given strides (the last level at each stride wins).

    Raises:
        SparseInstError: if a stride is missing, naming the strides the backbone does offer.
    """
    picked = []
    for stride in strides:
        matches = [i for i, r in enumerate(reductions) if r == stride]
        if not matches:
            raise SparseInstError(
                f"the backbone has no feature level at stride {stride} (it offers strides {list(reductions)}); "
                f"SparseInst needs levels at strides {list(strides)}. Pick a hierarchical timm backbone "
                "(ResNet, ConvNeXt, EfficientNet, RegNet, MobileNetV3, PVTv2, ...)."
            )
        picked.append(matches[-1])
    return tuple(picked)


def create_backbone(
    name: str,
    pretrained: bool = False,
    frozen_bn: bool = False,
    dcn_stages: Sequence[int] = (),
    strides: Sequence[int] = DEFAULT_STRIDES,
    **kwargs: Any,
) -> nn.Module:
    """Create a timm ``features_only`` backbone returning the levels at ``strides``.

    Args:
        name: any timm model name that supports ``features_only``.
        pretrained: load timm's ImageNet weights (needs network access to the Hugging Face Hub).
        frozen_bn: turn every BatchNorm into a frozen one (statistics and affine parameters fixed).
        dcn_stages: ResNet stages (1..4) whose bottlenecks become deformable (DCN v1).
        strides: strides of the returned levels, shallowest first.
        **kwargs: forwarded to :func:`timm.create_model` (e.g. ``drop_path_rate``).

    Returns:
        The timm feature model; ``feature_info.channels()`` / ``feature_info.reduction()`` describe its outputs.

    Example:
        >>> backbone = create_backbone("resnet18")
        >>> backbone.feature_info.reduction()
        [8, 16, 32]
    """
    if not timm.is_model(name):
        raise SparseInstError(f"unknown timm backbone {name!r}; see timm.list_models() for the available names")
    try:
        with torch.device("meta"):
            probe = _create_features_only(name, pretrained=False, **kwargs)
    except (RuntimeError, TypeError) as err:
        if "features_only" in str(err) or "feature" in str(err).lower():
            raise SparseInstError(f"timm backbone {name!r} does not support features_only=True: {err}") from err
        raise
    probe_info = feature_info(probe)
    out_indices = select_feature_levels(probe_info.reduction(), strides)
    all_indices = tuple(probe_info.out_indices)
    out_indices = tuple(all_indices[i] for i in out_indices)
    with offline_if_unreachable() if pretrained else contextlib.nullcontext() as unresolved:
        try:
            backbone = _create_features_only(name, pretrained=pretrained, out_indices=out_indices, **kwargs)
        except OSError as err:  # only pretrained=True touches files or the network
            why = f"the Hub's host {unresolved!r} does not resolve" if unresolved else str(err).splitlines()[0]
            raise OSError(
                f"could not load timm's ImageNet weights for backbone {name!r} ({why}); they are downloaded from the "
                "Hugging Face Hub, so connect to the network (and unset HF_HUB_OFFLINE) once, or pass "
                "pretrained_backbone=False (on the command line: drop --pretrained-backbone)"
            ) from err
    if dcn_stages:
        make_deformable(backbone, dcn_stages)
    if frozen_bn:
        backbone = freeze_batch_norm_2d(backbone)
    return backbone
