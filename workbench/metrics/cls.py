"""Classification metric: Top-1 accuracy."""
from __future__ import annotations

import numpy as np


def top1_accuracy(pred, target) -> float:
    """Return the fraction of predictions equal to their target.

    Args:
        pred: (N,) predicted class indices (any integer array-like).
        target: (N,) true class indices.

    Returns:
        Top-1 accuracy in [0, 1].

    Raises:
        ValueError: the two have different lengths, or are empty.
    """
    pred = np.asarray(pred).reshape(-1)
    target = np.asarray(target).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"top1_accuracy: {pred.size} predictions for {target.size} targets")
    if pred.size == 0:
        raise ValueError("top1_accuracy: no predictions")
    return float(np.mean(pred == target))


class ClsEvaluator:
    """Accumulate class scores batch by batch, then report Top-1 accuracy."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """Forget everything processed so far."""
        self._pred: list[np.ndarray] = []
        self._target: list[np.ndarray] = []

    def process(self, probs, targets) -> None:
        """Add one batch.

        Args:
            probs: (B, K) class scores (probabilities or logits; only the argmax is used).
            targets: (B,) true class indices in 0..K-1.
        """
        probs = np.asarray(probs)
        targets = np.asarray(targets).reshape(-1)
        if probs.ndim != 2 or probs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"ClsEvaluator.process: probs of shape {probs.shape} for {targets.shape[0]} targets"
            )
        self._pred.append(probs.argmax(axis=1))
        self._target.append(targets)

    def evaluate(self) -> dict[str, float]:
        """Return {"top1": accuracy} over every batch processed (ValueError if none)."""
        if not self._pred:
            raise ValueError("ClsEvaluator.evaluate: nothing processed")
        return {"top1": top1_accuracy(np.concatenate(self._pred), np.concatenate(self._target))}
