"""Classification fusion: weighted mean of class probabilities."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def fuse_probs(probs: Sequence[np.ndarray], weights: Sequence[float] | None = None) -> np.ndarray:
    """Weighted mean of probability arrays.

    Args:
        probs: M arrays of the same shape (..., K), each row summing to 1.
        weights: M non-negative weights (None: equal); they are normalised to sum to 1.
    Returns:
        Array of the same shape (..., K), float32.
    """
    w = np.ones(len(probs)) if weights is None else np.asarray(weights, np.float64)
    if len(w) != len(probs) or len(probs) == 0:
        raise ValueError(f"need one weight per member, got {len(w)} weights for {len(probs)} members")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    w = w / w.sum()
    return sum(wi * np.asarray(p, np.float64) for wi, p in zip(w, probs)).astype(np.float32)
