"""Convert reference SparseInst checkpoints to sparseinst-zoo state dicts.

Accepted inputs:

* detectron2 checkpoints of the reference implementation (``{"model": state_dict}``, e.g. the released
  ``sparse_inst_*.pth`` files): ResNet names (``backbone.stem.conv1``, ``backbone.res{2..5}.{i}.conv{1,2,3}[.norm]``,
  ``.shortcut[.norm]``, ``.conv2_offset``), ResNet-vd / CSPDarkNet with timm names and PVTv2 with the official names.
* MMDetection SparseInst checkpoints (``{"meta": ..., "state_dict": ...}``, torchvision ResNet names).
* Our own ``model.safetensors`` (or a bare state dict already in our names).

Encoder and decoder names are shared by every format; only the backbone keys are renamed, to the names of the timm
``features_only`` backbone built by :func:`sparseinst_zoo.models.backbones.create_backbone`. The result is checked
against the target model: every source key must be used and every target key filled with the right shape, otherwise a
:class:`ConversionError` names the keys. Frozen BatchNorm has no ``num_batches_tracked``; such counters of the source
are dropped (and reported), counters the target needs but the source lacks (trainable BN) start at 0.

Example:
    >>> from sparseinst_zoo.convert import rename_key
    >>> rename_key("backbone.res4.2.conv2.norm.running_var")
    'backbone.layer3.2.bn2.running_var'
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import ConversionError

__all__ = [
    "ConversionError",
    "ConversionReport",
    "ReferenceCheckpoint",
    "REFERENCE_CHECKPOINTS",
    "MMDET_CHECKPOINTS",
    "rename_key",
    "read_checkpoint",
    "convert_state_dict",
    "convert_checkpoint",
    "detect_model",
    "target_shapes",
    "download_hint",
]

_logger = logging.getLogger("sparseinst_zoo")

CLASSIFIER_PREFIX = "decoder.inst_branch.cls_score."
_NUM_SHOWN = 12  # keys listed in an error message before "... and N more"


# ---------------------------------------------------------------------------------------------------------------------
# Where the original checkpoints come from (the reference model zoo). hub/manifest.json is generated from this table
# together with the registry (reference AP / FPS / test size), see hub/publish.py.
# ---------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceCheckpoint:
    """One released reference checkpoint: its model here, the reference config it was trained with and its Drive id."""

    model: str
    reference_config: str
    drive_id: str
    source: str = "detectron2"

    @property
    def url(self) -> str:
        return f"https://drive.google.com/file/d/{self.drive_id}/view?usp=sharing"

    @property
    def filename_pattern(self) -> str:
        """Released files are named after the config plus a short hash, e.g. ``sparse_inst_r50_giam_aug_2b7d68.pth``."""
        return f"{self.reference_config}*.pth"


REFERENCE_CHECKPOINTS: dict[str, ReferenceCheckpoint] = {
    ref.model: ref
    for ref in (
        ReferenceCheckpoint("sparseinst_r50_iam", "sparse_inst_r50_base", "12RQLHD5EZKIOvlqW3avUCeYjFG1NPKDy"),
        ReferenceCheckpoint("sparseinst_r50vd_iam", "sparse_inst_r50vd_base", "1fjPFy35X2iJu3tYwVdAq4Bel82PfH5kx"),
        ReferenceCheckpoint("sparseinst_r50_giam", "sparse_inst_r50_giam", "1pXU7Dsa1L7nUiLU9ULG2F6Pl5m5NEguL"),
        ReferenceCheckpoint(
            "sparseinst_r50_giam_soft", "sparse_inst_r50_giam_soft", "1doterrG89SjmLxDyU8IhLYRGxVH69sR2"
        ),
        ReferenceCheckpoint("sparseinst_r50_giam_aug", "sparse_inst_r50_giam_aug", "1MK8rO3qtA7vN9KVSBdp0VvZHCNq8-bvz"),
        ReferenceCheckpoint(
            "sparseinst_r50_dcn_giam_aug", "sparse_inst_r50_dcn_giam_aug", "1qxdLRRHbIWEwRYn-NPPeCCk6fhBjc946"
        ),
        ReferenceCheckpoint(
            "sparseinst_r50vd_giam_aug", "sparse_inst_r50vd_giam_aug", "1dlamg7ych_BdWpPUCuiBXbwE0SXpsfGx"
        ),
        ReferenceCheckpoint(
            "sparseinst_r50vd_dcn_giam_aug", "sparse_inst_r50vd_dcn_giam_aug", "1clYPdCNrDNZLbmlAEJ7wjsrOLn1igOpT"
        ),
        ReferenceCheckpoint("sparseinst_r101_giam", "sparse_inst_r101_giam", "1EZZck-UNfom652iyDhdaGYbxS0MrO__z"),
        ReferenceCheckpoint(
            "sparseinst_r101_dcn_giam", "sparse_inst_r101_dcn_giam", "1shkFvyBmDlWRxl1ActD6VfZJTJYBGBjv"
        ),
        ReferenceCheckpoint(
            "sparseinst_cspdarknet53_giam", "sparse_inst_cspdarknet53_giam", "1rcUJWUbusM216Zbtmo_xB774jdjb3qSt"
        ),
        ReferenceCheckpoint(
            "sparseinst_pvt_v2_b1_giam", "sparse_inst_pvt_b1_giam", "13l9JgTz3sF6j3vSVHOOhAYJnCf-QuNe_"
        ),
        ReferenceCheckpoint(
            "sparseinst_pvt_v2_b2_li_giam", "sparse_inst_pvt_b2_li_giam", "1DFxQnFg_UL6kmMoNC4StUKo79RXVHyNF"
        ),
    )
}

# MMDetection's port released an R-50 IAM model (32.9 AP val2017) as a direct download.
MMDET_CHECKPOINTS: dict[str, dict[str, Any]] = {
    "sparseinst_r50_iam": {
        "filename": "sparseinst_r50_iam_8xb8-ms-270k_coco_20221111_181051-72c711cd.pth",
        "url": "https://download.openmmlab.com/mmdetection/v3.0/sparseinst/sparseinst_r50_iam_8xb8-ms-270k_coco/"
        "sparseinst_r50_iam_8xb8-ms-270k_coco_20221111_181051-72c711cd.pth",
        "reference_ap": 32.9,
    }
}


def download_hint(model_name: str) -> str:
    """How to get and convert the original checkpoint of ``model_name`` (one or two sentences, for error messages)."""
    arch = model_name.partition(".")[0]
    ref = REFERENCE_CHECKPOINTS.get(arch)
    if ref is None:
        return (
            f"No reference checkpoint is known for {arch!r}; train it (`sparseinst train`) or pass "
            "checkpoint_path= with weights of your own."
        )
    hint = (
        f"Download the original checkpoint ({ref.filename_pattern}) from {ref.url}, convert it with "
        f"`sparseinst convert FILE.pth --model {arch} --out DIR` and load it with checkpoint_path='DIR' "
        "(a reference .pth also loads directly: checkpoint_path='FILE.pth')."
    )
    mmdet = MMDET_CHECKPOINTS.get(arch)
    if mmdet:
        hint += f" MMDetection's release works too: {mmdet['url']}"
    return hint


# ---------------------------------------------------------------------------------------------------------------------
# Renaming
# ---------------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------------
# Reading checkpoint files
# ---------------------------------------------------------------------------------------------------------------------
def _as_tensor(key: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return torch.from_numpy(value.copy())
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    raise ConversionError(f"checkpoint entry {key!r} is a {type(value).__name__}, not a tensor")


def _unwrap(obj: Any, path: str) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict inside a loaded checkpoint object, and the layout it came in."""
    if not isinstance(obj, Mapping):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    if isinstance(obj.get("state_dict"), Mapping):  # MMDetection / MMEngine
        inner, layout = obj["state_dict"], "mmdetection"
    elif isinstance(obj.get("model"), Mapping):  # detectron2
        inner, layout = obj["model"], "detectron2"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner, layout = obj, "state_dict"
    else:
        top = ", ".join(repr(k) for k in list(obj)[:10])
        raise ConversionError(
            f"{path} is not a SparseInst checkpoint: expected {{'model': state_dict}} (detectron2), "
            f"{{'state_dict': ...}} (MMDetection) or a state dict of tensors; its top-level keys are {top}"
        )
    state = {str(k): _as_tensor(str(k), v) for k, v in inner.items()}
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, layout


