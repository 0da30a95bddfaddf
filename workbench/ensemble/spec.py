"""Ensemble specs (`ensembles/<name>.yaml`): per task, its members (run + TTA), weights and fusion.

A spec holds everything needed to rebuild a blend; `wb submit ENSEMBLE.yaml` reads it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from workbench.errors import DataError, WorkbenchError
from workbench.ensemble.members import Member, parse_member, serving
from workbench.fuse import FusionConfig, blend
from workbench.io import write_yaml
from workbench.models.inference import merge_tasks
from workbench.predictions import Predictions

TASKS = ("cls", "det", "seg")


@dataclass(frozen=True)
class TaskBlend:
    """The blend of one task: members, their weights (same order) and the box fusion (det)."""

    members: tuple[Member, ...]
    weights: tuple[float, ...]
    fusion: FusionConfig = FusionConfig()

    def __post_init__(self):
        if not self.members or len(self.members) != len(self.weights):
            raise WorkbenchError(f"a task blend needs members and one weight each, got {len(self.members)} "
                                 f"members and {len(self.weights)} weights")
        if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
            raise WorkbenchError(f"weights must be non-negative with a positive sum, got {list(self.weights)}")


@dataclass(frozen=True)
class EnsembleSpec:
    """Per-task blends plus free-form records (search settings, val scores)."""

    tasks: dict[str, TaskBlend]
    info: dict = field(default_factory=dict)

    @classmethod
    def equal(cls, members: list[Member], weights: tuple[float, ...] | None = None,
              fusion: FusionConfig = FusionConfig()) -> "EnsembleSpec":
        """The same members and weights for every task (each task taking the members that serve it)."""
        w = tuple(weights) if weights else (1.0,) * len(members)
        if len(w) != len(members):
            raise WorkbenchError(f"{len(w)} weights for {len(members)} members")
        blends = {}
        for t in TASKS:
            idx = serving(list(members), t)
            blends[t] = TaskBlend(tuple(members[i] for i in idx), tuple(w[i] for i in idx), fusion)
        return cls(blends)

    def members(self) -> list[Member]:
        """Distinct members over all tasks, in order of first use."""
        seen: dict[Member, None] = {}
        for t in TASKS:
            for m in self.tasks[t].members:
                seen.setdefault(m, None)
        return list(seen)

    def to_dict(self) -> dict:
        tasks = {}
        for t in TASKS:
            tb = self.tasks[t]
            tasks[t] = {"members": [{"member": m.ref, "weight": float(w)} for m, w in zip(tb.members, tb.weights)]}
            if t == "det":
                tasks[t]["fusion"] = asdict(tb.fusion)
        return {"tasks": tasks, **self.info}

    @classmethod
    def from_dict(cls, d: dict, source: str = "ensemble spec") -> "EnsembleSpec":
        try:
            tasks = {}
            for t in TASKS:
                entry = d["tasks"][t]
                members = tuple(parse_member(str(x["member"])) for x in entry["members"])
                weights = tuple(float(x["weight"]) for x in entry["members"])
                tasks[t] = TaskBlend(members, weights, FusionConfig(**entry.get("fusion", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(source, f"not an ensemble spec ({type(e).__name__}: {e})") from None
        return cls(tasks, {k: v for k, v in d.items() if k != "tasks"})

    def save(self, path: str | Path) -> None:
        write_yaml(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "EnsembleSpec":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "ensemble spec not found")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise DataError(path, f"invalid YAML ({e})") from None
        return cls.from_dict(d or {}, str(path))


def blend_spec(spec: EnsembleSpec, preds: dict[Member, Predictions]) -> Predictions:
    """Blend each task with its own members, weights and fusion; merge the tasks."""
    parts = {}
    for t in TASKS:
        tb = spec.tasks[t]
        parts[t] = blend([preds[m] for m in tb.members], tb.weights, tb.fusion, tasks=(t,))
    return merge_tasks(parts["cls"], parts["det"], parts["seg"])
