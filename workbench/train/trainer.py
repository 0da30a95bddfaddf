"""Training runs of a recipe (workbench.train.recipes: `joint`, `single`, `headft`, ...); resumable
from any kill.

`train(config)` starts a run, `resume(run_dir)` continues an interrupted one. Both leave a complete
run folder:

    runs/<id>/config.yaml      the TrainConfig (rebuilds the run)
              run.json         kind, parents, tasks, status, best val metrics, per-task bests, checkpoints
              model.safetensors  the best weights by val score (raw or EMA, whichever scored higher)
              ema.safetensors  the EMA copy's best weights (with --ema)
              checkpoints/     the top-k epochs by val score (for `mtwb train avg`)
              metrics.csv      one row per epoch; steps.csv one row per optimizer step
              curves.png       training curves
              state.pt         everything a resume needs (model, EMA, optimizer, scheduler, balancer,
                               sampler positions, step), rewritten atomically at every checkpoint

Determinism: every random draw of a step (augmentation, task choice, PCGrad order) comes from
generators seeded by (seed, step), and each task's sampler is a function of (seed, task, pass), so a
run resumed from its last checkpoint repeats the uninterrupted run exactly.

Input pipeline: images are decoded once into the memory-mapped cache under `<runs_dir>/.cache/images`
(workbench.data.image_cache; `cache_images`), and the next step's batches are planned (sample
indices) and assembled (augmentation, collation) in a background thread while the current step
computes (`prefetch`; by default only on an accelerator). A step's augmentation draws from its own generator seeded by (seed, step,
batch), so the thread changes nothing but the time; no step is planned ahead across a checkpoint,
so state.pt always holds the samplers' positions after its step.
"""
from __future__ import annotations

import math
import random
import os
import shutil
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import yaml
from timm.utils import ModelEmaV3
from tqdm import tqdm

from workbench.data.image_cache import cache_root
from workbench.data.loaders import build_datasets, collate_det
from workbench.data.spec import DatasetSpec
from workbench.dist import Dist
from workbench.errors import RunError, check_name, did_you_mean
from workbench.io import atomic_path, csv_text, hash_file, write_text, write_yaml
from workbench.locks import LOCK, Lock, acquire, clean_leftovers
from workbench.train.affinity import affinity_matrix, heatmap_png, lookahead_affinity, matrix_csv
from workbench.metrics.scoring import score_predictions
from workbench.models.inference import merge_tasks, predict_all
from workbench.models.losses import cls_loss, det_loss, seg_loss, soft_cls_loss, soft_seg_loss
from workbench.models.heads import HEAD_CONVS, HEAD_LAYOUTS
from workbench.models.model import (NORM_STATS, PRECISIONS, MultiTaskModel, check_backbone, describe_device, resolve_device,
                                    resolve_precision)
from workbench.progress import Progress, duration
from workbench.records import METRICS, TASKS, Predictions
from workbench.records.run_info import RunInfo
from workbench.runs import RUNS_DIR, Run, save_weights
from workbench.train.balancing import (BALANCERS, CLIP_COMMON, CLIP_MODES, clip_task_gradients, common_norm,
                                        make_balancer)
from workbench.train.curves import plot_training_curves
from workbench.train.recipes import RECIPES, get_recipe
from workbench.train.streams import SAMPLING, TaskStream, _seed, batch_cost, make_batch, step_tasks

DEFAULT_SIZES = {"cls": 64, "det": 128, "seg": 128}
DEFAULT_BATCH = {"cls": 32, "det": 8, "seg": 8}
# Class-balanced segmentation loss by default: mIoU averages the classes, and CamVid's thin and rare ones
# (Pole, SignSymbol, Pedestrian, Bicyclist) stay near 0 IoU under a plain cross-entropy. Inverse-square-root
# frequency weights (capped at 10x) raised single-task val mIoU at 4 minutes from parity with the plain timm
# script to well above it, 3 seeds (bench/SEG_BALANCE.md). `--class-balance seg=none` turns it off.
DEFAULT_CLASS_BALANCE = {"seg": "loss"}
CLASS_BALANCE = {"cls": ("sample", "loss", "none"), "det": ("sample", "none"), "seg": ("loss", "none")}
# A joint run's default task sampling: one task a step, the one whose batches so far cost least in input
# pixels, over these shares of the compute ("equal-compute", streams.step_tasks). Round-robin (a batch of
# every task each step) gave the cheap task few steps: in 12 minutes the 64 px sign crops got ~300
# batches against ~1,200 alone, and Top-1 stayed at 0.85 against 0.95. With cls at a fifth of the
# compute, one 12-minute joint model scored +0.021 over round-robin on the traffic benchmark (3 seeds,
# Top-1 0.85 -> 0.96) and came within half a point of three 4-minute single-task runs (bench/JOINT_SHARES.md);
# equal shares (a third each) starved det and seg in a pilot (0.6595 vs 0.6668 round-robin).
DEFAULT_SAMPLING = "equal-compute"
UNFREEZE = ("norms", "neck")  # headft --unfreeze: shared parts trained beside the heads
# headft --one-pass fine-tunes the FPN neck with the heads: the merged statistics shift the features the neck
# gets from the backbone, and a neck trained on them by det and seg together (cheap: no backward through the
# backbone) raised the one-pass val score in all 9 paired runs, +0.009 on average over heads only
# (bench/ONE_PASS_NECK.md). The BatchNorm scales and shifts ("norms") need a backward through the backbone,
# half the steps in the same budget: 0.6943 vs 0.7055 in a pilot.
DEFAULT_ONE_PASS_UNFREEZE = ("neck",)
# What a run's config.yaml written before a setting existed means for that setting: the value that trains as
# that run did (its default since may differ). `mtwb train --resume` reads old runs so, and bench/run.py
# reuses a run whose settings differ from today's only by such an absent key at this value.
LEGACY_DEFAULTS = {"unfreeze": (),  # before --unfreeze no shared part trained (the one-pass default since: neck)
                   "clip_common": "step",  # before --clip-common a lone task was only clipped
                   "pseudo_every": 1}  # before --pseudo-every a pseudo batch came with every step (today's default)
