"""Ensemble specs in use: an equal-weights spec of members, and the blend a spec describes.

The spec itself (`ensembles/<name>.yaml`) is a record: workbench.records.ensemble.
"""
from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.ensemble.members import member_tasks, serving
from workbench.fuse import blend
from workbench.models.inference import merge_tasks
from workbench.records import TASKS, Predictions
from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend


def equal_spec(members: list[Member], weights: tuple[float, ...] | None = None,
               fusion: FusionConfig = FusionConfig()) -> EnsembleSpec:
    """The same members and weights for every task (each task taking the members that serve it)."""
    w = tuple(weights) if weights else (1.0,) * len(members)
    if len(w) != len(members):
        raise WorkbenchError(f"{len(w)} weights for {len(members)} members")
    blends = {}
    for t in TASKS:
        idx = serving(list(members), t)
        blends[t] = TaskBlend(tuple(members[i] for i in idx), tuple(w[i] for i in idx), fusion)
    return EnsembleSpec(blends)


def check_serving(spec: EnsembleSpec) -> None:
    """Refuse a spec that gives a task to a member whose run was not trained for it.

    Raises:
        WorkbenchError: naming the task, the member and the tasks its run serves.
    """
    for t in TASKS:
        for m in spec.tasks[t].members:
            tasks = member_tasks(m)
            if t not in tasks:
                raise WorkbenchError(f"tasks.{t}: member '{m.ref}' does not serve {t} (its run was trained for "
                                     f"{', '.join(tasks)} only); remove it from {t}'s members")


def blend_spec(spec: EnsembleSpec, preds: dict[Member, Predictions]) -> Predictions:
    """Blend each task with its own members, weights and fusion; merge the tasks (after `check_serving`)."""
    check_serving(spec)
    parts = {}
    for t in TASKS:
        tb = spec.tasks[t]
        parts[t] = blend([preds[m] for m in tb.members], tb.weights, tb.fusion, tasks=(t,))
    return merge_tasks(parts["cls"], parts["det"], parts["seg"])
