"""``sparseinst train``: fine-tune or train a model on a COCO-format dataset (multi-GPU with ``torchrun``).

Example:
    $ sparseinst train --model sparseinst_r50_giam --checkpoint coco.safetensors \
        --train-json train.json --train-images images/ --val-json val.json --val-images images/ \
        --epochs 24 --batch-size 8 --lr 1e-4 --out runs/mydata
    $ torchrun --nproc-per-node 4 -m sparseinst_zoo.cli train ...   # DDP
    $ sparseinst train --resume --out runs/mydata                    # continue an interrupted run
"""

from __future__ import annotations

import argparse

HELP = "fine-tune or train a model on a COCO-format dataset (AMP, EMA, resume, DDP via torchrun)"


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the training options on ``parser``."""
    model = parser.add_argument_group("model")
    model.add_argument("--model", default="sparseinst_r50_giam",
                       help="registered name (see `sparseinst list`) or save_pretrained folder (default: %(default)s)")
    model.add_argument("--backbone", default=None, help="timm backbone for sparseinst_iam/giam/giam_soft")
    model.add_argument("--pretrained", action="store_true", help="start from the model's released (Hub) weights")
    model.add_argument("--pretrained-backbone", action="store_true",
                       help="without --pretrained/--checkpoint: start the backbone from timm's ImageNet weights "
                            "(downloaded from the Hugging Face Hub)")
    model.add_argument("--checkpoint", default=None,
                       help="start from these weights (safetensors, save_pretrained folder or reference .pth)")
    model.add_argument("--num-classes", type=int, default=None,
                       help="class count (default: the categories of --train-json; the class head is re-initialised)")
    model.add_argument("--freeze-backbone", action="store_true", help="train only the encoder and decoder")

    data = parser.add_argument_group("data")
    data.add_argument("--train-json", default=None, help="COCO instances JSON to train on")
    data.add_argument("--train-images", default=None, help="image folder of --train-json")
    data.add_argument("--val-json", default=None, help="COCO instances JSON for evaluation (mask AP)")
    data.add_argument("--val-images", default=None, help="image folder of --val-json")
    data.add_argument("--min-sizes", type=_int_list, default=None,
                      help="training shorter sides, comma list (default: 416,448,...,640)")
    data.add_argument("--max-size", type=int, default=853, help="cap of the longer side (default: 853)")
    data.add_argument("--test-size", type=int, default=None, help="evaluation shorter side (default: the model's)")
    data.add_argument("--crop", action=argparse.BooleanOptionalAction, default=None,
                      help="the reference 'aug' random crop (default: on for *_aug models)")
    data.add_argument("--flip-prob", type=float, default=0.5, help="horizontal flip probability (default: 0.5)")
    data.add_argument("--workers", type=int, default=2, help="data-loading processes per GPU/process (default: 2)")

    optim = parser.add_argument_group("optimisation")
    length = optim.add_mutually_exclusive_group()
    length.add_argument("--iters", type=int, default=None, help="training iterations")
    length.add_argument("--epochs", type=int, default=None, help="passes over the training images (default: 12)")
    optim.add_argument("--batch-size", type=int, default=8, help="images per step and process (default: 8)")
    optim.add_argument("--lr", type=float, default=5e-5,
                       help="AdamW learning rate (default: 5e-5, the reference value at batch 64; "
                            "try 1e-4 when fine-tuning at batch 8)")
    optim.add_argument("--weight-decay", type=float, default=0.05, help="AdamW weight decay (default: 0.05)")
    optim.add_argument("--schedule", choices=("step", "cosine"), default="step", help="lr decay (default: step)")
    optim.add_argument("--steps", type=_float_list, default=(0.78, 0.93),
                       help="step decay points: fractions of the run or iterations (default: 0.78,0.93)")
    optim.add_argument("--warmup-iters", type=int, default=None,
                       help="linear warm-up iterations (default: min(1000, iters/10))")
    optim.add_argument("--amp", choices=("none", "fp16", "bf16"), default="none",
                       help="mixed precision (default: none)")
    optim.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    optim.add_argument("--ema", action="store_true", help="keep an EMA of the weights (evaluated and saved)")
    optim.add_argument("--ema-decay", type=float, default=0.9998, help="EMA decay (default: 0.9998)")
    optim.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--out", default="runs/train", help="output folder (default: %(default)s)")
    run_group.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                           help="continue from OUT/checkpoints/last.pt (or CHECKPOINT) with its saved settings")
    run_group.add_argument("--eval-period", type=int, default=None,
                           help="evaluate every N iterations (default: 5 times per run)")
    run_group.add_argument("--checkpoint-period", type=int, default=500,
                           help="write the resumable checkpoint every N iterations (default: 500)")
    run_group.add_argument("--log-period", type=int, default=20,
                           help="log the losses every N iterations (default: 20)")
    run_group.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")
    run_group.add_argument("--no-tensorboard", action="store_true", help="do not log to TensorBoard")


def run(args: argparse.Namespace) -> int:
    """Train, then print where the models are and the final metrics. Returns 0."""
    import logging

    from ..data.augment import REFERENCE_MIN_SIZES
    from ..training.engine import train
    from ..evaluation import METRIC_KEYS

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common = {"out": args.out, "workers": args.workers, "device": args.device, "progress": not args.no_progress,
              "tensorboard": not args.no_tensorboard}  # fmt: skip
    if args.resume:
        summary = train(resume=args.resume, **common)
    else:
        if not args.train_json or not args.train_images:
            raise ValueError("--train-json and --train-images are required (or --resume to continue a run)")
        summary = train(
            model=args.model, backbone=args.backbone, pretrained=args.pretrained,
            pretrained_backbone=args.pretrained_backbone, checkpoint=args.checkpoint,
            num_classes=args.num_classes, freeze_backbone=args.freeze_backbone,
            train_json=args.train_json, train_images=args.train_images, val_json=args.val_json,
            val_images=args.val_images, min_sizes=args.min_sizes or REFERENCE_MIN_SIZES, max_size=args.max_size,
            test_size=args.test_size, crop=args.crop, flip_prob=args.flip_prob,
            iters=args.iters, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
            weight_decay=args.weight_decay, schedule=args.schedule, steps=args.steps, warmup_iters=args.warmup_iters,
            amp=args.amp, clip_grad=args.clip_grad, ema=args.ema, ema_decay=args.ema_decay, seed=args.seed,
            eval_period=args.eval_period, checkpoint_period=args.checkpoint_period, log_period=args.log_period,
            **common,
        )  # fmt: skip
    from ..training.distributed import rank

    if rank() != 0:
        return 0
    print(f"trained {summary['step']} iterations; final model: {args.out}/last")
    for name in ("best", "last"):
        metrics = summary[name]
        if metrics:
            values = ", ".join(f"{k} {metrics[k]:.2f}" for k in METRIC_KEYS if metrics[k] is not None)
            where = f" ({args.out}/best)" if name == "best" else ""
            print(f"{name}{where}: {values}")
    return 0
