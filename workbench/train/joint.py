"""Joint training: every optimizer step takes one batch of each task and sums their losses.

`train_joint(config)` is the whole stage: it reads the data set, trains, validates each epoch on
`val`, keeps the best checkpoint by the combined score and leaves a complete run folder.
"""
from __future__ import annotations

import csv
import io
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from workbench.data.loaders import build_datasets, collate_det
from workbench.data.spec import TASKS, DatasetSpec
from workbench.errors import RunError
from workbench.io import write_json, write_text, write_yaml
from workbench.metrics.scoring import score, split_ground_truth
from workbench.models.inference import merge_tasks, predict_all
from workbench.models.losses import cls_loss, det_loss, seg_loss
from workbench.models.model import ModelConfig, MultiTaskModel, resolve_device
from workbench.predictions import to_submission
from workbench.runs import RUNS_DIR, save_weights

DEFAULT_SIZES = {"cls": 64, "det": 128, "seg": 128}
DEFAULT_BATCH = {"cls": 32, "det": 8, "seg": 8}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a joint run needs; written to `runs/<id>/config.yaml`."""

    data: str
    backbone: str
    epochs: int = 10
    img_size: dict = field(default_factory=lambda: dict(DEFAULT_SIZES))
    batch_size: dict = field(default_factory=lambda: dict(DEFAULT_BATCH))
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    neck_channels: int = 64
    pretrained: str | None = None
    mean: tuple[float, float, float] | None = None  # input normalisation; None: the backbone's pretrained_cfg
    std: tuple[float, float, float] | None = None
    seed: int = 0
    device: str = "auto"
    steps_per_epoch: int | None = None  # None: the largest task's batches per epoch
    name: str | None = None
    runs_dir: str = str(RUNS_DIR)

    def __post_init__(self):
        for task in TASKS:
            size = self.img_size.get(task)
            if not isinstance(size, int) or size < 32 or size % 32:
                raise RunError(f"img_size for {task} must be a multiple of 32 (>= 32), got {size!r}")
            if int(self.batch_size.get(task, 0)) < 1:
                raise RunError(f"batch_size for {task} must be >= 1")
        if self.epochs < 1:
            raise RunError("epochs must be >= 1")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cycle(loader: DataLoader) -> Iterator:
    """Endless iteration over a loader, reshuffled every pass."""
    while True:
        yield from loader


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def build_model(spec: DatasetSpec, config: TrainConfig) -> MultiTaskModel:
    return MultiTaskModel(ModelConfig(backbone=config.backbone, num_cls=len(spec.cls_classes),
                                      num_det=len(spec.det_category_ids), num_seg=len(spec.seg_classes),
                                      neck_channels=config.neck_channels, pretrained=config.pretrained,
                                      mean=tuple(config.mean) if config.mean else None,
                                      std=tuple(config.std) if config.std else None))


def task_loss(model, task: str, batch, device, ignore_index: int) -> torch.Tensor:
    """Loss of one task's batch."""
    if task == "det":
        images, boxes, labels = batch
        out = model(images.to(device), tasks=("det",))["det"]
        return det_loss(out, [b.to(device) for b in boxes], [lab.to(device) for lab in labels])
    images, target = batch
    out = model(images.to(device), tasks=(task,))[task]
    if task == "cls":
        return cls_loss(out, target.to(device))
    return seg_loss(out, target.to(device), ignore_index)


def make_run_dir(config: TrainConfig, overwrite: bool) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id = config.name or f"joint-{config.backbone}-{stamp}"
    path = Path(config.runs_dir) / run_id
    if path.exists():
        if not overwrite:
            raise RunError(f"{path}: run already exists (choose another --name, or --overwrite)")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def train_joint(config: TrainConfig, overwrite: bool = False, progress: bool = True) -> Path:
    """Train a joint run.

    Args:
        config: TrainConfig.
        overwrite: replace an existing run folder of the same name.
        progress: show progress bars.
    Returns:
        The run folder, with run.json status "complete" and the best checkpoint by val score.
    """
    t0 = time.time()
    seed_everything(config.seed)
    spec = DatasetSpec(config.data)
    device = resolve_device(config.device)
    train_sets = build_datasets(spec, "train", config.img_size, train=True, seed=config.seed)
    val_sets = build_datasets(spec, "val", config.img_size)
    val_truth = split_ground_truth(spec, "val")
    model = build_model(spec, config).to(device)

    gen = torch.Generator().manual_seed(config.seed)
    loaders = {t: cycle(DataLoader(ds, batch_size=config.batch_size[t], shuffle=True, drop_last=len(ds) > config.batch_size[t],
                                   generator=gen, num_workers=0, collate_fn=collate_det if t == "det" else None))
               for t, ds in train_sets.items()}
    steps = config.steps_per_epoch or max(math.ceil(len(ds) / config.batch_size[t]) for t, ds in train_sets.items())
    total = steps * config.epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, min(config.warmup_steps, total // 5 + 1)))

    run_dir = make_run_dir(config, overwrite)
    cfg = {**asdict(config), "mean": list(config.mean) if config.mean else None,
           "std": list(config.std) if config.std else None}
    write_yaml(run_dir / "config.yaml", cfg)
    info = {"run_id": run_dir.name, "kind": "joint", "parents": [], "backbone": config.backbone,
            "data": str(spec.path), "status": "running", "model": model.config.to_dict(),
            "img_size": dict(config.img_size), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "best": None}
    write_json(run_dir / "run.json", info)

    rows, best = [], -1.0
    for epoch in range(1, config.epochs + 1):
        model.train()
        sums = {t: 0.0 for t in TASKS}
        bar = tqdm(range(steps), desc=f"epoch {epoch}/{config.epochs}", disable=None if progress else True, leave=False)
        for _ in bar:
            optimizer.zero_grad(set_to_none=True)
            for task in TASKS:  # backward per task frees each graph; gradients add up to the summed loss
                loss = task_loss(model, task, next(loaders[task]), device, spec.ignore_index)
                if not torch.isfinite(loss):
                    raise RunError(f"{run_dir}: {task} loss is {loss.item()} at epoch {epoch}; lower --lr")
                loss.backward()
                sums[task] += loss.item()
            optimizer.step()
            scheduler.step()
            bar.set_postfix({t: f"{sums[t] / (bar.n + 1):.3f}" for t in TASKS})
        out, _ = predict_all(model, val_sets, spec.det_category_ids, device)
        preds = merge_tasks(out["cls"][0], out["det"][0], out["seg"][0])
        metrics = score(to_submission(preds, spec.cls_classes, len(spec.seg_classes)), val_truth)
        row = {"epoch": epoch, **{f"loss_{t}": round(sums[t] / steps, 5) for t in TASKS},
               **{k: round(v, 5) for k, v in metrics.items()}, "lr": scheduler.get_last_lr()[0],
               "time_s": round(time.time() - t0, 1)}
        rows.append(row)
        write_text(run_dir / "metrics.csv", _csv(rows))
        if metrics["score"] > best:
            best = metrics["score"]
            save_weights(model, run_dir / "model.safetensors")
            info["best"] = {"epoch": epoch, **{k: round(v, 5) for k, v in metrics.items()}}
        info["wall_time_s"] = round(time.time() - t0, 1)
        write_json(run_dir / "run.json", info)
        if progress:
            tqdm.write(f"epoch {epoch}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    info["status"] = "complete"
    info["wall_time_s"] = round(time.time() - t0, 1)
    write_json(run_dir / "run.json", info)
    return run_dir


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
