"""Metric math (pure functions) and evaluators with reset / process / evaluate."""
from workbench.metrics.cls import ClsEvaluator, top1_accuracy
from workbench.metrics.det import DetEvaluator, ap50_per_category, map50
from workbench.metrics.seg import (
    SegEvaluator,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
)

__all__ = [
    "ClsEvaluator", "top1_accuracy",
    "DetEvaluator", "map50", "ap50_per_category",
    "SegEvaluator", "confusion_matrix", "iou_per_class", "mean_iou", "pixel_accuracy",
]