DEFAULT_TASK_SHARE = {"cls": 1, "det": 2, "seg": 2}
STATE = "state.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run needs; written to `runs/<id>/config.yaml`.

    recipe: a name in workbench.train.recipes.RECIPES: joint | single (train `tasks`, one of them) |
    headft (freeze `from_run`'s backbone and neck, fine-tune its heads; backbone, sizes and
    normalisation come from that run).
    """

    data: str
    backbone: str | None = None
    recipe: str = "joint"
    tasks: tuple = TASKS
    from_run: str | None = None
    epochs: int = 10
    img_size: dict = field(default_factory=lambda: dict(DEFAULT_SIZES))
    batch_size: dict = field(default_factory=lambda: dict(DEFAULT_BATCH))
    lr: float = 2e-3
    backbone_lr_scale: float = 1.0  # backbone lr = lr x this (e.g. 0.1 for a pretrained backbone)
    weight_decay: float = 0.05
    warmup_steps: int = 50
    neck_channels: int = 64
    # "separable" (the default) or "conv" 3x3 convolutions in the neck and the det/seg heads. Separable:
    # at an equal 4-minute budget on the traffic benchmark (3 seeds, bench/EQUAL_BUDGET.md) single-task
    # det rose from 0.218 to 0.435 mAP50 (+0.217 [+0.139, +0.298]; fewer multiply-adds: more steps, and
    # it learns faster per step) and seg held level; also the cheaper AllInOne inference.
    head_convs: str = "separable"
    # det/seg head layout (models.heads.HEAD_LAYOUTS). "full" by default: "light" cut the one-pass checkpoint's
    # inference from 0.40x to 0.38x of three single-task models but lost val score, 3 seeds side by side:
    # one-pass -0.0093 [-0.0270, +0.0086], single-task -0.0155 [-0.0342, +0.0067] (bench/LIGHT_HEADS.md)
    heads: str = "full"
    # "task": the backbone's BatchNorm running statistics kept per task (or "shared": one set). Default
    # "task": joint lite0 at a 5-minute budget, 3 seeds, val score 0.5995 vs 0.5180 shared, +0.0815
    # [+0.0246, +0.1438], Top-1 0.808 vs 0.647, seed spread 0.018 vs 0.113 (bench/NORM_STATS.md)
    norm_stats: str = "task"
    pretrained: str | None = None
    mean: tuple[float, float, float] | None = None  # input normalisation; None: the backbone's pretrained_cfg
    std: tuple[float, float, float] | None = None
    seed: int = 0
    device: str = "auto"
    # autocast of the forward passes: "auto" = bf16 on a GPU that has it, else fp32 (models.model.resolve_precision);
    # fp16 adds a dynamic loss scale (torch.amp.GradScaler). run.json records the one used.
    precision: str = "auto"
    steps_per_epoch: int | None = None  # None: as count_steps (one pass through the data, by sampling)
    budget: str | None = None  # training time, e.g. "15m": the step count fills it (see fit_budget)
    # round-robin: a batch of every task each step; proportional: one task a step, drawn by data set size;
    # equal-compute: one task a step, the one whose batches so far cost least (streams.batch_cost).
    # None: DEFAULT_SAMPLING for a joint run of several tasks (without --affinity-every), else round-robin
    sampling: str | None = None
    task_share: dict | None = None  # equal-compute: task -> relative share of the compute (a task not given: DEFAULT_TASK_SHARE)
    task_steps: dict | None = None  # task -> its budget of batches; it stops early, the others go on
    balance: str = "fixed"  # a name in workbench.train.balancing.BALANCERS
    loss_weights: dict | None = None  # task -> fixed weight (default 1)
    balance_ratio: float = 10.0  # magnitude balancing: largest / smallest weighted loss
    clip: str = "none"  # none | global | task
    clip_norm: float = 1.0
    # task clipping, one task a step (equal-compute): "running" rescales the task's backbone gradient to the
    # common norm of every task's last one (TBGC's "rescale all to one norm" across steps); "step" uses this
    # step's tasks only, so a lone task is merely clipped and a task with small gradients (seg: ~0.3-0.5
    # against det's 1.4-3.3, clipped to 1) pushed the shared backbone least. running, make bench's setting, 3
    # seeds: the one-pass checkpoint 0.7629 val against 0.7516 (+0.011 [-0.008, +0.031]), -0.007 [-0.024, +0.011]
    # from three single-task models where it was -0.019 (bench/CLIP_COMMON.md). LEGACY_DEFAULTS: old runs, step.
    clip_common: str = "running"
    accum: int = 1  # batches of each task accumulated per optimizer step
    ema: float = 0.0  # EMA decay (e.g. 0.999); 0: no EMA
    class_balance: dict | None = field(default_factory=lambda: dict(DEFAULT_CLASS_BALANCE))  # task -> "sample"
    # (cls, det) | "loss" (cls, seg) | "none"; None (a run made before the default): none
    augment: str | None = None  # per-task augmentation text (workbench.data.augment); None: defaults
    keep_top: int = 3  # best checkpoints kept for `mtwb train avg`
    pseudo: str | None = None  # a pseudo-labelled data set (workbench.distill) trained on beside `data`
    pseudo_weight: float = 1.0  # weight of a pseudo-labelled batch's loss
    pseudo_every: int = 1  # a pseudo-labelled batch beside every k-th step of a task (1: every step); at a time
    # budget each one costs labelled steps (make bench's student took 726 steps to its twin's 1152 in 8 minutes)
    temperature: float = 2.0  # distillation temperature of the soft class targets
    seg_confidence: float = 0.5  # soft seg targets count where the teacher's top probability reaches this
    checkpoint_every: int | None = None  # optimizer steps between resume checkpoints (also every epoch)
    cache_images: bool = True  # decode images once into <runs_dir>/.cache/images (memory-mapped), reused by later runs
    tensorboard: bool = False  # also log steps.csv and metrics.csv as TensorBoard scalars (runs/<run>/tensorboard/)
    affinity_every: int = 0  # joint runs: measure inter-task affinity (train.affinity) every this many steps; 0: off
    prefetch: bool | None = None  # assemble the next step's batches in a background thread; None: only on an
    # accelerator (on a 2-core CPU the thread's torch ops compete with the step's for the cores: +46% vs
    # +14% a step over bare timm in bench/THROUGHPUT.md; batches take ~30 ms of a ~900 ms step there)
    # headft: the shared parts also trained beside the heads: "norms" (the backbone's BatchNorm scales and
    # shifts; the running statistics stay as they are) and/or "neck". None: DEFAULT_ONE_PASS_UNFREEZE for
    # `headft --one-pass` (norm_stats "frozen"), else nothing
    unfreeze: tuple | None = None
    name: str | None = None
    runs_dir: str = str(RUNS_DIR)

    def __post_init__(self):
        if self.name is not None:
            check_name(self.name)
        object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.unfreeze is None:
            one_pass = self.recipe == "headft" and self.norm_stats == "frozen"
            object.__setattr__(self, "unfreeze", DEFAULT_ONE_PASS_UNFREEZE if one_pass else ())
        object.__setattr__(self, "unfreeze", tuple(u for u in self.unfreeze if u != "none"))
        for key in ("mean", "std"):
            if getattr(self, key) is not None:
                object.__setattr__(self, key, tuple(getattr(self, key)))
        recipe = get_recipe(self.recipe)
        if not self.tasks or any(t not in TASKS for t in self.tasks):
            raise RunError(f"tasks must be some of {', '.join(TASKS)}, got {list(self.tasks)}")
        recipe.check(self)
        if self.norm_stats not in NORM_STATS:
            raise RunError(f"norm statistics must be one of {', '.join(NORM_STATS)}, got {self.norm_stats!r}")
        if self.norm_stats == "frozen" and not self.pretrained and not self.from_run:
            raise RunError("frozen norm statistics need --pretrained weights (a new backbone's statistics are 0 and 1)")
        if self.precision not in PRECISIONS:
            raise RunError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.head_convs not in HEAD_CONVS:
            raise RunError(f"head convolutions must be one of {', '.join(HEAD_CONVS)}, got {self.head_convs!r}")
        if self.heads not in HEAD_LAYOUTS:
            raise RunError(f"heads must be one of {', '.join(HEAD_LAYOUTS)}, got {self.heads!r}")
        for task in TASKS:
            size = self.img_size.get(task)
            sides = [size] if isinstance(size, int) else list(size) if isinstance(size, (tuple, list)) else [None]
            if len(sides) not in (1, 2) or not all(isinstance(s, int) and s >= 32 and not s % 32 for s in sides):
                raise RunError(f"img_size for {task} must be N or (H, W), each a multiple of 32 (>= 32), got {size!r}")
            if int(self.batch_size.get(task, 0)) < 1:
                raise RunError(f"batch_size for {task} must be >= 1")
        if self.epochs < 1:
            raise RunError("epochs must be >= 1")
        if self.pseudo_every < 1:
            raise RunError(f"--pseudo-every must be >= 1 (1: a pseudo-labelled batch every step), got {self.pseudo_every}")
        if any(u not in UNFREEZE for u in self.unfreeze):
            raise RunError(f"unfreeze takes some of {', '.join(UNFREEZE)}, got {list(self.unfreeze)}")
        if self.unfreeze and self.recipe != "headft":
            raise RunError(f"unfreeze is for recipe headft (the others train every part), not {self.recipe}")
        if self.sampling is None:
            joint = self.recipe == "joint" and len(self.tasks) > 1 and not self.affinity_every
            object.__setattr__(self, "sampling", DEFAULT_SAMPLING if joint else "round-robin")
        stray = sorted(set(self.task_share or {}) - set(self.tasks))
        if stray:
            raise RunError(f"--task-share names {', '.join(stray)}, which this run does not train (tasks: {','.join(self.tasks)})")
        if self.sampling == "equal-compute":  # a share not given: the default's
            object.__setattr__(self, "task_share", {t: (self.task_share or {}).get(t, DEFAULT_TASK_SHARE[t])
                                                    for t in self.tasks})
        if self.sampling not in SAMPLING:
            raise RunError(f"unknown task sampling {self.sampling!r}; choose one of {', '.join(SAMPLING)}")
        if self.task_share is not None:
            if self.sampling != "equal-compute":
                raise RunError("--task-share sets the compute shares of equal-compute sampling: give --sampling equal-compute")
            if not all(float(v) > 0 for v in self.task_share.values()):
                raise RunError(f"--task-share: every share must be > 0, got {self.task_share}")
        if self.balance not in BALANCERS:
            raise RunError(f"unknown loss balancing {self.balance!r}; choose one of {', '.join(BALANCERS)}")
        if self.clip not in CLIP_MODES:
            raise RunError(f"unknown clipping {self.clip!r}; choose one of {', '.join(CLIP_MODES)}")
        if self.clip_common not in CLIP_COMMON:
            raise RunError(f"unknown --clip-common {self.clip_common!r}; choose one of {', '.join(CLIP_COMMON)}")
        if self.budget is not None:
            parse_budget(self.budget)
            if self.steps_per_epoch:
                raise RunError("give --budget or --steps-per-epoch, not both: the budget sets the steps")
        if self.accum < 1 or self.clip_norm <= 0 or not 0 <= self.ema < 1 or self.keep_top < 1:
            raise RunError("accum >= 1, clip_norm > 0, 0 <= ema < 1 and keep_top >= 1 are required")
        if self.affinity_every < 0:
            raise RunError(f"affinity_every must be >= 0 (0: off), got {self.affinity_every}")
        if self.affinity_every and (self.recipe != "joint" or len(self.tasks) < 2 or self.sampling != "round-robin"):
            raise RunError("--affinity-every measures how tasks sharing a backbone move each other's losses: it needs "
                           "a joint run of two or more tasks with round-robin sampling (a batch of every task each step)")
        for task, how in (self.class_balance or {}).items():
            if how not in CLASS_BALANCE.get(task, ()):
                raise RunError(f"class balance {task}={how} is not offered; choose "
                               + ", ".join(f"{t}={'|'.join(h)}" for t, h in CLASS_BALANCE.items()))

    def to_yaml_dict(self) -> dict:
        d = asdict(self)
        d["tasks"] = list(self.tasks)
        d["mean"] = list(self.mean) if self.mean else None
        d["std"] = list(self.std) if self.std else None
        return d

    @classmethod
    def from_yaml_dict(cls, d: dict, source: str = "config") -> "TrainConfig":
        cls.check_keys(d, source)
        return cls(**d)

    @classmethod
    def check_keys(cls, d, source: str) -> None:
        """Refuse what is not a mapping of TrainConfig fields, naming the file and the first unknown key."""
        if not isinstance(d, dict):
            raise RunError(f"{source}: expected a mapping of training settings, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise RunError(f"{source}: unknown setting {key!r}{did_you_mean(str(key), known)}")

    @classmethod
    def read_yaml(cls, path: str | Path) -> dict:
        """The settings of a config YAML file (a run's config.yaml, or one written by hand), keys checked."""
        path = Path(path)
        if not path.is_file():
            raise RunError(f"{path}: config file not found")
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise RunError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
        cls.check_keys(d, str(path))
        return d


BUDGET_UNITS = {"s": 1, "m": 60, "h": 3600}
CALIBRATION_STEPS = 6  # steps timed (all but the first) before a budget's step count is set
# A budget run re-counts its steps every REFIT_EVERY steps from the mean of the last REFIT_WINDOW
# steps' seconds and the last epoch end's cost: refitting only at epoch ends, from the run's all-in
# seconds per step, overran 4-minute budgets by up to 13% when steps slowed down during the last
# epoch (a second process starting on the other core; bench/EQUAL_BUDGET.md).
REFIT_EVERY = 5
REFIT_WINDOW = 10


def _clock() -> float:
    """Seconds of the budget clock (a test replaces it with a fake one)."""
    return time.perf_counter()


def parse_budget(text: str | int | float) -> float:
    """A time budget in seconds: "90s", "15m", "2h", "1h30m" or a plain number of seconds.

    Raises:
        RunError: anything else, or a budget of zero.
    """
    import re
    value = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    elif re.fullmatch(r"(\d+(\.\d+)?[smh])+", value):
        seconds = sum(float(n) * BUDGET_UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d+)?)([smh])", value))
    else:
        raise RunError(f"budget {text!r}: expected a duration like 90s, 15m, 2h or 1h30m")
    if seconds <= 0:
        raise RunError(f"budget {text!r} must be more than zero")
    return seconds


