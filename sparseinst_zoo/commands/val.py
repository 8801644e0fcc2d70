"""``sparseinst val``: COCO mask AP of a model on a dataset (COCO JSON + images, or a data.yaml).

Example:
    $ sparseinst val runs/mydata/best --data val.json --images images/ --out metrics.json
    $ sparseinst val runs/mydata/best --data data.yaml --split val
    $ sparseinst val sparseinst_r50_giam --checkpoint sparse_inst_r50_giam.pth \
        --data instances_val2017.json --images val2017/ --test-size 608
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import SparseInstError
from ._model import add_model_arguments, load_cli_model, refuse_weights_for_exported
from ._options import (
    add_batch_size_argument,
    add_deprecated_alias,
    add_device_argument,
    add_precision_argument,
    add_quiet_argument,
    add_resize_arguments,
    add_workers_argument,
    show_bar,
)

HELP = "evaluate COCO mask AP (AP, AP50, AP75, APs, APm, APl, per class) on a COCO JSON or data.yaml dataset"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the evaluation options on ``parser``."""
    add_model_arguments(
        parser,
        "registered name (see `sparseinst list`), hf-hub:org/repo, a folder written by save_pretrained / "
        "sparseinst train, or an exported .onnx / OpenVINO .xml",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="DATA.yaml|ANNOTATIONS.json",
        help="dataset YAML (Ultralytics form: YOLO-format or COCO splits), or a COCO instances JSON with --images",
    )
    add_deprecated_alias(parser, "--json", "--data", dest="data")
    parser.add_argument(
        "--split", default="val", choices=("train", "val", "test"), help="split of a DATA.yaml (default: val)"
    )
    parser.add_argument("--images", default=None, metavar="FOLDER", help="image folder of an ANNOTATIONS.json --data")
    parser.add_argument(
        "--out",
        default=None,
        metavar="METRICS.json",
        help="also write the metrics to this .json file (an existing file is kept: METRICS_2.json ... is written)",
    )
    add_resize_arguments(parser, test_size_alias=True)
    add_batch_size_argument(parser, default=4)
    add_workers_argument(parser, default=2)
    add_device_argument(parser)
    add_precision_argument(parser)  # --half: its deprecated alias
    parser.add_argument(
        "--coco-eval",
        default="auto",
        choices=("auto", "faster", "pycocotools"),
        help="scoring library: faster-coco-eval when installed, else pycocotools (auto, the default), or force one",
    )
    add_quiet_argument(parser)


def format_metrics(metrics: dict[str, Any]) -> str:
    """A small text table of the summary and per-class APs ("-" for a metric without data to measure it)."""
    from ..evaluation import METRIC_KEYS

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    lines = ["  ".join(f"{k:>6}" for k in METRIC_KEYS), "  ".join(f"{fmt(metrics[k]):>6}" for k in METRIC_KEYS)]
    width = max((len(name) for name in metrics["per_class"]), default=5)
    lines.append("")
    lines.extend(f"{name:<{width}}  {fmt(ap):>6}" for name, ap in metrics["per_class"].items())
    return "\n".join(lines)


def _data_arguments(args: argparse.Namespace) -> tuple[str, str | None]:
    if args.data is None:
        raise SparseInstError("name the dataset: --data DATA.yaml, or --data ANNOTATIONS.json with --images FOLDER")
    if args.images is not None and args.data.lower().endswith((".yaml", ".yml")):
        raise SparseInstError(f"--images goes with a COCO JSON --data; {args.data} names its own images: drop --images")
    return args.data, args.images


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the table, optionally write JSON. Returns 0.

    Under ``torchrun`` every process predicts its share of the images and rank 0 alone prints and writes.
    """
    from .._distributed import process_group_from_env
    from ..evaluation import check_metrics_path

    data, images = _data_arguments(args)
    if args.out is not None:
        check_metrics_path(args.out)  # before the model is loaded and the images predicted
    with process_group_from_env(args.device):
        return _evaluate(args, data, images)


def _evaluate(args: argparse.Namespace, data: str, images: str | None) -> int:
    from .._device import select_device
    from .._distributed import local_rank, rank
    from ..evaluation import evaluate, write_metrics
    from ..inference.backends import is_exported_model

    exported = is_exported_model(args.model)
    if exported:
        refuse_weights_for_exported(args, *(["--device"] if args.device else []))
    # a bad --device fails before any model is built; under torchrun a bare cuda is this process's GPU
    device = None if exported else select_device(args.device, local_rank=local_rank())
    model = args.model if exported else load_cli_model(args.model, args.weights, args.checkpoint, quiet=rank() > 0)
    metrics = evaluate(
        model,
        data,
        images,
        split=args.split,
        min_size=args.min_size,
        max_size=args.max_size,
        batch_size=args.batch_size,
        device=device,
        precision=args.precision,
        workers=args.workers,
        progress=show_bar(args.quiet or rank() > 0),
        backend=args.coco_eval,
    )
    if rank() != 0:
        return 0
    print(format_metrics(metrics))
    if metrics["AP"] is None:
        print("no ground truth to measure: every metric is undefined (see the warning above)")
    if args.out is not None:
        written = write_metrics(args.out, metrics)  # a taken name is a warning of its own, shown with --quiet too
        if not args.quiet:
            print(f"wrote {written}")
    return 0
