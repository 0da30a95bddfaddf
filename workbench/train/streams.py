"""Endless, resumable streams of training batches, one per task, and the choice of tasks per step.

A `TaskStream` walks through its data set in passes. Pass p is a permutation (or, with sample
weights, a weighted draw with replacement) made from a generator seeded by (seed, task, p), so its
whole state is two integers: a run resumed from a checkpoint draws exactly the batches the
uninterrupted run would have drawn.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from workbench.errors import RunError

SAMPLING = ("round-robin", "proportional", "equal-compute")


def _seed(*parts) -> int:
    """A stable 32-bit seed from any values (the same across runs and machines, unlike hash())."""
    return zlib.crc32(repr(parts).encode())


@dataclass
class TaskStream:
    """Indices of one task's training batches.

    Args:
        n: data set size.
        batch_size: images per batch (a pass drops its last short batch unless the data set is smaller
            than a batch, then the whole data set is one batch).
        seed: run seed; task: task name (so tasks get different orders).
        weights: optional per-sample weights (class-balanced sampling): each pass then draws n
            samples with replacement with these probabilities.
    """

    n: int
    batch_size: int
    seed: int
    task: str
    weights: np.ndarray | None = None
    epoch: int = 0  # passes completed
    pos: int = 0  # samples consumed in the current pass

    def __post_init__(self):
        if self.n < 1:
            raise RunError(f"{self.task}: no training images")
        self._order: list[int] | None = None

    def _pass_order(self) -> list[int]:
        gen = torch.Generator().manual_seed(_seed(self.seed, self.task, self.epoch))
        if self.weights is None:
            return torch.randperm(self.n, generator=gen).tolist()
        w = torch.as_tensor(np.asarray(self.weights, np.float64))
        return torch.multinomial(w, self.n, replacement=True, generator=gen).tolist()

    def next(self) -> list[int]:
        """The next batch's sample indices."""
        size = min(self.batch_size, self.n)
        if self.pos + size > self.n:
            self.epoch, self.pos, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self._pass_order()
        batch = self._order[self.pos:self.pos + size]
        self.pos += size
        return batch

    def batches_per_pass(self) -> int:
        return max(1, self.n // self.batch_size)

    def state(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state(self, state: dict) -> None:
        self.epoch, self.pos, self._order = int(state["epoch"]), int(state["pos"]), None


def step_tasks(sampling: str, tasks: Sequence[str], sizes: dict[str, int], seed: int, step: int,
               taken: dict[str, int] | None = None, cost: dict[str, float] | None = None) -> list[str]:
    """The tasks that take a batch at optimizer step `step`.

    round-robin: every task; proportional: one task, drawn with probability proportional to its
    data set size (from a generator seeded by (seed, step), so it is the same after a resume);
    equal-compute: one task, the one whose batches so far cost least (`taken[t]` batches of `cost[t]`
    each, a cost already divided by the task's share; ties go to the earlier task), so every task gets
    about its share of the compute. It depends only on the counts, so a resumed run and every process
    of a torchrun choose alike.
    """
    if sampling == "round-robin" or len(tasks) == 1:
        return list(tasks)
    if sampling == "proportional":
        p = np.array([sizes[t] for t in tasks], np.float64)
        rng = np.random.default_rng(_seed(seed, "task", step))
        return [tasks[int(rng.choice(len(tasks), p=p / p.sum()))]]
    if sampling == "equal-compute":
        return [min(tasks, key=lambda t: taken[t] * cost[t])]  # min() keeps the first of equals
    raise RunError(f"unknown task sampling {sampling!r}; choose one of {', '.join(SAMPLING)}")


def batch_cost(batch_size: int, img_size) -> int:
    """A batch's compute in input pixels (images x height x width): what equal-compute sampling evens
    out. A proxy: on the traffic benchmark (lite0, one core) a cls step of 32 x 64 x 64 px took ~0.2 s
    and a det step of 8 x 320 x 256 px ~1.0 s, the pixels' ratio of 5."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return int(batch_size) * int(h) * int(w)


def make_batch(dataset, indices: list[int], collate: Callable | None, generator: torch.Generator | None = None):
    """Collate the items `indices` of a data set; their augmentation draws from `generator` (None:
    torch's global generator)."""
    items = [dataset.get(i, generator) for i in indices]
    if collate is not None:
        return collate(items)
    return torch.utils.data.default_collate(items)
