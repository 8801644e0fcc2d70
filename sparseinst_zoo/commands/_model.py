"""MODEL and weights arguments shared by the commands that load one model (predict, export)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["RANDOM_WEIGHTS_WARNING", "add_model_arguments", "load_cli_model"]

RANDOM_WEIGHTS_WARNING = (
    "WARNING: {name} runs with RANDOM weights (--weights random): the pipeline is real but the masks and scores are "
    "meaningless. For real predictions pass --checkpoint PATH (a converted checkpoint) or --weights pretrained."
)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``MODEL`` plus ``--weights pretrained|random`` and ``--checkpoint PATH`` (read by :func:`load_cli_model`)."""
    parser.add_argument("model", metavar="MODEL",
                        help="registered name (see `sparseinst list`), hf-hub:org/repo, or a save_pretrained folder")
    parser.add_argument("--weights", choices=("pretrained", "random"), default="pretrained",
                        help="for registered names without --checkpoint: download the released COCO weights from the "
                             "Hugging Face Hub (default) or use random weights (offline smoke test, meaningless masks)")
    parser.add_argument("--checkpoint", default=None, metavar="PATH",
                        help="local weights: model.safetensors, a save_pretrained folder or a reference .pth")


def load_cli_model(
    name: str, weights: str = "pretrained", checkpoint: str | None = None, quiet: bool = False
) -> Any:
    """Build the model a CLI command names: registered name, ``hf-hub:org/repo`` or a save_pretrained folder."""
    from .. import create_model, get_pretrained_cfg, is_model
    from .._builder import HF_HUB_PREFIX

    is_folder = os.path.isdir(name)
    if name.startswith(HF_HUB_PREFIX) or (is_folder and not is_model(name)):
        if weights == "random" or checkpoint:
            raise ValueError(
                f"{name!r} already carries its weights; --weights random and --checkpoint only apply to registered "
                "model names (see `sparseinst list`)"
            )
        return create_model(name)
    if not is_model(name):
        return create_model(name)  # raises the registry's "Unknown model ... did you mean" error
    if checkpoint:
        return create_model(name, checkpoint_path=checkpoint)
    if weights == "random":
        if not quiet:
            print(RANDOM_WEIGHTS_WARNING.format(name=name), file=sys.stderr)
        return create_model(name)
    cfg = get_pretrained_cfg(name)
    if not cfg.has_weights:
        raise ValueError(
            f"{name!r} has no released weights; pass --checkpoint PATH with your own weights, or --weights random "
            "for a smoke test with meaningless masks (`sparseinst list --pretrained` shows the models with weights)"
        )
    try:
        return create_model(name, pretrained=True)
    except OSError as err:
        raise OSError(
            f"{err} Alternatives: --checkpoint PATH with a local checkpoint, or --weights random for an offline "
            "smoke test (meaningless masks)."
        ) from None
