"""SparseInst decoders: instance activation maps (IAM), group IAM (G-IAM) and G-IAM with a spatial softmax."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SparseInstError
from ._init import init_bias, init_msra_fill, init_xavier_fill

__all__ = [
    "DECODER_TYPES",
    "DecoderType",
    "InstanceBranch",
    "MaskBranch",
    "SparseInstDecoder",
    "coordinate_channels",
    "normalised_activations",
]

DecoderType = Literal["iam", "giam", "giam_soft"]
DECODER_TYPES: tuple[str, ...] = ("iam", "giam", "giam_soft")
PRIOR_PROB = 0.01
_MIN_IAM_SUM = 1e-6  # the reference's clamp of the activation-map sums
_LOG_MIN_IAM_SUM = math.log(_MIN_IAM_SUM)


def prior_bias(prior_prob: float = PRIOR_PROB) -> float:
    """Bias giving sigmoid(bias) == prior_prob (focal-loss initialisation)."""
    return -math.log((1 - prior_prob) / prior_prob)


def normalised_activations(iam: torch.Tensor, log_domain: bool = False) -> torch.Tensor:
    """``sigmoid(iam) / max(sum of sigmoid(iam) over the last dim, 1e-6)``: the reference's activation-map weights.

    ``log_domain`` computes the same in exact arithmetic as ``softmax(logsigmoid(x)) * exp(min(logsumexp(logsigmoid(x))
    - log 1e-6, 0))``, for exported graphs: onnxruntime's CPU ``Sigmoid`` is accurate only in absolute terms (0 at
    -20, 17% off at -15), trained activation logits are that negative, and dividing by their sum turns the absolute
    error into a relative one. Softmax subtracts the max first, so OpenVINO's bf16 stays as close as with the sigmoid
    (``exp(logsigmoid(x) - logsumexp(...))`` was 4x further off there). The default is the reference's arithmetic,
    bit for bit.

    Example:
        >>> x = torch.tensor([[-30.0, -31.0, -40.0]])
        >>> torch.allclose(normalised_activations(x), normalised_activations(x, log_domain=True))
        True
    """
    if not log_domain:
        prob = iam.sigmoid()
        return prob / prob.sum(-1, keepdim=True).clamp(min=_MIN_IAM_SUM)
    log_prob = -F.softplus(-iam)  # F.logsigmoid would be exported as Log(Sigmoid(x)), inaccurate again
    # softmax(log p) = p / sum p, shifted by the max inside (accurate in bf16 too); below the clamp p / 1e-6 is that
    # times sum p / 1e-6, a factor that is exactly 1 otherwise
    deficit = (torch.logsumexp(log_prob, -1, keepdim=True) - _LOG_MIN_IAM_SUM).clamp(max=0.0)
    return F.softmax(log_prob, -1) * torch.exp(deficit)


def stacked_convs(num_convs: int, in_channels: int, channels: int) -> nn.Sequential:
    """``num_convs`` x (3x3 conv + ReLU); convs at even indices, as the reference checkpoint names them."""
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        in_channels = channels
    return nn.Sequential(*layers)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) normalised coordinates: channel 0 is x, channel 1 is y, both -1 + 2 * index / (size - 1)."""
    batch, _, height, width = x.shape
    y = -1.0 + 2.0 * torch.arange(height, device=x.device, dtype=torch.float32) / (height - 1)
    xs = -1.0 + 2.0 * torch.arange(width, device=x.device, dtype=torch.float32) / (width - 1)
    grid_y, grid_x = torch.meshgrid(y, xs, indexing="ij")
    coords = torch.stack([grid_x, grid_y]).to(x.dtype)
    return coords.unsqueeze(0).expand(batch, -1, -1, -1)


