"""Semantic segmentation metrics: confusion matrix (np.bincount) -> per-class IoU -> mIoU."""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred, target, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """Count (target, pred) pixel pairs.

    Args:
        pred: predicted class indices, any shape (e.g. (H, W)), values in 0..K-1.
        target: true class indices, same shape; pixels equal to `ignore_index` are skipped
            (whatever `pred` says there).
        num_classes: K.
        ignore_index: the target value meaning "not labelled".

    Returns:
        (K, K) int64 matrix, rows = target class, columns = predicted class.

    Raises:
        ValueError: shapes differ, or a counted pred/target value lies outside 0..K-1.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"confusion_matrix: pred shape {pred.shape} != target shape {target.shape}")
    k = int(num_classes)
    keep = target != ignore_index
    p = pred[keep].astype(np.int64, copy=False)
    t = target[keep].astype(np.int64, copy=False)
    if p.size:
        if p.min() < 0 or p.max() >= k:
            raise ValueError(f"confusion_matrix: pred values outside 0..{k - 1} (min {p.min()}, max {p.max()})")
        if t.min() < 0 or t.max() >= k:
            raise ValueError(
                f"confusion_matrix: target values outside 0..{k - 1} and not {ignore_index} "
                f"(min {t.min()}, max {t.max()})"
            )
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64, copy=False)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """Return IoU_c = tp / (tp + fp + fn) for every class.

    Args:
        cm: (K, K) confusion matrix, rows = target, columns = pred.

    Returns:
        (K,) float64; NaN for a class absent from both target and pred (union 0).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    iou = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    return iou


MIOU_CONVENTIONS = {
    "present": "mean over the classes present in truth or prediction",
    "organisers": "mean over all classes, a class absent from both counting 0 (the organisers' scorer)",
}


def mean_iou(cm: np.ndarray, convention: str = "present") -> float:
    """Return the mean IoU of a confusion matrix.

    Args:
        cm: (K, K) confusion matrix, rows = target, columns = pred.
        convention: "present": over the classes present in target or pred (NaN if there are none);
            "organisers": over all K classes, a class absent from both counting 0, as the organisers'
            scorer does (PaddleSeg's `metrics.mean_iou`).
    """
    return average_iou(iou_per_class(cm), convention)


def average_iou(iou: np.ndarray, convention: str = "present") -> float:
    """The mean of per-class IoUs (NaN: a class absent from both) under a convention (`mean_iou`)."""
    if convention == "organisers":
        return float(np.nan_to_num(iou, nan=0.0).mean()) if iou.size else float("nan")
    if convention != "present":
        raise ValueError(f"unknown mIoU convention {convention!r}; known: {', '.join(MIOU_CONVENTIONS)}")
    valid = ~np.isnan(iou)
    return float(iou[valid].mean()) if valid.any() else float("nan")


def pixel_accuracy(cm: np.ndarray) -> float:
    """Return correctly labelled pixels / counted pixels (NaN if none were counted)."""
    cm = np.asarray(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


class SegEvaluator:
    """Accumulate one confusion matrix over images, then report mIoU and pixel accuracy.

    Args:
        num_classes: K.
        ignore_index: target value skipped when counting.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.missed = np.zeros(self.num_classes, dtype=np.int64)  # labelled pixels of images with no prediction

    def process_missing(self, target_mask) -> None:
        """Add an image that has no predicted mask: every labelled pixel is a miss of its true class
        (a false negative that is no other class's false positive)."""
        t = np.asarray(target_mask)
        t = t[t != self.ignore_index].astype(np.int64)
        self.missed += np.bincount(t, minlength=self.num_classes)[:self.num_classes]

    def _extended(self) -> np.ndarray:
        """The confusion matrix with a "no prediction" column (and an empty row) for missed pixels."""
        k = self.num_classes
        ext = np.zeros((k + 1, k + 1), np.int64)
        ext[:k, :k] = self.confusion
        ext[:k, k] = self.missed
        return ext

    def process(self, pred_mask, target_mask) -> None:
        """Add one image.

        Args:
            pred_mask: (H, W) predicted class indices in 0..K-1.
            target_mask: (H, W) true class indices, `ignore_index` for unlabelled pixels.
        """
        self.confusion += confusion_matrix(pred_mask, target_mask, self.num_classes, self.ignore_index)

    def iou_per_class(self) -> np.ndarray:
        """Return (K,) IoU per class so far (NaN for classes seen in neither target nor pred)."""
        return iou_per_class(self._extended())[:self.num_classes]

    def evaluate(self, convention: str = "present") -> dict[str, float]:
        """Return {"miou": float, "pixel_acc": float} over every image processed (mIoU: see `mean_iou`)."""
        return {"miou": average_iou(self.iou_per_class(), convention), "pixel_acc": pixel_accuracy(self._extended())}