def _looks_like_torch_file(path: Path) -> bool:
    """True for what ``torch.save`` writes: a zip archive (since PyTorch 1.6) or a legacy pickle (protocol 2+)."""
    head = _file_head(path)
    return head == b"PK" or (len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _file_head(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(2)


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], str]:
    """Load the tensors of a ``.safetensors`` file or a pickled checkpoint (``weights_only=True`` only).

    Returns:
        ``(state_dict, layout)`` where layout is ``'safetensors'``, ``'detectron2'``, ``'mmdetection'`` or
        ``'state_dict'``; keys are as stored (not yet renamed).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path)), "safetensors"
        except (SafetensorError, OSError, ValueError) as err:
            raise ConversionError(
                f"{path} is not a readable safetensors file ({err}); it is probably truncated or corrupt: "
                "download or convert it again"
            ) from err
    if not _looks_like_torch_file(path):
        raise ConversionError(
            f"{path} is not a PyTorch checkpoint (neither a torch.save zip archive nor a pickle); pass the reference "
            ".pth checkpoint, a model.safetensors file or a folder written by save_pretrained / `sparseinst convert`"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors come in many types; none of them must leak as a deep traceback
        import zipfile

        if _file_head(path) == b"PK" and not zipfile.is_zipfile(path):
            raise ConversionError(
                f"{path} is an incomplete zip archive: the checkpoint is truncated or corrupt; download it again"
            ) from err
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConversionError(
            f"cannot read {path} as a weights-only PyTorch checkpoint ({message}). Only tensors, dicts and plain "
            "values are unpickled (weights_only=True); if the file also stores training state with custom classes "
            "(e.g. an MMEngine checkpoint with its message hub), re-save just the weights in an environment you "
            "trust: torch.save({'state_dict': ckpt['state_dict']}, 'weights.pth')"
        ) from err
    return _unwrap(obj, str(path))


# ---------------------------------------------------------------------------------------------------------------------
# Target models
# ---------------------------------------------------------------------------------------------------------------------
_target_cache: dict[tuple[str, tuple[tuple[str, Any], ...]], dict[str, tuple[int, ...]]] = {}


def target_shapes(model_name: str, **model_kwargs: Any) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of the state dict of ``create_model(model_name, **model_kwargs)`` (built on the meta device)."""
    from ._builder import create_model

    cache_key = (model_name, tuple(sorted(model_kwargs.items())))
    if cache_key not in _target_cache:
        with torch.device("meta"):
            model = create_model(model_name, **model_kwargs)
        _target_cache[cache_key] = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    return _target_cache[cache_key]


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