def budget_steps(budget_s: float, elapsed_s: float, steps_done: int, step_s: float, val_s: float,
                 epochs: int) -> int:
    """Optimizer steps per epoch that fill a time budget.

    Args:
        budget_s: the whole budget; elapsed_s: spent so far (calibration steps and validation included).
        steps_done: steps already taken; step_s: measured seconds per step; val_s: seconds of one
            end-of-epoch validation (raw and EMA).
        epochs: end-of-epoch validations still to come (all of them).

    Returns:
        ceil(total / epochs) with total = steps_done + the whole steps that fit into what is left once
        every validation is paid for (so never fewer than steps_done / epochs rounded up), and at least 1.
    """
    left = budget_s - elapsed_s - epochs * val_s
    total = steps_done + max(0, math.floor(left / max(step_s, 1e-9)))
    return max(1, math.ceil(total / epochs))


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def seed_step(seed: int, step: int) -> None:
    """Seed every global generator for one optimizer step (what makes a resumed run identical)."""
    s = _seed(seed, "step", step)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


@dataclass
class StepPlan:
    """What one optimizer step trains on: task -> its batches' (pseudo-labelled?, sample indices), in order."""

    step: int
    batches: dict[str, list[tuple[bool, list[int]]]]


def shared_parameters(model: MultiTaskModel) -> list[torch.nn.Parameter]:
    """The parameters every task shares (backbone and neck) that are being trained."""
    return [p for p in [*model.backbone.parameters(), *model.neck.parameters()] if p.requires_grad]


def task_loss(model, task: str, batch, device, ignore_index: int, class_weights: dict,
              count=lambda n: n) -> torch.Tensor:
    """Loss of one task's batch; `count`: the loss normaliser's reduction (models.losses)."""
    if task == "det":
        images, boxes, labels = batch
        out = model(images.to(device), tasks=("det",))["det"]
        return det_loss(out, [b.to(device) for b in boxes], [lab.to(device) for lab in labels], count=count)
    images, target = batch
    out = model(images.to(device), tasks=(task,))[task]
    weight = class_weights.get(task)
    if task == "cls":
        return cls_loss(out, target.to(device), weight=weight, count=count)
    return seg_loss(out, target.to(device), ignore_index, weight=weight, count=count)


def pseudo_loss(model, task: str, batch, device, config: TrainConfig, count=lambda n: n) -> torch.Tensor:
    """Loss of a pseudo-labelled batch: soft targets for cls (KD at `temperature`) and seg (soft
    cross-entropy over confident pixels), the teacher's boxes as hard labels for det."""
    if task == "det":
        return task_loss(model, "det", batch, device, 255, {}, count)
    if task == "cls":
        images, probs = batch
        return soft_cls_loss(model(images.to(device), tasks=("cls",))["cls"], probs.to(device), config.temperature,
                             count=count)
    images, _, soft = batch
    return soft_seg_loss(model(images.to(device), tasks=("seg",))["seg"], soft.to(device), config.seg_confidence,
                         count=count)


def validate(model, val_sets: dict, spec: DatasetSpec, truth, tasks, device) -> dict[str, float]:
    """Val metrics of the tasks trained ({"cls_top1", ..., "score"} = their mean)."""
    out, _ = predict_all(model, {t: val_sets[t] for t in tasks}, spec.det_category_ids, device)
    preds = merge_tasks(*(out[t][0] if t in out else Predictions() for t in TASKS))
    return score_predictions(preds, truth, tasks=tuple(tasks))


# --- building a trainer: each step returns one object --------------------------------------------
def _sample_weights(spec: DatasetSpec, train_sets: dict, task: str) -> np.ndarray:
    """Per-sample weights of class-balanced sampling (cls, det)."""
    from workbench.data.balance import cls_sample_weights, det_sample_weights
    if task == "cls":
        return cls_sample_weights([s.label for s in train_sets["cls"].samples], len(spec.cls_classes))
    index = train_sets["det"].index
    return det_sample_weights([[index[int(c)] for c in s.labels] for s in train_sets["det"].samples], len(index))


def _loss_weights(spec: DatasetSpec, train_sets: dict, task: str) -> torch.Tensor:
    """Per-class loss weights of class-balanced losses (cls, seg)."""
    from workbench.data.balance import class_loss_weights, seg_class_counts
    if task == "cls":
        counts = np.bincount([s.label for s in train_sets["cls"].samples], minlength=len(spec.cls_classes))
    else:
        ds = train_sets["seg"]
        counts = seg_class_counts((ds.item(i)[1].numpy() for i in range(len(ds))), len(spec.seg_classes),
                                  spec.ignore_index)
    return class_loss_weights(counts)


