"""SparseInst (Cheng et al., CVPR 2022) on timm backbones, and the registered variants of its model zoo.

Layout follows timm's model files: the model class, then ``_create_sparseinst`` (cfgs in ``sparseinst_cfgs``) and one
small ``@register_model`` function per variant whose keyword arguments the caller can override.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._builder import build_model_with_cfg
from .._constants import SIZE_DIVISIBILITY
from .._registry import PretrainedCfg, register_model
from ..errors import SparseInstError
from ._hub_mixin import HubMixin
from .backbones import channels_first_features, create_backbone, feature_info, outputs_channels_last
from .checkpoint_filter import checkpoint_filter_fn
from .decoder import DECODER_TYPES, DecoderType, SparseInstDecoder
from .encoder import InstanceContextEncoder
from .sparseinst_cfgs import default_cfgs

__all__ = ["SparseInst", "default_cfgs"]


class SparseInst(HubMixin, nn.Module):
    """SparseInst = timm ``features_only`` backbone (strides 8/16/32) + instance context encoder + IAM decoder.

    ``forward`` takes a normalised float batch ``(B, 3, H, W)`` with H and W multiples of 32 and returns a dict of
    logits: ``pred_logits`` (B, N, num_classes), ``pred_masks`` (B, N, H/4, W/4) and ``pred_scores`` (B, N, 1).
    All constructor arguments are JSON-serialisable; they are saved with the weights (``model.config``).

    Args:
        backbone: timm model name supporting ``features_only``.
        num_classes: object classes.
        num_masks: instance queries N.
        decoder: ``'iam'``, ``'giam'`` or ``'giam_soft'``.
        groups: G-IAM groups.
        encoder_channels: encoder width.
        inst_channels / inst_convs: instance-branch width and depth.
        mask_channels / mask_convs: mask-branch width and depth.
        kernel_dim: dynamic mask kernel dimension.
        pool_sizes: pyramid-pooling sizes of the encoder.
        frozen_bn: freeze the backbone's BatchNorm layers (detectron2 ``FrozenBN``).
        dcn_stages: ResNet stages whose bottlenecks use deformable convs (e.g. ``(3, 4)``).
        backbone_kwargs: extra arguments for :func:`timm.create_model`.
        pretrained_backbone: load timm's ImageNet weights into the backbone (needs the network).

    Example:
        >>> import torch
        >>> model = SparseInst(backbone="resnet18", decoder="giam").eval()
        >>> model(torch.randn(1, 3, 64, 96))["pred_masks"].shape
        torch.Size([1, 100, 16, 24])
    """

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = 80,
        num_masks: int = 100,
        decoder: DecoderType = "giam",
        groups: int = 4,
        encoder_channels: int = 256,
        inst_channels: int = 256,
        inst_convs: int = 4,
        mask_channels: int = 256,
        mask_convs: int = 4,
        kernel_dim: int = 128,
        pool_sizes: Sequence[int] = (1, 2, 3, 6),
        frozen_bn: bool = False,
        dcn_stages: Sequence[int] = (),
        backbone_kwargs: dict[str, Any] | None = None,
        pretrained_backbone: bool = False,
    ) -> None:
        super().__init__()
        if decoder not in DECODER_TYPES:
            raise SparseInstError(f"decoder must be one of {DECODER_TYPES}, got {decoder!r}")
        num_classes, num_masks, groups = (
            _as_int(name, value)
            for name, value in (("num_classes", num_classes), ("num_masks", num_masks), ("groups", groups))
        )
        if num_classes < 1 or num_masks < 1:
            raise SparseInstError(f"num_classes and num_masks must be >= 1, got {num_classes} and {num_masks}")
        self.config: dict[str, Any] = self.captured_config(
            num_classes=num_classes, num_masks=num_masks, groups=groups, backbone_kwargs=dict(backbone_kwargs or {})
        )
        self.num_classes = num_classes
        self.num_masks = num_masks
        self.backbone = create_backbone(
            backbone,
            pretrained=pretrained_backbone,
            frozen_bn=frozen_bn,
            dcn_stages=dcn_stages,
            **(backbone_kwargs or {}),
        )
        self.backbone_channels_last = outputs_channels_last(self.backbone)
        self.encoder = InstanceContextEncoder(feature_info(self.backbone).channels(), encoder_channels, pool_sizes)
        self.decoder = SparseInstDecoder(
            encoder_channels,
            num_classes,
            num_masks,
            decoder,
            groups,
            inst_channels,
            inst_convs,
            mask_channels,
            mask_convs,
            kernel_dim,
        )
        self.model_name: str = "sparseinst"
        self.pretrained_cfg: PretrainedCfg = PretrainedCfg(num_classes=num_classes)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names of the outputs (``class_<i>`` where the weights carry none)."""
        names = tuple(self.pretrained_cfg.label_names)
        if len(names) == self.num_classes:
            return names
        return tuple(f"class_{i}" for i in range(self.num_classes))

    def check_input(self, images: torch.Tensor) -> None:
        """Raise a SparseInstError saying what to do unless ``images`` is a (B, 3, H, W) float batch, H, W % 32 == 0."""
        if not isinstance(images, torch.Tensor):
            raise SparseInstError(
                f"SparseInst.forward expects a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}; "
                "use model.predict(...) for images, paths and arrays"
            )
        if images.ndim != 4 or images.shape[1] != 3:
            raise SparseInstError(
                f"SparseInst.forward expects a batch of shape (B, 3, H, W), got {tuple(images.shape)}; "
                "add a batch dimension with x[None] or convert the images to 3-channel RGB"
            )
        if not images.is_floating_point():
            raise SparseInstError(
                f"SparseInst.forward expects normalised floating-point images, got dtype {images.dtype}; "
                "normalise with the model's mean/std or use model.predict(...) which does it for you"
            )
        weight = next(self.parameters())
        if images.dtype != weight.dtype:
            cast = _CASTS.get(weight.dtype, f"to({weight.dtype})")
            autocast = " (for 16-bit math, run under torch.autocast)" if weight.dtype == torch.float32 else ""
            raise SparseInstError(
                f"SparseInst.forward expects {weight.dtype} images like its weights, got {images.dtype}; cast the "
                f"images with images.{cast}{autocast}, or call model.predict(...), which takes images of any kind"
            )
        height, width = images.shape[-2:]
        if images.shape[0] == 0 or height == 0 or width == 0:
            raise SparseInstError(
                f"SparseInst.forward got an empty batch of shape {tuple(images.shape)}; pass at least "
                "one image of at least 32x32 pixels"
            )
        if height % SIZE_DIVISIBILITY or width % SIZE_DIVISIBILITY:
            raise SparseInstError(
                f"SparseInst.forward needs height and width divisible by {SIZE_DIVISIBILITY}, got {height}x{width}; "
                f"pad the batch (bottom/right, with zeros) to a multiple of {SIZE_DIVISIBILITY}"
            )

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone + encoder: the fused 256-channel map at stride 8."""
        features = self.backbone(images)
        if self.backbone_channels_last:
            features = channels_first_features(features)
        return self.encoder(features)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            self.check_input(images)
        return self.decoder(self.forward_features(images))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the class head by a freshly initialised one with ``num_classes`` outputs (reference init)."""
        self.decoder.inst_branch.reset_classifier(num_classes)
        self.num_classes = num_classes
        self.config["num_classes"] = num_classes
        cfg = self.pretrained_cfg
        # names and dataset ids describe the old head's classes: kept, they would label the new ones wrongly
        extra = {k: v for k, v in cfg.extra.items() if k != "category_ids" or len(v) == num_classes}
        label_names = cfg.label_names if len(cfg.label_names) == num_classes else ()
        self.pretrained_cfg = cfg.replace(label_names=label_names, num_classes=num_classes, extra=extra)


