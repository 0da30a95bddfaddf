"""Score a Submission against ground truth: Top-1, mAP50 (pycocotools), mIoU; their mean.

The same function scores validation predictions during training and selection (ground truth from
the labelled `val` split) and a written submission (ground truth from the sealed `truth/`, loaded by
`workbench.score` only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.spec import DatasetSpec, DetSample, read_mask
from workbench.errors import DataError
from workbench.formats.base import Submission
from workbench.metrics.cls import top1_accuracy
from workbench.metrics.det import map50
from workbench.metrics.seg import SegEvaluator

METRICS = {"cls": "cls_top1", "det": "det_map50", "seg": "seg_miou"}


@dataclass
class GroundTruth:
    """Labels of one split. cls: name -> class index; det: COCO dict (file_name identifies images);
    seg: name -> mask file."""

    cls: dict[str, int] = field(default_factory=dict)
    det: dict | None = None
    seg: dict[str, Path] = field(default_factory=dict)
    seg_num_classes: int = 0
    ignore_index: int = 255

    def names(self, task: str) -> list[str]:
        """Image names of a task, in order."""
        if task == "det":
            return [im["file_name"] for im in (self.det or {}).get("images", [])]
        return list(getattr(self, task))


def samples_to_coco(samples: list[DetSample], categories: list[dict]) -> dict:
    """COCO ground-truth dict of DetSamples (ids renumbered from 1)."""
    images, annotations = [], []
    for i, s in enumerate(samples, start=1):
        images.append({"id": i, "file_name": s.name, "width": s.width, "height": s.height})
        for box, lab in zip(s.boxes.tolist(), s.labels.tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(lab),
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": categories}


def split_ground_truth(spec: DatasetSpec, split: str, tasks=("cls", "det", "seg")) -> GroundTruth:
    """Ground truth of a labelled split (train or val) of a data set."""
    if split == "test":
        raise DataError(spec.path, "the test split has no labels here; only `wb score` reads the sealed truth")
    gt = GroundTruth(seg_num_classes=len(spec.seg_classes), ignore_index=spec.ignore_index)
    if "cls" in tasks:
        gt.cls = {s.name: s.label for s in spec.cls_samples(split)}
    if "det" in tasks:
        gt.det = samples_to_coco(spec.det_samples(split), spec.det_categories)
    if "seg" in tasks:
        gt.seg = {s.name: s.mask for s in spec.seg_samples(split)}
    return gt


def score(sub: Submission, gt: GroundTruth, tasks=("cls", "det", "seg"), miou: str = "present") -> dict[str, float]:
    """Score a submission.

    Args:
        sub: hard predictions (class index per image, boxes [x, y, w, h] pixels with COCO category
            ids, masks (H, W) of class indices at original size).
        gt: ground truth of the same images.
        tasks: the tasks to score.
        miou: how mIoU averages over classes (`workbench.metrics.seg.MIOU_CONVENTIONS`).
    Returns:
        {"cls_top1", "det_map50", "seg_miou"} for the tasks scored and "score", their mean.
    """
    out: dict[str, float] = {}
    if "cls" in tasks:
        names = list(gt.cls)
        out["cls_top1"] = top1_accuracy([sub.cls.get(n, -1) for n in names], [gt.cls[n] for n in names])
    if "det" in tasks:
        ids = {im["file_name"]: im["id"] for im in gt.det["images"]}
        dets = [{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
                for d in sub.det if d["image"] in ids]
        out["det_map50"] = map50(gt.det, dets)
    if "seg" in tasks:
        ev = SegEvaluator(gt.seg_num_classes, gt.ignore_index)
        for name, mask_path in gt.seg.items():
            if name not in sub.seg:
                raise DataError(mask_path, f"no predicted mask for {name}")
            target = read_mask(mask_path)
            pred = sub.seg[name]
            if pred.shape != target.shape:
                raise DataError(mask_path, f"predicted mask of {name} is {pred.shape}, truth is {target.shape}")
            ev.process(pred, target)
        out["seg_miou"] = ev.evaluate(miou)["miou"]
    out["score"] = float(np.mean([out[METRICS[t]] for t in tasks]))
    return out
