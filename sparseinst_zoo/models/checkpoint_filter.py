"""Checkpoint filter of the SparseInst family: reference key names -> ours, checked against the model (timm style).

The reference checkpoints differ from our state dict only in the backbone names (detectron2 ResNet, official PVTv2,
timm CSPDarkNet); encoder and decoder names are shared. :func:`checkpoint_filter_fn` is the ``pretrained_filter_fn``
passed to the builder: it renames, settles BatchNorm counters and checks every key against the model it loads into.

Example:
    >>> rename_key("backbone.res4.2.conv2.norm.running_var")
    'backbone.layer3.2.bn2.running_var'
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .._checkpoint import key_problems
from .._text import listed
from ..errors import ConversionError

__all__ = ["ConversionReport", "rename_key", "head_args", "checkpoint_filter_fn", "CLASSIFIER_PREFIX"]

CLASSIFIER_PREFIX = "decoder.inst_branch.cls_score."
# Modules of MMDetection's SparseInst (projects/SparseInst: data_preprocessor, criterion) that hold no weights of the
# network; buffers a checkpoint may carry for them are dropped (and reported).
UNUSED_PREFIXES = ("data_preprocessor.", "criterion.")


def _layer(match: re.Match[str]) -> str:
    return f"layer{int(match['stage']) - 1}.{match['block']}"


# (pattern, replacement) applied to the part after "backbone."; the first matching rule wins.
_BACKBONE_RULES: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    # detectron2 ResNet (stride in the 3x3 conv, as torchvision / timm): stem, bottlenecks, shortcuts, DCN offsets
    (re.compile(r"^stem\.conv1\.weight$"), lambda m: "conv1.weight"),
    (re.compile(r"^stem\.conv1\.norm\.(?P<rest>.+)$"), lambda m: f"bn1.{m['rest']}"),
    (
        re.compile(r"^res(?P<stage>[2-5])\.(?P<block>\d+)\.conv(?P<conv>[123])\.norm\.(?P<rest>.+)$"),
        lambda m: f"{_layer(m)}.bn{m['conv']}.{m['rest']}",
    ),
    (
        re.compile(r"^res(?P<stage>[2-5])\.(?P<block>\d+)\.shortcut\.norm\.(?P<rest>.+)$"),
        lambda m: f"{_layer(m)}.downsample.1.{m['rest']}",
    ),
    (
        re.compile(r"^res(?P<stage>[2-5])\.(?P<block>\d+)\.shortcut\.(?P<rest>weight)$"),
        lambda m: f"{_layer(m)}.downsample.0.{m['rest']}",
    ),
    (
        re.compile(r"^res(?P<stage>[2-5])\.(?P<block>\d+)\.(?P<rest>conv[123]\.weight|conv2_offset\.(weight|bias))$"),
        lambda m: f"{_layer(m)}.{m['rest']}",
    ),
    # official PVTv2: patch_embed{1..4}, block{1..4}, norm{1..4} -> timm stages (stage 1's embedding is the stem)
    (re.compile(r"^patch_embed1\.(?P<rest>.+)$"), lambda m: f"patch_embed.{m['rest']}"),
    (
        re.compile(r"^patch_embed(?P<stage>[2-4])\.(?P<rest>.+)$"),
        lambda m: f"stages_{int(m['stage']) - 1}.downsample.{m['rest']}",
    ),
    (
        re.compile(r"^block(?P<stage>[1-4])\.(?P<rest>.+)$"),
        lambda m: f"stages_{int(m['stage']) - 1}.blocks.{m['rest']}",
    ),
    (re.compile(r"^norm(?P<stage>[1-4])\.(?P<rest>.+)$"), lambda m: f"stages_{int(m['stage']) - 1}.norm.{m['rest']}"),
    # timm names (CSPDarkNet): features_only flattens the top-level sequentials, 'stages.2.' -> 'stages_2.'
    (
        re.compile(r"^(?P<seq>stem|stages)\.(?P<child>\w+)\.(?P<rest>.+)$"),
        lambda m: f"{m['seq']}_{m['child']}.{m['rest']}",
    ),
]
_PVT_DWCONV = re.compile(r"\.mlp\.dwconv\.dwconv\.")


def rename_key(key: str) -> str:
    """Our name for a key of any supported checkpoint format (keys already in our format are returned unchanged).

    Example:
        >>> rename_key("backbone.block2.0.mlp.dwconv.dwconv.weight")
        'backbone.stages_1.blocks.0.mlp.dwconv.weight'
    """
    if not key.startswith("backbone."):
        return key
    rest = key[len("backbone.") :]
    for pattern, replace in _BACKBONE_RULES:
        match = pattern.match(rest)
        if match:
            rest = replace(match)
            break
    rest = _PVT_DWCONV.sub(".mlp.dwconv.", "." + rest)[1:]
    return "backbone." + rest


def head_args(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Architecture arguments readable from the decoder weights: ``num_classes`` and ``num_masks``."""
    args: dict[str, int] = {}
    cls = state_dict.get(CLASSIFIER_PREFIX + "weight")
    if cls is not None:
        args["num_classes"] = int(cls.shape[0])
    iam = state_dict.get("decoder.inst_branch.iam_conv.weight")
    first = state_dict.get("decoder.inst_branch.inst_convs.0.weight")
    if iam is not None and first is not None and iam.ndim == 4 and iam.shape[1] > 0:
        groups = max(1, int(first.shape[0]) // int(iam.shape[1]))
        args["num_masks"] = int(iam.shape[0]) // groups
    return args


@dataclass
class ConversionReport:
    """What a conversion did; ``str(report)`` is the summary printed by ``sparseinst convert``."""

    model_name: str
    source_layout: str
    num_tensors: int = 0
    num_params: int = 0
    num_classes: int = 0
    num_masks: int = 0
    renamed: int = 0
    dropped: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        lines = [
            f"model:        {self.model_name}",
            f"source:       {self.source or '-'} ({self.source_layout} layout)",
            f"tensors:      {self.num_tensors} mapped, {self.renamed} renamed, every key used and every target filled",
            f"parameters:   {self.num_params:,}",
            f"classes:      {self.num_classes}",
            f"queries:      {self.num_masks}",
        ]
        if self.dropped:
            lines.append(f"dropped:      {len(self.dropped)} num_batches_tracked counters of frozen BatchNorm layers")
        if self.filled:
            lines.append(f"initialised:  {len(self.filled)} num_batches_tracked counters set to 0")
        return "\n".join(lines)


def _is_buffer_key(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _rename_all(state_dict: Mapping[str, torch.Tensor], report: ConversionReport) -> tuple[dict, dict[str, str]]:
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    duplicates: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(UNUSED_PREFIXES):
            report.dropped.append(key)
            continue
        new_key = rename_key(key)
        if new_key in sources:
            duplicates.append(f"{sources[new_key]} and {key} -> {new_key}")
            continue
        sources[new_key] = key
        converted[new_key] = value
        report.renamed += new_key != key
    if duplicates:
        raise ConversionError(f"two source keys map to the same target key: {listed(duplicates, shown=12)}")
    return converted, sources


def checkpoint_filter_fn(
    state_dict: Mapping[str, torch.Tensor],
    model: nn.Module | Mapping[str, tuple[int, ...]],
    report: ConversionReport | None = None,
) -> dict[str, torch.Tensor]:
    """Rename ``state_dict`` to the keys of ``model`` (a module or its ``{key: shape}``) and check it fits exactly.

    Frozen BatchNorm keeps no ``num_batches_tracked``: the source's counters are dropped (and reported); trainable BN
    needs them: missing ones start at 0.

    Raises:
        ConversionError: naming the source keys that map to nothing, the target keys left unfilled and the shape
            mismatches.
    """
    target = {k: tuple(v.shape) for k, v in model.state_dict().items()} if isinstance(model, nn.Module) else model
    arch = getattr(model, "model_name", "the model")
    report = report if report is not None else ConversionReport(model_name=str(arch), source_layout="state_dict")
    converted, sources = _rename_all(state_dict, report)
    for key in [k for k in converted if k.endswith(".num_batches_tracked") and k not in target]:
        if key.removesuffix("num_batches_tracked") + "running_mean" in target:
            report.dropped.append(sources[key])
            del converted[key]
    for key in [k for k in target if k.endswith(".num_batches_tracked") and k not in converted]:
        if key.removesuffix("num_batches_tracked") + "running_mean" in converted:
            converted[key] = torch.zeros((), dtype=torch.long)
            report.filled.append(key)
    problems = key_problems(target, {k: tuple(v.shape) for k, v in converted.items()}, sources)
    if problems:
        raise ConversionError(
            f"the checkpoint does not fit {report.model_name}: " + "; ".join(problems) + ". Check that the model "
            "name is the architecture the checkpoint was trained with."
        )
    ordered = {k: converted[k].contiguous() for k in target}
    report.num_tensors = len(ordered)
    report.num_params = sum(v.numel() for k, v in ordered.items() if not _is_buffer_key(k))
    report.num_classes = int(target[CLASSIFIER_PREFIX + "weight"][0]) if CLASSIFIER_PREFIX + "weight" in target else 0
    report.num_masks = head_args(ordered).get("num_masks", 0)
    return ordered
