"""Predict stage: a run's predictions on a split, cached in `runs/<run>/preds/<split>/<tta>/`.

An entry is written to a temporary folder and renamed when complete, and is reused only when its
`meta.json` matches the checkpoint hash, split, TTA key and data fingerprint of the request.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from workbench.data.spec import TASKS, DatasetSpec
from workbench.errors import RunError
from workbench.io import atomic_dir, read_json, write_json
from workbench.data.loaders import build_datasets
from workbench.models.inference import predict_all
from workbench.models.model import resolve_device
from workbench.predictions import Predictions
from workbench.runs import Run, load_model, open_run

NO_TTA = "none"


@dataclass(frozen=True)
class PredictConfig:
    """What to predict: a run, a data set and a split (val or test)."""

    run: str
    data: str
    split: str = "val"
    device: str = "auto"
    batch_size: int = 16


def data_fingerprint(samples: dict) -> str:
    """sha256 over each task's image names and byte sizes: changes when the images of a split change."""
    h = hashlib.sha256()
    for task in TASKS:
        for s in samples[task]:
            h.update(f"{task}/{s.name}/{s.path.stat().st_size}\n".encode())
    return h.hexdigest()


def cache_dir(run: Run, split: str, tta: str = NO_TTA) -> Path:
    return run.path / "preds" / split / tta


def load_cached(run: Run, split: str, expect: dict, tta: str = NO_TTA) -> Predictions | None:
    """The cached predictions if the entry exists and its meta matches `expect`, else None."""
    folder = cache_dir(run, split, tta)
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return None
    meta = read_json(meta_path)
    if any(meta.get(k) != v for k, v in expect.items()):
        return None
    return Predictions.load(folder, meta["sizes"])


def predict_run(config: PredictConfig, progress: bool = True) -> tuple[Predictions, Path, bool]:
    """Predict (or reuse the cache of) one run on one split.

    Returns:
        (predictions, cache folder, True if the cache was reused).
    """
    if config.split not in ("train", "val", "test"):
        raise RunError(f"unknown split {config.split!r} (train, val or test)")
    run = open_run(config.run)
    spec = DatasetSpec(config.data)
    datasets = build_datasets(spec, config.split, run.info["img_size"])
    samples = {t: ds.samples for t, ds in datasets.items()}
    expect = {"checkpoint": run.checkpoint_hash(), "split": config.split, "tta": NO_TTA,
              "data": data_fingerprint(samples)}
    cached = load_cached(run, config.split, expect)
    if cached is not None:
        return cached, cache_dir(run, config.split), True

    device = resolve_device(config.device)
    model = load_model(run, device)
    preds, timings = predict_all(model, datasets, spec.det_category_ids, device, config.batch_size, progress)

    folder = cache_dir(run, config.split)
    with atomic_dir(folder) as tmp:
        preds.save(tmp)
        write_json(tmp / "meta.json", {**expect, "run": run.id, "data_file": str(spec.path),
                                       "images": {t: [s.name for s in samples[t]] for t in TASKS},
                                       "sizes": {t: {k: list(v) for k, v in preds.sizes[t].items()} for t in TASKS},
                                       "seg_logits": "float16 at ceil(H/4) x ceil(W/4) of the original image",
                                       "device": str(device), "timings": timings})
    return preds, folder, False
