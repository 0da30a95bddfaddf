"""Score a Submission against ground truth: Top-1, mAP50 (pycocotools), mIoU; their mean.

The same function scores validation predictions during training and selection (ground truth from
the labelled `val` split) and a written submission (ground truth from the sealed `truth/`, loaded by
`workbench.score` only).
"""
from __future__ import annotations

import numpy as np

from workbench.errors import DataError
from workbench.metrics.cls import top1_accuracy
from workbench.metrics.det import map50
from workbench.io import read_mask
from workbench.metrics.seg import SegEvaluator
from workbench.records.ground_truth import GroundTruth
from workbench.records.predictions import Predictions, to_submission
from workbench.records.submission import Submission
from workbench.records.tasks import METRICS, SCORE, TASKS


def score(sub: Submission, gt: GroundTruth, tasks=TASKS, miou: str = "present",
          det_backend: str = "pycocotools", missing_wrong: bool = False) -> dict[str, float]:
    """Score a submission.

    Args:
        sub: hard predictions (class index per image, boxes [x, y, w, h] pixels with COCO category
            ids, masks (H, W) of class indices at original size).
        gt: ground truth of the same images.
        tasks: the tasks to score.
        miou: how mIoU averages over classes (`workbench.metrics.seg.MIOU_CONVENTIONS`).
        det_backend: mAP50's evaluator (`workbench.metrics.det.BACKENDS`; the same value either way).
        missing_wrong: a seg image without a predicted mask counts every labelled pixel as missed
            (`SegEvaluator.process_missing`) instead of being refused. (A cls image without a class is
            always wrong, a det image without boxes finds nothing.)
    Returns:
        {"cls_top1", "det_map50", "seg_miou"} for the tasks scored and "score", their mean.
    """
    out: dict[str, float] = {}
    if "cls" in tasks:
        names = list(gt.cls)
        out[METRICS["cls"]] = top1_accuracy([sub.cls.get(n, -1) for n in names], [gt.cls[n] for n in names])
    if "det" in tasks:
        ids = {im["file_name"]: im["id"] for im in gt.det["images"]}
        dets = [{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
                for d in sub.det if d["image"] in ids]
        out[METRICS["det"]] = map50(gt.det, dets, backend=det_backend)
    if "seg" in tasks:
        ev = SegEvaluator(gt.seg_num_classes, gt.ignore_index)
        for name, mask_path in gt.seg.items():
            if name not in sub.seg and not missing_wrong:
                raise DataError(mask_path, f"no predicted mask for {name}")
            target = read_mask(mask_path)
            if name not in sub.seg:
                ev.process_missing(target)
                continue
            pred = sub.seg[name]
            if pred.shape != target.shape:
                raise DataError(mask_path, f"predicted mask of {name} is {pred.shape}, truth is {target.shape}")
            ev.process(pred, target)
        out[METRICS["seg"]] = ev.evaluate(miou)["miou"]
    out[SCORE] = float(np.mean([out[METRICS[t]] for t in tasks]))
    return out


def score_predictions(preds: Predictions, gt: GroundTruth, tasks=TASKS, miou: str = "present",
                      det_backend: str = "pycocotools") -> dict[str, float]:
    """Score soft predictions: their hard decisions (argmax class, boxes in pixels, argmax masks) by `score`."""
    return score(to_submission(preds, [], gt.seg_num_classes), gt, tasks=tasks, miou=miou, det_backend=det_backend)
