"""``sparseinst train``: fine-tune or train a model on a dataset YAML or COCO JSON (multi-GPU with ``torchrun``).

The options are generated from :class:`~sparseinst_zoo.training.config.TrainConfig`'s fields (name, type, default
and help text are written once, there); ``--device`` and ``--precision`` (with ``--amp``, its deprecated alias) are
the options every command shares (:mod:`._options`).

Example:
    $ sparseinst train --model sparseinst_r50_giam --checkpoint coco.safetensors --data data.yaml \
        --epochs 24 --batch-size 8 --lr 1e-4 --out runs/mydata        # YOLO-format or COCO splits in data.yaml
    $ sparseinst train --model sparseinst_r50_giam --checkpoint coco.safetensors \
        --train-json train.json --train-images images/ --val-json val.json --val-images images/ \
        --epochs 24 --batch-size 8 --lr 1e-4 --out runs/mydata
    $ torchrun --nproc-per-node 4 -m sparseinst_zoo.cli train ...   # DDP
    $ sparseinst train --resume --out runs/mydata                    # continue an interrupted run
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import types
import typing
from collections.abc import Sequence
from typing import Any

from ..errors import SparseInstError
from ..training.config import TrainConfig
from ._options import add_device_argument, add_precision_argument, add_quiet_argument, show_bar
from ._signals import terminate_as_interrupt

HELP = "fine-tune or train a model on a data.yaml or COCO dataset (mixed precision, EMA, resume, DDP via torchrun)"

# A real model that trains on a laptop CPU (ImageNet backbone, small sizes); the docs and a test use the same line.
STARTER_RECIPE = """sparseinst train --model sparseinst_giam --backbone resnet18 --pretrained-backbone \\
    --train-json DATA/train.json --train-images DATA/images --val-json DATA/val.json --val-images DATA/images \\
    --min-sizes 256,288,320 --max-size 533 --test-size 320 --batch-size 4 --lr 1e-4 --epochs 12 --out runs/starter"""
EPILOG = f"""The data: --data DATA.yaml (YOLO-format or COCO splits, see docs/datasets.md), or --train-json with
--train-images (and --val-json with --val-images for evaluation).

CPU starter recipe (a real model, ImageNet backbone, at sizes a CPU trains):
  {STARTER_RECIPE}

Without --model, a CPU run uses this model and these sizes; a GPU run uses sparseinst_r50_giam at 416-640 px.
A new run into a folder holding an earlier run writes to the next free one (runs/train2 ...); --exist-ok reuses it,
--resume continues it."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


# Fields whose options come from _options (``amp`` is the deprecated ``--amp`` alias filling ``precision``).
_SHARED_FIELDS = ("precision", "amp", "device")
_COCO_FIELDS = ("train_json", "train_images", "val_json", "val_images")
_PARSERS: dict[Any, Any] = {int: int, float: float, str: str, Sequence[int]: _int_list, Sequence[float]: _float_list}


def _plain_type(annotation: Any) -> Any:
    """``int | None`` -> ``int``; other annotations as they are."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _add_field(group: argparse._ArgumentGroup, spec: dataclasses.Field[Any], annotation: Any) -> None:
    flag = "--" + spec.name.replace("_", "-")
    help_text, default = spec.metadata["help"], spec.default
    if isinstance(default, dataclasses._MISSING_TYPE):
        raise TypeError(f"TrainConfig.{spec.name} needs a default to become an option")
    kind = _plain_type(annotation)
    if kind is bool:
        action = argparse.BooleanOptionalAction if default is not False else "store_true"
        if default is True and "default:" not in help_text:
            help_text += " (default: on)"
        group.add_argument(flag, action=action, default=default, help=help_text)
        return
    if default is not None and default != "" and "default:" not in help_text:
        help_text += " (default: %(default)s)"
    if kind in (Sequence[int], Sequence[float]) and default is not None:
        help_text = help_text.replace("%(default)s", ",".join(map(str, default)))
    group.add_argument(flag, type=_PARSERS[kind], default=default, help=help_text, **spec.metadata["cli"])


def _add_shared_options(groups: dict[str, argparse._ArgumentGroup]) -> None:
    """The fields whose options all commands share: one flag, help text and validation (``_options``)."""
    # an argument group takes add_argument like the parser it belongs to
    add_precision_argument(typing.cast(argparse.ArgumentParser, groups["optimisation"]), aliases=("--amp",))
    add_device_argument(typing.cast(argparse.ArgumentParser, groups["run"]))
    add_quiet_argument(typing.cast(argparse.ArgumentParser, groups["run"]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the training options on ``parser`` (one per :class:`TrainConfig` field, plus ``--resume``)."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    hints = typing.get_type_hints(TrainConfig)
    groups = {name: parser.add_argument_group(name) for name in ("model", "data", "optimisation", "run")}
    for spec in dataclasses.fields(TrainConfig):
        if spec.name not in _SHARED_FIELDS:
            _add_field(groups[spec.metadata["group"]], spec, hints[spec.name])
    _add_shared_options(groups)
    parser.set_defaults(progress=None)  # neither --progress nor --no-progress: a bar on a terminal only (show_bar)
    groups["run"].add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from OUT/checkpoints/last.pt (or CHECKPOINT) with its saved settings",
    )


def config_from_args(args: argparse.Namespace) -> TrainConfig | dict[str, Any]:
    """The :class:`TrainConfig` of a new run, or (with ``--resume``) the options as given: those that may change on
    resume are used, any other given with a value that differs from the checkpoint's is refused."""
    names = [spec.name for spec in dataclasses.fields(TrainConfig) if hasattr(args, spec.name)]
    if args.progress is None:
        args.progress = show_bar(args.quiet)
    if args.resume:
        return {name: getattr(args, name) for name in names}
    coco_flags = ["--" + name.replace("_", "-") for name in _COCO_FIELDS if getattr(args, name)]
    if args.data and coco_flags:
        raise SparseInstError(f"give either --data DATA.yaml or {' '.join(coco_flags)}, not both")
    if not args.data and (not args.train_json or not args.train_images):
        raise SparseInstError(
            "name the training data: --data DATA.yaml, or --train-json with --train-images "
            "(or --resume to continue a run)"
        )
    return TrainConfig(**{name: getattr(args, name) for name in names})


def run(args: argparse.Namespace) -> int:
    """Train, then print where the models are and the final metrics. Returns 0.

    SIGTERM (``kill``, ``timeout``, a batch scheduler's preemption) stops the run as Ctrl-C does: the last checkpoint
    stays intact, the resume command is printed and the command exits with 130.
    """
    from .._distributed import process_group_from_env, rank
    from ..evaluation import METRIC_KEYS
    from ..training.engine import Trainer

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    config = config_from_args(args)
    trainer = Trainer(config) if isinstance(config, TrainConfig) else Trainer(resume=args.resume, **config)
    # the group is held past train(), so that only rank 0 prints below
    with process_group_from_env(trainer.config.device), terminate_as_interrupt():
        summary = trainer.train()
        if rank() != 0 or args.quiet:
            return 0
    out = summary["out"]
    print(f"trained {summary['step']} iterations; final model: {out}/last")
    for name in ("best", "last"):
        metrics = summary[name]
        if metrics:
            values = ", ".join(f"{k} {metrics[k]:.2f}" for k in METRIC_KEYS if metrics[k] is not None)
            where = f" ({out}/best)" if name == "best" else ""
            print(f"{name}{where}: {values}")
    return 0
