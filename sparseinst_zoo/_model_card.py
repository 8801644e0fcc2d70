"""The README.md model card written beside saved weights (YAML front matter, usage, metrics, provenance, citation).

Example:
    >>> "Cheng2022SparseInst" in CITATION
    True
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from importlib import resources
from typing import Any

from ._registry import PretrainedCfg
from .version import __version__

__all__ = ["CITATION", "model_card"]

CITATION = """@inproceedings{Cheng2022SparseInst,
  title     = {Sparse Instance Activation for Real-Time Instance Segmentation},
  author    = {Cheng, Tianheng and Wang, Xinggang and Chen, Shaoyu and Zhang, Wenqiang and Zhang, Qian and
               Huang, Chang and Zhang, Zhaoxiang and Liu, Wenyu},
  booktitle = {Proc. IEEE Conf. Computer Vision and Pattern Recognition (CVPR)},
  year      = {2022}
}"""


def _metrics_table(metrics: Mapping[str, Any] | None) -> str:
    if not metrics:
        return "No evaluation was recorded with these weights."
    rows = ["| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        text = f"{value:.2f}" if isinstance(value, float) else str(value)
        rows.append(f"| {key} | {text} |")
    return "\n".join(rows)


def _fmt(value: float | None) -> str:
    return "-" if value is None else str(value)


def _reference_table(cfg: PretrainedCfg) -> str:
    if cfg.reference_ap is None:
        return ""
    rows = [
        "Reported for the original checkpoint of this architecture (SparseInst model zoo, detectron2 implementation):",
        "",
        "| reference config | test size (shorter side) | mask AP val2017 | mask AP test-dev | FPS (RTX 2080 Ti) |",
        "| --- | --- | --- | --- | --- |",
        f"| {cfg.reference_config or '-'} | {cfg.min_size} | {_fmt(cfg.reference_ap)} | "
        f"{_fmt(cfg.reference_ap_test_dev)} | {_fmt(cfg.reference_fps)} |",
    ]
    if cfg.original_source:
        rows += ["", f"Converted from the original release: {cfg.original_source}"]
    return "\n".join(rows)


def model_card(
    config: Mapping[str, Any], num_params: int, repo_id: str | None = None, metrics: Mapping[str, Any] | None = None
) -> str:
    """The model card of a saved model, from its ``config.json`` content and parameter count."""
    cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
    model_name = config["model_name"]
    if repo_id:
        load = f'model = sparseinst_zoo.create_model("hf-hub:{repo_id}")'
    else:
        load = 'model = sparseinst_zoo.from_pretrained("path/to/this/folder")'
    names = cfg.label_names or tuple(f"class_{i}" for i in range(cfg.num_classes))
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    datasets = "datasets:\n- detection-datasets/coco\n" if cfg.dataset.startswith("coco") else ""
    template = string.Template(
        resources.files("sparseinst_zoo").joinpath("assets/model_card_template.md").read_text(encoding="utf-8")
    )
    return template.substitute(
        license=cfg.license or "mit",
        datasets=datasets,
        title=repo_id or model_name,
        model_name=model_name,
        backbone=config["model_args"].get("backbone", "?"),
        decoder=config["model_args"].get("decoder", "?"),
        num_params=f"{num_params / 1e6:.1f}",
        num_classes=cfg.num_classes,
        dataset=cfg.dataset or "not recorded",
        label_names=shown,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        load=load,
        metrics=_metrics_table(metrics),
        reference=_reference_table(cfg),
        citation=CITATION,
        version=__version__,
    )