def build_streams(spec: DatasetSpec, train_sets: dict, config: TrainConfig, tasks) -> dict[str, TaskStream]:
    """Each task's stream of training batches (class-balanced draws where class_balance says "sample")."""
    balance = config.class_balance or {}
    return {t: TaskStream(len(train_sets[t]), config.batch_size[t], config.seed, t,
                          _sample_weights(spec, train_sets, t) if balance.get(t) == "sample" else None)
            for t in tasks}


def build_class_weights(spec: DatasetSpec, train_sets: dict, config: TrainConfig, tasks,
                        device: torch.device) -> dict[str, torch.Tensor]:
    """task -> its loss's per-class weights, (C,), for the tasks class_balance gives "loss"."""
    balance = config.class_balance or {}
    return {t: _loss_weights(spec, train_sets, t).to(device) for t in tasks if balance.get(t) == "loss"}


def build_pseudo_sets(spec: DatasetSpec, config: TrainConfig, tasks, augment, cache_dir: Path | None) -> dict:
    """task -> the pseudo-labelled data set trained on beside its own ({} without config.pseudo)."""
    if not config.pseudo:
        return {}
    from workbench.train.pseudo import build_pseudo_datasets
    sets = build_pseudo_datasets(config.pseudo, config.img_size, spec.det_category_ids, spec.ignore_index, augment,
                                 cache_dir)
    return {t: ds for t, ds in sets.items() if t in tasks}


def build_pseudo_streams(pseudo_sets: dict, config: TrainConfig) -> dict[str, TaskStream]:
    return {t: TaskStream(len(ds), config.batch_size[t], config.seed, f"pseudo-{t}") for t, ds in pseudo_sets.items()}


def count_steps(config: TrainConfig, streams: dict[str, TaskStream]) -> int:
    """Optimizer steps an epoch: steps_per_epoch, else the largest task's batches (round-robin), their
    sum (proportional) or, equal-compute, the steps in which every task passes once through its data
    at its share of the compute; over accum; at least 1."""
    if config.steps_per_epoch:
        steps = config.steps_per_epoch
    elif config.sampling == "proportional":
        steps = sum(s.batches_per_pass() for s in streams.values()) // config.accum
    elif config.sampling == "equal-compute" and len(streams) > 1:
        cost = task_costs(config, streams)
        pass_cost = max(s.batches_per_pass() * cost[t] for t, s in streams.items())  # the longest task's pass
        steps = round(sum(pass_cost / cost[t] for t in streams)) // config.accum
    else:
        steps = max(s.batches_per_pass() for s in streams.values()) // config.accum
    return max(1, steps)


def task_costs(config: TrainConfig, tasks) -> dict[str, float]:
    """Each task's batch cost for equal-compute sampling: input pixels over the task's share."""
    share = config.task_share or {}
    return {t: batch_cost(config.batch_size[t], config.img_size[t]) / float(share.get(t, 1)) for t in tasks}


