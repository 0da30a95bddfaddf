"""A run's predictions on a split under a TTA spec, cached in `runs/<run>/preds/<split>/<tta-key>/`.

An entry is written to a temporary folder and renamed when complete, and is reused only when its
`meta.json` (records.cache_meta.CacheMeta) matches the checkpoint hash, split, TTA key and data
fingerprint of the request. The views of one task are fused like ensemble members (mean
probabilities, weighted boxes fusion, mean segmentation probabilities) before the entry is written."""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from workbench.data.image_cache import cache_root
from workbench.data.loaders import build_datasets
from workbench.data.spec import DatasetSpec
from workbench.errors import DataError, RunError, WorkbenchWarning
from workbench.fuse import blend
from workbench.io import atomic_dir, load_json
from workbench.locks import clean_leftovers, holding
from workbench.models.inference import merge_tasks, predict_all
from workbench.dist import Dist
from workbench.models.model import describe_device, resolve_device, resolve_precision
from workbench.models.onnx import OnnxModel
from workbench.records import Predictions
from workbench.records.cache_meta import CacheMeta
from workbench.records.tasks import TASKS
from workbench.runs import Run, check_classes, load_model, open_run
from workbench.tta.spec import TTASpec, parse_tta


@dataclass(frozen=True)
class PredictConfig:
    """What to predict: a run, a data set, a split (train, val, test or unlabeled) and a TTA spec.

    route: for the "unlabeled" split, which of its images each task gets (see DatasetSpec).
    """

    run: str
    data: str
    split: str = "val"
    device: str = "auto"
    batch_size: int = 16
    tta: str = "none"
    route: tuple[tuple[str, str], ...] | None = None  # (task, patterns) pairs: hashable
    unlabeled: str | None = None  # another folder of unlabelled images than the data set's
    precision: str | None = None  # autocast (auto, fp32, bf16, fp16); None: the one the run trained in (fp32 before)
    backend: str = "torch"  # or "onnxruntime": run the run's ONNX export (`mtwb export RUN --format onnx`)


def data_fingerprint(samples: dict) -> str:
    """sha256 over each task's image names and byte sizes: changes when the images of a split change."""
    h = hashlib.sha256()
    for task in [t for t in TASKS if t in samples]:
        for s in samples[task]:
            h.update(f"{task}/{s.name}/{s.path.stat().st_size}\n".encode())
    return h.hexdigest()


BACKENDS = ("torch", "onnxruntime")


def cache_dir(run: Run, split: str, tta_key: str, backend: str = "torch") -> Path:
    """runs/<run>/preds/<split>/<tta-key>/ (`<tta-key>.onnxruntime/` for the ONNX export's predictions)."""
    return run.path / "preds" / split / (tta_key if backend == "torch" else f"{tta_key}.{backend}")


def cache_entry(config: PredictConfig) -> Path:
    """The cache folder a prediction request reads or writes."""
    return cache_dir(open_run(config.run), config.split, parse_tta(config.tta).key, config.backend)


def load_cached(run: Run, expect: CacheMeta) -> Predictions | None:
    """The cached predictions if the entry exists and its identity matches `expect`'s, else None.

    A damaged entry (meta.json or an array file unreadable, truncated or missing, an image missing
    from its arrays) is predicted again, with a one-line warning naming the entry and the problem.
    """
    folder = cache_dir(run, expect.split, expect.tta, expect.backend)
    if not folder.is_dir():
        return None
    try:
        meta = CacheMeta.read(folder)
    except DataError as e:
        warnings.warn(f"{folder}: damaged prediction cache entry ({Path(e.path).name}: {e.problem}); predicting again",
                      WorkbenchWarning)
        return None
    if meta.identity() != expect.identity():
        return None
    parts = []
    for task in TASKS:
        try:
            parts.append(Predictions.load(folder, meta.sizes, tasks=(task,)))
        except Exception as e:  # a truncated or foreign npz: zipfile, numpy and OS errors alike
            first = (str(e).splitlines() or [""])[0]
            warnings.warn(f"{folder}: damaged prediction cache entry ({task}.npz: {type(e).__name__}: {first}); "
                          "predicting again", WorkbenchWarning)
            return None
    preds = merge_tasks(*parts)
    for task in meta.tasks:
        have = getattr(preds, task)
        missing = [n for n in meta.images.get(task, []) if n not in have]
        if missing:
            warnings.warn(f"{folder}: damaged prediction cache entry ({task}: {len(missing)} of "
                          f"{len(meta.images[task])} images missing, e.g. {missing[0]}); predicting again",
                          WorkbenchWarning)
            return None
    return preds


def fuse_views(per_task: dict[str, list[Predictions]]) -> Predictions:
    """Fuse each task's views (a single view passes through unchanged)."""
    fused = {t: (views[0] if len(views) == 1 else blend(views, tasks=(t,))) for t, views in per_task.items()}
    return merge_tasks(*(fused.get(t, Predictions()) for t in TASKS))


