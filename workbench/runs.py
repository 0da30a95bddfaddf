"""Run folders: `runs/<run_id>/` with config.yaml, run.json, model.safetensors, metrics.csv.

A run folder alone rebuilds its model: `run.json` carries the ModelConfig, the weights sit beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from workbench.errors import RunError, did_you_mean
from workbench.io import atomic_path, hash_file
from workbench.models.model import ModelConfig, MultiTaskModel, check_finite
from workbench.records.run_info import FILE as RUN_FILE, RunInfo

RUNS_DIR = Path("runs")
WEIGHTS = "model.safetensors"
EXPORT = Path("export") / "model.onnx"  # `mtwb export RUN --format onnx`; its description beside it, model.json


@dataclass(frozen=True)
class Run:
    """A run folder and its run.json."""

    path: Path
    info: RunInfo

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the run was trained for (a single-task run serves only its own)."""
        return self.info.tasks

    @property
    def precision(self) -> str:
        """The autocast the run trained in (run.json; fp32 for runs made before precisions existed)."""
        return self.info.extra.get("precision", "fp32")

    @property
    def onnx(self) -> Path:
        """Where `mtwb export` writes the run's ONNX model (its description: the same name, .json)."""
        return self.path / EXPORT

    def checkpoint_hash(self) -> str:
        """sha256 of the weights file: what a prediction cache entry is tied to."""
        return hash_file(self.weights)

    def model_config(self) -> ModelConfig:
        return ModelConfig.from_dict(self.info.model)


def open_run(ref: str | Path, runs_dir: Path = RUNS_DIR) -> Run:
    """Find a run by folder path or by id under runs_dir; it must have finished writing weights."""
    path = Path(ref)
    if not (path / RUN_FILE).exists() and (runs_dir / str(ref) / RUN_FILE).exists():
        path = runs_dir / str(ref)
    if not (path / RUN_FILE).exists() and not path.is_dir():
        ids = [p.parent.name for p in runs_dir.glob(f"*/{RUN_FILE}")] if runs_dir.is_dir() else []
        raise RunError(f"{ref}: no such run (neither a folder nor a run id under {runs_dir}/)"
                       f"{did_you_mean(path.name, ids)}")
    info = RunInfo.read(path)
    if not info.model:
        raise RunError(f"{path / RUN_FILE}: no model configuration to rebuild the run from")
    if not (path / WEIGHTS).exists():
        raise RunError(f"{path}: run has no {WEIGHTS} yet (status: {info.status})")
    return Run(path, info)


def check_classes(run: Run, lists: dict[str, list], data: str | Path) -> None:
    """Refuse to use `run` on a data set whose class lists (`DatasetSpec.class_lists`) differ from those
    it trained with (run.json "classes"; runs from before it was recorded are not checked).

    Raises:
        RunError: naming the run, the task, the first position that differs and both values.
    """
    trained = run.info.extra.get("classes") or {}
    for task in run.tasks:
        if task not in trained or task not in lists:
            continue
        ours, theirs = [tuple(x) if isinstance(x, list) else x for x in trained[task]], \
            [tuple(x) if isinstance(x, list) else x for x in lists[task]]
        if ours == theirs:
            continue
        what = "category (id, name)" if task == "det" else "class"
        if len(ours) != len(theirs):
            detail = f"{len(ours)} {what}s trained, {len(theirs)} in the data set"
        else:
            i = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
            detail = f"{what} {i} is {ours[i]!r} in the run, {theirs[i]!r} in the data set"
        raise RunError(f"run '{run.id}' was trained on other {task} classes than {data} has ({detail}); "
                       "its outputs would be read as the wrong classes")


def save_weights(model: torch.nn.Module | dict, path: Path, run_id: str) -> None:
    """Write a model's (or a state dict's) tensors as safetensors, atomically, marked (in the file's
    metadata) as the weights of `run_id`: a run refuses to load weights marked as another run's."""
    state = model if isinstance(model, dict) else model.state_dict()
    state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"run": run_id})


def weights_owner(path: Path) -> str | None:
    """The run id a weights file was written for (None: written before files were marked)."""
    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("run")


def load_model(run: Run, device: torch.device) -> MultiTaskModel:
    """Rebuild the run's model and load its weights (no pretrained file needed: the weights are all here), in
    the precision the run trained in."""
    config = run.model_config()
    model = MultiTaskModel(ModelConfig(**{**config.__dict__, "pretrained": None}))
    try:
        owner = weights_owner(run.weights)
        state = load_file(str(run.weights))
    except Exception as e:
        raise RunError(f"{run.weights}: cannot read weights ({e})") from None
    if owner is not None and owner != run.info.run_id:
        raise RunError(f"{run.weights}: these are the weights of run '{owner}', not of run '{run.info.run_id}' "
                       "(copied over?); put the run's own model.safetensors back or retrain it")
    check_finite(state, run.weights)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RunError(f"{run.weights}: weights do not fit the model "
                       f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.to(device).eval().set_precision(run.precision)  # mtwb predict may choose another
