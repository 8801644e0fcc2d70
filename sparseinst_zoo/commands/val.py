"""``sparseinst val``: COCO mask AP of a model on a COCO-format dataset.

Example:
    $ sparseinst val runs/mydata/best --json val.json --images images/ --out metrics.json
    $ sparseinst val sparseinst_r50_giam --checkpoint sparse_inst_r50_giam.pth \
        --json instances_val2017.json --images val2017/ --test-size 608
"""

from __future__ import annotations

import argparse

from ._model import load_cli_model

HELP = "evaluate COCO mask AP (AP, AP50, AP75, APs, APm, APl, per class) on a COCO-format dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the evaluation options on ``parser``."""
    parser.add_argument("model", metavar="MODEL",
                        help="registered name (loads its released weights unless --checkpoint) or a folder "
                             "written by save_pretrained / sparseinst train")
    parser.add_argument("--checkpoint", default=None, help="weights to load (safetensors, folder or reference .pth)")
    parser.add_argument("--json", required=True, help="COCO instances JSON with the ground truth")
    parser.add_argument("--images", required=True, help="image folder of --json")
    parser.add_argument("--out", default=None, metavar="METRICS.json", help="also write the metrics as JSON")
    parser.add_argument("--test-size", "--min-size", dest="min_size", type=int, default=None,
                        help="shorter side of the test resize (default: the model's)")
    parser.add_argument("--max-size", type=int, default=None, help="cap of the longer side (default: the model's)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default: 4)")
    parser.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: 2)")
    parser.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    parser.add_argument("--half", choices=("fp16", "bf16"), default=None, help="autocast precision")


def format_metrics(metrics: dict) -> str:
    """A small text table of the summary and per-class APs."""
    from ..training.evaluate import METRIC_KEYS

    def fmt(value):
        return "-" if value is None else f"{value:.2f}"

    lines = ["  ".join(f"{k:>6}" for k in METRIC_KEYS), "  ".join(f"{fmt(metrics[k]):>6}" for k in METRIC_KEYS)]
    width = max((len(name) for name in metrics["per_class"]), default=5)
    lines.append("")
    lines.extend(f"{name:<{width}}  {fmt(ap):>6}" for name, ap in metrics["per_class"].items())
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, optionally write JSON. Returns 0."""
    import torch

    from ..training.evaluate import evaluate

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = evaluate(
        load_cli_model(args.model, checkpoint=args.checkpoint), args.json, args.images, min_size=args.min_size,
        max_size=args.max_size, batch_size=args.batch_size, device=device, half=args.half or False,
        workers=args.workers, out=args.out, progress=True,
    )  # fmt: skip
    print(format_metrics(metrics))
    if args.out:
        print(f"wrote {args.out}")
    return 0
