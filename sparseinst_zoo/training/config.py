"""Every setting of a training run, defined once: :class:`TrainConfig` (with each field's help text).

The ``sparseinst train`` options are generated from these fields (``commands/train.py``), so a default or a help
text is written only here. Defaults that depend on the machine (the model and image sizes when no ``model`` is given)
are filled in by :func:`resolve_defaults` when the run starts.

The training data is a dataset YAML (``data``: Ultralytics ``data.yaml`` with YOLO-format or COCO splits, see
docs/datasets.md) or a COCO JSON with its image folder (``train_json``/``train_images``, ``val_json``/``val_images``).

Example:
    >>> config = TrainConfig(train_json="train.json", train_images="images", iters=10, precision="bf16")
    >>> config.precision, config.checkpoint_period
    ('bf16', None)
    >>> TrainConfig(data="data.yaml", device="cpu").data
    'data.yaml'
    >>> resolve_defaults(config, "cpu").model, resolve_defaults(config, "cpu").backbone
    ('sparseinst_giam', 'resnet18')
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .._constants import WEIGHTS_NAME
from .._device import select_device
from ..data.augment import REFERENCE_MIN_SIZES, AugmentConfig
from ..errors import Argument, SparseInstError
from ..inference.precision import PRECISIONS, parse_precision
from .checkpoint import CHECKPOINT_NAME

__all__ = [
    "TrainConfig",
    "CPU_STARTER",
    "GPU_DEFAULTS",
    "RESUME_OVERRIDES",
    "resolve_defaults",
    "absolute_paths",
    "check_resume_settings",
]

# Settings that may differ when resuming; everything else is taken from the checkpoint.
RESUME_OVERRIDES = ("workers", "progress", "device", "tensorboard")

# Without a model: a small real model on CPU (ImageNet-sized backbone, fast enough to try), the reference on a GPU.
CPU_STARTER: dict[str, Any] = {
    "model": "sparseinst_giam",
    "backbone": "resnet18",
    "min_sizes": (256, 288, 320),
    "max_size": 533,
    "test_size": 320,
}
GPU_DEFAULTS: dict[str, Any] = {"model": "sparseinst_r50_giam", "min_sizes": REFERENCE_MIN_SIZES, "max_size": 853}
_REFERENCE_MAX_SIZE = 853
_PATH_FIELDS = ("data", "train_json", "train_images", "val_json", "val_images", "checkpoint", "out")
# The files a run reads again when it is resumed (the data) or that name where its weights came from: recorded
# absolute, so that a run resumes from any working directory.
_RECORDED_ABSOLUTE = ("data", "train_json", "train_images", "val_json", "val_images", "checkpoint")
_NOT_COMPARED_ON_RESUME = (*RESUME_OVERRIDES, "out", "exist_ok", "amp")


def _option(default: Any, help: str, group: str = "run", **cli: Any) -> Any:
    """A dataclass field carrying its command-line help text, option group and extra argparse settings."""
    kind = "default_factory" if isinstance(default, list) else "default"
    return field(**{kind: default}, metadata={"help": help, "group": group, "cli": cli})


@dataclass
class TrainConfig:
    """Every setting of a training run (saved in the checkpoint and in ``out/train_config.json``).

    Each field's help text is in its metadata (``dataclasses.fields(TrainConfig)``) and is what
    ``sparseinst train --help`` shows. ``amp`` is a deprecated alias of ``precision``.
    """

    model: str | None = _option(
        None,
        "registered name (see `sparseinst list`) or save_pretrained folder (default: "
        "sparseinst_r50_giam on a GPU; on CPU the starter sparseinst_giam + resnet18 at "
        "256-320 px)",
        "model",
    )
    backbone: str | None = _option(None, "timm backbone for sparseinst_iam/giam/giam_soft", "model")
    pretrained: bool = _option(False, "start from the model's released (Hub) weights", "model")
    pretrained_backbone: bool = _option(
        False,
        "without --pretrained/--checkpoint: start the backbone from timm's "
        "ImageNet weights (downloaded from the Hugging Face Hub)",
        "model",
    )
    checkpoint: str | None = _option(
        None, "start from these weights (safetensors, save_pretrained folder or reference .pth)", "model"
    )
    num_classes: int | None = _option(
        None, "class count (default: the classes of the training data; the class head is re-initialised)", "model"
    )
    freeze_backbone: bool = _option(False, "train only the encoder and decoder", "model")

    data: str | None = _option(
        None,
        "dataset YAML (Ultralytics data.yaml with YOLO-format or COCO splits; trains on 'train', evaluates on 'val' "
        "when it has one); instead of --train-json/--train-images/--val-json/--val-images",
        "data",
        metavar="DATA.yaml",
    )
    train_json: str = _option("", "COCO instances JSON to train on", "data")
    train_images: str = _option("", "image folder of --train-json", "data")
    val_json: str | None = _option(None, "COCO instances JSON for evaluation (mask AP)", "data")
    val_images: str | None = _option(None, "image folder of --val-json", "data")
    min_sizes: Sequence[int] | None = _option(
        None, "training shorter sides, comma list (default: 416,448,...,640; 256,288,320 for the CPU starter)", "data"
    )
    max_size: int | None = _option(None, "cap of the longer side (default: 853; 533 for the CPU starter)", "data")
    test_size: int | None = _option(None, "evaluation shorter side (default: the model's)", "data")
    crop: bool | None = _option(None, "the reference 'aug' random crop (default: on for *_aug models)", "data")
    flip_prob: float = _option(0.5, "horizontal flip probability", "data")
    workers: int = _option(2, "data-loading processes per GPU/process", "data")

    iters: int | None = _option(None, "training iterations", "optimisation")
    epochs: int | None = _option(None, "passes over the training images (default: 12)", "optimisation")
    batch_size: int = _option(8, "images per step and process", "optimisation")
    lr: float = _option(
        5e-5,
        "AdamW learning rate (the reference value at batch 64; try 1e-4 when fine-tuning at batch 8)",
        "optimisation",
    )
    weight_decay: float = _option(0.05, "AdamW weight decay", "optimisation")
    schedule: str = _option("step", "lr decay", "optimisation", choices=("step", "cosine"))
    steps: Sequence[float] = _option(
        (0.78, 0.93), "step decay points: fractions of the run (< 1) or iterations", "optimisation"
    )
    gamma: float = _option(0.1, "lr factor at each step decay point", "optimisation")
    warmup_iters: int | None = _option(None, "linear warm-up iterations (default: min(1000, iters/10))", "optimisation")
    warmup_factor: float = _option(0.001, "warm-up starts at this fraction of the lr", "optimisation")
    precision: str = _option(
        "fp32", "autocast precision (losses are always computed in float32)", "optimisation", choices=tuple(PRECISIONS)
    )
    amp: str | None = _option(
        None, "deprecated alias of --precision ('none' means fp32)", "optimisation", choices=("none", "fp16", "bf16")
    )
    clip_grad: float | None = _option(None, "clip the global gradient norm to this value", "optimisation")
    ema: bool = _option(False, "keep an EMA of the weights (evaluated and saved)", "optimisation")
    ema_decay: float = _option(0.9998, "EMA decay", "optimisation")
    ema_warmup: bool = _option(
        True,
        "ramp the EMA decay up as 1 - (1 + step)^(-2/3), capped at ema_decay (timm's warm-up), so that the EMA of a "
        "short run follows its training instead of staying near the initial weights",
        "optimisation",
    )
    seed: int = _option(0, "seed of initialisation, sampling and augmentation", "optimisation")

    out: str = _option(
        "runs/train",
        "output folder; if it holds a previous run, the next free one (runs/train2, ...) is used unless --exist-ok",
    )
    exist_ok: bool = _option(False, "reuse OUT even if it holds a previous run (its results are replaced)")
    eval_period: int | None = _option(
        None, "evaluate every N iterations and at the end (default: ceil(iters/5), at most 5 times per run)"
    )
    checkpoint_period: int | None = _option(
        None,
        "write the resumable checkpoint every N iterations (default: min(500, iters/5), so every run can be resumed)",
    )
    log_period: int = _option(20, "log the losses every N iterations")
    device: str | None = _option(None, "cpu, cuda, cuda:1 or auto (default: auto, cuda when available)")
    progress: bool = _option(
        True,
        "show a progress bar (the command line's default: on a terminal only; without it: one log line per "
        "evaluation and log period)",
    )
    tensorboard: bool = _option(True, "also log to TensorBoard when it is installed")

    def __post_init__(self) -> None:
        for name in _PATH_FIELDS:  # pathlib.Path values too (the settings are saved as JSON)
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, os.fspath(value))
        if self.amp is not None:
            warnings.warn(
                "amp is deprecated; use precision ('fp32', 'fp16' or 'bf16')", DeprecationWarning, stacklevel=3
            )
            self.precision = parse_precision(self.amp, "cpu", name="amp")
            self.amp = None
        self.precision = parse_precision(self.precision, select_device(self.device))
        if self.min_sizes is not None:
            self.min_sizes = tuple(int(s) for s in self.min_sizes)
        self.steps = tuple(float(s) for s in self.steps)
        self._check_required()
        self._check_numbers()
        if self.schedule not in ("step", "cosine"):
            raise SparseInstError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.pretrained and self.checkpoint:
            raise SparseInstError("give pretrained=True or a checkpoint, not both")
        AugmentConfig(
            min_sizes=self.min_sizes or REFERENCE_MIN_SIZES,
            max_size=self.max_size or _REFERENCE_MAX_SIZE,
            flip_prob=self.flip_prob,
        )  # validates

    def _check_required(self) -> None:
        coco_fields = [name for name in ("train_json", "train_images", "val_json", "val_images") if getattr(self, name)]
        if self.data and coco_fields:
            raise SparseInstError(
                f"give data (a data.yaml) or {'/'.join(coco_fields)} (COCO JSON and images), not both"
            )
        if not self.data and (not self.train_json or not self.train_images):
            raise SparseInstError(
                "name the training data: data (a data.yaml), or train_json and train_images are required "
                "(a COCO instances file and its image folder)"
            )
        if (self.val_json is None) != (self.val_images is None):
            raise SparseInstError("give both val_json and val_images, or neither")
        if self.iters is not None and self.epochs is not None:
            raise SparseInstError("give iters or epochs, not both")

    def _check_numbers(self) -> None:
        counts = ("iters", "epochs", "batch_size", "checkpoint_period", "log_period", "eval_period")
        for name in (*counts, "test_size", "max_size", "num_classes"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise SparseInstError(f"{name} must be >= 1, got {value}")
        if int(self.workers) < 0:
            raise SparseInstError(f"workers must be >= 0 (0 loads the data in the main process), got {self.workers}")
        for name in ("lr", "weight_decay", "gamma", "warmup_factor", "clip_grad", "ema_decay", "flip_prob"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(float(value)):
                raise SparseInstError(f"{name} must be a finite number, got {value}")
        if not all(math.isfinite(s) and s > 0 for s in self.steps):
            raise SparseInstError(f"steps must be finite numbers > 0, got {list(self.steps)}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise SparseInstError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise SparseInstError(f"clip_grad must be > 0, got {self.clip_grad}")
        if not 0 < self.ema_decay < 1:
            raise SparseInstError(f"ema_decay must be in (0, 1), got {self.ema_decay}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-compatible types (``amp``, the deprecated alias, left out)."""
        data = json.loads(json.dumps(dataclasses.asdict(self), allow_nan=False))
        data.pop("amp", None)
        return data

    @classmethod
    def from_saved(cls, saved: dict[str, Any], **overrides: Any) -> TrainConfig:
        """A config from :meth:`to_dict` output, also from older versions (``amp`` instead of ``precision``)."""
        saved = dict(saved)
        if "amp" in saved and "precision" not in saved:
            saved["precision"] = parse_precision(saved.pop("amp"), "cpu", name="amp")
        saved.pop("amp", None)
        if "ema" in saved and "ema_warmup" not in saved:
            saved["ema_warmup"] = False  # runs saved before the warm-up existed keep their constant decay
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**saved, **overrides}.items() if k in known})