# ---------------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------------
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


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_NUM_SHOWN])
    return shown + (f" ... and {len(keys) - _NUM_SHOWN} more" if len(keys) > _NUM_SHOWN else "")


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_name: str,
    source_layout: str = "state_dict",
    **model_kwargs: Any,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename ``state_dict`` to our keys and check it against ``model_name`` (class count and queries from the weights).

    Args:
        state_dict: a reference (detectron2 / MMDetection) or our own state dict.
        model_name: the registered architecture the weights belong to, e.g. ``'sparseinst_r50_giam'``.
        source_layout: label for the report.
        **model_kwargs: extra architecture arguments of the target model.

    Returns:
        ``(converted_state_dict, report)``.

    Raises:
        ConversionError: naming the source keys that map to nothing, the target keys left unfilled and the shape
            mismatches.

    Example:
        >>> import sparseinst_zoo
        >>> from sparseinst_zoo.convert import convert_state_dict
        >>> sd = sparseinst_zoo.create_model("sparseinst_tiny_test").state_dict()
        >>> converted, report = convert_state_dict(sd, "sparseinst_tiny_test")
        >>> report.num_tensors == len(sd)
        True
    """
    arch = model_name.partition(".")[0]
    kwargs = {**head_args(state_dict), **model_kwargs}
    target = target_shapes(arch, **kwargs)
    converted: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    report = ConversionReport(model_name=arch, source_layout=source_layout)
    duplicates: list[str] = []
    for key, value in state_dict.items():
        new_key = rename_key(key)
        if new_key in sources:
            duplicates.append(f"{sources[new_key]} and {key} -> {new_key}")
            continue
        sources[new_key] = key
        converted[new_key] = value
        report.renamed += new_key != key
    if duplicates:
        raise ConversionError(f"two source keys map to the same target key: {_listing(duplicates)}")

    # Frozen BatchNorm keeps no counter: drop the source's; trainable BN needs one: start it at 0.
    for key in [k for k in converted if k.endswith(".num_batches_tracked") and k not in target]:
        if key.removesuffix("num_batches_tracked") + "running_mean" in target:
            report.dropped.append(sources[key])
            del converted[key]
    for key in [k for k in target if k.endswith(".num_batches_tracked") and k not in converted]:
        if key.removesuffix("num_batches_tracked") + "running_mean" in converted:
            converted[key] = torch.zeros((), dtype=torch.long)
            report.filled.append(key)

    leftover = sorted(sources[k] + (f" (-> {k})" if sources[k] != k else "") for k in converted if k not in target)
    missing = sorted(k for k in target if k not in converted)
    mismatched = sorted(
        f"{sources[k]}: {tuple(converted[k].shape)} in the checkpoint, {target[k]} in the model"
        for k in converted
        if k in target and tuple(converted[k].shape) != target[k]
    )
    problems = []
    if leftover:
        problems.append(f"{len(leftover)} checkpoint key(s) match nothing in {arch}: {_listing(leftover)}")
    if missing:
        problems.append(f"{len(missing)} key(s) of {arch} are not in the checkpoint: {_listing(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatch(es): {_listing(mismatched)}")
    if problems:
        raise ConversionError(
            f"the checkpoint does not fit {arch}: " + "; ".join(problems) + ". Check that --model / the model name is "
            "the architecture the checkpoint was trained with (see `sparseinst convert --help`)."
        )
    ordered = {k: converted[k].contiguous() for k in target}
    report.num_tensors = len(ordered)
    report.num_params = sum(v.numel() for k, v in ordered.items() if not _is_buffer_key(k))
    report.num_classes = int(kwargs.get("num_classes", target[CLASSIFIER_PREFIX + "weight"][0]))
    report.num_masks = int(kwargs.get("num_masks", 0))
    return ordered, report


def _is_buffer_key(key: str) -> bool:
    return key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def detect_model(
    state_dict: Mapping[str, torch.Tensor], filename: str | None = None, candidates: list[str] | None = None
) -> str:
    """The reference architecture a checkpoint belongs to.

    Architectures whose key set and shapes fit the weights are candidates; identical architectures (e.g. ``r50_giam``
    and ``r50_giam_aug``) are told apart by the file name (released files start with the reference config name).

    Raises:
        ConversionError: if no architecture fits, or several do and the file name does not decide.
    """
    names = candidates or list(REFERENCE_CHECKPOINTS)
    renamed = {rename_key(k): tuple(v.shape) for k, v in state_dict.items()}
    kwargs = head_args(state_dict)
    fits = []
    for name in names:
        target = target_shapes(name, **kwargs)
        keys = {k for k in target if not k.endswith("num_batches_tracked")}
        if keys == {k for k in renamed if not k.endswith("num_batches_tracked")} and all(
            renamed[k] == target[k] for k in keys
        ):
            fits.append(name)
    if not fits:
        raise ConversionError(
            "could not recognise the architecture of this checkpoint: it fits none of the reference models "
            f"({', '.join(names)}); pass the model name explicitly (--model) to see which keys differ"
        )
    if len(fits) == 1:
        return fits[0]
    if filename:
        stem = Path(filename).name
        refs = [REFERENCE_CHECKPOINTS[name] for name in fits if name in REFERENCE_CHECKPOINTS]
        by_config = sorted(
            (ref for ref in refs if stem.startswith(ref.reference_config)), key=lambda ref: len(ref.reference_config)
        )
        if by_config:
            return by_config[-1].model
    raise ConversionError(
        f"the checkpoint fits several architectures that differ only in their training recipe ({', '.join(fits)}); "
        "pass the one it was trained as with --model"
    )


def convert_checkpoint(
    src: str | os.PathLike[str],
    model_name: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    **model_kwargs: Any,
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert a checkpoint file; with ``out_dir`` also write ``model.safetensors`` + ``config.json`` there.

    Args:
        src: reference ``.pth`` (detectron2 or MMDetection) or our ``.safetensors`` / ``save_pretrained`` folder.
        model_name: target architecture; detected from the keys (and the file name) when omitted.
        out_dir: folder to write (created; files are written atomically).
        **model_kwargs: extra architecture arguments of the target model.

    Example:
        >>> from sparseinst_zoo.convert import convert_checkpoint
        >>> # state_dict, report = convert_checkpoint("sparse_inst_r50_giam_aug_2b7d68.pth", out_dir="r50_giam_aug")
    """
    state_dict, layout = read_checkpoint(src)
    if model_name is None:
        model_name = _model_from_config(src) or detect_model(state_dict, filename=os.fspath(src))
    converted, report = convert_state_dict(state_dict, model_name, source_layout=layout, **model_kwargs)
    report.source = os.fspath(src)
    if out_dir is not None:
        from .hub import save_pretrained

        model = _model_for_saving(report.model_name, converted, **{**head_args(converted), **model_kwargs})
        save_pretrained(model, out_dir, card=False)
    return converted, report


def _model_from_config(src: str | os.PathLike[str]) -> str | None:
    """The architecture named in the ``config.json`` beside our own weights, if any."""
    path = Path(src)
    config = (path if path.is_dir() else path.parent) / "config.json"
    if path.suffix == ".pth" or not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("model_name")
    except (OSError, ValueError):
        return None


def _model_for_saving(model_name: str, state_dict: dict[str, torch.Tensor], **model_kwargs: Any) -> torch.nn.Module:
    """The registered model with ``state_dict`` loaded (its default pretrained cfg attached) for ``save_pretrained``."""
    from ._builder import create_model
    from .hub import load_state_dict_strict

    model = create_model(model_name, **model_kwargs)
    load_state_dict_strict(model, state_dict)
    return model.eval()
