"""Class-imbalance helpers: inverse-frequency class weights, sampler weights and loss weights.

The real data is lopsided (18-180 images per sign class; 63% of the boxes are one class), so the
trainer can draw samples with `torch.utils.data.WeightedRandomSampler` and weight its losses by class.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch


def inverse_frequency(counts: Sequence[float] | np.ndarray, power: float = 1.0,
                      max_ratio: float = 10.0) -> np.ndarray:
    """Per-class weights proportional to count**-power.

    Args:
        counts: (C,) non-negative count of each class.
        power: 1 = full inverse frequency, 0.5 = its square root, 0 = all ones.
        max_ratio: largest weight / smallest weight over the classes present; the rarest classes are
            capped at smallest * max_ratio (np.inf = no cap).

    Returns:
        (C,) float64 weights, 0 for classes with count 0, scaled so that the count-weighted mean is 1:
        sum(w * counts) / sum(counts) == 1 (all zeros when every count is 0).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D array of non-negative numbers, got {counts}")
    if max_ratio < 1.0:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    weights = np.zeros_like(counts)
    present = counts > 0
    if not present.any():
        return weights
    weights[present] = counts[present] ** -power
    weights[present] = np.minimum(weights[present], weights[present].min() * max_ratio)
    return weights * counts.sum() / (weights * counts).sum()


def _check_labels(labels: np.ndarray, num_classes: int) -> None:
    """Raise ValueError if a label is outside [0, num_classes)."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")


def cls_sample_weights(labels: Sequence[int] | np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights under which weighted sampling draws every present class equally often.

    Args:
        labels: (N,) class index of each sample.
        num_classes: C.

    Returns:
        (N,) float64, 1 / (count of the sample's class), scaled to mean 1.
    """
    labels = np.asarray(labels, dtype=np.int64)
    _check_labels(labels, num_classes)
    counts = np.bincount(labels, minlength=num_classes)
    return inverse_frequency(counts, power=1.0, max_ratio=np.inf)[labels]


def det_sample_weights(label_lists: Sequence[Sequence[int] | np.ndarray], num_classes: int) -> np.ndarray:
    """Per-image weights that favour images holding a rare class.

    Args:
        label_lists: one (N_i,) array of box class indices per image.
        num_classes: C.

    Returns:
        (I,) float64: the largest `inverse_frequency` (power 1, default max_ratio) of the image's box
        classes, counted over boxes; an image without boxes gets the smallest weight of a present
        class; scaled to mean 1 (all ones when there is no box at all).
    """
    lists = [np.asarray(labels, dtype=np.int64).reshape(-1) for labels in label_lists]
    all_labels = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    _check_labels(all_labels, num_classes)
    if all_labels.size == 0:
        return np.ones(len(lists))
    class_weights = inverse_frequency(np.bincount(all_labels, minlength=num_classes))
    empty = class_weights[class_weights > 0].min()
    weights = np.array([class_weights[labels].max() if labels.size else empty for labels in lists])
    return weights / weights.mean()


def class_loss_weights(counts: Sequence[float] | np.ndarray, power: float = 0.5,
                       max_ratio: float = 10.0) -> torch.Tensor:
    """(C,) float32 class weights for `CrossEntropyLoss(weight=...)`: `inverse_frequency` at `power`."""
    return torch.as_tensor(inverse_frequency(counts, power, max_ratio), dtype=torch.float32)


def seg_class_counts(masks: Iterable[np.ndarray | torch.Tensor], num_classes: int, ignore_index: int) -> np.ndarray:
    """Pixel count of each class over segmentation masks.

    Args:
        masks: (H, W) integer class-index masks (NumPy arrays or CPU tensors).
        num_classes: C.
        ignore_index: mask value that is not counted.

    Returns:
        (C,) int64 pixel counts.
    """
    counts = np.zeros(num_classes, np.int64)
    for mask in masks:
        values = np.asarray(mask).reshape(-1).astype(np.int64)
        values = values[values != ignore_index]
        _check_labels(values, num_classes)
        counts += np.bincount(values, minlength=num_classes)
    return counts
