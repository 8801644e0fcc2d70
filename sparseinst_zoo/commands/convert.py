"""``sparseinst convert``: turn a reference SparseInst checkpoint into ``model.safetensors`` + ``config.json``.

Example:
    $ sparseinst convert sparse_inst_r50_giam_aug_2b7d68.pth --model sparseinst_r50_giam_aug --out r50_giam_aug
    $ python -c "import sparseinst_zoo; sparseinst_zoo.from_pretrained('r50_giam_aug')"
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .._constants import WEIGHTS_NAME
from .._hub import CARD_NAME, CONFIG_NAME
from .._io import make_dirs, remove_empty_dirs
from ..errors import SparseInstError
from ._options import add_quiet_argument

# what convert writes into --out: a folder that already holds any of them is never written to
_WRITTEN = (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME)

HELP = "convert a reference SparseInst checkpoint (detectron2 or MMDetection .pth) to safetensors + config.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the convert options on ``parser``."""
    parser.add_argument("src", metavar="SRC", help="reference .pth checkpoint (or our model.safetensors / folder)")
    parser.add_argument(
        "--model",
        default=None,
        metavar="NAME",
        help="architecture the checkpoint was trained as, e.g. sparseinst_r50_giam_aug (see `sparseinst list`); "
        "detected from the keys and the file name when omitted",
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="new folder to write model.safetensors, config.json (a folder that holds a model is refused)",
    )
    parser.add_argument("--card", action="store_true", help="also write a README.md model card")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_quiet_argument(parser)


def _check_target(out: str) -> None:
    """Refuse an ``--out`` that is a file or already holds a model (a fine-tuned one is not to be replaced)."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise SparseInstError(f"--out {out} is a file; name a new folder for the converted model")
    if os.path.splitext(out)[1].lower() in (".safetensors", ".pth", ".pt", ".bin") and not os.path.isdir(out):
        folder = os.path.splitext(out)[0]
        raise SparseInstError(
            f"--out names the folder convert writes model.safetensors and config.json into, not a file: "
            f"give e.g. --out {folder}"
        )
    present = [name for name in _WRITTEN if os.path.exists(os.path.join(out, name))]
    if present:
        raise SparseInstError(
            f"--out {out} already holds {', '.join(present)}; convert never replaces a saved model: "
            "choose another --out (or delete that folder yourself first)"
        )


def run(args: argparse.Namespace) -> int:
    """Convert, write the folder and print a summary. Returns 0."""
    from .._factory import from_pretrained  # torch: only once the command runs (cli.py's convention)
    from .._save import save_pretrained
    from ..convert import convert_checkpoint

    _check_target(args.out)
    created = make_dirs(args.out)
    try:
        _, report = convert_checkpoint(args.src, model_name=args.model, out_dir=args.out)
        if args.card:
            save_pretrained(from_pretrained(args.out), args.out)
    except BaseException:
        for name in _WRITTEN:  # none was there before (_check_target): a failed conversion leaves no half model
            Path(args.out, name).unlink(missing_ok=True)
        remove_empty_dirs(created)
        raise
    if args.json:
        print(json.dumps({**report.to_dict(), "out": str(Path(args.out))}, indent=2))
    elif not args.quiet:
        print(report)
        print(f"written:      {Path(args.out) / 'model.safetensors'}, {Path(args.out) / 'config.json'}")
        print(f"load it with: sparseinst_zoo.from_pretrained({str(Path(args.out))!r})")
    return 0