def build_optimizer(model: MultiTaskModel, balancer: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trained parameters in three groups, empty ones left out: the backbone's (lr x
    backbone_lr_scale), the rest of the model's, the balancer's (no weight decay)."""
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) in backbone_ids], "lr": config.lr * config.backbone_lr_scale},
              {"params": [p for p in params if id(p) not in backbone_ids], "lr": config.lr},
              {"params": list(balancer.parameters()), "lr": config.lr, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup (warmup_steps, at most a fifth of the run), then cosine decay to 0 at step `total`.

    Args:
        total: the run's optimizer steps, or a callable returning them (a budget sets them after the
            first steps; the schedule follows).
    """
    count = total if callable(total) else (lambda: total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, count(), min(config.warmup_steps, count() // 5 + 1)))


def build_ema(model: MultiTaskModel, config: TrainConfig) -> ModelEmaV3 | None:
    return ModelEmaV3(model, decay=config.ema) if config.ema else None


class Trainer:
    """One run's training loop, from scratch or from a checkpoint's state."""

    def __init__(self, config: TrainConfig, run_dir: Path, parent: Run | None = None, dist: Dist | None = None):
        from workbench.data.augment import parse_augment
        self.config, self.run_dir = config, run_dir
        self.dist = dist or Dist.from_env(config.device)  # world size 1 without torchrun (workbench.dist)
        if config.affinity_every and self.dist.active:
            raise RunError("--affinity-every measures in one process; run it without torchrun")
        self.recipe = RECIPES[config.recipe]
        self.spec = DatasetSpec(config.data)
        self.device = self.dist.device(resolve_device(config.device))
        self.tasks = tuple(t for t in TASKS if t in config.tasks)
        torch.manual_seed(config.seed)  # a new model's initial weights
        self.model = self.recipe.build_model(self.spec, config, parent, self.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.model.set_precision(self.precision)
        print(f"device: {describe_device(self.device)}, precision {self.precision}", flush=True)
        # fp16: losses scaled up before backward so that small gradients survive, divided back before the step
        # (a step whose gradients overflowed is skipped and the scale lowered); bf16 and fp32 need none
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        augment = parse_augment(config.augment)
        cache = cache_root(config.runs_dir) if config.cache_images else None
        self.train_sets = build_datasets(self.spec, "train", config.img_size, train=True, augment=augment,
                                         cache_dir=cache, tasks=self.tasks)
        self.val_sets = build_datasets(self.spec, "val", config.img_size, cache_dir=cache, tasks=self.tasks)
        self.truth = self.spec.ground_truth("val")
        self.streams = build_streams(self.spec, self.train_sets, config, self.tasks)
        self.class_weights = build_class_weights(self.spec, self.train_sets, config, self.tasks, self.device)
        self.pseudo_sets = build_pseudo_sets(self.spec, config, self.tasks, augment, cache)
        if not self.dist.main:
            self.dist.barrier()  # rank 0 builds the image caches; the others then open them
        self.image_caches = {f"{split}/{t}": c for split, sets in (("train", self.train_sets), ("val", self.val_sets),
                                                                     ("pseudo", self.pseudo_sets))
                             for t, ds in sets.items() if (c := ds.prepare()) is not None}
        if self.dist.main:
            self.dist.barrier()
        self.pseudo_streams = build_pseudo_streams(self.pseudo_sets, config)
        self.sizes = {t: len(self.train_sets[t]) for t in self.tasks}
        for t in self.tasks:  # each rank takes an equal slice of every global batch (workbench.dist)
            self.dist.share(min(config.batch_size[t], self.sizes[t]), f"--batch-size {t}")
        self.steps = count_steps(config, self.streams)
        self.total = self.steps * config.epochs
        self.balancer = make_balancer(config.balance, self.tasks, config.loss_weights, config.balance_ratio).to(self.device)
        self.optimizer = build_optimizer(self.model, self.balancer, config)
        self.scheduler = build_scheduler(self.optimizer, config, lambda: self.total)
        self.ema = build_ema(self.model, config)
        self.shared = shared_parameters(self.model)
        prefetch = config.prefetch if config.prefetch is not None else self.device.type != "cpu"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="batches") if prefetch else None
        self._pending: tuple[StepPlan, Future] | None = None  # the next step's batches, being assembled
        self._tb = None  # the TensorBoard writer (--tensorboard), made at the first epoch's end
        self.lock: Lock | None = None  # the run folder's lock (workbench.locks), held while this process trains it
        self.replaces: Path | None = None  # the run --overwrite replaces, moved aside until the first checkpoint
        self.clock = _clock  # what a budget is measured with
        self.step_times: deque[float] = deque(maxlen=REFIT_WINDOW)  # the last steps' seconds (budget runs)
        self._tail_s = 0.0  # seconds of the last epoch end's writing (logs, curves, run.json, state.pt)
        self._loss_scale = 1.0  # fp16's current loss scale during a step
        self.batch_costs = task_costs(config, self.tasks)  # equal-compute sampling's per-batch costs
        self._start_progress()

    def _start_progress(self) -> None:
        """The progress of a run not started yet; all of it goes into state.pt."""
        self.step, self.epoch, self.epoch_step = 0, 0, 0
        self.budget: dict | None = None  # with config.budget: its measured fit, once the first steps are timed
        self.sums: dict[str, float] = {}
        self.batches_taken = {t: 0 for t in self.tasks}
        self.rows: list[dict] = []
        self.step_rows: list[dict] = []
        self.best = {"score": -1.0, "source": None, "metrics": None, "epoch": None}
        self.best_ema = -1.0
        self.task_best = {t: {"value": -1.0, "epoch": None} for t in self.tasks}
        self.head_states: dict[str, dict] = {}  # headft: task -> its head's weights at its best epoch
        self.checkpoints: list[dict] = []
        self.wall = 0.0
        self.affinity_rows: list[dict] = []  # --affinity-every: {"step", "source", "target", "affinity"}
        self.affinity_s = 0.0  # seconds spent measuring affinity
        self.last_norms: dict[str, float] = {}  # task -> its last backbone gradient norm (--clip-common running)

    # --- state ---------------------------------------------------------------------------------
    def state(self) -> dict:
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "balancer": self.balancer.state_dict(), "balancer_extra": self.balancer.extra_state(),
                "scaler": self.scaler.state_dict(),
                "streams": {t: s.state() for t, s in self.streams.items()},
                "pseudo_streams": {t: s.state() for t, s in self.pseudo_streams.items()},
                "progress": {"step": self.step, "epoch": self.epoch, "epoch_step": self.epoch_step,
                             "sums": self.sums, "batches_taken": self.batches_taken, "rows": self.rows,
                             "step_rows": self.step_rows, "best": self.best, "best_ema": self.best_ema,
                             "task_best": self.task_best, "checkpoints": self.checkpoints, "wall": self.wall,
                             "budget": self.budget, "affinity_rows": self.affinity_rows, "affinity_s": self.affinity_s,
                             "last_norms": self.last_norms},
                "head_states": self.head_states}

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.balancer.load_state_dict(state["balancer"])
        self.balancer.load_extra_state(state["balancer_extra"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        for t, s in state["streams"].items():
            self.streams[t].load_state(s)
        for t, s in state.get("pseudo_streams", {}).items():
            self.pseudo_streams[t].load_state(s)
        for key, value in state["progress"].items():
            setattr(self, key, value)
        if self.budget is not None:  # the fitted step counts, not the provisional ones
            self.steps, self.total = self.budget["steps_per_epoch"], self.budget["steps"]
        self.head_states = state["head_states"]

    def save_state(self) -> None:
        with atomic_path(self.run_dir / STATE) as tmp:
            torch.save(self.state(), tmp)
        if self.replaces is not None:  # this run can now be resumed: the run it replaces (--overwrite) goes
            shutil.rmtree(self.replaces, ignore_errors=True)
            self.replaces = None

    # --- one optimizer step --------------------------------------------------------------------
    def plan_step(self, step: int) -> StepPlan:
        """The tasks and sample indices of optimizer step `step` (the next one not planned yet): advances
        the samplers and the per-task batch counts."""
        config = self.config
        active = [t for t in self.tasks if not config.task_steps or self.batches_taken[t] < config.task_steps.get(t, 1 << 62)]
        chosen = step_tasks(config.sampling, active, self.sizes, config.seed, step, self.batches_taken,
                            self.batch_costs) if active else []
        batches: dict[str, list[tuple[bool, list[int]]]] = {}
        for task in chosen:
            batches[task] = []
            with_pseudo = task in self.pseudo_sets and self.batches_taken[task] // config.accum % config.pseudo_every == 0
            for _ in range(config.accum):
                batches[task].append((False, self.streams[task].next()))
                if with_pseudo:  # a pseudo-labelled batch beside each labelled one of every pseudo_every-th step
                    batches[task].append((True, self.pseudo_streams[task].next()))
            self.batches_taken[task] += config.accum
        return StepPlan(step, batches)

    def build_step(self, plan: StepPlan) -> dict[str, list]:
        """The collated batches of a plan (thread-safe: the augmentation of batch k draws from a generator
        seeded by (seed, step, task, k), not from the global ones)."""
        out = {}
        for task, batches in plan.batches.items():
            out[task] = []
            for k, (pseudo, indices) in enumerate(batches):
                gen = torch.Generator().manual_seed(_seed(self.config.seed, "augment", plan.step, task, k))
                ds = (self.pseudo_sets if pseudo else self.train_sets)[task]
                batch = make_batch(ds, indices, collate_det if task == "det" else None, gen)
                # several processes: each builds the global batch (the same augmentation draws as one
                # process) and takes its slice of it (tensors and per-image lists alike)
                share = self.dist.share(len(indices), f"{task} batch")
                out[task].append(batch if not self.dist.active else tuple(x[share] for x in batch))
        return out

    def _step_batches(self, prefetch_next: bool) -> tuple[StepPlan, dict[str, list]]:
        """This step's plan and batches (prefetched or built now); with prefetch_next, start assembling
        the next step's in the background."""
        if self._pending is not None and self._pending[0].step == self.step:
            plan, future = self._pending
        else:
            plan, future = self.plan_step(self.step), None
        self._pending = None
        if prefetch_next and self._executor is not None:
            upcoming = self.plan_step(self.step + 1)
            self._pending = (upcoming, self._executor.submit(self.build_step, upcoming))
        return plan, future.result() if future is not None else self.build_step(plan)

    def _take_gradient(self, task: str, summed: list, flat: dict, norms: dict) -> None:
        """Move a task's backbone gradient out of the parameters (so the next task's starts at zero).

        A balancer that combines gradients (PCGrad) gets a flat copy per task (`flat`); otherwise the
        gradients are summed per parameter in place into `summed` (under task clipping each divided by
        its task's norm first; the common norm is applied once all tasks are in). `norms`: task -> norm.
        """
        present = [p.grad for p in self.shared if p.grad is not None]
        # fp16: the gradients carry the loss scale S until the optimizer step; the norms are the true ones, so
        # dividing by them (task clipping) leaves S on every term, which the scaler's unscale_ takes off
        norms[task] = float(torch.nn.utils.get_total_norm(present)) / self._loss_scale if present else 0.0
        if self.balancer.uses_gradients:
            flat[task] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                                    for p in self.shared])
        scale = 1.0 / norms[task] if self.config.clip == "task" and norms[task] > 0 else None
        for i, p in enumerate(self.shared):
            g, p.grad = p.grad, None
            if g is None:
                continue
            if self.balancer.uses_gradients:
                summed[i] = True  # reached by a task: gets its slice of the combined gradient
                continue
            if scale is not None:
                g.mul_(scale)
            if summed[i] is None:
                summed[i] = g
            else:
                summed[i].add_(g)

    def _set_shared_gradient(self, summed: list, flat: dict, norms: dict) -> None:
        """Write the combined backbone gradient into the shared parameters' .grad (a parameter no task
        reached keeps None: AdamW leaves it alone)."""
        config = self.config
        absent = {}  # --clip-common running: the last norms of the tasks this step has no batch of
        if config.clip == "task" and config.clip_common == "running":
            absent = {t: n for t, n in self.last_norms.items() if t not in norms}
            self.last_norms.update(norms)
        if flat:
            grads = clip_task_gradients(flat, config.clip_norm * self._loss_scale,
                                        {t: n * self._loss_scale for t, n in absent.items()}) \
                if config.clip == "task" else flat
            combined = self.balancer.combine(grads)
            offset = 0
            for p, used in zip(self.shared, summed):
                n = p.numel()
                if used is not None:
                    p.grad = combined[offset:offset + n].view_as(p).clone()
                offset += n
            return
        if config.clip == "task":  # the sum of g_t / |g_t|, times the common norm (clip_task_gradients)
            common = common_norm([*norms.values(), *absent.values()], config.clip_norm)
            present = [g for g in summed if g is not None]
            if common is not None and present:
                torch._foreach_mul_(present, common)
        for p, g in zip(self.shared, summed):
            p.grad = g

    def _global(self, loss: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(what the balancer weights, the global batch's loss as a float). In one process: the loss. With
        several: the value of the global batch's loss (the ranks' shares summed) and the gradient of this
        rank's share, so that balancers see the global loss and the ranks' summed gradients are the
        global batch's; the balancer's own parameters then get the same gradient on every rank."""
        if not self.dist.active:
            return loss, loss.item()
        total = self.dist.count(loss)
        return loss + (total - loss.detach()), total.item()

    def measure_affinity(self, plan: StepPlan, batches: dict[str, list]) -> None:
        """Lookahead affinity between the tasks on this step's labelled batches (`train.affinity`); the
        virtual step uses the backbone's peak learning rate (config.lr x backbone_lr_scale), so that
        measurements in the warmup and at the end of the schedule weigh alike."""
        labelled = {t: next(b for (pseudo, _), b in zip(plan.batches[t], bs) if not pseudo) for t, bs in batches.items()}
        if len(labelled) < 2:
            return
        t0 = self.clock()
        fns = {t: (lambda t=t, b=b: task_loss(self.model, t, b, self.device, self.spec.ignore_index, self.class_weights))
               for t, b in labelled.items()}
        z = lookahead_affinity(self.model, self.shared, fns, self.config.lr * self.config.backbone_lr_scale)
        self.affinity_s += self.clock() - t0
        self.affinity_rows += [{"step": self.step, "source": i, "target": j, "affinity": round(v, 8)}
                               for (i, j), v in z.items()]

    def train_step(self, prefetch_next: bool = False) -> dict:
        """One optimizer step; returns its row for steps.csv.

        Args:
            prefetch_next: start assembling the next step's batches in the background (not before a
                checkpoint: state.pt must hold the samplers' positions after this step).
        """
        config = self.config
        seed_step(config.seed, self.step)
        self._loss_scale = self.scaler.get_scale() if self.scaler.is_enabled() else 1.0
        plan, batches = self._step_batches(prefetch_next)
        if config.affinity_every and self.step % config.affinity_every == 0:
            self.measure_affinity(plan, batches)
        self.optimizer.zero_grad(set_to_none=True)
        losses, pseudo_losses, norms, flat = {}, {}, {}, {}
        summed: list = [None] * len(self.shared)  # per shared parameter: the tasks' gradients, summed
        count = self.dist.count
        for task, task_batches in batches.items():
            for (pseudo, _), batch in zip(plan.batches[task], task_batches):
                if pseudo:
                    ploss, value = self._global(pseudo_loss(self.model, task, batch, self.device, config, count))
                    self.scaler.scale(self.balancer(task, ploss * config.pseudo_weight) / config.accum).backward()
                    pseudo_losses[task] = pseudo_losses.get(task, 0.0) + value / config.accum
                    continue
                loss, value = self._global(task_loss(self.model, task, batch, self.device, self.spec.ignore_index,
                                                     self.class_weights, count))
                if not math.isfinite(value):
                    raise RunError(f"{self.run_dir}: {task} loss is {value} at step {self.step}; lower --lr")
                self.scaler.scale(self.balancer(task, loss) / config.accum).backward()
                losses[task] = losses.get(task, 0.0) + value / config.accum
            if self.dist.active:  # the global batch's gradient of this task: backbone, neck and its head
                self.dist.sum_([p.grad for p in [*self.shared, *self.model.task_parameters(task)] if p.grad is not None])
            if self.shared:
                self._take_gradient(task, summed, flat, norms)
        row = {"step": self.step, "epoch": self.epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
        for t in self.tasks:
            row[f"loss_{t}"] = round(losses[t], 6) if t in losses else None
            row[f"grad_{t}"] = round(norms[t], 6) if t in norms else None
            row[f"weight_{t}"] = round(self.balancer.weight(t), 6)
            if t in self.pseudo_sets:
                row[f"pseudo_{t}"] = round(pseudo_losses[t], 6) if t in pseudo_losses else None
        if norms:
            self._set_shared_gradient(summed, flat, norms)
        if plan.batches:
            self.scaler.unscale_(self.optimizer)  # fp16: the true gradients from here on (a no-op otherwise)
        if config.clip == "global":
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], config.clip_norm)
        if plan.batches:
            self.scaler.step(self.optimizer)  # fp16: skipped when a gradient overflowed
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.model, step=self.step)
        self.scheduler.step()
        self.balancer.observe(losses)
        for t, v in losses.items():
            self.sums[f"loss_{t}"] = self.sums.get(f"loss_{t}", 0.0) + v
            self.sums[f"n_{t}"] = self.sums.get(f"n_{t}", 0) + 1
            if t in norms:
                self.sums[f"grad_{t}"] = self.sums.get(f"grad_{t}", 0.0) + row[f"grad_{t}"]
        self.step += 1
        self.epoch_step += 1
        return row

    # --- epochs --------------------------------------------------------------------------------
    def end_epoch(self, t_start: float, progress: bool) -> None:
        """Validate (raw and EMA), keep the best weights and top-k checkpoints, write the logs (rank 0 of
        several processes; every rank first averages the BatchNorm running statistics)."""
        epoch = self.epoch + 1
        t_end = self.clock()
        self.dist.mean_([b for m in (self.model, self.ema.module if self.ema else None) if m is not None
                         for b in m.buffers() if b.is_floating_point()])
        metrics, row = self._keep_epoch(epoch, t_start) if self.dist.main else (None, None)
        self.epoch += 1
        self.epoch_step = 0
        self.sums = {}
        if self.budget is not None:  # this epoch end's cost so far + the writing after it (the last one's)
            self.budget["end_s"] = round(self.clock() - t_end + self._tail_s, 2)
            self.refit_budget()
        if not self.dist.main:
            return
        t_tail = self.clock()
        self.write_logs()
        plot_training_curves(self.run_dir)
        self.write_info("running")
        self.save_state()
        self._tail_s = self.clock() - t_tail
        if progress:
            took = time.time() - self._epoch_t0
            losses = "  ".join(f"loss_{t} {row[f'loss_{t}']:.3f}" for t in self.tasks if row.get(f"loss_{t}") is not None)
            left = self.config.epochs - epoch
            tqdm.write(f"epoch {epoch}/{self.config.epochs}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                       + (f"  (EMA score {row['ema_score']:.4f})" if "ema_score" in row else "")
                       + (f" | train {losses}" if losses else "")
                       + f" | {duration(took)}" + (f", about {duration(left * took)} left" if left else ""))

    def _keep_epoch(self, epoch: int, t_start: float) -> tuple[dict, dict]:
        """Validate the epoch's weights (raw and EMA), keep the best and the top-k checkpoints; (metrics, row)."""
        metrics = validate(self.model, self.val_sets, self.spec, self.truth, self.tasks, self.device)
        row = {"epoch": epoch}
        for t in self.tasks:
            n = self.sums.get(f"n_{t}", 0)
            row[f"loss_{t}"] = round(self.sums.get(f"loss_{t}", 0.0) / n, 5) if n else None
            row[f"grad_{t}"] = round(self.sums.get(f"grad_{t}", 0.0) / n, 5) if n and f"grad_{t}" in self.sums else None
        row.update({k: round(v, 5) for k, v in metrics.items()})
        candidates = [("raw", self.model, metrics)]
        if self.ema is not None:
            ema_metrics = validate(self.ema.module, self.val_sets, self.spec, self.truth, self.tasks, self.device)
            row.update({f"ema_{k}": round(v, 5) for k, v in ema_metrics.items()})
            candidates.append(("ema", self.ema.module, ema_metrics))
            if ema_metrics["score"] > self.best_ema:
                self.best_ema = ema_metrics["score"]
                save_weights(self.ema.module, self.run_dir / "ema.safetensors", self.run_dir.name)
        row["lr"] = self.scheduler.get_last_lr()[0]
        self.wall += time.time() - t_start
        row["time_s"] = round(self.wall, 1)
        for source, model, m in candidates:
            if m["score"] > self.best["score"]:
                self.best = {"score": m["score"], "source": source, "epoch": epoch, "metrics": m}
                self.recipe.keep_best(self, model)
            for t in self.tasks:  # per-task selection: headft composes each head's best epoch
                value = m[METRICS[t]]
                if value > self.task_best[t]["value"]:
                    self.task_best[t] = {"value": value, "epoch": epoch, "source": source}
                    self.recipe.keep_task_best(self, t, model)
        self.rows.append(row)
        self._keep_checkpoint(epoch, metrics["score"])
        self.recipe.finish_epoch(self)
        return metrics, row

    def _keep_checkpoint(self, epoch: int, value: float) -> None:
        folder = self.run_dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        entry = {"epoch": epoch, "score": round(value, 6), "file": f"checkpoints/epoch-{epoch:03d}.safetensors"}
        ranked = sorted(self.checkpoints + [entry], key=lambda e: (-e["score"], e["epoch"]))
        keep, drop = ranked[:self.config.keep_top], ranked[self.config.keep_top:]
        if entry in keep:
            save_weights(self.model, self.run_dir / entry["file"], self.run_dir.name)
        for e in drop:
            (self.run_dir / e["file"]).unlink(missing_ok=True)
        self.checkpoints = keep

    def write_logs(self) -> None:
        if self.rows:
            write_text(self.run_dir / "metrics.csv", csv_text(self.rows))
        if self.step_rows:
            write_text(self.run_dir / "steps.csv", csv_text(self.step_rows))
        if self.affinity_rows:  # every measurement, their mean as a matrix, and its heat map
            write_text(self.run_dir / "affinity_steps.csv", csv_text(self.affinity_rows))
            matrix = affinity_matrix(self.affinity_rows, self.tasks)
            write_text(self.run_dir / "affinity.csv", matrix_csv(matrix, self.tasks))
            n = len({r["step"] for r in self.affinity_rows})
            with atomic_path(self.run_dir / "affinity.png") as tmp:
                tmp.write_bytes(heatmap_png(matrix, self.tasks, f"{self.run_dir.name}: lookahead affinity, "
                                                                f"mean of {n} measurements"))
        if self.config.tensorboard:
            self.write_tensorboard()

    def write_tensorboard(self) -> None:
        """Append the rows not yet logged to runs/<run>/tensorboard/: every number of steps.csv as
        train/<column> at its step, of metrics.csv as epoch/<column> at its epoch (the same values)."""
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RunError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        rows_done, steps_done = self._tb_done
        for row in self.step_rows[steps_done:]:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}", value, row["step"])
        for row in self.rows[rows_done:]:
            for key, value in row.items():
                if key != "epoch" and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"epoch/{key}", value, row["epoch"])
        self._tb.flush()
        self._tb_done = (len(self.rows), len(self.step_rows))

    def write_info(self, status: str) -> None:
        best = None
        if self.best["metrics"]:
            best = {"epoch": self.best["epoch"], "source": self.best["source"],
                    **{k: round(v, 5) for k, v in self.best["metrics"].items()}}
        info = replace(RunInfo.read(self.run_dir), status=status, best=best, wall_time_s=round(self.wall, 1),
                       steps=self.step,
                       task_best={t: {METRICS[t]: round(b["value"], 5), "epoch": b["epoch"], "source": b.get("source")}
                                  for t, b in self.task_best.items() if b["epoch"] is not None},
                       checkpoints=self.checkpoints, best_ema_score=round(self.best_ema, 5) if self.ema else None)
        if self.budget is not None:
            info = replace(info, extra={**info.extra, "budget": self.budget})
        if self.affinity_rows:
            n = len({r["step"] for r in self.affinity_rows})
            info = replace(info, extra={**info.extra, "affinity": {
                "every": self.config.affinity_every, "measurements": n, "seconds": round(self.affinity_s, 2),
                "seconds_per_measurement": round(self.affinity_s / n, 3)}})
        info.write(self.run_dir)

    def run(self, progress: bool = True) -> Path:
        """Train to the last epoch. Ctrl-C marks the run "interrupted" (resume it from its last checkpoint).
        Of several processes, rank 0 alone prints; a failure of any (its own error, or a collective that
        lost a rank that died) ends each with one line saying how to resume."""
        progress = progress and self.dist.main
        self._tb_done = (len(self.rows), len(self.step_rows))  # rows made before this process: already logged
        if progress:
            for key, cache in self.image_caches.items():
                tqdm.write(f"image cache {key}: {cache.describe()}")
        try:
            return self._run(progress)
        except KeyboardInterrupt:
            if self.dist.main:
                self.write_info("interrupted")
            raise
        except RunError:  # the same on every rank (a non-finite global loss): its own message
            if self.dist.active and self.dist.main:
                self.write_info("interrupted")
            raise
        except Exception as e:
            if not self.dist.active:
                raise
            if self.dist.main:
                self.write_info("interrupted")
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise RunError(f"{self.run_dir}: rank {self.dist.rank} of {self.dist.world} stopped at step {self.step} "
                           f"({type(e).__name__}: {first}); resume from the last checkpoint with "
                           f"`mtwb train --resume {self.run_dir}` (any number of processes)") from None
        finally:
            self.close()

    def cache_notes(self) -> dict:
        """run.json's record of the decoded-image caches: where, how big, reused or built (and how long)."""
        if not self.image_caches:
            return {}
        return {"image_cache": {k: {"folder": str(c.folder), "mib": round(c.nbytes / 2**20, 1), "reused": c.reused,
                                    "seconds": round(c.seconds, 1)} for k, c in self.image_caches.items()}}

    def close(self) -> None:
        """Stop the background batch thread (a pending step's batches are dropped); close the TensorBoard log."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending = None

    def fit_budget(self, progress: bool) -> None:
        """Take the first CALIBRATION_STEPS steps, time all but the first and one validation, and set the
        steps per epoch (so the warmup / cosine schedule) that fill `config.budget` from the run's start
        (after set-up: building the image cache is not counted); recorded in run.json and state.pt.
        `refit_budget` corrects the count after every epoch."""
        config = self.config
        budget_s = parse_budget(config.budget)
        self.recipe.set_train_mode(self.model)
        t_start, wall0 = self.clock(), time.time()
        for k in range(CALIBRATION_STEPS):
            if k == 1:
                t_steps = self.clock()
            self.step_rows.append(self.train_step(prefetch_next=k < CALIBRATION_STEPS - 1))
        step_s = (self.clock() - t_steps) / (CALIBRATION_STEPS - 1)
        t_val = self.clock()
        if self.dist.main:  # several processes: rank 0 validates, and its timings set every rank's counts
            validate(self.model, self.val_sets, self.spec, self.truth, self.tasks, self.device)
        step_s, val_s = self.dist.broadcast((step_s, (self.clock() - t_val) * (2 if self.ema is not None else 1)))
        self.recipe.set_train_mode(self.model)
        elapsed = self.clock() - t_start
        self.steps = budget_steps(budget_s, elapsed, self.step, step_s, val_s, config.epochs)
        self.total = self.steps * config.epochs
        self.budget = {"budget": config.budget, "budget_s": budget_s, "step_s": round(step_s, 4),
                       "val_s": round(val_s, 2), "steps_per_epoch": self.steps, "steps": self.total,
                       "spent_s": elapsed, "end_s": round(val_s, 2)}
        self.steps, self.total, self.budget = self.dist.broadcast((self.steps, self.total, self.budget))
        self.step_times.extend([step_s] * (CALIBRATION_STEPS - 1))
        self._budget_mark = self.clock()
        self.wall += time.time() - wall0
        if progress:
            tqdm.write(f"budget {config.budget}: {step_s:.3f} s a step, {val_s:.1f} s a validation -> "
                       f"{self.total} steps ({config.epochs} epochs of {self.steps})")

    def refit_budget(self) -> None:
        """Re-count the steps still to take from what is left of the budget: the seconds spent so far
        (everything: steps, validations, writing), the mean of the last REFIT_WINDOW steps and the cost
        of the last epoch end, paid once more for every epoch not yet ended. Called after every epoch
        and every REFIT_EVERY steps: 5 timed steps are a noisy estimate and steps slow down or speed up
        as a run goes on (the first fit alone overran 5-minute budgets by 9-15% here). The steps of the
        epoch under way and of the later ones are set alike (at least the current epoch's steps taken,
        at least 1); the schedule follows the new total (build_scheduler takes it as a callable)."""
        now = self.clock()
        b = self.budget
        b["spent_s"] = b.get("spent_s", 0.0) + now - getattr(self, "_budget_mark", now)
        self._budget_mark = now
        left = self.config.epochs - self.epoch  # epochs not yet ended, the one under way included
        if left <= 0 or self.step == 0:
            return
        step_s = sum(self.step_times) / len(self.step_times) if self.step_times else b["step_s"]
        free = b["budget_s"] - b["spent_s"] - left * b.get("end_s", b["val_s"])
        steps_left = max(0, math.floor(free / max(step_s, 1e-9)))
        self.steps = max(1, self.epoch_step, math.ceil((self.epoch_step + steps_left) / left))
        self.total = self.step - self.epoch_step + self.steps * left
        b.update(steps_per_epoch=self.steps, steps=self.total, s_per_step_all_in=round(b["spent_s"] / self.step, 4))
        self.steps, self.total, self.budget = self.dist.broadcast((self.steps, self.total, b))  # rank 0's counts

    def _run(self, progress: bool) -> Path:
        config = self.config
        if config.budget and self.budget is None:
            self.fit_budget(progress)
        while self.epoch < config.epochs:
            self.recipe.set_train_mode(self.model)
            t_start = self._epoch_t0 = time.time()
            bar = Progress(self.steps, f"epoch {self.epoch + 1}/{config.epochs}", initial=self.epoch_step,
                           enabled=progress and self.dist.main, later=(config.epochs - self.epoch - 1) * self.steps)
            while self.epoch_step < self.steps:
                checkpoint_next = (self.epoch_step + 1 >= self.steps
                                   or bool(config.checkpoint_every and (self.step + 1) % config.checkpoint_every == 0))
                t_step = self.clock()
                row = self.train_step(prefetch_next=not checkpoint_next)
                self.step_rows.append(row)
                if self.budget is not None:
                    self.step_times.append(self.clock() - t_step)
                    if self.epoch_step % REFIT_EVERY == 0 and self.epoch_step < self.steps:
                        self.refit_budget()
                        bar.set_total(self.steps)
                        bar.later = (config.epochs - self.epoch - 1) * self.steps
                trained = [t for t in self.tasks if row[f"loss_{t}"] is not None]
                bar.update(1, items=sum(config.batch_size[t] for t in trained) * config.accum,
                           **{f"loss_{t}": row[f"loss_{t}"] for t in trained})
                if config.checkpoint_every and self.step % config.checkpoint_every == 0 and self.epoch_step < self.steps:
                    self.wall += time.time() - t_start
                    t_start = time.time()
                    if self.dist.main:
                        self.save_state()
            bar.close()
            self.end_epoch(t_start, progress)
        if self.dist.main:
            self.write_info("complete")
        return self.run_dir


def _run_id(config: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    parts = (*RECIPES[config.recipe].id_parts(config), config.backbone, stamp)
    return config.name or "-".join(x for x in parts if x)


def make_run_dir(config: TrainConfig, overwrite: bool) -> tuple[Path, Path | None, Lock]:
    """(the new run folder, the run it replaces moved aside or None, the new folder's lock, held for
    training). With --overwrite the old run is kept aside until the new run's first checkpoint (the new
    run can be resumed from then on): a refusal before it (weights that do not fit, a broken image, a
    Ctrl-C in the first epoch) puts it back (`abandon_run_dir`) instead of losing it. A run that another
    live process trains (or replaces) is refused, naming that process."""
    path = Path(config.runs_dir) / _run_id(config)
    aside = None
    if path.exists():
        if not overwrite:
            raise RunError(f"{path}: run already exists (choose another --name, or --overwrite, or resume it)")
        acquire(path / LOCK, "training")  # refused while another process trains it
        aside = path.with_name(f".{path.name}.replaced-{os.getpid()}")
        os.replace(path, aside)
    try:
        path.mkdir(parents=True)
    except FileExistsError:  # another process made it since
        if aside is not None:
            os.replace(aside, path)
        raise RunError(f"{path}: run already exists (made by another process just now)") from None
    lock = acquire(path / LOCK, "training")
    clean_leftovers(path.parent, path.name)  # what killed writers of this name left (not our `aside`)
    return path, aside, lock


def abandon_run_dir(path: Path, aside: Path | None) -> None:
    """Remove a run folder whose run never started; the run it was to replace comes back."""
    shutil.rmtree(path, ignore_errors=True)
    if aside is not None:
        (aside / LOCK).unlink(missing_ok=True)  # our lock on it
        os.replace(aside, path)


def resolve_config(config: TrainConfig) -> tuple[TrainConfig, Run | None]:
    """The settings a run of `config` starts from (what its config.yaml will hold: defaults resolved, and
    for headft the parent's architecture, sizes and normalisation inherited) and the parent run (or None)."""
    recipe = RECIPES[config.recipe]
    parent = recipe.open_parent(config)
    return recipe.inherit(config, parent), parent


def train(config: TrainConfig, overwrite: bool = False, progress: bool = True, kind: str | None = None,
          parents: list[str] | None = None, notes: dict | None = None) -> Path:
    """Start a run of `config.recipe`.

    Args:
        kind, parents: override run.json's kind and parents (distillation: "student", the teacher's runs).
        notes: extra run.json entries.

    Returns:
        The run folder, with run.json status "complete".
    """
    config, parent = resolve_config(config)
    spec = DatasetSpec(config.data)
    resolve_device(config.device)  # a device this machine lacks is refused before the run folder is made
    check_backbone(config.backbone)  # and so is a backbone name timm does not know
    dist = Dist.from_env(config.device)
    # several processes (torchrun): rank 0 makes the run folder and writes everything in it
    made, aside, lock = None, None, None
    if dist.main:
        try:
            made, aside, lock = make_run_dir(config, overwrite)
        except RunError as e:
            made = e.args[0] if e.args else str(e)
    made = dist.broadcast(made)
    if isinstance(made, str):  # rank 0 refused: every rank stops with its reason
        raise RunError(made)
    run_dir = made
    try:
        if dist.main:
            write_yaml(run_dir / "config.yaml", config.to_yaml_dict())
        trainer = Trainer(config, run_dir, parent, dist)
    except BaseException:  # refused before its first step: no half-made folder, the replaced run kept
        if dist.main:
            abandon_run_dir(run_dir, aside)
        raise
    trainer.lock = lock  # released when training ends, however it ends
    trainer.replaces = aside  # removed at the first checkpoint
    try:  # every epoch's end writes a checkpoint, so a run that ends has removed the run it replaces
        return start(trainer, spec, parent, kind, parents, notes, progress)
    except BaseException:
        if trainer.replaces is not None:  # stopped before its first checkpoint: nothing to resume, the old run back
            trainer.close()
            abandon_run_dir(run_dir, aside)
            print(f"{run_dir}: stopped before its first checkpoint; the run it was to replace is back", file=sys.stderr,
                  flush=True)
        raise


def start(trainer: Trainer, spec: DatasetSpec, parent: Run | None, kind: str | None, parents: list[str] | None,
          notes: dict | None, progress: bool) -> Path:
    """Write run.json (status running) and train from step 0."""
    config, run_dir, dist = trainer.config, trainer.run_dir, trainer.dist
    if not dist.main:
        return trainer.run(progress)
    RunInfo(run_id=run_dir.name, kind=kind or config.recipe,
            parents=tuple(parents if parents is not None else ([parent.id] if parent else [])),
            backbone=config.backbone, tasks=tuple(trainer.tasks), data=str(spec.path), status="running",
            model=trainer.model.config.to_dict(), img_size=dict(config.img_size),
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra={**(notes or {}), **trainer.cache_notes(), "precision": trainer.precision,
                   "classes": spec.class_lists(trainer.tasks), "data_sha256": hash_file(spec.path),
                   **({"world_size": dist.world} if dist.active else {})}).write(run_dir)
    return trainer.run(progress)


def with_legacy_defaults(fields: dict) -> dict:
    """A run's config.yaml settings with each setting it predates at the value it trained with (LEGACY_DEFAULTS)."""
    return {**LEGACY_DEFAULTS, **fields}


def inert_settings(fields: dict) -> set[str]:
    """The settings that change nothing in a run of these config.yaml settings (bench/run.py's reuse leaves
    them out): --clip-common without task clipping."""
    return {"clip_common"} if fields.get("clip", "none") != "task" else set()


def resume(run_ref: str | Path, runs_dir: Path = RUNS_DIR, progress: bool = True) -> Path:
    """Continue an interrupted run from its last checkpoint (state.pt); it ends as the uninterrupted run would."""
    path = Path(run_ref)
    if not (path / "config.yaml").exists():
        path = Path(runs_dir) / str(run_ref)
    if not (path / "config.yaml").exists():
        raise RunError(f"{path}: not a run folder (no config.yaml)")
    info = RunInfo.read(path) if (path / "run.json").exists() else None  # none: killed while it was being built
    if info is not None and info.status == "complete":
        raise RunError(f"{path}: run is complete; nothing to resume")
    config = TrainConfig(**with_legacy_defaults(TrainConfig.read_yaml(path / "config.yaml")))
    parent = RECIPES[config.recipe].open_parent(config)
    dist = Dist.from_env(config.device)
    lock = acquire(path / LOCK, "training") if dist.main else None  # refused while another process trains it
    try:
        trainer = Trainer(config, path, parent, dist)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    trainer.lock = lock
    if not (path / STATE).exists():
        # killed before its first checkpoint: nothing was kept, so it starts again from step 0 (the same
        # seed: the run it ends as is the one that was never interrupted)
        print(f"{path}: no checkpoint yet ({STATE} is written at the end of the first epoch): starting again "
              "from step 0", flush=True)
        extra = {k: v for k, v in (info.extra if info else {}).items() if k == "distill"}  # distill's notes
        return start(trainer, DatasetSpec(config.data), parent, info.kind if info else None,
                     list(info.parents) if info else None, extra, progress)
    try:
        state = torch.load(path / STATE, map_location=trainer.device, weights_only=True)
    except Exception as e:
        raise RunError(f"{path / STATE}: cannot read the checkpoint ({e})") from None
    trainer.load_state(state)
    trainer.step_rows = [r for r in trainer.step_rows if r["step"] < trainer.step]
    return trainer.run(progress)
