"""The training engine: fine-tune or train SparseInst on a dataset YAML (YOLO-format or COCO splits) or a COCO JSON.

One :class:`Trainer` runs the reference recipe (AdamW, warm-up + step decay, Hungarian-matched losses, multi-scale
augmentation) with the practical extras: mixed precision, gradient clipping, EMA, a frozen backbone, periodic COCO
evaluation, atomic resumable checkpoints, and DDP when launched with ``torchrun``. Outputs in ``out`` (a new run
never writes into the folder of an earlier one, see :mod:`.run_folder`):

- ``checkpoints/last.pt``: the full training state (weights-only loadable), rewritten atomically every N steps;
- ``metrics.jsonl``: one JSON object per logged step / evaluation, and ``results.png``, its curves;
- ``best/`` and ``last/``: ``save_pretrained`` folders (config, safetensors, model card with the metrics).

The parts: :mod:`.config` (the settings), :mod:`.checkpoint` (state and RNG), :mod:`.metrics_log` (what is
reported), :mod:`.step` (one optimisation step), :mod:`.plot` (the curves); this module wires them into the loop.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.distributed as dist
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader

from .. import _factory, _save
from .._constants import WEIGHTS_NAME
from .._device import select_device
from .._distributed import broadcast_from_rank0, gather_to_rank0, join_process_group, local_rank, world_size
from .._distributed import rank as current_rank
from .._io import atomic_write_json
from ..data import CocoInstances, Collator, InstanceDataset, InstanceSet, TrainSampler, build_dataset, load_dataset_spec
from ..data.augment import Augmentation, AugmentConfig
from ..errors import Argument, SparseInstError, TrainingDiverged, caller_words, on_command_line
from ..evaluation import METRIC_KEYS, evaluate
from ..inference.precision import PRECISIONS
from ..inference.results import trained_labels_extra
from ..models.sparseinst import SparseInst
from .checkpoint import (
    CHECKPOINT_NAME,
    guard_write,
    load_checkpoint,
    remove_stale_temporaries,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import RESUME_OVERRIDES, TrainConfig, absolute_paths, check_resume_settings, resolve_defaults
from .losses import SparseInstCriterion
from .metrics_log import MetricsLog, ProgressBar, console_above_bar
from .plot import try_plot_run
from .run_folder import METRICS_NAME, TRAIN_CONFIG_NAME, claim_run_folder, discard_unstarted_run, holds_run
from .schedule import WarmupSchedule, resolve_milestones
from .step import NotFinite, TrainStep

__all__ = ["TrainConfig", "Trainer", "TrainingDiverged", "train"]

_logger = logging.getLogger("sparseinst_zoo")


def _unwrap(model: nn.Module) -> SparseInst:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return cast(SparseInst, inner)


def _own_state(states: list[Any]) -> Any:
    """This process's entry of a per-process checkpoint list (the first when the process count changed)."""
    return states[current_rank()] if len(states) == world_size() else states[0]


def _resume_folder(checkpoint: str, out: str) -> str:
    """Where a run resumed from the file ``checkpoint`` goes: ``out``, or (``out`` left at its default) the run
    folder holding the checkpoint (``RUN/checkpoints/last.pt``).

    Raises:
        SparseInstError: that folder holds another run (resuming would overwrite its checkpoint, models and log).
    """
    parent = os.path.dirname(os.path.abspath(checkpoint))
    in_run = os.path.basename(parent) == "checkpoints"
    own_run = (os.path.dirname(os.path.dirname(os.path.normpath(checkpoint))) or ".") if in_run else None
    if out == TrainConfig.out and own_run is not None:
        out = own_run
    own = os.path.join(out, CHECKPOINT_NAME)
    if holds_run(out) and not (os.path.isfile(own) and os.path.samefile(own, checkpoint)):
        where = " with {own}" if own_run is not None else ""
        raise SparseInstError.naming(
            "{held} holds another run (its {name} is not {checkpoint}); resume into the checkpoint's own run"
            + where
            + ", or give an {out} that holds no run",
            held=out,
            name=CHECKPOINT_NAME,
            checkpoint=checkpoint,
            own=Argument("out", own_run),
            out=Argument("out"),
        )
    return out


