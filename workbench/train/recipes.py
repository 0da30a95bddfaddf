"""Training recipes: what a `joint`, `single` or `headft` run does differently, one class each.

`RECIPES` maps a recipe name (`TrainConfig.recipe`, run.json's default kind) to its `Recipe`; the
trainer looks the recipe up once and calls it at the few points where runs differ: checking the
config, opening the run it starts from, building the model, the train mode, keeping the best weights
and the default run id. A new recipe is one `@register_recipe` subclass of `Recipe`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from workbench.data.spec import DatasetSpec
from workbench.errors import RunError
from workbench.records.tasks import METRICS
from workbench.models.model import ModelConfig, MultiTaskModel, one_pass
from workbench.runs import WEIGHTS, Run, load_model, open_run, save_weights

if TYPE_CHECKING:
    from workbench.train.trainer import Trainer, TrainConfig

RECIPES: dict[str, Recipe] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make `cls.name` a recipe that TrainConfig accepts and the trainer runs."""
    RECIPES[cls.name] = cls()
    return cls


def list_recipes() -> list[str]:
    return list(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called `name`; RunError naming the recipes there are if there is none."""
    if name not in RECIPES:
        raise RunError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]


def build_model(spec: DatasetSpec, config: TrainConfig) -> MultiTaskModel:
    """A new model of `config`'s architecture, its heads sized for `spec`'s classes."""
    return MultiTaskModel(ModelConfig(backbone=config.backbone, num_cls=len(spec.cls_classes),
                                      num_det=len(spec.det_category_ids), num_seg=len(spec.seg_classes),
                                      neck_channels=config.neck_channels, head_convs=config.head_convs, heads=config.heads,
                                      norm_stats=config.norm_stats, pretrained=config.pretrained,
                                      mean=config.mean, std=config.std))


class Recipe:
    """A run of a new model on `config.tasks`; subclasses override what their runs do differently."""

    name = ""

    def check(self, config: TrainConfig) -> None:
        """Raise RunError if `config` does not suit this recipe (TrainConfig checks the rest)."""
        if not config.backbone:
            raise RunError("a backbone is required (any timm model name with features_only support)")

    def open_parent(self, config: TrainConfig) -> Run | None:
        """The run this one starts from (None: it starts from a new model)."""
        return None

    def inherit(self, config: TrainConfig, parent: Run | None) -> TrainConfig:
        """`config` completed with what it takes from `parent` (before it is written to config.yaml)."""
        return config

    def id_parts(self, config: TrainConfig) -> tuple[str, ...]:
        """The start of the default run id (the backbone and a time stamp follow)."""
        return (self.name,)

    def build_model(self, spec: DatasetSpec, config: TrainConfig, parent: Run | None,
                    device: torch.device) -> MultiTaskModel:
        """The model to train, on `device`; called right after torch is seeded with `config.seed`."""
        return build_model(spec, config).to(device)

    def set_train_mode(self, model: MultiTaskModel) -> None:
        """Put `model` in training mode at the start of an epoch."""
        model.train()

    def keep_best(self, trainer: Trainer, model: MultiTaskModel) -> None:
        """`model` (the raw or the EMA weights) has just reached the best val score of the run."""
        save_weights(model, trainer.run_dir / WEIGHTS, trainer.run_dir.name)

    def keep_task_best(self, trainer: Trainer, task: str, model: MultiTaskModel) -> None:
        """`model` has just reached the best val metric of `task`."""

    def finish_epoch(self, trainer: Trainer) -> None:
        """The epoch is validated and its checkpoint kept; the logs and state.pt are written next."""


@register_recipe
class Joint(Recipe):
    """All the tasks asked, on one backbone."""

    name = "joint"


@register_recipe
class Single(Recipe):
    """One task alone: the baseline every comparison needs."""

    name = "single"

    def check(self, config: TrainConfig) -> None:
        if len(config.tasks) != 1:
            raise RunError(f"recipe single trains one task, got {list(config.tasks)}")
        super().check(config)

    def id_parts(self, config: TrainConfig) -> tuple[str, ...]:
        return (self.name, config.tasks[0])


@register_recipe
class HeadFineTune(Recipe):
    """The heads of `from_run` fine-tuned on its frozen backbone and neck; model.safetensors composes
    each head at its own best epoch. Backbone, sizes and normalisation come from `from_run`. With
    `unfreeze` (by default the neck for `--one-pass`) those shared parts train too, and the best epoch by
    score is kept whole."""

    name = "headft"

    def check(self, config: TrainConfig) -> None:
        if not config.from_run:
            raise RunError("recipe headft needs --from RUN (a joint run to fine-tune the heads of)")

    def open_parent(self, config: TrainConfig) -> Run:
        return open_run(config.from_run, Path(config.runs_dir))

    def inherit(self, config: TrainConfig, parent: Run) -> TrainConfig:
        """headft takes the parent's architecture, input sizes and normalisation; with `--one-pass`
        (norm_stats "frozen") a parent with per-task statistics gets them merged (models.model.one_pass)."""
        model = parent.model_config()
        norm_stats = model.norm_stats
        if config.norm_stats == "frozen" and model.norm_stats == "task":
            missing = [t for t in parent.info.tasks if t not in config.tasks]
            if missing:
                raise RunError(f"--one-pass changes the features of every task of {parent.id}: fine-tune every head "
                               f"(--tasks {','.join(parent.info.tasks)}), not without {', '.join(missing)}")
            norm_stats = "frozen"
        stale = [t for t in parent.info.tasks if t not in config.tasks  # cls's head reads the backbone, not the neck
                 and (t != "cls" or "norms" in config.unfreeze)]
        if config.unfreeze and stale:
            raise RunError(f"--unfreeze {','.join(config.unfreeze)} changes features that the {', '.join(stale)} "
                           f"head of {parent.id} reads: fine-tune it too (--tasks {','.join(parent.info.tasks)})")
        return replace(config, backbone=model.backbone, neck_channels=model.neck_channels, head_convs=model.head_convs,
                       heads=model.heads, norm_stats=norm_stats, pretrained=None,
                       mean=model.mean, std=model.std, img_size=dict(parent.info.img_size or config.img_size))

    def build_model(self, spec: DatasetSpec, config: TrainConfig, parent: Run, device: torch.device) -> MultiTaskModel:
        model = load_model(parent, device).train()
        if config.norm_stats == "frozen":
            model = one_pass(model)  # one set of statistics: the backbone runs once for every task
        for p in [*model.backbone.parameters(), *model.neck.parameters()]:
            p.requires_grad_(False)
        if "norms" in config.unfreeze:  # scales and shifts only: the running statistics stay (eval mode)
            for m in model._norms:
                m.requires_grad_(True)
        if "neck" in config.unfreeze:
            model.neck.requires_grad_(True)
        return model

    def set_train_mode(self, model: MultiTaskModel) -> None:
        model.train()
        model.backbone.eval()  # frozen parts keep their BatchNorm statistics
        model.neck.eval()

    def keep_best(self, trainer: Trainer, model: MultiTaskModel) -> None:
        if trainer.config.unfreeze:  # the heads were trained on the shared parts of this epoch: keep them together
            super().keep_best(trainer, model)
        # else model.safetensors is composed head by head in finish_epoch

    def keep_task_best(self, trainer: Trainer, task: str, model: MultiTaskModel) -> None:
        if not trainer.config.unfreeze:
            trainer.head_states[task] = {k: v.detach().clone() for k, v in model.heads[task].state_dict().items()}

    def finish_epoch(self, trainer: Trainer) -> None:
        """The frozen backbone and neck with each head at its best epoch -> model.safetensors.

        The model being trained still holds the parent's backbone and neck (frozen, BatchNorm in eval
        mode) and the heads not fine-tuned, so only the chosen heads' tensors are swapped in. With
        `unfreeze` the heads share trained parts: the best epoch by score is kept whole (keep_best)."""
        if trainer.config.unfreeze:
            return
        state = dict(trainer.model.state_dict())
        for t, head in trainer.head_states.items():
            state.update({f"heads.{t}.{k}": v for k, v in head.items()})
        save_weights(state, trainer.run_dir / WEIGHTS, trainer.run_dir.name)
        metrics = {METRICS[t]: trainer.task_best[t]["value"] for t in trainer.tasks}
        metrics["score"] = float(np.mean(list(metrics.values())))
        trainer.best = {"score": metrics["score"], "source": "per-task heads",
                        "epoch": {t: trainer.task_best[t]["epoch"] for t in trainer.tasks}, "metrics": metrics}
