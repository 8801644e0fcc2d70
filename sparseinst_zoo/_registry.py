"""A timm-style model registry.

Model functions are registered with :func:`register_model`; their pretrained configurations live in the module-level
``default_cfgs`` built with :func:`generate_default_cfgs`. Names are ``arch`` or ``arch.tag`` (e.g.
``sparseinst_r50_giam.coco``); an ``arch`` alone means its default (first) tag.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import importlib
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from ._constants import DEFAULT_MEAN, DEFAULT_STD
from .errors import SparseInstError

__all__ = [
    "PretrainedCfg",
    "DefaultCfg",
    "register_model",
    "generate_default_cfgs",
    "list_models",
    "list_pretrained",
    "is_model",
    "model_entrypoint",
    "get_pretrained_cfg",
    "split_model_name_tag",
    "unknown_model_error",
]


@dataclass
class PretrainedCfg:
    """Everything needed to fetch, load and use one set of weights of an architecture.

    Sizes follow detectron2: ``min_size`` is the target shorter side, ``max_size`` caps the longer side.
    """

    architecture: str = ""
    tag: str = ""
    hf_hub_id: str | None = None
    hf_hub_filename: str = "model.safetensors"
    revision: str | None = None
    file: str | None = None  # local file overriding every download (via pretrained_cfg_overlay=dict(file=...))
    url: str | None = None  # original release over plain HTTP(S), e.g. MMDetection's file
    google_drive_id: str | None = None  # original release on Google Drive (the reference README's links)
    original_filename: str | None = None
    original_size: int | None = None  # bytes, where known
    original_sha256: str | None = None  # full digest or a prefix of >= 8 hex digits (as in MMDetection file names)
    hub_published: bool = False  # True once the converted weights are known to be on the Hub
    num_classes: int = 80
    label_names: tuple[str, ...] = ()
    dataset: str = ""
    mean: tuple[float, float, float] = DEFAULT_MEAN
    std: tuple[float, float, float] = DEFAULT_STD
    min_size: int = 640
    max_size: int = 853
    license: str = "mit"
    paper_ids: str = "arXiv:2203.12827"
    paper_name: str = "Sparse Instance Activation for Real-Time Instance Segmentation"
    reference_config: str = ""
    reference_ap: float | None = None
    reference_ap_test_dev: float | None = None
    reference_fps: float | None = None
    classifier: tuple[str, ...] = ("decoder.inst_branch.cls_score",)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise SparseInstError(f"pretrained cfg {label} must be 3 finite numbers (R, G, B), got {values!r}")
        if min(self.std) <= 0:
            raise SparseInstError(
                f"pretrained cfg std must be > 0 for every channel (images are divided by it), got {self.std!r}"
            )
        if self.original_sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", self.original_sha256):
            raise SparseInstError(f"original_sha256 must be 8 to 64 lowercase hex digits, got {self.original_sha256!r}")

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def has_weights(self) -> bool:
        return bool(self.hf_hub_id or self.file or self.url or self.google_drive_id)

    @property
    def original_source(self) -> str | None:
        """Where the original release of these weights is downloaded from, or None."""
        if self.url:
            return self.url
        if self.google_drive_id:
            return f"https://drive.google.com/file/d/{self.google_drive_id}"
        return None

    @property
    def weights_origin(self) -> str:
        """Where ``pretrained=True`` gets these weights today: ``'file'``, ``'hub'``, ``'original'`` or ``'none'``."""
        if self.file:
            return "file"
        if self.hf_hub_id and self.hub_published:
            return "hub"
        if self.original_source:
            return "original"
        return "hub" if self.hf_hub_id else "none"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return json_ready(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PretrainedCfg:
        """Inverse of :meth:`to_dict`; unknown keys go to ``extra`` so newer configs still load."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        extra = dict(kwargs.pop("extra", {}) or {})
        extra.update({k: v for k, v in data.items() if k not in known})
        for key in ("label_names", "mean", "std", "classifier"):
            if key in kwargs and kwargs[key] is not None:
                if not isinstance(kwargs[key], (list, tuple)):
                    raise SparseInstError(f"pretrained cfg {key} must be a list, got {kwargs[key]!r}")
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs, extra=extra)

    def replace(self, **changes: Any) -> PretrainedCfg:
        return dataclasses.replace(self, **changes)