def prepare_request(config: PredictConfig):
    """Open what a request names: (run, data set, TTA spec, per-task datasets, the CacheMeta it expects)."""
    if config.split not in ("train", "val", "test", "unlabeled"):
        raise RunError(f"unknown split {config.split!r} (train, val, test or unlabeled)")
    run = open_run(config.run)
    spec = DatasetSpec(config.data, dict(config.route) if config.route is not None else None, config.unlabeled)
    check_classes(run, spec.class_lists(run.tasks), spec.path)
    tta = parse_tta(config.tta)
    tasks = run.tasks
    datasets = {t: ds for t, ds in build_datasets(spec, config.split, run.info.img_size,
                                                  cache_dir=cache_root(run.path.parent)).items()
                if t in tasks and len(ds)}  # a task with no images of this split (unlabeled routing) is skipped
    samples = {t: ds.samples for t, ds in datasets.items()}
    if config.backend not in BACKENDS:
        raise RunError(f"unknown backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    # onnxruntime runs the exported float32 graph on the CPU
    precision = ("fp32" if config.backend == "onnxruntime"
                 else resolve_precision(config.precision or run.precision, resolve_device(config.device)))
    expect = CacheMeta(checkpoint=run.checkpoint_hash(), split=config.split, tta=tta.key,
                       data=data_fingerprint(samples), precision=precision, backend=config.backend)
    return run, spec, tta, datasets, expect


def task_views(tta: TTASpec) -> dict:
    """task -> the views of that task under the spec."""
    return {t: tta.views(t) for t in TASKS}


_ANNOUNCED: set = set()


def predict_run(config: PredictConfig, progress: bool = True) -> tuple[Predictions, Path, bool]:
    """Predict (or reuse the cache of) one run on one split under one TTA spec.

    Returns:
        (predictions, cache folder, True if the cache was reused).
    """
    run, spec, tta, datasets, expect = prepare_request(config)
    folder = cache_dir(run, config.split, tta.key, config.backend)
    cached = load_cached(run, expect)
    if cached is not None:
        return cached, folder, True
    dist = Dist.from_env(config.device)
    if not dist.main:
        return _predict(config, run, spec, tta, datasets, expect, folder, dist, progress)
    # one process computes an entry at a time: a second is refused naming the first (not both writing)
    with holding(folder.with_name(f".{folder.name}.lock"), f"prediction of {run.id} ({config.split}, {tta.key})"):
        clean_leftovers(folder.parent, folder.name)  # temporary folders of killed predictions
        return _predict(config, run, spec, tta, datasets, expect, folder, dist, progress)


def _predict(config: PredictConfig, run: Run, spec: DatasetSpec, tta: TTASpec, datasets: dict, expect: CacheMeta,
             folder: Path, dist: Dist, progress: bool) -> tuple[Predictions, Path, bool]:
    """Predict a request prepared by `prepare_request` and write its cache entry (`predict_run`)."""
    # under torchrun each rank predicts a contiguous share of every task's images; rank 0 joins the
    # shares in rank order (the single process's image order) and writes the one cache entry
    if config.backend == "onnxruntime":
        device, model = torch.device("cpu"), open_export(run)
        described = f"onnxruntime on the CPU ({model.path})"
    else:
        device = dist.device(resolve_device(config.device))
        model = load_model(run, device).set_precision(expect.precision)
        described = f"{describe_device(device)}, precision {expect.precision}"
    if progress and described not in _ANNOUNCED:  # once per process (submit predicts many runs)
        _ANNOUNCED.add(described)
        print(f"device: {described}", flush=True)
    parts = {t: dist.split(len(ds)) for t, ds in datasets.items()} if dist.active else None
    per_task, timings = predict_all(model, datasets, spec.det_category_ids, device, config.batch_size,
                                    progress and dist.main, task_views(tta), parts)
    if dist.active:
        shares = dist.gather((per_task, timings))
        if not dist.main:
            dist.barrier()  # rank 0 writes the entry; then every rank reads the same predictions
            return load_cached(run, expect), folder, False
        per_task = {t: [join_shares([s[0][t][v] for s in shares]) for v in range(len(views))]
                    for t, views in per_task.items()}
        timings = {k: max(s[1][k] for s in shares) for k in timings}  # the job's wall time per task
    preds = fuse_views(per_task)
    # what the cache holds, float16 logits, is what every caller sees: a fresh entry and a reused
    # one give the same masks to the last pixel
    preds.seg = {n: v.astype(np.float16) for n, v in preds.seg.items()}
    counts = {t: len(ds) for t, ds in datasets.items()}
    with atomic_dir(folder) as tmp:
        preds.save(tmp)
        replace(expect, run=run.id, data_file=str(spec.path), tta_spec=config.tta,
                views={t: [v.key for v in vs] for t, vs in task_views(tta).items()},
                images={t: [s.name for s in ds.samples] for t, ds in datasets.items()},
                tasks=list(datasets), sizes={t: {k: list(v) for k, v in preds.sizes[t].items()} for t in TASKS},
                device=str(device), timings=timings,
                ms_per_image={t: round(1000 * timings[f"{t}_s"] / max(1, counts[t]), 2) for t in datasets},
                ).write(tmp)
    if dist.active:
        dist.barrier()
    return preds, folder, False


def open_export(run: Run) -> OnnxModel:
    """The run's ONNX export for prediction; refused when missing or made from other weights than the run's."""
    path = run.onnx
    if not path.is_file():
        raise RunError(f"{run.path}: no ONNX export (write it with `mtwb export {run.id} --format onnx`)")
    try:
        recorded = load_json(path.with_suffix(".json")).get("weights_sha256")
    except DataError as e:
        raise RunError(f"{path.with_suffix('.json')}: cannot read the export's description ({e.problem})") from None
    if recorded != run.checkpoint_hash():
        raise RunError(f"{path}: exported from other weights than {run.weights} (export again: "
                       f"`mtwb export {run.id} --format onnx`)")
    return OnnxModel(path)


def join_shares(shares: list[Predictions]) -> Predictions:
    """One Predictions of the ranks' shares of a split, in rank order (each share's own order kept)."""
    out = Predictions()
    for share in shares:
        out.cls.update(share.cls)
        out.det.update(share.det)
        out.seg.update(share.seg)
        for t in TASKS:
            out.sizes[t].update(share.sizes[t])
    return out
