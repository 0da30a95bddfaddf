"""The RunInfo record: `runs/<run_id>/run.json`, what a run is and how it went.

Written by the train stage (at the start, at each epoch's end, when stopped) and by checkpoint
averaging; read by every stage that opens a run. A run folder rebuilds its model from `model`
alone (nanoGPT's checkpoint carrying its own model arguments).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from workbench.errors import DataError, RunError
from workbench.io import load_json, write_json
from workbench.records.tasks import TASKS

FILE = "run.json"
RUN_INFO_VERSION = 1  # run.json files from before the field existed are version 1 too
STATUSES = ("running", "interrupted", "complete")


@dataclass(frozen=True)
class RunInfo:
    """run.json.

    Attributes:
        run_id: the folder's name.
        kind: joint | single | headft | student | avg (the recipe, or what made the run).
        tasks: the tasks the run serves.
        data: the dataset.yaml it trained on (absolute path).
        model: the ModelConfig as a dict (`ModelConfig.from_dict`); {} in a hand-made run.json.
        img_size: task -> input size it trained at.
        backbone: the timm backbone's name.
        parents: run ids it was made from (headft: the joint run; student: the teachers; avg: the run).
        status: running | interrupted | complete.
        created: ISO time of creation (UTC).
        best: the best val metrics {"epoch", "source", "cls_top1", ..., "score"}, None before the first epoch.
        wall_time_s, steps: training time and optimizer steps so far.
        task_best: task -> {metric, "epoch", "source"} of its best epoch.
        checkpoints: the kept top-k checkpoints [{"epoch", "score", "file"}].
        best_ema_score: best val score of the EMA weights (None without EMA).
        averaged: the checkpoints an "avg" run averaged [{"epoch", "score"}].
        extra: further entries (distillation's record under "distill"), written at the top level.
        version: RUN_INFO_VERSION.
    """

    run_id: str
    kind: str
    tasks: tuple[str, ...]
    data: str
    model: dict
    img_size: dict
    backbone: str | None = None
    parents: tuple[str, ...] = ()
    status: str = "running"
    created: str = ""
    best: dict | None = None
    wall_time_s: float | None = None
    steps: int | None = None
    task_best: dict = field(default_factory=dict)
    checkpoints: list = field(default_factory=list)
    best_ema_score: float | None = None
    averaged: list | None = None
    extra: dict = field(default_factory=dict)
    version: int = RUN_INFO_VERSION

    def to_dict(self) -> dict:
        """run.json's content: the fields (tuples as lists, None-valued optional ones left out) and `extra` flat."""
        d = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name in ("wall_time_s", "steps", "best_ema_score", "averaged"):
                continue
            d[f.name] = list(value) if isinstance(value, tuple) else value
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict, source: str | Path = FILE) -> "RunInfo":
        """Build from run.json's content; keys that are not fields go to `extra`.

        Raises:
            RunError: not an object, a required field missing, or a newer version (names `source`).
        """
        if not isinstance(d, dict):
            raise RunError(f"{source}: run.json holds a {type(d).__name__}, expected an object")
        version = d.get("version", 1)
        if not isinstance(version, int) or version > RUN_INFO_VERSION:
            raise RunError(f"{source}: run.json version {version!r} is newer than this workbench reads "
                           f"({RUN_INFO_VERSION}); upgrade the workbench")
        names = {f.name for f in fields(cls)} - {"extra"}
        missing = [k for k in ("run_id", "kind", "data") if k not in d]
        if missing:
            raise RunError(f"{source}: run.json lacks {', '.join(missing)}")
        known = {k: v for k, v in d.items() if k in names}
        known["tasks"] = tuple(d.get("tasks") or TASKS)  # runs from before single-task recipes: all three
        known["parents"] = tuple(d.get("parents") or ())
        # an (H, W) size comes back from JSON as a list
        known["img_size"] = {t: tuple(v) if isinstance(v, list) else v for t, v in (d.get("img_size") or {}).items()}
        known.setdefault("model", {})
        return cls(**known, extra={k: v for k, v in d.items() if k not in names})

    @classmethod
    def read(cls, run_dir: str | Path) -> "RunInfo":
        """Read `run_dir`/run.json.

        Raises:
            RunError: missing, unreadable, or not a run.json (the message names the file).
        """
        path = Path(run_dir) / FILE
        if not path.is_file():
            raise RunError(f"{run_dir}: not a run folder (no {FILE})")
        try:
            d = load_json(path)
        except DataError as e:  # a run that cannot be read is a run error to the stages that open it
            raise RunError(f"{path}: cannot read run.json ({e.problem})") from None
        return cls.from_dict(d, path)

    def write(self, run_dir: str | Path) -> None:
        """Write `run_dir`/run.json atomically."""
        write_json(Path(run_dir) / FILE, self.to_dict())
