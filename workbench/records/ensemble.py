"""The ensemble records: members (a run and a TTA spec), box fusion settings, and the EnsembleSpec
of `ensembles/<name>.yaml` (per task: members, weights, fusion), with its one reader and writer.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from workbench.errors import DataError, WorkbenchError, did_you_mean
from workbench.io import write_yaml
from workbench.records.tasks import TASKS

ENSEMBLE_VERSION = 1  # specs from before the field existed are version 1 too


@dataclass(frozen=True)
class Member:
    """A run (id or folder) and the TTA spec of its predictions."""

    run: str
    tta: str = "none"

    @property
    def ref(self) -> str:
        """The text `parse_member` reads back: RUN or RUN@TTA."""
        return self.run if self.tta == "none" else f"{self.run}@{self.tta}"

    @property
    def label(self) -> str:
        name = Path(self.run).name
        return name if self.tta == "none" else f"{name}@{self.tta}"


def parse_member(text: str) -> Member:
    """'RUN' -> Member(RUN); 'RUN@SPEC' -> Member(RUN, SPEC). The spec may itself contain '@'
    (`run@hflip@det+seg`): only the first '@' separates the run."""
    run, at, tta = text.partition("@")
    return Member(run, tta if at else "none")


@dataclass(frozen=True)
class FusionConfig:
    """How boxes are fused (ensemble-boxes): method, IoU threshold, minimum box score."""

    det_method: str = "wbf"
    iou_thr: float = 0.55
    skip_box_thr: float = 0.0


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


def spec_file(refs) -> str | None:
    """The ENSEMBLE.yaml a command was given when REFS is one spec file; None when they are members (RUN or
    RUN@TTA)."""
    return refs[0] if len(refs) == 1 and str(refs[0]).endswith((".yaml", ".yml")) else None


@dataclass(frozen=True)
class EnsembleSpec:
    """Per-task blends plus free-form records (search settings, val scores)."""

    tasks: dict[str, TaskBlend]
    info: dict = field(default_factory=dict)

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
        return {"version": ENSEMBLE_VERSION, "tasks": tasks, **self.info}

    @classmethod
    def from_dict(cls, d: dict, source: str = "ensemble spec") -> "EnsembleSpec":
        version = d.get("version", 1) if isinstance(d, dict) else 1
        if not isinstance(version, int) or version > ENSEMBLE_VERSION:
            raise DataError(source, f"ensemble spec version {version!r} is newer than this workbench reads "
                                    f"({ENSEMBLE_VERSION})")

        def where(task: str | None = None, i: int | None = None) -> str:
            return "".join([f"tasks.{task}" if task else "", f".members[{i}]" if i is not None else ""])

        def known(d: dict, keys, at: str) -> None:
            for key in d:
                if key not in keys:
                    raise DataError(source, f"{at or 'top level'}: unknown key {key!r}{did_you_mean(key, keys)} "
                                            f"(expected {', '.join(keys)})")

        def mapping(value, at: str) -> dict:
            if not isinstance(value, dict):
                raise DataError(source, f"{at}: expected a mapping, got {type(value).__name__}")
            return value

        d = mapping(d, "top level")
        if "tasks" not in d:
            raise DataError(source, f"not an ensemble spec: no 'tasks' key{did_you_mean('tasks', map(str, d))}")
        given = mapping(d["tasks"], "tasks")
        known(given, TASKS, "tasks")
        tasks = {}
        for t in TASKS:
            if t not in given:
                raise DataError(source, f"tasks: no {t!r} entry (a spec blends every task: cls, det and seg)")
            entry = mapping(given[t], where(t))
            known(entry, ("members", "fusion") if t == "det" else ("members",), where(t))
            if not isinstance(entry.get("members"), list) or not entry["members"]:
                raise DataError(source, f"{where(t)}: 'members' must be a non-empty list of member/weight entries")
            members, weights = [], []
            for i, x in enumerate(entry["members"]):
                x = mapping(x, where(t, i))
                known(x, ("member", "weight"), where(t, i))
                for key in ("member", "weight"):
                    if key not in x:
                        raise DataError(source, f"{where(t, i)}: no {key!r} key")
                try:
                    members.append(parse_member(str(x["member"])))
                    weights.append(float(x["weight"]))
                except (TypeError, ValueError, WorkbenchError) as e:
                    raise DataError(source, f"{where(t, i)}: {e}") from None
            fusion = mapping(entry.get("fusion", {}), f"{where(t)}.fusion")
            known(fusion, tuple(FusionConfig.__dataclass_fields__), f"{where(t)}.fusion")
            try:
                tasks[t] = TaskBlend(tuple(members), tuple(weights), FusionConfig(**fusion))
            except WorkbenchError as e:
                raise DataError(source, f"{where(t)}: {e}") from None
        return cls(tasks, {k: v for k, v in d.items() if k not in ("tasks", "version")})

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