def resolve_defaults(config: TrainConfig, device: torch.device | str) -> TrainConfig:
    """``config`` with the machine-dependent defaults filled in (model and sizes; see :data:`CPU_STARTER`).

    Without a ``model``, a CPU run gets the small starter model and sizes, a GPU run the reference model and
    sizes; with a ``model``, unset sizes are the reference's.
    """
    defaults = CPU_STARTER if config.model is None and torch.device(device).type != "cuda" else GPU_DEFAULTS
    values = {k: v for k, v in defaults.items() if getattr(config, k) is None}
    return dataclasses.replace(config, **values) if values else config


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """``config`` with its data and weights paths (and a ``model`` that is a folder) made absolute.

    A run records these so that ``resume`` finds its files from any working directory (the settings of a resumed
    run come from its checkpoint, written relative to the folder the run was started in before).

    Example:
        >>> config = absolute_paths(TrainConfig(train_json="train.json", train_images="images"))
        >>> config.train_json == os.path.abspath("train.json"), config.val_json
        (True, None)
    """
    values = {name: os.path.abspath(getattr(config, name)) for name in _RECORDED_ABSOLUTE if getattr(config, name)}
    if config.model is not None and os.path.isdir(config.model):
        values["model"] = os.path.abspath(config.model)
    return dataclasses.replace(config, **values)


