"""Segmentation fusion: weighted mean of per-pixel softmax probabilities."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from workbench.fuse.cls import fuse_probs


def softmax(logits: np.ndarray, axis: int = 0) -> np.ndarray:
    """Numerically stable softmax along `axis`, float32."""
    x = np.asarray(logits, np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def fuse_seg_logits(logits: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Fuse members' logits of one image.

    Args:
        logits: M arrays (K, h, w) at the same resolution (the cache stores every member at
            ceil(H/4) x ceil(W/4) of the original image, so they always agree).
        weights: M non-negative weights (None: equal).
    Returns:
        (K, h, w) float32 log of the weighted mean probability: argmax gives the fused mask and
        softmax gives back the fused probabilities, so the result is a drop-in for logits. One
        member comes back as its own logits (same probabilities; the mask, upsampled from logits
        before the argmax, is then exactly the member's own).
    """
    shapes = {np.shape(x) for x in logits}
    if len(shapes) != 1:
        raise ValueError(f"members' logits differ in shape: {sorted(shapes)}")
    if len(logits) == 1:
        fuse_probs([np.zeros(1)], weights)  # the weight is still checked
        return np.asarray(logits[0], np.float32)
    probs = fuse_probs([softmax(x, 0) for x in logits], weights)
    return np.log(np.clip(probs, 1e-8, None)).astype(np.float32)
