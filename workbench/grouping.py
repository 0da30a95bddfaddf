"""Which tasks should share a backbone: rank the partitions of the tasks into groups (one backbone per
group) from a joint run's lookahead affinity (`train.affinity`), under an inference budget counted in
backbones; optionally train every candidate at an equal total budget and score it on val, so that the
cheap estimate can be checked against the truth.

Budget arithmetic (Standley et al., ICML 2020): a full-size backbone counts 1, a half-size one 0.5; a
partition fits a budget B when its groups can be given sizes whose sum is at most B. Among the ways it
fits, the one with the most full-size backbones is taken (the larger groups get them first).

Predicted score of a partition (Fifty et al., NeurIPS 2021): for each task j, the mean affinity onto j
from the other tasks of its group (0 for a task alone: nothing helps or hurts it); averaged over the
tasks. Higher is better; ties go to the partition with fewer backbones. It knows nothing of capacity:
a half-size backbone scores as a full one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workbench.errors import RunError, WorkbenchError
from workbench.records.tasks import TASKS

FULL, HALF = 1.0, 0.5
AFFINITY_FILE = "affinity.csv"


def partitions(tasks: tuple[str, ...]) -> list[tuple[tuple[str, ...], ...]]:
    """Every partition of `tasks` into non-empty groups (Bell(n): 5 for three tasks); groups keep the
    tasks' order, partitions go from one group to one group per task."""
    if not tasks:
        return [()]
    first, rest = tasks[0], tasks[1:]
    out = []
    for sub in partitions(rest):
        out.append(((first,),) + sub)  # `first` alone
        for k in range(len(sub)):  # or joining one of the groups
            out.append(sub[:k] + ((first,) + sub[k],) + sub[k + 1:])
    order = {t: i for i, t in enumerate(tasks)}
    canonical = {tuple(sorted((tuple(sorted(g, key=order.get)) for g in p), key=lambda g: order[g[0]])) for p in out}
    return sorted(canonical, key=lambda p: (len(p), [[order[t] for t in g] for g in p]))


def fit_sizes(groups: tuple[tuple[str, ...], ...], max_backbones: float) -> tuple[float, ...] | None:
    """Backbone sizes (FULL or HALF per group) that fit `max_backbones`, as many full ones as fit, the
    larger groups first; None when even all-half does not fit."""
    n = len(groups)
    full = min(n, math.floor((max_backbones - HALF * n) / (FULL - HALF) + 1e-9))  # k full: n/2 + k/2 <= B
    if full < 0:
        return None
    by_size = sorted(range(n), key=lambda k: (-len(groups[k]), k))
    chosen = set(by_size[:full])
    return tuple(FULL if k in chosen else HALF for k in range(n))


def predicted_score(groups: tuple[tuple[str, ...], ...], affinity: np.ndarray, tasks: tuple[str, ...]) -> float:
    """Mean over the tasks of the mean affinity onto each from the other tasks of its group (module doc)."""
    index = {t: k for k, t in enumerate(tasks)}
    per_task = []
    for group in groups:
        for j in group:
            others = [affinity[index[i], index[j]] for i in group if i != j]
            per_task.append(float(np.mean(others)) if others else 0.0)
    return float(np.mean(per_task))


@dataclass(frozen=True)
class Candidate:
    """A partition of the tasks with the backbone size of each group."""

    groups: tuple[tuple[str, ...], ...]
    sizes: tuple[float, ...]
    predicted: float

    @property
    def backbones(self) -> float:
        return float(sum(self.sizes))

    @property
    def label(self) -> str:
        """e.g. 'cls+det | seg (half)'."""
        return " | ".join("+".join(g) + (" (half)" if s == HALF else "") for g, s in zip(self.groups, self.sizes))


