"""The one policy deciding which model a command runs (predict, export, val): MODEL plus the weights options.

* a folder, ``hf-hub:org/repo`` or a ``model.safetensors`` with its config.json carry their weights;
* a registered name loads ``--checkpoint PATH``, or its pretrained weights (cache, Hub, original release), or random
  weights with ``--weights random`` (said loudly); a name without any weights is refused;
* an exported ``.onnx`` / ``.xml`` file is run by the exported-model backend, not here.

``SPARSEINST_PRETRAINED_CFG_OVERLAY`` (a JSON object) replaces pretrained cfg fields of the registered model for this
run, e.g. ``{"url": "http://127.0.0.1:8000/sparse_inst_r50_giam.pth", "hf_hub_id": null}`` (docs/weights.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .._registry import get_pretrained_cfg
from ..errors import DownloadError, SparseInstError

__all__ = [
    "MODEL_HELP",
    "RANDOM_WEIGHTS_WARNING",
    "OVERLAY_ENV",
    "add_model_arguments",
    "load_cli_model",
    "cli_overlay",
    "refuse_weights_for_exported",
]

OVERLAY_ENV = "SPARSEINST_PRETRAINED_CFG_OVERLAY"
RANDOM_WEIGHTS_WARNING = (
    "WARNING: {name} runs with RANDOM weights (--weights random): the pipeline is real but the masks and scores are "
    "meaningless. For real predictions drop --weights random (pretrained weights) or pass --checkpoint PATH."
)


MODEL_HELP = "registered name (see `sparseinst list`), hf-hub:org/repo, or a save_pretrained folder"


def add_model_arguments(parser: argparse.ArgumentParser, model_help: str = MODEL_HELP) -> None:
    """``MODEL`` plus ``--weights pretrained|random`` and ``--checkpoint PATH`` (read by :func:`load_cli_model`)."""
    parser.add_argument("model", metavar="MODEL", help=model_help)
    parser.add_argument(
        "--weights",
        choices=("pretrained", "random"),
        default="pretrained",
        help="for registered names without --checkpoint: the COCO weights (default; from the cache, "
        "the Hugging Face Hub or the original release, downloaded once) or random weights "
        "(offline smoke test, meaningless masks)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="PATH",
        help="local weights: model.safetensors, a save_pretrained folder or a reference .pth",
    )


def cli_overlay() -> dict[str, Any] | None:
    """The pretrained cfg overlay of ``SPARSEINST_PRETRAINED_CFG_OVERLAY``, or None when unset."""
    text = os.environ.get(OVERLAY_ENV, "").strip()
    if not text:
        return None
    try:
        overlay = json.loads(text)
    except ValueError as err:
        raise SparseInstError(f"{OVERLAY_ENV} is not valid JSON ({err})") from None
    if not isinstance(overlay, dict):
        raise SparseInstError(f"{OVERLAY_ENV} must be a JSON object of pretrained cfg fields, got {text[:80]!r}")
    return overlay


def load_cli_model(name: str, weights: str = "pretrained", checkpoint: str | None = None, quiet: bool = False) -> Any:
    """Build the model a CLI command names, by the policy of this module."""
    from .._factory import check_weight_options, create_model, parse_model_name  # torch: only once a command runs

    if weights == "random" and checkpoint:
        raise SparseInstError(
            f"--weights random and --checkpoint {checkpoint} contradict each other: drop --weights random to run "
            "your weights, or --checkpoint for the random smoke test"
        )
    source = parse_model_name(name)
    given = "--weights random and --checkpoint" if weights == "random" or checkpoint else None
    check_weight_options(name, source, given, runner="this command runs")
    if source.carries_weights:
        return create_model(name)
    if checkpoint:
        return create_model(name, checkpoint_path=checkpoint)
    if weights == "random":
        if not quiet:
            print(RANDOM_WEIGHTS_WARNING.format(name=name), file=sys.stderr)
        return create_model(name)
    overlay = cli_overlay()
    cfg = get_pretrained_cfg(name).replace(**(overlay or {}))
    if not cfg.has_weights:
        raise SparseInstError(
            f"{name!r} has no released weights; pass --checkpoint PATH with your own weights, or --weights random "
            "for a smoke test with meaningless masks (`sparseinst list --pretrained` shows the models with weights)"
        )
    try:
        return create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    except DownloadError as err:
        raise DownloadError(
            f"{err} Alternatives: --checkpoint PATH with a local checkpoint, or --weights random for an offline "
            "smoke test (meaningless masks)."
        ) from None


def refuse_weights_for_exported(args: argparse.Namespace, *others: str) -> None:
    """Refuse ``--checkpoint``, ``--weights random`` and the ``others`` flags the caller found given for an exported
    MODEL: it carries its weights and runs on its own runtime, so they would be ignored."""
    weights = [("--checkpoint", args.checkpoint), ("--weights random", args.weights == "random")]
    given = [flag for flag, value in weights if value] + list(others)
    if given:
        raise SparseInstError(
            f"{args.model} is an exported model: it carries its weights and runs on its own runtime; drop "
            f"{', '.join(given)}"
        )