def json_ready(value: Any) -> Any:
    """Recursively turn tuples into lists so that ``json.dumps`` round-trips."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


@dataclass
class DefaultCfg:
    """The tags of one architecture, in priority order; the first is the default."""

    tags: list[str] = field(default_factory=list)
    cfgs: dict[str, PretrainedCfg] = field(default_factory=dict)

    @property
    def default(self) -> PretrainedCfg:
        return self.cfgs[self.tags[0]]


def split_model_name_tag(model_name: str, no_tag: str = "") -> tuple[str, str]:
    """``'arch.tag'`` -> ``('arch', 'tag')``; ``'arch'`` -> ``('arch', no_tag)``."""
    arch, _, tag = model_name.partition(".")
    return arch, tag or no_tag


def generate_default_cfgs(cfgs: dict[str, dict[str, Any] | PretrainedCfg]) -> dict[str, DefaultCfg]:
    """Group ``{'arch.tag': cfg}`` entries per architecture, keeping the declaration order of the tags."""
    out: dict[str, DefaultCfg] = defaultdict(DefaultCfg)
    for name, cfg in cfgs.items():
        arch, tag = split_model_name_tag(name)
        if isinstance(cfg, dict):
            cfg = PretrainedCfg(**cfg)
        cfg = cfg.replace(architecture=arch, tag=tag)
        default_cfg = out[arch]
        if tag in default_cfg.cfgs:
            raise ValueError(f"duplicate pretrained cfg {name!r}")
        default_cfg.tags.append(tag)
        default_cfg.cfgs[tag] = cfg
    return dict(out)


# Built-in model families: their torch-free cfg module (names + pretrained cfgs, read for listing) and the module
# defining their model functions (imported when a model is built). Listing never imports torch.
_BUILTIN_FAMILIES: dict[str, tuple[str, str]] = {
    "sparseinst": ("sparseinst_zoo.models.sparseinst_cfgs", "sparseinst_zoo.models.sparseinst"),
}
_families_loaded: set[str] = set()
_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_module: dict[str, str] = {}
_model_default_cfgs: dict[str, DefaultCfg] = {}
_model_pretrained_cfgs: dict[str, PretrainedCfg] = {}  # 'arch.tag' -> cfg
_model_has_pretrained: set[str] = set()


def _add_cfgs(arch: str, module_name: str, default_cfg: DefaultCfg) -> None:
    _model_to_module[arch] = module_name
    _model_default_cfgs[arch] = default_cfg
    for tag in default_cfg.tags:
        cfg = default_cfg.cfgs[tag]
        full_name = f"{arch}.{tag}" if tag else arch
        _model_pretrained_cfgs[full_name] = cfg
        if cfg.has_weights:
            _model_has_pretrained.add(arch)
            _model_has_pretrained.add(full_name)


def _load_families() -> None:
    """Register the names and cfgs of the built-in families from their torch-free cfg modules (once)."""
    for family, (cfg_module, _) in _BUILTIN_FAMILIES.items():
        if family in _families_loaded:
            continue
        _families_loaded.add(family)
        default_cfgs: dict[str, DefaultCfg] = importlib.import_module(cfg_module).default_cfgs
        for arch, default_cfg in default_cfgs.items():
            if arch not in _model_default_cfgs:
                _add_cfgs(arch, family, default_cfg)


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator registering a model function under its ``__name__``.

    The function's module must define ``default_cfgs`` (from :func:`generate_default_cfgs`) before the decorated
    functions; an architecture without an entry there gets an empty cfg (random init only).
    """
    model_name = fn.__name__
    _load_families()
    family = _BUILTIN_FAMILIES.get(_model_to_module.get(model_name, ""))
    if model_name in _model_entrypoints or (family is not None and fn.__module__ != family[1]):
        raise ValueError(f"model {model_name!r} is registered twice")
    module = sys.modules[fn.__module__]
    _model_entrypoints[model_name] = fn
    default_cfgs: dict[str, DefaultCfg] = getattr(module, "default_cfgs", {})
    default_cfg = default_cfgs.get(model_name)
    if default_cfg is None:
        default_cfg = DefaultCfg(tags=[""], cfgs={"": PretrainedCfg(architecture=model_name)})
    _add_cfgs(model_name, fn.__module__.split(".")[-1], default_cfg)
    return fn


def _as_list(patterns: str | Iterable[str] | None) -> list[str]:
    if not patterns:
        return []
    if isinstance(patterns, str):
        return [patterns]
    return list(patterns)


