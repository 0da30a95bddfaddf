"""Checkpoint averaging: the mean of a run's K best checkpoints (by val score) as a new run.

As timm's `avg_checkpoints.py`: floating-point tensors are averaged in float64 and cast back; integer
buffers (BatchNorm's num_batches_tracked) are taken from the best checkpoint. The new run (kind
`avg`, parents = [the run]) is validated like any other and can be predicted, ensembled, submitted.
"""
from __future__ import annotations

import shutil
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file

from workbench.data.loaders import build_datasets
from workbench.data.spec import DatasetSpec
from workbench.errors import RunError, check_name
from workbench.io import atomic_dir
from workbench.locks import LOCK, holding
from workbench.records.run_info import RunInfo
from workbench.models.model import resolve_device
from workbench.runs import RUNS_DIR, WEIGHTS, Run, load_model, open_run, save_weights


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts with the same keys and shapes (ints: the first one's)."""
    if not states:
        raise RunError("no checkpoints to average")
    keys = set(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != keys:
            raise RunError(f"checkpoint {i} has other keys than checkpoint 0: {sorted(set(s) ^ keys)[:3]}")
    out = {}
    for k, first in states[0].items():
        if first.is_floating_point():
            out[k] = (sum(s[k].double() for s in states) / len(states)).to(first.dtype)
        else:
            out[k] = first.clone()
    return out


def average_run(run_ref: str, top: int = 3, name: str | None = None, runs_dir: Path = RUNS_DIR,
                device: str = "auto", overwrite: bool = False) -> Path:
    """Average the `top` best checkpoints of a run into a new run folder.

    Returns:
        The new run folder (run.json kind "avg", parents [run id], best = val metrics of the average).
    """
    run = open_run(run_ref, Path(runs_dir))
    run_id = check_name(name or f"{run.id}-avg{top}")
    target = Path(runs_dir) / run_id
    if target.exists() and not overwrite:
        raise RunError(f"{target}: run already exists (choose another --name, or --overwrite)")
    # the folder it replaces is locked from here to the rename: refused while another process trains it
    with holding(target / LOCK, "averaging") if target.exists() else nullcontext():
        return _average(run, run_id, target, top, device)


def _average(run: Run, run_id: str, target: Path, top: int, device: str) -> Path:
    from workbench.train.trainer import validate

    entries = sorted(run.info.checkpoints, key=lambda e: (-e["score"], e["epoch"]))
    if not entries:
        raise RunError(f"{run.path}: the run kept no checkpoints (trained before `keep_top` existed?)")
    if top < 1:
        raise RunError("--top must be >= 1")
    chosen = entries[:top]
    if len(chosen) < top:
        raise RunError(f"{run.path}: only {len(chosen)} checkpoints kept, cannot average the top {top} "
                       f"(train with a larger keep_top)")
    states = []
    for e in chosen:
        path = run.path / e["file"]
        try:
            states.append(load_file(str(path)))
        except Exception as err:
            raise RunError(f"{path}: cannot read checkpoint ({err})") from None
    averaged = average_state_dicts(states)
    spec = DatasetSpec(run.info.data)
    tasks = run.info.tasks
    dev = resolve_device(device)
    model = load_model(run, dev)
    model.load_state_dict({k: v.to(dev) for k, v in averaged.items()})
    sizes = run.info.img_size
    metrics = validate(model, build_datasets(spec, "val", sizes), spec, spec.ground_truth("val"), tasks, dev)
    info = RunInfo(run_id=run_id, kind="avg", tasks=tasks, data=run.info.data, model=run.info.model,
                   img_size=run.info.img_size, backbone=run.info.backbone, parents=(run.id,), status="complete",
                   created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   best={"epoch": None, "source": f"mean of top {top}", **{k: round(v, 5) for k, v in metrics.items()}},
                   wall_time_s=0.0, averaged=[{"epoch": e["epoch"], "score": e["score"]} for e in chosen],
                   extra={"precision": model.precision,
                          **{k: run.info.extra[k] for k in ("classes", "data_sha256") if k in run.info.extra}})
    with atomic_dir(target) as tmp:
        save_weights(model, tmp / WEIGHTS, run_id)
        info.write(tmp)
        shutil.copy2(run.path / "config.yaml", tmp / "config.yaml")
    return target