def _comparable(name: str, value: Any, device: str | None) -> Any:
    """A setting as the checkpoint stores it: JSON types, an absolute path, a resolved precision."""
    if name in _PATH_FIELDS and isinstance(value, (str, os.PathLike)) and value:
        return os.path.abspath(os.fspath(value))
    if name == "precision" and isinstance(value, str):
        return parse_precision(value, select_device(device))
    return json.loads(json.dumps(value))


def _same_setting(name: str, given: Any, saved: Any, device: str | None) -> bool:
    """Whether ``given`` is the checkpoint's ``saved`` value; paths are the same when they name the same file
    (a relative path is resolved against the working directory, a link names what it points to)."""
    if _comparable(name, given, device) == _comparable(name, saved, device):
        return True
    if name not in (*_PATH_FIELDS, "model") or not isinstance(given, (str, os.PathLike)) or not given:
        return False
    if not isinstance(saved, str) or not saved or not (os.path.exists(given) and os.path.exists(saved)):
        return False
    return os.path.samefile(given, saved)


def _restart_weights(out: str) -> str:
    """The weights a new run of the run ``out`` starts from: its final model (``last/``) when it finished, else its
    best model (``best/``) when it has one, else its checkpoint (an interrupted run has no ``last/``)."""
    for name in ("last", "best"):
        if os.path.isfile(os.path.join(out, name, WEIGHTS_NAME)):
            return os.path.join(out, name)
    return os.path.join(out, CHECKPOINT_NAME)