class InstanceBranch(nn.Module):
    """Instance features from activation maps, then class / kernel / objectness heads.

    ``groups == 1`` is the base IAM decoder; ``groups > 1`` is G-IAM: the maps of instance ``i`` in each group are
    concatenated (``groups * channels`` features) and mixed by ``fc``. ``softmax`` normalises each map with a spatial
    softmax (plus the learnable ``softmax_bias``) instead of sigmoid / sum.

    ``log_domain_iam`` (off; the exporters turn it on in their own copy of the model) computes the sigmoid / sum in
    the log domain: see :func:`normalised_activations`.
    """

    log_domain_iam: bool = False

    def __init__(
        self,
        in_channels: int,
        channels: int = 256,
        num_convs: int = 4,
        num_masks: int = 100,
        num_classes: int = 80,
        kernel_dim: int = 128,
        groups: int = 1,
        softmax: bool = False,
    ) -> None:
        super().__init__()
        self.num_masks = num_masks
        self.groups = groups
        self.softmax = softmax
        if softmax:
            self.softmax_bias = nn.Parameter(torch.ones(1))
        self.inst_convs = stacked_convs(num_convs, in_channels, channels)
        self.iam_conv = nn.Conv2d(channels, num_masks * groups, 3, padding=1, groups=groups)
        feature_dim = channels * groups
        self.fc = nn.Linear(feature_dim, feature_dim) if groups > 1 else None
        self.cls_score = nn.Linear(feature_dim, num_classes)
        self.mask_kernel = nn.Linear(feature_dim, kernel_dim)
        self.objectness = nn.Linear(feature_dim, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.inst_convs.modules():
            if isinstance(module, nn.Conv2d):
                init_msra_fill(module)
        self.reset_classifier()
        nn.init.normal_(self.iam_conv.weight, std=0.01)
        init_bias(self.iam_conv, prior_bias())
        nn.init.normal_(self.mask_kernel.weight, std=0.01)
        nn.init.zeros_(self.mask_kernel.bias)
        if self.fc is not None:
            init_xavier_fill(self.fc)

    def reset_classifier(self, num_classes: int | None = None) -> None:
        """Re-create (if ``num_classes`` changes) and re-initialise ``cls_score`` as the reference does."""
        if num_classes is not None and num_classes != self.cls_score.out_features:
            old = self.cls_score
            self.cls_score = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.constant_(self.cls_score.bias, prior_bias())

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.inst_convs(features)
        iam = self.iam_conv(features)
        batch, num_maps = iam.shape[:2]
        channels = features.shape[1]
        iam = iam.flatten(2)
        if self.softmax:
            iam_prob = F.softmax(iam + self.softmax_bias, dim=-1)
        else:
            iam_prob = normalised_activations(iam, self.log_domain_iam)
        inst_features = torch.bmm(iam_prob, features.flatten(2).transpose(1, 2))  # (B, groups * N, C)
        if self.fc is not None:
            num_inst = num_maps // self.groups
            inst_features = inst_features.reshape(batch, self.groups, num_inst, channels).transpose(1, 2)
            inst_features = F.relu(self.fc(inst_features.reshape(batch, num_inst, self.groups * channels)))
        return self.cls_score(inst_features), self.mask_kernel(inst_features), self.objectness(inst_features)


class MaskBranch(nn.Module):
    """Mask features: stacked 3x3 convs then a 1x1 projection to ``kernel_dim`` channels (no activation)."""

    def __init__(self, in_channels: int, channels: int = 256, num_convs: int = 4, kernel_dim: int = 128) -> None:
        super().__init__()
        self.mask_convs = stacked_convs(num_convs, in_channels, channels)
        self.projection = nn.Conv2d(channels, kernel_dim, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init_msra_fill(module)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.projection(self.mask_convs(features))


class SparseInstDecoder(nn.Module):
    """Coordinates + encoder map -> instance branch and mask branch -> masks at stride 4.

    Args:
        in_channels: encoder width (the two coordinate channels are added here).
        num_classes: classes of ``cls_score``.
        num_masks: instance queries N.
        decoder: ``'iam'``, ``'giam'`` or ``'giam_soft'``.
        groups: activation-map groups of G-IAM (ignored for ``'iam'``).
        inst_channels / inst_convs: instance-branch width and depth.
        mask_channels / mask_convs: mask-branch width and depth.
        kernel_dim: dimension of the dynamic mask kernels.
        scale_factor: upsampling of the mask logits (stride 8 -> 4).
    """

    def __init__(
        self,
        in_channels: int = 256,
        num_classes: int = 80,
        num_masks: int = 100,
        decoder: DecoderType = "giam",
        groups: int = 4,
        inst_channels: int = 256,
        inst_convs: int = 4,
        mask_channels: int = 256,
        mask_convs: int = 4,
        kernel_dim: int = 128,
        scale_factor: float = 2.0,
    ) -> None:
        super().__init__()
        if decoder not in DECODER_TYPES:
            raise SparseInstError(f"decoder must be one of {DECODER_TYPES}, got {decoder!r}")
        if decoder != "iam" and groups < 2:
            raise SparseInstError(f"decoder {decoder!r} needs groups >= 2, got {groups}")
        if decoder != "iam" and inst_channels % groups:
            raise SparseInstError(
                f"groups={groups} must divide inst_channels={inst_channels} (the G-IAM conv is grouped)"
            )
        self.scale_factor = scale_factor
        self.inst_branch = InstanceBranch(
            in_channels + 2,
            inst_channels,
            inst_convs,
            num_masks,
            num_classes,
            kernel_dim,
            groups=1 if decoder == "iam" else groups,
            softmax=decoder == "giam_soft",
        )
        self.mask_branch = MaskBranch(in_channels + 2, mask_channels, mask_convs, kernel_dim)

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        features = torch.cat([coordinate_channels(features), features], dim=1)
        pred_logits, pred_kernel, pred_scores = self.inst_branch(features)
        mask_features = self.mask_branch(features)
        batch, channels, height, width = mask_features.shape
        pred_masks = torch.bmm(pred_kernel, mask_features.reshape(batch, channels, height * width))
        pred_masks = pred_masks.reshape(batch, -1, height, width)
        pred_masks = F.interpolate(pred_masks, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)
        return {"pred_logits": pred_logits, "pred_masks": pred_masks, "pred_scores": pred_scores}