def rank_candidates(affinity: np.ndarray, tasks: tuple[str, ...], max_backbones: float) -> list[Candidate]:
    """The partitions that fit `max_backbones`, best predicted first (ties: fewer backbones first)."""
    if max_backbones < HALF:
        raise WorkbenchError(f"--max-backbones must be at least {HALF} (one half-size backbone), got {max_backbones}")
    out = []
    for groups in partitions(tasks):
        sizes = fit_sizes(groups, max_backbones)
        if sizes is not None:
            out.append(Candidate(groups, sizes, predicted_score(groups, affinity, tasks)))
    return sorted(out, key=lambda c: (-round(c.predicted, 12), c.backbones, len(c.groups)))


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson's of the average ranks; NaN if either side is constant)."""
    import pandas as pd
    ra, rb = pd.Series(a).rank().to_numpy(), pd.Series(b).rank().to_numpy()
    if len(a) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def read_affinity(run_dir: Path) -> tuple[tuple[str, ...], np.ndarray]:
    """(tasks, matrix) of a run's affinity.csv (`run_dir`: the run's folder).

    Raises:
        RunError: the run measured no affinity, or the file is damaged (naming it).
    """
    from workbench.train.affinity import read_matrix_csv
    path = Path(run_dir) / AFFINITY_FILE
    if not path.is_file():
        raise RunError(f"{run_dir}: no {AFFINITY_FILE} (train a joint run with --affinity-every K, e.g. 10)")
    try:
        tasks, matrix = read_matrix_csv(path.read_text())
    except (ValueError, IndexError) as e:
        raise RunError(f"{path}: not an affinity matrix ({e})") from None
    if any(t not in TASKS for t in tasks) or matrix.shape != (len(tasks), len(tasks)):
        raise RunError(f"{path}: not an affinity matrix of the tasks {', '.join(TASKS)}")
    return tasks, matrix


