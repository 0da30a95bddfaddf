"""Val metrics of each TTA view alone and of the fused views (`mtwb predict --compare-tta`)."""
from __future__ import annotations

from workbench.errors import RunError
from workbench.fuse import blend
from workbench.metrics.scoring import score_predictions
from workbench.models.inference import merge_tasks, predict_all
from workbench.models.model import resolve_device
from workbench.predict.cache import PredictConfig, prepare_request, task_views
from workbench.records import METRICS, Predictions
from workbench.records.tasks import TASKS
from workbench.runs import load_model


def compare_tta(config: PredictConfig, progress: bool = True) -> list[tuple[str, dict]]:
    """Val metrics of each view alone and of the fused views, per task (no cache involved).

    Returns:
        Rows (label, metrics) where metrics holds the scored tasks' keys ("cls_top1" ...) and
        "ms_per_image" per task of that row's views.
    """
    if config.split == "test":
        raise RunError("compare-tta scores predictions: use a labelled split (val)")
    run, spec, tta, datasets, _ = prepare_request(config)
    device = resolve_device(config.device)
    model = load_model(run, device)
    views = task_views(tta)
    per_task, timings = predict_all(model, datasets, spec.det_category_ids, device, config.batch_size, progress,
                                    views)
    truth = spec.ground_truth(config.split)

    def task_score(task: str, preds: Predictions) -> float:
        full = merge_tasks(*(preds if t == task else Predictions() for t in TASKS))
        return score_predictions(full, truth, tasks=(task,))[METRICS[task]]

    ms = {t: 1000 * timings[f"{t}_s"] / max(1, len(datasets[t])) for t in datasets}
    rows: dict[str, dict] = {}
    for task in datasets:  # each view alone; its time is the task's batched time shared out per view
        for v, p in zip(views[task], per_task[task]):
            rows.setdefault(v.key, {}).update({METRICS[task]: task_score(task, p), f"{task}_ms": ms[task] / len(views[task])})
    fused = f"fused ({tta.key})"
    for task in datasets:
        if len(views[task]) > 1:
            rows.setdefault(fused, {}).update({METRICS[task]: task_score(task, blend(per_task[task])),
                                               f"{task}_ms": ms[task]})
    return list(rows.items())