def _parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay for normalisation layers, patch embeddings and class tokens (as the reference)."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    no_decay: set[int] = set()
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}"
            if isinstance(module, norm_types) or "patch_embed" in full or "cls_token" in full:
                no_decay.add(id(param))
    decay: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for param in model.parameters():
        if param.requires_grad:
            (plain if id(param) in no_decay else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if plain:
        groups.append({"params": plain, "weight_decay": 0.0})
    return groups


@dataclass
class _Optimisation:
    """AdamW, its schedule, the AMP gradient scaler and the optional EMA (what a checkpoint restores)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None


@dataclass
class _Run:
    """The live objects of a run and its progress (what the loop reads and updates)."""

    model: nn.Module
    opt: _Optimisation
    step_fn: TrainStep
    loader: DataLoader[Any]
    val_set: InstanceSet | None
    max_iters: int
    iters_per_epoch: int
    eval_period: int
    checkpoint_period: int
    step: int = 0
    best_ap: float = -math.inf
    last_saved: int | None = None
    best_metrics: dict[str, Any] | None = None
    last_metrics: dict[str, Any] | None = None
    window: list[torch.Tensor] = field(default_factory=list)
    step_time: float = 0.0
    data_time: float = 0.0

    @property
    def eval_model(self) -> SparseInst:
        return cast(SparseInst, self.opt.ema.module) if self.opt.ema is not None else _unwrap(self.model)


class Trainer:
    """Trains a SparseInst model on a dataset YAML or COCO JSON dataset; see :class:`TrainConfig` for the settings.

    Args:
        config: a :class:`TrainConfig` (or keyword arguments for one).
        resume: ``True`` to continue from ``out/checkpoints/last.pt``, or the path of a checkpoint (then ``out``
            defaults to the run folder holding it; an ``out`` with another run is refused); the run's
            settings then come from the checkpoint (except ``out``, ``workers``, ``progress``, ``device`` and
            ``tensorboard``; another setting given with a different value is refused), so
            ``Trainer(resume=True, out="runs/x")`` is enough. A finished run is not resumed.
        callbacks: called as ``callback(trainer, step, record)`` after every step (``record``: the step's losses).

    Example:
        >>> from sparseinst_zoo.data.synthetic import make_shapes_dataset
        >>> ann = make_shapes_dataset("/tmp/shapes", num_images=4)
        >>> trainer = Trainer(TrainConfig(model="sparseinst_tiny_test", train_json=ann, train_images="/tmp/shapes",
        ...                               iters=2, batch_size=2, min_sizes=(64,), max_size=96, out="/tmp/run",
        ...                               workers=0, progress=False, exist_ok=True))
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
            self.resume_state = load_checkpoint(path)
            self.resume_path = path
            if resume is not True:
                out = _resume_folder(path, out)
            given = config.to_dict() if config is not None else kwargs
            saved = json.loads(self.resume_state["config"])
            check_resume_settings(saved, given, out)
            overrides = {key: given[key] for key in RESUME_OVERRIDES if key in given}
            config = TrainConfig.from_saved(saved, **overrides, out=out)
        elif config is None:
            config = TrainConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config

    # -- setup ---------------------------------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return select_device(self.config.device, local_rank=local_rank())

    def _build_model(self, train_set: InstanceSet) -> SparseInst:
        cfg = self.config
        num_classes = cfg.num_classes or train_set.num_classes
        if num_classes != train_set.num_classes:  # label i is the i-th category: other counts can't be trained/scored
            raise SparseInstError.naming(
                "{given} but {source} has {count} categories; leave {num_classes} out to use the dataset's count",
                given=Argument("num_classes", num_classes),
                source=train_set.source,
                count=train_set.num_classes,
                num_classes=Argument("num_classes"),
            )
        assert cfg.model is not None  # filled in by resolve_defaults
        kwargs: dict[str, Any] = {"num_classes": num_classes}
        if cfg.backbone:
            kwargs["backbone"] = cfg.backbone
        fresh = self.resume_state is not None  # weights come from the training checkpoint
        loaded = cfg.pretrained or cfg.checkpoint or os.path.isdir(cfg.model) or cfg.model.startswith("hf-hub:")
        random_init = not (fresh or loaded)
        if random_init and cfg.pretrained_backbone:
            kwargs["pretrained_backbone"] = True
        elif random_init and current_rank() == 0:
            message = "training {model} from random initialisation (no {pretrained}, {checkpoint} or {backbone})"
            _logger.warning(
                "%s",
                caller_words(
                    message,
                    model=cfg.model,
                    pretrained=Argument("pretrained", True),
                    checkpoint=Argument("checkpoint"),
                    backbone=Argument("pretrained_backbone", True),
                ),
            )
        # a failed ImageNet-weights download says what to do (models/backbones.py)
        built = _factory.create_model(
            cfg.model,
            pretrained=cfg.pretrained and not fresh,
            checkpoint_path=None if fresh else cfg.checkpoint,
            **kwargs,
        )
        model = cast(SparseInst, built)
        pretrained_cfg = model.pretrained_cfg
        model.pretrained_cfg = pretrained_cfg.replace(
            label_names=tuple(train_set.label_names),
            num_classes=num_classes,
            dataset=os.path.basename(train_set.source),
            min_size=int(cfg.test_size or pretrained_cfg.min_size),
            max_size=int(cfg.max_size or 0),
            hf_hub_id=None,
            file=None,
            tag="",
            reference_ap=None,
            reference_ap_test_dev=None,
            reference_fps=None,
            extra=trained_labels_extra(pretrained_cfg.extra, train_set.category_ids, train_set.yolo_classes),
        )
        if cfg.freeze_backbone:
            for param in model.backbone.parameters():
                param.requires_grad_(False)
        return model

    def _set_train_mode(self, model: nn.Module) -> None:
        model.train()
        if self.config.freeze_backbone:
            _unwrap(model).backbone.eval()  # frozen: keep its normalisation statistics too

    def _prepare_folder(self) -> list[str]:
        """Pick the run folder (rank 0 decides), clear stale temporaries and write ``train_config.json``.

        Returns:
            The folders created for a new run (rank 0; empty otherwise).
        """
        out = self.config.out
        created: list[str] = []
        if current_rank() == 0:
            if self.resume_state is None:
                out, created = claim_run_folder(out, self.config.exist_ok)
            else:
                os.makedirs(out, exist_ok=True)
            remove_stale_temporaries(out)
        self.config = dataclasses.replace(self.config, out=broadcast_from_rank0(out))
        if current_rank() == 0:
            atomic_write_json(os.path.join(self.config.out, TRAIN_CONFIG_NAME), self.config.to_dict(), allow_nan=False)
        return created

    def _datasets(self) -> tuple[InstanceSet, InstanceSet | None]:
        """The training set and the validation set (None without one): from ``data`` or the COCO JSON fields."""
        cfg = self.config
        train_set: InstanceSet
        val_set: InstanceSet | None = None
        if cfg.data:
            spec = load_dataset_spec(cfg.data)
            train_set = build_dataset(spec, "train")
            if "val" in spec.splits:
                val_set = build_dataset(spec, "val", keep_crowd=True)
        else:
            train_set = CocoInstances(cfg.train_json, cfg.train_images)
            if cfg.val_json and cfg.val_images:
                val_set = CocoInstances(cfg.val_json, cfg.val_images, keep_crowd=True)
        # label i is the i-th class of each set (a YOLO index or the i-th COCO id): the names must line up
        if val_set is not None and val_set.label_names != train_set.label_names:
            raise SparseInstError(
                f"{val_set.source} and {train_set.source} have different classes "
                f"({list(val_set.label_names)} vs {list(train_set.label_names)}); use the same class list, in the "
                "same order"
            )
        return train_set, val_set

    def _optimisation(self, model: nn.Module, max_iters: int, device: torch.device) -> _Optimisation:
        cfg = self.config
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else min(1000, max_iters // 10)
        optimizer = torch.optim.AdamW(_parameter_groups(model, cfg.weight_decay), lr=cfg.lr)
        milestones = resolve_milestones(cfg.steps, max_iters)
        schedule = WarmupSchedule(max_iters, warmup, cfg.warmup_factor, cfg.schedule, milestones, cfg.gamma)
        return _Optimisation(
            optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
            scaler=torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16"),
            ema=ModelEmaV3(model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup) if cfg.ema else None,
        )

    def _setup(self, device: torch.device) -> _Run:
        """Data, model, optimiser and schedule (restored from the checkpoint when resuming), loader."""
        cfg, world = self.config, world_size()
        seed_everything(cfg.seed)
        train_set, val_set = self._datasets()
        model = self._build_model(train_set).to(device)
        crop = cfg.crop if cfg.crop is not None else model.model_name.endswith("_aug")
        assert cfg.min_sizes is not None and cfg.max_size is not None  # filled in by resolve_defaults
        augment = AugmentConfig(min_sizes=cfg.min_sizes, max_size=cfg.max_size, flip_prob=cfg.flip_prob, crop=crop)
        dataset = InstanceDataset(train_set, Augmentation(augment))
        iters_per_epoch = max(len(dataset) // (cfg.batch_size * world), 1)
        max_iters = int(cfg.iters) if cfg.iters else int(cfg.epochs or 12) * iters_per_epoch
        self._check_unfinished(max_iters)
        opt = self._optimisation(model, max_iters, device)
        start_step, best_ap = self._restore(model, opt) if self.resume_state is not None else (0, -math.inf)
        wrapped: nn.Module = model
        if world > 1:
            wrapped = nn.parallel.DistributedDataParallel(
                model, device_ids=[device.index] if device.type == "cuda" else None
            )
        step_fn = TrainStep(
            wrapped,
            SparseInstCriterion(model.num_classes),
            opt.optimizer,
            opt.scheduler,
            opt.scaler,
            PRECISIONS[cfg.precision],
            cfg.clip_grad,
            world,
        )
        sampler = TrainSampler(len(dataset), cfg.batch_size, max_iters, start_step, cfg.seed, current_rank(), world)
        collate = Collator(model.pretrained_cfg.mean, model.pretrained_cfg.std)
        loader = DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda",
        )
        run = _Run(
            model=wrapped,
            opt=opt,
            step_fn=step_fn,
            loader=loader,
            val_set=val_set,
            max_iters=max_iters,
            iters_per_epoch=iters_per_epoch,
            eval_period=cfg.eval_period or max(math.ceil(max_iters / 5), 1),
            checkpoint_period=cfg.checkpoint_period or min(500, math.ceil(max_iters / 5)),
            step=start_step,
            best_ap=best_ap,
            last_saved=start_step if self.resume_state is not None else None,
        )
        if self.resume_state is not None:
            self._restore_progress(run, device)
        return run

    def _check_unfinished(self, max_iters: int) -> None:
        """Refuse to resume a run that finished (its ``last/`` written): resuming would only rewrite its results."""
        if self.resume_state is None or int(self.resume_state["step"]) < max_iters:
            return
        last = os.path.join(self.config.out, "last")
        if os.path.isfile(os.path.join(last, WEIGHTS_NAME)):
            raise SparseInstError.naming(
                "{path} is the end of a finished run (step {step} of {max_iters}): nothing to resume; to train on, "
                "start a new run from its weights ({checkpoint})",
                path=self.resume_path,
                step=int(self.resume_state["step"]),
                max_iters=max_iters,
                checkpoint=Argument("checkpoint", last),
            )

    def _restore(self, model: nn.Module, opt: _Optimisation) -> tuple[int, float]:
        """Load the checkpoint's state into ``model`` and ``opt`` and the RNGs; returns its step and best AP."""
        state = self.resume_state
        assert state is not None
        model.load_state_dict(state["model"])
        opt.optimizer.load_state_dict(state["optimizer"])
        opt.scheduler.load_state_dict(state["scheduler"])
        opt.scaler.load_state_dict(state["scaler"])
        if opt.ema is not None and state.get("ema") is not None:
            opt.ema.module.load_state_dict(state["ema"])
        set_rng_state(_own_state(state["rng"]))
        if current_rank() == 0:
            _logger.info("resumed from %s at step %d", self.resume_path, int(state["step"]))
        return int(state["step"]), float(state["best_ap"])

    # -- checkpoints and saved models ----------------------------------------------------------------------------
    @property
    def resume_command(self) -> str:
        """The command (called from Python: the call) that continues this run from its last checkpoint."""
        if on_command_line():
            return f"sparseinst train --resume --out {shlex.quote(self.config.out)}"
        return f"sparseinst_zoo.train(resume=True, out={self.config.out!r})"

    def _restore_progress(self, run: _Run, device: torch.device) -> None:
        """The checkpoint's log window (steps since the last log line) and metrics, so the log and summary go on
        as in an uninterrupted run; checkpoints of earlier versions have neither."""
        state = self.resume_state
        assert state is not None
        if state.get("window"):
            window = _own_state(state["window"])
            run.window = list(window["terms"].to(device))
            run.step_time, run.data_time = float(window["step_time"]), float(window["data_time"])
        metrics = json.loads(state.get("metrics") or "{}")
        run.best_metrics, run.last_metrics = metrics.get("best"), metrics.get("last")

    def _save_checkpoint(self, run: _Run) -> None:
        terms = torch.stack(run.window).cpu() if run.window else torch.empty(0)
        window = {"terms": terms, "step_time": run.step_time, "data_time": run.data_time}
        states = gather_to_rank0((rng_state(), window))  # every process's random state and log window
        if states is not None:  # rank 0 writes
            state = {
                "step": run.step,
                "model": _unwrap(run.model).state_dict(),
                "optimizer": run.opt.optimizer.state_dict(),
                "scheduler": run.opt.scheduler.state_dict(),
                "scaler": run.opt.scaler.state_dict(),
                "ema": run.opt.ema.module.state_dict() if run.opt.ema is not None else None,
                "best_ap": run.best_ap,
                "rng": [rng for rng, _ in states],
                "window": [window for _, window in states],
                "metrics": json.dumps({"best": run.best_metrics, "last": run.last_metrics}),
                "config": json.dumps(self.config.to_dict()),
                "model_config": json.dumps(_unwrap(run.model).config),
                # the config.json of best/ and last/ (class names, ids, test size): `sparseinst convert` reads it
                "folder_config": json.dumps(_save.model_config(_unwrap(run.model))),
            }
            save_checkpoint(os.path.join(self.config.out, CHECKPOINT_NAME), state, self.resume_command)
        run.last_saved = run.step

    def _save_pretrained(self, run: _Run, name: str, metrics: dict[str, Any] | None) -> None:
        folder = os.path.join(self.config.out, name)
        card: dict[str, Any] = {"training steps": run.step}
        if metrics:
            dataset = os.path.basename(run.val_set.source) if run.val_set is not None else ""
            card.update({f"mask {k} ({dataset})": metrics[k] for k in METRIC_KEYS if metrics[k] is not None})
            card.update({f"mask AP {label}": ap for label, ap in metrics["per_class"].items() if ap is not None})
        where = (
            f"the checkpoint of step {run.last_saved} is complete: free some space, then `{self.resume_command}` "
            "saves it again"
            if run.last_saved is not None
            else "free some space and start again"
        )
        guard_write(lambda: run.eval_model.save_pretrained(folder, metrics=card), "the model folder", folder, where)

    def _diverged(self, run: _Run, what: str, values: str) -> TrainingDiverged:
        ckpt = os.path.join(self.config.out, CHECKPOINT_NAME)
        where = (
            "the last good checkpoint is {ckpt} (step {saved}); resume from it with {resume} after lowering {lr}, "
            "adding {clip_grad} or using {fp32}"
            if run.last_saved is not None
            else "no checkpoint was written yet; lower {lr} or add {clip_grad}"
        )
        return TrainingDiverged.naming(
            "training stopped: {what} at step {step} ({values}); " + where,
            what=what,
            step=run.step + 1,
            values=values,
            ckpt=ckpt,
            saved=run.last_saved,
            resume=Argument("resume", True),
            lr=Argument("lr"),
            clip_grad=Argument("clip_grad"),
            fp32=Argument("precision", "fp32"),
        )

    # -- the loop ------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, Any]:
        """Run (or resume) training; returns ``{"step", "best", "last", "out"}`` (metrics dicts or None)."""
        created_group = join_process_group(self.config.device)  # gloo for --device cpu, also on a GPU machine
        try:
            return self._train()
        finally:
            if created_group:
                dist.destroy_process_group()

    def _train(self) -> dict[str, Any]:
        device = self._device()
        self.config = resolve_defaults(self.config, device)
        run = self._setup(device)  # data, model and weights are checked before the run folder exists
        self.config = absolute_paths(self.config)  # what the checkpoint records: a resume finds them from any cwd
        created = self._prepare_folder()
        rank = current_rank()
        log = (
            MetricsLog(
                os.path.join(self.config.out, METRICS_NAME),
                run.step if self.resume_state else None,
                self.config.tensorboard,
            )
            if rank == 0
            else None
        )
        bar = ProgressBar(run.max_iters, run.step, enabled=self.config.progress and rank == 0)
        finished = False
        try:
            with console_above_bar(bar.bar is not None):
                self._loop(run, device, log, bar)
            finished = True
        except KeyboardInterrupt:
            bar.close()  # the message goes on its own line below the finished bar
            if rank == 0:
                self._report_interrupt(run)
            raise
        finally:
            bar.close()
            if log is not None:
                log.close()
                if not finished and self.resume_state is None and run.last_saved is None and not log.records:
                    discard_unstarted_run(self.config.out, created)
        if rank == 0:
            self._save_pretrained(run, "last", run.last_metrics)
            try_plot_run(self.config.out)
        if world_size() > 1:
            dist.barrier()
        return {"step": run.step, "best": run.best_metrics, "last": run.last_metrics, "out": self.config.out}

    def _loop(self, run: _Run, device: torch.device, log: MetricsLog | None, bar: ProgressBar) -> None:
        self._set_train_mode(run.model)
        data_tic = time.perf_counter()
        for batch in run.loader:
            run.data_time += time.perf_counter() - data_tic
            images = batch["images"].to(device, non_blocking=True)
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in batch["targets"]]
            try:
                terms = run.step_fn(images, targets)
            except NotFinite as err:
                raise self._diverged(run, *err.args) from None
            run.step += 1
            if run.opt.ema is not None:
                run.opt.ema.update(_unwrap(run.model), step=run.step)
            run.window.append(terms)
            run.step_time += time.perf_counter() - data_tic
            record = {
                "step": run.step,
                "lr": run.step_fn.last_lr,
                **{k: v.item() for k, v in zip(run.step_fn.names, terms)},
            }
            bar.step(record)
            for callback in self.callbacks:
                callback(self, run.step, record)
            last = run.step == run.max_iters
            if run.step % self.config.log_period == 0 or last:
                self._log_window(run, log, bar)
            if run.val_set is not None and (run.step % run.eval_period == 0 or last):
                self._evaluate(run, log, bar)
            if run.step % run.checkpoint_period == 0 or last:
                self._save_checkpoint(run)
            data_tic = time.perf_counter()

    def _log_window(self, run: _Run, log: MetricsLog | None, bar: ProgressBar) -> None:
        """Log the mean loss terms since the last log line (averaged over processes)."""
        mean_terms = torch.stack(run.window).mean(0)
        if world_size() > 1:
            dist.all_reduce(mean_terms)
            mean_terms /= world_size()
        seconds = run.step_time / len(run.window)
        record = {
            "type": "train",
            "step": run.step,
            "epoch": round(run.step / run.iters_per_epoch, 3),
            "lr": run.step_fn.last_lr,
            **{k: float(v) for k, v in zip(run.step_fn.names, mean_terms)},
            "time": seconds,
            "data_time": run.data_time / len(run.window),
            "eta_s": seconds * (run.max_iters - run.step),
        }
        if log is not None:
            log.write(record)
            bar.logged(record)
        run.window, run.step_time, run.data_time = [], 0.0, 0.0

    def _evaluate(self, run: _Run, log: MetricsLog | None, bar: ProgressBar) -> None:
        """COCO mask AP of the (EMA) model; rank 0 logs it, saves ``best/`` and redraws ``results.png``."""
        cfg = self.config
        assert run.val_set is not None
        metrics = evaluate(
            run.eval_model,
            dataset=run.val_set,
            min_size=cfg.test_size,
            max_size=cfg.max_size,
            batch_size=cfg.batch_size,
            workers=cfg.workers,
        )
        run.last_metrics = metrics
        self._set_train_mode(run.model)
        ap = metrics["AP"] if metrics["AP"] is not None else -1.0
        improved = ap > run.best_ap
        if improved:
            run.best_ap, run.best_metrics = ap, metrics
        if log is None:
            return
        log.write({"type": "eval", "step": run.step, **{k: metrics[k] for k in METRIC_KEYS}})
        summary = ", ".join(f"{k} {metrics[k]:.2f}" for k in METRIC_KEYS if metrics[k] is not None)
        bar.message(f"step {run.step}/{run.max_iters}: {summary or 'no metrics (nothing to evaluate)'}")
        if improved:
            self._save_pretrained(run, "best", metrics)
        try_plot_run(cfg.out)

    def _report_interrupt(self, run: _Run) -> None:
        if run.last_saved is None:
            _logger.warning(
                "interrupted at step %d, before the first checkpoint (every %d iterations): nothing to resume",
                run.step,
                run.checkpoint_period,
            )
        else:
            _logger.warning(
                "interrupted at step %d; to continue from the last checkpoint (step %d, %s) run `%s`",
                run.step,
                run.last_saved,
                os.path.join(self.config.out, CHECKPOINT_NAME),
                self.resume_command,
            )


def train(resume: bool | str = False, **kwargs: Any) -> dict[str, Any]:
    """Fine-tune or train SparseInst on a data.yaml or COCO dataset; keyword arguments are :class:`TrainConfig`'s.

    Returns ``{"step", "best", "last", "out"}``: the final step, the best and last evaluation metrics (COCO mask AP
    in percent, None without a validation set) and the output folder (``best/`` and ``last/`` are
    ``save_pretrained`` folders usable with ``create_model`` and ``sparseinst predict``; a new run into a folder
    that holds an earlier run writes to the next free one, ``runs/train2`` ..., unless ``exist_ok=True``).

    Example:
        >>> import sparseinst_zoo
        >>> summary = sparseinst_zoo.train(model="sparseinst_r50_giam", pretrained=True,  # doctest: +SKIP
        ...     data="data.yaml", epochs=24, batch_size=8, lr=1e-4, out="runs/mydata")
        >>> summary["best"]["AP"]  # doctest: +SKIP
        41.7
    """
    return Trainer(resume=resume, **kwargs).train()
