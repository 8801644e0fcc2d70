"""The training engine: fine-tune or train SparseInst on a COCO-format dataset.

One :class:`Trainer` runs the reference recipe (AdamW, warm-up + step decay, Hungarian-matched losses, multi-scale
augmentation) with the practical extras: AMP, gradient clipping, EMA, a frozen backbone, periodic COCO evaluation,
atomic resumable checkpoints, and DDP when launched with ``torchrun``. Outputs in ``out``:

- ``checkpoints/last.pt``: the full training state (weights-only loadable), rewritten atomically every N steps;
- ``metrics.jsonl``: one JSON object per logged step / evaluation;
- ``best/`` and ``last/``: ``save_pretrained`` folders (config, safetensors, model card with the metrics).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .._io import atomic_save, atomic_write_json
from ..errors import TrainingDiverged
from .augment import REFERENCE_MIN_SIZES, Augmentation, AugmentConfig
from .data import CocoDataset, CocoInstances, Collator, TrainSampler
from .distributed import is_distributed, world_size
from .distributed import rank as current_rank
from .evaluate import METRIC_KEYS, evaluate
from .losses import SparseInstCriterion
from .schedule import WarmupSchedule, resolve_milestones

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]

_logger = logging.getLogger("sparseinst_zoo")
CHECKPOINT_NAME = os.path.join("checkpoints", "last.pt")
# Settings that may differ when resuming; everything else is taken from the checkpoint.
RESUME_OVERRIDES = ("workers", "progress", "device", "tensorboard")


@dataclass
class TrainConfig:
    """Every setting of a training run (saved in the checkpoint and in ``out/train_config.json``).

    Attributes:
        model: registered model name (``arch`` or ``arch.tag``) or a ``save_pretrained`` folder.
        train_json / train_images: COCO instances file and image folder to train on.
        val_json / val_images: optional evaluation set (COCO mask AP every ``eval_period`` steps and at the end).
        out: output folder.
        backbone: timm backbone for the generic architectures (``sparseinst_giam`` ...).
        pretrained: start from the tag's Hub weights.
        pretrained_backbone: start the backbone from timm's ImageNet weights (downloaded from the Hugging Face Hub;
            for a fresh model, e.g. a generic architecture with ``backbone``; ignored with ``pretrained`` or
            ``checkpoint``, whose weights include the backbone).
        checkpoint: start from these weights (safetensors, ``save_pretrained`` folder or reference ``.pth``).
        num_classes: class count; default: the number of categories in ``train_json`` (the class head is
            re-initialised when it differs from the weights').
        iters / epochs: training length (``epochs`` counts passes over the images that have annotations).
        batch_size: images per step and process.
        lr / weight_decay: AdamW settings (reference: 5e-5 and 0.05 at batch 64).
        schedule: ``'step'`` (x ``gamma`` at ``steps``) or ``'cosine'``.
        steps: decay points, fractions of the run (< 1) or iterations; reference 210k and 250k of 270k.
        warmup_iters: linear warm-up length from ``warmup_factor``; default min(1000, iters // 10).
        min_sizes / max_size: multi-scale training sizes; test_size: evaluation shorter side (default: the model's).
        crop: the ``aug`` crop recipe (default: on for ``*_aug`` models).
        flip_prob: horizontal flip probability.
        amp: ``'none'``, ``'fp16'`` or ``'bf16'`` autocast.
        clip_grad: clip the global gradient norm to this value.
        ema / ema_decay: keep an exponential moving average of the weights (used for evaluation and saving).
        freeze_backbone: train only the encoder and decoder.
        workers: data-loading processes per training process.
        seed: seed of initialisation, sampling and augmentation.
        eval_period / checkpoint_period / log_period: in iterations (eval default: 5 evaluations per run).
        device: ``'cuda'``, ``'cpu'`` ...; default CUDA when available (the local rank's GPU under DDP).
        progress: show a progress bar; tensorboard: also log to TensorBoard when it is installed.
    """

    model: str = "sparseinst_r50_giam"
    train_json: str = ""
    train_images: str = ""
    val_json: str | None = None
    val_images: str | None = None
    out: str = "runs/train"
    backbone: str | None = None
    pretrained: bool = False
    pretrained_backbone: bool = False
    checkpoint: str | None = None
    num_classes: int | None = None
    iters: int | None = None
    epochs: int | None = None
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.05
    schedule: str = "step"
    steps: Sequence[float] = (0.78, 0.93)
    gamma: float = 0.1
    warmup_iters: int | None = None
    warmup_factor: float = 0.001
    min_sizes: Sequence[int] = REFERENCE_MIN_SIZES
    max_size: int = 853
    test_size: int | None = None
    crop: bool | None = None
    flip_prob: float = 0.5
    amp: str = "none"
    clip_grad: float | None = None
    ema: bool = False
    ema_decay: float = 0.9998
    freeze_backbone: bool = False
    workers: int = 2
    seed: int = 0
    eval_period: int | None = None
    checkpoint_period: int = 500
    log_period: int = 20
    device: str | None = None
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self) -> None:
        self.min_sizes = tuple(int(s) for s in self.min_sizes)
        self.steps = tuple(float(s) for s in self.steps)
        if not self.train_json or not self.train_images:
            raise ValueError("train_json and train_images are required (a COCO instances file and its image folder)")
        if (self.val_json is None) != (self.val_images is None):
            raise ValueError("give both val_json and val_images, or neither")
        if self.iters is not None and self.epochs is not None:
            raise ValueError("give iters or epochs, not both")
        for name in ("iters", "epochs", "batch_size", "checkpoint_period", "log_period", "eval_period"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0, got {self.lr} and {self.weight_decay}")
        if self.amp not in ("none", "fp16", "bf16"):
            raise ValueError(f"amp must be 'none', 'fp16' or 'bf16', got {self.amp!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', got {self.schedule!r}")
        if self.clip_grad is not None and self.clip_grad <= 0:
            raise ValueError(f"clip_grad must be > 0, got {self.clip_grad}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.pretrained and self.checkpoint:
            raise ValueError("give pretrained=True or a checkpoint, not both")
        AugmentConfig(min_sizes=self.min_sizes, max_size=self.max_size, flip_prob=self.flip_prob)  # validates

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers


def _init_distributed() -> bool:
    """Join the process group ``torchrun`` describes (env ``WORLD_SIZE`` > 1); True if this call created it."""
    if is_distributed() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    return True


# ----------------------------------------------------------------------------------------------------------------
# RNG state as tensors and plain types (loadable with torch.load(weights_only=True))


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))  # fmt: skip
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------------------------------------------


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay for normalisation layers, patch embeddings and class tokens (as the reference)."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    no_decay: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}"
            if isinstance(module, norm_types) or "patch_embed" in full or "cls_token" in full:
                no_decay.add(id(param))
    decay, plain = [], []
    for param in model.parameters():
        if param.requires_grad:
            (plain if id(param) in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


class _JsonlLog:
    """Append-only JSONL metrics log (rank 0), optionally mirrored to TensorBoard."""

    def __init__(self, path: str, resume_step: int | None, tensorboard: bool) -> None:
        self.path = path
        if resume_step is None:
            open(path, "w").close()
        elif os.path.exists(path):  # drop what was logged after the checkpoint we resume from
            with open(path, encoding="utf-8") as handle:
                kept = [line for line in handle if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            with open(path, "w", encoding="utf-8") as handle:
                handle.writelines(kept)
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(os.path.join(os.path.dirname(path), "tensorboard"))
            except ImportError:
                pass

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = record.get("type", "train")
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.writer.add_scalar(f"{prefix}/{key}", value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Trains a SparseInst model on a COCO-format dataset; see :class:`TrainConfig` for the settings.

    Args:
        config: a :class:`TrainConfig` (or keyword arguments for one).
        resume: ``True`` to continue from ``out/checkpoints/last.pt``, or the path of a checkpoint; the run's
            settings then come from the checkpoint (except ``out``, ``workers``, ``progress``, ``device`` and
            ``tensorboard``), so ``Trainer(resume=True, out="runs/x")`` is enough.
        callbacks: called as ``callback(trainer, step, record)`` after every step (``record``: the step's losses).

    Example:
        >>> from sparseinst_zoo.training.synthetic import make_shapes_dataset
        >>> ann = make_shapes_dataset("/tmp/shapes", num_images=4)
        >>> trainer = Trainer(TrainConfig(model="sparseinst_tiny_test", train_json=ann, train_images="/tmp/shapes",
        ...                               iters=2, batch_size=2, min_sizes=(64,), max_size=96, out="/tmp/run",
        ...                               workers=0, progress=False))
        >>> summary = trainer.train()
        >>> summary["step"]
        2
    """

    def __init__(
        self,
        config: TrainConfig | None = None,
        resume: bool | str = False,
        callbacks: Sequence[Callable[[Trainer, int, dict[str, Any]], None]] = (),
        **kwargs: Any,
    ) -> None:
        self.callbacks = list(callbacks)
        self.resume_state: dict[str, Any] | None = None
        if resume:
            out = config.out if config is not None else kwargs.get("out", TrainConfig.out)
            path = os.path.join(out, CHECKPOINT_NAME) if resume is True else os.fspath(resume)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"no checkpoint to resume from at {path}; start a new run without resume")
            self.resume_state = torch.load(path, map_location="cpu", weights_only=True)
            self.resume_path = path
            saved = dict(json.loads(self.resume_state["config"]))
            given = config.to_dict() if config is not None else kwargs
            saved.update({key: given[key] for key in RESUME_OVERRIDES if key in given})
            saved["out"] = out
            config = TrainConfig(**saved)
        elif config is None:
            config = TrainConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config

    # -- setup ---------------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        if self.config.device:
            device = torch.device(self.config.device)
        elif torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0)
        else:
            device = torch.device("cpu")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0)
        return device

    def _build_model(self, coco: CocoInstances) -> nn.Module:
        from .._factory import create_model

        cfg = self.config
        num_classes = cfg.num_classes or coco.num_classes
        if num_classes != coco.num_classes:  # label i is the i-th category: other counts cannot be trained or scored
            raise ValueError(f"num_classes={num_classes} but {coco.json_path} has {coco.num_classes} categories; "
                             "leave --num-classes out to use the dataset's count")  # fmt: skip
        kwargs: dict[str, Any] = {"num_classes": num_classes}
        if cfg.backbone:
            kwargs["backbone"] = cfg.backbone
        fresh = self.resume_state is not None  # weights come from the training checkpoint
        loaded = cfg.pretrained or cfg.checkpoint or os.path.isdir(cfg.model) or cfg.model.startswith("hf-hub:")
        random_init = not (fresh or loaded)
        if random_init and cfg.pretrained_backbone:
            kwargs["pretrained_backbone"] = True
        elif random_init and current_rank() == 0:
            _logger.warning("training %s from random initialisation (no --pretrained, --checkpoint or "
                            "--pretrained-backbone)", cfg.model)  # fmt: skip
        model = create_model(  # a failed ImageNet-weights download says what to do (models/backbones.py)
            cfg.model,
            pretrained=cfg.pretrained and not fresh,
            checkpoint_path=None if fresh else cfg.checkpoint,
            **kwargs,
        )
        pretrained_cfg = model.pretrained_cfg
        model.pretrained_cfg = pretrained_cfg.replace(
            label_names=tuple(coco.label_names), num_classes=num_classes, dataset=os.path.basename(coco.json_path),
            min_size=int(cfg.test_size or pretrained_cfg.min_size), max_size=int(cfg.max_size),
            hf_hub_id=None, file=None, tag="", reference_ap=None, reference_ap_test_dev=None, reference_fps=None,
            extra={**pretrained_cfg.extra, "category_ids": list(coco.category_ids)},
        )  # fmt: skip
        if cfg.freeze_backbone:
            for param in model.backbone.parameters():
                param.requires_grad_(False)
        return model

    def _set_train_mode(self, model: nn.Module) -> None:
        model.train()
        if self.config.freeze_backbone:
            _unwrap(model).backbone.eval()  # frozen: keep its normalisation statistics too

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def _save_checkpoint(self, step: int, model: nn.Module, optimizer, scheduler, scaler, ema, best: float) -> str:
        rng = _rng_state()
        if world_size() > 1:
            states: list[Any] = [None] * world_size()
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        path = os.path.join(self.config.out, CHECKPOINT_NAME)
        if current_rank() == 0:
            state = {
                "step": step,
                "model": _unwrap(model).state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "best_ap": best,
                "rng": states,
                "config": json.dumps(self.config.to_dict()),
                "model_config": json.dumps(_unwrap(model).config),
            }
            atomic_save(path, lambda tmp: torch.save(state, tmp))
        return path

    def _save_pretrained(self, module: nn.Module, name: str, metrics: dict[str, Any] | None, step: int) -> None:
        folder = os.path.join(self.config.out, name)
        card: dict[str, Any] = {"training steps": step}
        if metrics:
            dataset = os.path.basename(self.config.val_json or "")
            card.update({f"mask {k} ({dataset})": metrics[k] for k in METRIC_KEYS if metrics[k] is not None})
            card.update({f"mask AP {name}": ap for name, ap in metrics["per_class"].items() if ap is not None})
        module.save_pretrained(folder, metrics=card)

    # -- the loop ------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run (or resume) training; returns ``{"step", "best", "last", "out"}`` (metrics dicts or None)."""
        created_group = _init_distributed()
        try:
            return self._train()
        finally:
            if created_group:
                dist.destroy_process_group()

    def _train(self) -> dict[str, Any]:
        cfg = self.config
        rank, world = current_rank(), world_size()
        device = self._device()
        if rank == 0:
            os.makedirs(cfg.out, exist_ok=True)
            atomic_write_json(os.path.join(cfg.out, "train_config.json"), cfg.to_dict(), allow_nan=False)
        _seed_everything(cfg.seed)

        coco = CocoInstances(cfg.train_json, cfg.train_images)
        val_coco = CocoInstances(cfg.val_json, cfg.val_images, keep_crowd=True) if cfg.val_json else None
        if val_coco is not None and val_coco.category_ids != coco.category_ids:
            raise ValueError(
                f"{cfg.val_json} and {cfg.train_json} have different categories "
                f"({list(val_coco.category_ids)} vs {list(coco.category_ids)}); use the same category list"
            )
        model = self._build_model(coco).to(device)
        crop = cfg.crop if cfg.crop is not None else _unwrap(model).model_name.endswith("_aug")
        augmentation = Augmentation(AugmentConfig(min_sizes=cfg.min_sizes, max_size=cfg.max_size,
                                                  flip_prob=cfg.flip_prob, crop=crop))  # fmt: skip
        dataset = CocoDataset(coco, augmentation)
        iters_per_epoch = max(len(dataset) // (cfg.batch_size * world), 1)
        max_iters = int(cfg.iters) if cfg.iters else int(cfg.epochs or 12) * iters_per_epoch
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else min(1000, max_iters // 10)
        eval_period = cfg.eval_period or max(math.ceil(max_iters / 5), 1)

        criterion = SparseInstCriterion(_unwrap(model).num_classes)
        optimizer = torch.optim.AdamW(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        schedule = WarmupSchedule(max_iters, warmup, cfg.warmup_factor, cfg.schedule,
                                  resolve_milestones(cfg.steps, max_iters), cfg.gamma)  # fmt: skip
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.amp)
        scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        ema = None
        if cfg.ema:
            from timm.utils import ModelEmaV3

            ema = ModelEmaV3(model, decay=cfg.ema_decay)

        start_step, best_ap = 0, -math.inf
        if self.resume_state is not None:
            state = self.resume_state
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema") is not None:
                ema.module.load_state_dict(state["ema"])
            start_step, best_ap = int(state["step"]), float(state["best_ap"])
            rng_states = state["rng"]
            _set_rng_state(rng_states[rank] if len(rng_states) == world else rng_states[0])
            if rank == 0:
                _logger.info("resumed from %s at step %d", self.resume_path, start_step)
        if world > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                        else None)  # fmt: skip

        sampler = TrainSampler(len(dataset), cfg.batch_size, max_iters, start_step, cfg.seed, rank, world)
        loader = DataLoader(
            dataset, batch_sampler=sampler, collate_fn=Collator(_unwrap(model).pretrained_cfg.mean,
                                                                _unwrap(model).pretrained_cfg.std),
            num_workers=cfg.workers, pin_memory=device.type == "cuda",
        )  # fmt: skip
        log = _JsonlLog(os.path.join(cfg.out, "metrics.jsonl"), start_step if self.resume_state else None,
                        cfg.tensorboard) if rank == 0 else None  # fmt: skip
        bar = None
        if cfg.progress and rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=max_iters, initial=start_step, desc="train", unit="it", dynamic_ncols=True)

        last_metrics: dict[str, Any] | None = None
        best_metrics: dict[str, Any] | None = None
        window: list[torch.Tensor] = []
        step = start_step
        ckpt_path = os.path.join(cfg.out, CHECKPOINT_NAME)
        last_saved = start_step if self.resume_state is not None else None
        data_tic = time.perf_counter()
        data_time = step_time = 0.0
        self._set_train_mode(model)
        try:
            for batch in loader:
                data_time += time.perf_counter() - data_tic
                images = batch["images"].to(device, non_blocking=True)
                targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["targets"]]
                autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
                            else contextlib.nullcontext())  # fmt: skip
                with autocast:
                    outputs = model(images)
                losses = criterion(outputs, targets)
                loss = sum(losses.values())
                terms = torch.stack([loss.detach(), *(v.detach() for v in losses.values())])
                bad = torch.tensor([0.0 if torch.isfinite(terms).all() else 1.0], device=device)
                if world > 1:
                    dist.all_reduce(bad)
                if bad.item():
                    values = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
                    where = (f"the last good checkpoint is {ckpt_path} (step {last_saved}); resume from it with "
                             "--resume after lowering --lr, adding --clip-grad or turning off --amp"
                             if last_saved is not None else "no checkpoint was written yet")  # fmt: skip
                    raise TrainingDiverged(f"training stopped: the loss is not finite at step {step + 1} ({values}); "
                                           f"{where}")  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.clip_grad is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                lr = optimizer.param_groups[0]["lr"]
                with warnings.catch_warnings():
                    # fp16: GradScaler skips the optimizer step while it lowers its scale (inf gradients in the first
                    # steps); the schedule still follows the iteration count, as detectron2's AMP trainer does.
                    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
                    scheduler.step()
                step += 1
                if ema is not None:
                    ema.update(_unwrap(model), step=step)
                window.append(terms)
                step_time += time.perf_counter() - data_tic
                record = {"step": step, "lr": lr, **{k: v.item() for k, v in zip(["loss", *losses], terms)}}
                if bar is not None:
                    short = {"loss": "loss", "loss_ce": "ce", "loss_mask": "mask", "loss_dice": "dice",
                             "loss_objectness": "obj"}  # fmt: skip
                    postfix = {name: f"{record[key]:.3f}" for key, name in short.items()}
                    bar.set_postfix({**postfix, "lr": f"{lr:.2e}"}, refresh=False)
                    bar.update(1)
                for callback in self.callbacks:
                    callback(self, step, record)

                if step % cfg.log_period == 0 or step == max_iters:
                    mean_terms = torch.stack(window).mean(0)
                    if world > 1:
                        dist.all_reduce(mean_terms)
                        mean_terms /= world
                    seconds = step_time / len(window)
                    if log is not None:
                        log.write({"type": "train", "step": step, "epoch": round(step / iters_per_epoch, 3),
                                   "lr": lr, **{k: float(v) for k, v in zip(["loss", *losses], mean_terms)},
                                   "time": seconds, "data_time": data_time / len(window),
                                   "eta_s": seconds * (max_iters - step)})  # fmt: skip
                    window, step_time, data_time = [], 0.0, 0.0

                if val_coco is not None and (step % eval_period == 0 or step == max_iters):
                    eval_model = ema.module if ema is not None else _unwrap(model)
                    last_metrics = evaluate(eval_model, val_coco.json_path, val_coco.image_dir, coco=val_coco,
                                            min_size=cfg.test_size, max_size=cfg.max_size,
                                            batch_size=cfg.batch_size, workers=cfg.workers)  # fmt: skip
                    self._set_train_mode(model)
                    ap = last_metrics["AP"] if last_metrics["AP"] is not None else -1.0
                    if rank == 0:
                        log.write({"type": "eval", "step": step, **{k: last_metrics[k] for k in METRIC_KEYS}})
                        summary = ", ".join(f"{k} {last_metrics[k]:.2f}" for k in METRIC_KEYS
                                            if last_metrics[k] is not None)  # fmt: skip
                        (bar.write if bar is not None else _logger.info)(f"step {step}: {summary}")
                        if ap > best_ap:
                            best_ap, best_metrics = ap, last_metrics
                            self._save_pretrained(eval_model, "best", last_metrics, step)
                    elif ap > best_ap:
                        best_ap, best_metrics = ap, last_metrics

                if step % cfg.checkpoint_period == 0 or step == max_iters:
                    self._save_checkpoint(step, model, optimizer, scheduler, scaler, ema, best_ap)
                    last_saved = step
                data_tic = time.perf_counter()
        except KeyboardInterrupt:
            if rank == 0:
                if last_saved is None:
                    _logger.warning("interrupted at step %d, before the first checkpoint (every %d iterations): "
                                    "nothing to resume", step, cfg.checkpoint_period)  # fmt: skip
                else:
                    _logger.warning("interrupted at step %d; to continue from the last checkpoint (step %d, %s) "
                                    "run `sparseinst train --resume --out %s` (Python: Trainer(resume=True, out=...))",
                                    step, last_saved, ckpt_path, cfg.out)  # fmt: skip
            raise
        finally:
            if bar is not None:
                bar.close()
            if log is not None:
                log.close()

        if rank == 0:
            final = ema.module if ema is not None else _unwrap(model)
            self._save_pretrained(final, "last", last_metrics, step)
        if world > 1:
            dist.barrier()
        return {"step": step, "best": best_metrics, "last": last_metrics, "out": cfg.out}


def train(resume: bool | str = False, **kwargs: Any) -> dict[str, Any]:
    """Fine-tune / train a SparseInst model on a COCO-format dataset; keyword arguments are :class:`TrainConfig`'s.

    Returns ``{"step", "best", "last", "out"}``: the final step, the best and last evaluation metrics (COCO mask AP
    in percent, None without a validation set) and the output folder (``best/`` and ``last/`` are
    ``save_pretrained`` folders usable with ``create_model`` and ``sparseinst predict``).

    Example:
        >>> import sparseinst_zoo
        >>> summary = sparseinst_zoo.train(model="sparseinst_r50_giam", pretrained=True,  # doctest: +SKIP
        ...     train_json="train.json", train_images="images/", val_json="val.json", val_images="images/",
        ...     epochs=24, batch_size=8, lr=1e-4, out="runs/mydata")
        >>> summary["best"]["AP"]  # doctest: +SKIP
        41.7
    """
    return Trainer(resume=resume, **kwargs).train()