def check_resume_settings(saved: dict[str, Any], given: dict[str, Any], out: str) -> None:
    """Refuse settings given with ``resume`` that differ from the checkpoint's (they would be ignored).

    Values equal to a field's default count as not given, so the full command of the run plus ``--resume`` passes.

    Raises:
        SparseInstError: naming every differing setting, its value and the checkpoint's.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    device = given.get("device")
    changed: dict[str, Any] = {}  # field -> the Argument given, then the checkpoint's value
    for name, value in given.items():
        if name not in defaults or name in _NOT_COMPARED_ON_RESUME or value == defaults[name]:
            continue
        if not _same_setting(name, value, saved.get(name, defaults[name]), device):
            index = len(changed) // 2
            changed[f"given{index}"] = Argument(name, value)
            changed[f"saved{index}"] = repr(saved.get(name, defaults[name]))
    if changed:
        count = len(changed) // 2
        was, it = ("was", "it") if count == 1 else ("were", "them")
        listed = ", ".join(f"{{given{i}}} (the checkpoint has {{saved{i}}})" for i in range(count))
        raise SparseInstError.naming(
            f"a resumed run keeps the settings of its checkpoint, but {listed} {was} given; drop {it} to continue the "
            "run, or start a new run from its weights ({checkpoint})",
            checkpoint=Argument("checkpoint", _restart_weights(out)),
            **changed,
        )