def _matches(name: str, pattern: str) -> bool:
    """A tagged name matches a pattern written for the full name or for its architecture alone."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(split_model_name_tag(name)[0], pattern)


def list_models(
    filter: str | Iterable[str] = "",
    module: str = "",
    pretrained: bool = False,
    exclude_filters: str | Iterable[str] = "",
    include_tags: bool | None = None,
) -> list[str]:
    """Names of the registered models, sorted.

    Args:
        filter: fnmatch pattern(s); a name is kept if it (or its architecture, for ``arch.tag``) matches any of them.
        module: keep only models defined in this module (e.g. ``'sparseinst'``).
        pretrained: keep only names that have weights to download.
        exclude_filters: fnmatch pattern(s) of names to drop.
        include_tags: list ``arch.tag`` names instead of ``arch``; defaults to ``pretrained``.

    Example:
        >>> import sparseinst_zoo
        >>> sparseinst_zoo.list_models("sparseinst_r50_giam*")
        ['sparseinst_r50_giam', 'sparseinst_r50_giam_aug', 'sparseinst_r50_giam_soft']
    """
    _load_families()
    if include_tags is None:
        include_tags = pretrained
    names: list[str] = [m for m in _model_default_cfgs if not module or _model_to_module[m] == module]
    if include_tags:
        names = [f"{arch}.{tag}" if tag else arch for arch in names for tag in _model_default_cfgs[arch].tags]
    filters = _as_list(filter)
    if filters:
        names = [n for n in names if any(_matches(n, f) for f in filters)]
    for excl in _as_list(exclude_filters):
        names = [n for n in names if not _matches(n, excl)]
    if pretrained:
        names = [n for n in names if n in _model_has_pretrained]
    return sorted(set(names))


def list_pretrained(filter: str | Iterable[str] = "", exclude_filters: str | Iterable[str] = "") -> list[str]:
    """``arch.tag`` names that have released weights.

    Example:
        >>> import sparseinst_zoo
        >>> "sparseinst_r50_giam.coco" in sparseinst_zoo.list_pretrained()
        True
    """
    return list_models(filter=filter, pretrained=True, exclude_filters=exclude_filters, include_tags=True)


def is_model(model_name: str) -> bool:
    """True if the architecture of ``model_name`` (tag ignored) is registered."""
    _load_families()
    arch, _ = split_model_name_tag(model_name)
    return arch in _model_default_cfgs


def unknown_model_error(model_name: str) -> SparseInstError:
    """A :class:`SparseInstError` (a ``ValueError``) for an unknown name that suggests the closest registered ones."""
    _load_families()
    candidates = list(dict.fromkeys([*_model_default_cfgs, *_model_pretrained_cfgs]))  # untagged archs appear in both
    close = difflib.get_close_matches(model_name, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return SparseInstError(
        f"Unknown model {model_name!r}.{hint} See sparseinst_zoo.list_models() or `sparseinst list` for all names."
    )


def model_entrypoint(model_name: str) -> Callable[..., Any]:
    """The registered function building ``model_name`` (tag ignored); raises a helpful SparseInstError if unknown."""
    arch, _ = split_model_name_tag(model_name)
    if arch not in _model_entrypoints and is_model(arch):
        family = _BUILTIN_FAMILIES.get(_model_to_module[arch])
        if family is not None:  # a built-in family listed from its cfgs: its model functions register on import
            importlib.import_module(family[1])
    if arch not in _model_entrypoints:
        raise unknown_model_error(model_name)
    return _model_entrypoints[arch]


@overload
def get_pretrained_cfg(model_name: str, allow_unregistered: Literal[False] = False) -> PretrainedCfg: ...


@overload
def get_pretrained_cfg(model_name: str, allow_unregistered: bool) -> PretrainedCfg | None: ...


def get_pretrained_cfg(model_name: str, allow_unregistered: bool = False) -> PretrainedCfg | None:
    """The pretrained cfg of ``arch`` (its default tag) or ``arch.tag``.

    Raises a SparseInstError for an unknown architecture or tag unless ``allow_unregistered`` (then returns None).

    Example:
        >>> import sparseinst_zoo
        >>> sparseinst_zoo.get_pretrained_cfg("sparseinst_r50_giam").hf_hub_id
        'sparseinst-zoo/sparseinst_r50_giam.coco'
    """
    _load_families()
    arch, tag = split_model_name_tag(model_name)
    default_cfg = _model_default_cfgs.get(arch)
    if default_cfg is None:
        if allow_unregistered:
            return None
        raise unknown_model_error(model_name)
    if not tag:
        return default_cfg.default
    if tag not in default_cfg.cfgs:
        if allow_unregistered:
            return None
        tags = ", ".join(repr(t) for t in default_cfg.tags if t) or "none"
        raise SparseInstError(f"Model {arch!r} has no pretrained tag {tag!r}; its tags are: {tags}.")
    return default_cfg.cfgs[tag]