def affinity_intervals(run_dir: Path, tasks: tuple[str, ...]) -> dict[tuple[str, str], tuple[float, float, float, int]]:
    """Per (source, target) pair of different tasks: the mean of the run's measurements
    (affinity_steps.csv) and its normal 95% interval (mean +- 1.96 standard errors over the measurements),
    and their number; {} when the run kept no measurements. An interval holding 0 is an affinity the
    measurements cannot tell from none."""
    import csv
    path = Path(run_dir) / "affinity_steps.csv"
    if not path.is_file():
        return {}
    values: dict[tuple[str, str], list[float]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["source"] != r["target"] and r["source"] in tasks and r["target"] in tasks:
                values.setdefault((r["source"], r["target"]), []).append(float(r["affinity"]))
    out = {}
    for pair, v in values.items():
        mean = float(np.mean(v))
        half = 1.96 * float(np.std(v, ddof=1)) / math.sqrt(len(v)) if len(v) > 1 else float("inf")
        out[pair] = (mean, mean - half, mean + half, len(v))
    return out


@dataclass
class GroupingConfig:
    """`mtwb grouping --train`: train every candidate's groups at an equal total budget and score them.

    Attributes:
        from_run: the joint run whose affinity.csv ranks the candidates.
        data: dataset.yaml to train and validate on.
        budget: total training time of one candidate ("20m"); each of its groups gets an equal share.
        backbone: the full-size backbone; half_backbone: the half-size one (needed by a candidate with one).
        max_backbones: the inference budget in backbones.
        train: further TrainConfig fields of every group's run (pretrained, mean, std, img_size, lr ...).
        runs_dir, device, seed, n_boot: where runs go, the device, the seed of every run and of the
            bootstrap, its resamples.
    """

    from_run: str
    data: str
    budget: str
    backbone: str
    half_backbone: str | None = None
    max_backbones: float = 3.0
    train: dict | None = None
    runs_dir: str = "runs"
    device: str = "auto"
    seed: int = 0
    n_boot: int = 500


@dataclass
class GroupingRow:
    """A trained candidate: its predicted score and rank, its val metrics, and the bootstrap interval of
    (its val score - the one-backbone candidate's)."""

    candidate: Candidate
    runs: tuple[str, ...]
    predicted_rank: int
    metrics: dict
    diff: float
    ci: tuple[float, float]
    trained_rank: int = 0


def group_run_id(group: tuple[str, ...], backbone: str, seconds: int, seed: int) -> str:
    """The run id of one group's run, e.g. grp-cls+det-efficientnet_lite0-600s-s0 (reused when it exists)."""
    return f"grp-{'+'.join(group)}-{backbone.replace('/', '_')}-{seconds}s-s{seed}"


def train_groups(config: GroupingConfig, progress: bool = True) -> tuple[list[GroupingRow], float]:
    """Train (or reuse) the runs of every candidate that fits and score the candidates on val.

    Returns:
        (rows in predicted order, Spearman's rank correlation of predicted and trained scores).
    Raises:
        RunError: a candidate needs a half-size backbone and none was named; a group's run exists
            unfinished (resume or delete it).
    """
    from workbench.ensemble.compare import compare_members
    from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend
    from workbench.records.run_info import RunInfo
    from workbench.train.trainer import TrainConfig, parse_budget, train

    tasks, affinity = read_affinity(_run_dir(config.from_run, config.runs_dir))
    candidates = rank_candidates(affinity, tasks, config.max_backbones)
    if not any(len(c.groups) == 1 and c.sizes == (FULL,) for c in candidates):
        raise WorkbenchError("the candidates are scored against one full-size backbone for all tasks: "
                             "--max-backbones must be at least 1")
    if any(HALF in c.sizes for c in candidates) and not config.half_backbone:
        raise RunError(f"a budget of {config.max_backbones:g} backbones admits half-size backbones: name one with "
                       "--half-backbone (e.g. a narrower timm model), or give a whole number of backbones")
    if any(t not in tasks for t in TASKS):
        raise RunError(f"{config.from_run}: its affinity covers {', '.join(tasks)}; the candidates must serve "
                       f"all of {', '.join(TASKS)}")
    total = parse_budget(config.budget)
    run_of: dict[tuple[tuple[str, ...], float, int], Path] = {}  # (group, size, seconds) -> its run
    runs: dict[Candidate, list[Path]] = {}
    for c in candidates:
        share = int(round(total / len(c.groups)))
        for group, size in zip(c.groups, c.sizes):
            key = (group, size, share)
            if key in run_of:
                continue
            backbone = config.backbone if size == FULL else config.half_backbone
            run_id = group_run_id(group, backbone, share, config.seed)
            path = Path(config.runs_dir) / run_id
            if (path / "run.json").is_file():
                status = RunInfo.read(path).status
                if status != "complete":
                    raise RunError(f"{path}: an unfinished run of group {'+'.join(group)} ({status}); "
                                   f"`mtwb train --resume {run_id}` or delete it")
                if progress:
                    print(f"reusing {path} ({'+'.join(group)}, {share} s)", flush=True)
            else:
                if progress:
                    print(f"training {run_id}: {'+'.join(group)} on {backbone} for {share} s", flush=True)
                fields = {**(config.train or {}), "data": config.data, "backbone": backbone,
                          "recipe": "joint" if len(group) > 1 else "single", "tasks": group,
                          "budget": f"{share}s", "seed": config.seed, "name": run_id, "runs_dir": config.runs_dir,
                          "device": config.device}
                path = train(TrainConfig(**fields), progress=progress)
            run_of[key] = path
        runs[c] = [run_of[(g, s, share)] for g, s in zip(c.groups, c.sizes)]

    members = list(dict.fromkeys(Member(str(p)) for paths in runs.values() for p in paths))
    specs = {}
    for c in candidates:
        by_task = {t: Member(str(p)) for g, p in zip(c.groups, runs[c]) for t in g}
        specs[c.label] = EnsembleSpec({t: TaskBlend((by_task[t],), (1.0,), FusionConfig()) for t in TASKS})
    result = compare_members(members, config.data, "val", config.n_boot, config.seed, config.device,
                             progress=progress, specs=specs)
    rows = []
    for rank, c in enumerate(candidates, start=1):
        row = result.row(c.label)
        rows.append(GroupingRow(c, tuple(p.name for p in runs[c]), rank, row.metrics,
                                row.diff(result.row(result.best), "score"), row.ci["score"]))
    for rank, r in enumerate(sorted(rows, key=lambda r: -r.metrics["score"]), start=1):
        r.trained_rank = rank
    return rows, spearman([r.candidate.predicted for r in rows], [r.metrics["score"] for r in rows])


def _run_dir(ref: str, runs_dir: str) -> Path:
    path = Path(ref)
    return path if path.is_dir() else Path(runs_dir) / ref


__all__ = ["Candidate", "GroupingConfig", "affinity_intervals", "GroupingRow", "group_run_id", "train_groups", "FULL", "HALF", "fit_sizes", "partitions", "predicted_score", "rank_candidates",
           "read_affinity", "spearman"]