_CASTS: dict[torch.dtype, str] = {torch.float32: "float()", torch.float16: "half()", torch.bfloat16: "bfloat16()"}


def _as_int(name: str, value: Any) -> int:
    """``value`` as a plain int (numpy / torch integers accepted), or a SparseInstError naming the argument."""
    if isinstance(value, bool):
        raise SparseInstError(f"{name} must be an int, got {value!r}")
    try:
        return int(operator.index(value))
    except TypeError:
        raise SparseInstError(f"{name} must be an int, got {value!r} ({type(value).__name__})") from None


def _create_sparseinst(variant: str, pretrained: bool = False, **kwargs: Any) -> SparseInst:
    model = build_model_with_cfg(SparseInst, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)
    assert isinstance(model, SparseInst)
    return model


_RESNET = {"frozen_bn": True}
_DCN = {"frozen_bn": True, "dcn_stages": (3, 4)}


@register_model
def sparseinst_r50_iam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50 with the base IAM decoder (32.8 AP)."""
    args = dict(backbone="resnet50", decoder="iam", **_RESNET)
    return _create_sparseinst("sparseinst_r50_iam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50vd_iam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50-vd (ResNet-D) with the base IAM decoder (34.1 AP)."""
    args = dict(backbone="resnet50d", decoder="iam", **_RESNET)
    return _create_sparseinst("sparseinst_r50vd_iam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50 with G-IAM (33.4 AP at 608)."""
    args = dict(backbone="resnet50", decoder="giam", **_RESNET)
    return _create_sparseinst("sparseinst_r50_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50_giam_soft(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50 with G-IAM and spatial softmax (33.6 AP at 608)."""
    args = dict(backbone="resnet50", decoder="giam_soft", **_RESNET)
    return _create_sparseinst("sparseinst_r50_giam_soft", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50_giam_aug(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50 G-IAM trained with crop augmentation (34.2 AP at 608)."""
    args = dict(backbone="resnet50", decoder="giam", **_RESNET)
    return _create_sparseinst("sparseinst_r50_giam_aug", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50_dcn_giam_aug(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50 + DCN (res4, res5) G-IAM with crop augmentation (36.4 AP at 608)."""
    args = dict(backbone="resnet50", decoder="giam", **_DCN)
    return _create_sparseinst("sparseinst_r50_dcn_giam_aug", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50vd_giam_aug(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50-vd G-IAM with crop augmentation (35.6 AP at 608)."""
    args = dict(backbone="resnet50d", decoder="giam", **_RESNET)
    return _create_sparseinst("sparseinst_r50vd_giam_aug", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r50vd_dcn_giam_aug(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-50-vd + DCN G-IAM with crop augmentation (37.4 AP at 608)."""
    args = dict(backbone="resnet50d", decoder="giam", **_DCN)
    return _create_sparseinst("sparseinst_r50vd_dcn_giam_aug", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r101_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-101 G-IAM (34.9 AP)."""
    args = dict(backbone="resnet101", decoder="giam", **_RESNET)
    return _create_sparseinst("sparseinst_r101_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_r101_dcn_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst R-101 + DCN G-IAM (36.4 AP)."""
    args = dict(backbone="resnet101", decoder="giam", **_DCN)
    return _create_sparseinst("sparseinst_r101_dcn_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_cspdarknet53_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst CSPDarkNet-53 with G-IAM softmax, trainable BN (35.1 AP)."""
    args = dict(backbone="cspdarknet53", decoder="giam_soft")
    return _create_sparseinst("sparseinst_cspdarknet53_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_pvt_v2_b1_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst PVTv2-B1 G-IAM (35.3 AP)."""
    args = dict(backbone="pvt_v2_b1", decoder="giam", backbone_kwargs={"drop_path_rate": 0.1})  # reference training
    return _create_sparseinst("sparseinst_pvt_v2_b1_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_pvt_v2_b2_li_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst PVTv2-B2-Li (linear attention) G-IAM (37.2 AP)."""
    args = dict(backbone="pvt_v2_b2_li", decoder="giam", backbone_kwargs={"drop_path_rate": 0.1})  # reference training
    return _create_sparseinst("sparseinst_pvt_v2_b2_li_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_iam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst with the base IAM decoder on any timm backbone: ``create_model('sparseinst_iam', backbone=...)``."""
    return _create_sparseinst("sparseinst_iam", pretrained, **dict(dict(backbone="resnet50", decoder="iam"), **kwargs))


@register_model
def sparseinst_giam(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst with G-IAM on any timm backbone: ``create_model('sparseinst_giam', backbone='convnext_tiny')``."""
    args = dict(backbone="resnet50", decoder="giam")
    return _create_sparseinst("sparseinst_giam", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_giam_soft(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """SparseInst with G-IAM softmax on any timm backbone."""
    args = dict(backbone="resnet50", decoder="giam_soft")
    return _create_sparseinst("sparseinst_giam_soft", pretrained, **dict(args, **kwargs))


@register_model
def sparseinst_tiny_test(pretrained: bool = False, **kwargs: Any) -> SparseInst:
    """A tiny G-IAM model on timm's ``test_resnet`` for fast CPU tests (~0.5 M parameters); not for real use."""
    args = dict(
        backbone="test_resnet",
        decoder="giam",
        num_masks=10,
        encoder_channels=32,
        inst_channels=32,
        mask_channels=32,
        kernel_dim=16,
        inst_convs=2,
        mask_convs=2,
        frozen_bn=True,
    )
    return _create_sparseinst("sparseinst_tiny_test", pretrained, **dict(args, **kwargs))
