"""Pretrained cfgs of the SparseInst model zoo: where each variant's weights come from and what was reported.

Torch-free on purpose, so that listing the models (``sparseinst list``) stays instant. Every reference variant names
its sources in the order they are tried: the Hub repository ``sparseinst-zoo/<arch>.<tag>`` (safetensors, once
published), then the original release (``url`` or the ``google_drive_id`` of the reference README's model zoo).

Example:
    >>> from sparseinst_zoo.models.sparseinst_cfgs import default_cfgs
    >>> default_cfgs["sparseinst_r50_giam"].default.google_drive_id
    '1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL'
"""

from __future__ import annotations

from typing import Any

from .._coco import COCO_CLASSES
from .._registry import generate_default_cfgs

__all__ = ["default_cfgs", "REFERENCE_VARIANTS"]

HUB_ORG = "sparseinst-zoo"
MMDET_URL = (
    "https://download.openmmlab.com/mmdetection/v3.0/sparseinst/sparseinst_r50_iam_8xb8-ms-270k_coco/"
    "sparseinst_r50_iam_8xb8-ms-270k_coco_20221111_181051-72c711cd.pth"
)


def _cfg(
    reference_config: str,
    google_drive_id: str | None,
    ap: float | None = None,
    ap_test_dev: float | None = None,
    fps: float | None = None,
    min_size: int = 640,
    **kwargs: Any,
) -> dict[str, Any]:
    """COCO pretrained cfg of one reference checkpoint (``hf_hub_id`` is filled from its name below)."""
    return {
        "num_classes": 80,
        "label_names": COCO_CLASSES,
        "dataset": "coco_2017",
        "min_size": min_size,
        "max_size": 853,
        "reference_config": reference_config,
        "reference_ap": ap,
        "reference_ap_test_dev": ap_test_dev,
        "reference_fps": fps,
        "google_drive_id": google_drive_id,
        "original_filename": f"{reference_config}.pth",
        **kwargs,
    }


def _hub(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Give every 'arch.tag' entry its Hub repository ``sparseinst-zoo/arch.tag``."""
    return {name: {"hf_hub_id": f"{HUB_ORG}/{name}", **cfg} for name, cfg in cfgs.items()}


# Reference AP (COCO val2017 / test-dev) and FPS (RTX 2080 Ti, FP32, batch 1) and the Google Drive ids of the
# SparseInst model zoo (github.com/hustvl/SparseInst README). No sha256 is pinned for the Drive files: nobody could
# download them from here; `sparseinst download` prints the digest so that a maintainer can pin it.
default_cfgs = generate_default_cfgs(
    {
        **_hub(
            {
                "sparseinst_r50_iam.coco": _cfg(
                    "sparse_inst_r50_base", "12RQLHD5EZKIOvlqW3avUCeYjFG1NPKDy", 32.8, 33.2, 44.3
                ),
                "sparseinst_r50_iam.coco_mmdet": _cfg(
                    "sparseinst_r50_iam_8xb8-ms-270k_coco",
                    None,
                    32.9,
                    None,
                    None,
                    url=MMDET_URL,
                    original_filename=MMDET_URL.rsplit("/", 1)[1],
                    original_sha256="72c711cd",
                ),
                "sparseinst_r50vd_iam.coco": _cfg(
                    "sparse_inst_r50vd_base", "1fjPFy35X2iJu3tYwVdAq4Bel82PfH5kx", 34.1, 34.5, 42.6
                ),
                "sparseinst_r50_giam.coco": _cfg(
                    "sparse_inst_r50_giam", "1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL", 33.4, 34.0, 44.6, min_size=608
                ),
                "sparseinst_r50_giam_soft.coco": _cfg(
                    "sparse_inst_r50_giam_soft", "1doterrG89SjmLxDyU8IhLYRGxVH69sR2", 33.6, None, 44.6, min_size=608
                ),
                "sparseinst_r50_giam_aug.coco": _cfg(
                    "sparse_inst_r50_giam_aug", "1MK8rO3qtA7vN9KVSBdp0VvZHCNq8-bvz", 34.2, 34.7, 44.6, min_size=608
                ),
                "sparseinst_r50_dcn_giam_aug.coco": _cfg(
                    "sparse_inst_r50_dcn_giam_aug", "1qxdLRRHbIWEwRYn-NPPeCCk6fhBjc946", 36.4, 36.8, 41.6, min_size=608
                ),
                "sparseinst_r50vd_giam_aug.coco": _cfg(
                    "sparse_inst_r50vd_giam_aug", "1dlamg7ych_BdWpPUCuiBXbwE0SXpsfGx", 35.6, 36.1, 42.8, min_size=608
                ),
                "sparseinst_r50vd_dcn_giam_aug.coco": _cfg(
                    "sparse_inst_r50vd_dcn_giam_aug",
                    "1clYPdCNrDNZLbmlAEJ7wjsrOLn1igOpT",
                    37.4,
                    37.9,
                    40.0,
                    min_size=608,
                ),
                "sparseinst_r101_giam.coco": _cfg(
                    "sparse_inst_r101_giam", "1EZZck-UNfom652iyDhdaGYbxS0MrO__z", 34.9, 35.5
                ),
                "sparseinst_r101_dcn_giam.coco": _cfg(
                    "sparse_inst_r101_dcn_giam", "1shkFvyBmDlWRxl1ActD6VfZJTJYBGBjv", 36.4, 36.9
                ),
                "sparseinst_cspdarknet53_giam.coco": _cfg(
                    "sparse_inst_cspdarknet53_giam", "1rcUJWUbusM216Zbtmo_xB774jdjb3qSt", 35.1
                ),
                "sparseinst_pvt_v2_b1_giam.coco": _cfg(
                    "sparse_inst_pvt_b1_giam", "13l9JgTz3sF6j3vSVHOOhAYJnCf-QuNe_", 35.3, 36.0, 33.5
                ),
                "sparseinst_pvt_v2_b2_li_giam.coco": _cfg(
                    "sparse_inst_pvt_b2_li_giam", "1DFxQnFg_UL6kmMoNC4StUKo79RXVHyNF", 37.2, 38.2, 26.5
                ),
            }
        ),
        "sparseinst_iam": {"num_classes": 80},
        "sparseinst_giam": {"num_classes": 80},
        "sparseinst_giam_soft": {"num_classes": 80},
        "sparseinst_tiny_test": {"num_classes": 80, "min_size": 64, "max_size": 96},
    }
)

# The 13 variants of the reference model zoo (one released checkpoint each, plus MMDetection's R-50 IAM).
REFERENCE_VARIANTS: tuple[str, ...] = tuple(
    arch for arch, cfg in default_cfgs.items() if cfg.default.google_drive_id is not None
)
