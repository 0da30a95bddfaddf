"""How task losses and task gradients become one update of the shared backbone.

Two independent choices, each a registry:

- **Loss balancing** (`BALANCERS`, `--balance`): how each task's loss is weighted before its backward
  pass, and, for gradient-based methods, how the tasks' backbone gradients are combined.
  - `fixed`: constant weights (default 1 each);
  - `magnitude`: automatic magnitude normalisation: a running mean of each task's loss is kept and
    the small losses are scaled up until every weighted loss is at least 1/ratio of the largest
    (ratio 10, as winning AllInOne teams used: no task is drowned out, none is inflated past the
    largest);
  - `uncertainty`: homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018): a learned log
    variance s per task, loss exp(-s) * L + s;
  - `pcgrad`: gradient surgery (Yu et al. 2020): where two tasks' backbone gradients conflict
    (negative dot product) each is projected onto the normal plane of the other before summing.
- **Gradient clipping** (`clip_task_gradients`, `--clip`): `none`, `global` (torch's
  clip_grad_norm_ over every parameter) or `task`: task-level backbone-oriented clipping (TBGC,
  arXiv 2307.03465): each task's backbone gradient is clipped to `max_norm` on its own, then all are
  rescaled to one common norm (the smaller of `max_norm` and their mean norm) and summed, so that no
  task's gradient dominates the shared weights. With one task a step (equal-compute sampling) the
  mean takes the other tasks' last norms (`--clip-common running`, the default): the task is still
  rescaled to the common norm, not merely clipped (`step`: this step's tasks only, as before).

Backbone gradients are flat vectors here (one per task, over the shared parameters); the trainer
computes them with one backward pass per task.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from workbench.errors import RunError


class Balancer(nn.Module):
    """Base: weights each task's loss; combines the tasks' backbone gradients by summing them."""

    name = "fixed"
    uses_gradients = False  # True: `combine` does more than a sum, per-task gradients are needed

    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None, **_):
        super().__init__()
        self.tasks = tuple(tasks)
        self.fixed = {t: float((weights or {}).get(t, 1.0)) for t in self.tasks}

    def weight(self, task: str) -> float:
        """The current weight of a task's loss (for logging)."""
        return self.fixed[task]

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        """The loss to backpropagate for one task's batch."""
        return loss * self.fixed[task]

    def observe(self, losses: dict[str, float]) -> None:
        """Called once per optimizer step with the step's raw (unweighted) losses."""

    def combine(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Sum of the tasks' flat backbone gradients."""
        return torch.stack(list(grads.values())).sum(0)

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


class MagnitudeBalancer(Balancer):
    """Scale small losses up so every task's weighted loss is >= max / ratio (running means, momentum 0.9).

    Args:
        ratio: the largest allowed ratio between the biggest and the smallest weighted loss.
    """

    name = "magnitude"

    def __init__(self, tasks, weights=None, ratio: float = 10.0, momentum: float = 0.9, **_):
        super().__init__(tasks, weights)
        if ratio < 1:
            raise RunError(f"magnitude balancing: ratio must be >= 1, got {ratio}")
        self.ratio, self.momentum = float(ratio), float(momentum)
        self.running: dict[str, float] = {}

    def weight(self, task: str) -> float:
        if len(self.running) < len(self.tasks):
            return self.fixed[task]
        scaled = {t: self.running[t] * self.fixed[t] for t in self.tasks}
        floor = max(scaled.values()) / self.ratio
        return self.fixed[task] * max(1.0, floor / max(scaled[task], 1e-12))

    def forward(self, task, loss):
        return loss * self.weight(task)

    def observe(self, losses):
        for t, v in losses.items():
            self.running[t] = v if t not in self.running else self.momentum * self.running[t] + (1 - self.momentum) * v

    def extra_state(self):
        return {"running": dict(self.running)}

    def load_extra_state(self, state):
        self.running = dict(state.get("running", {}))


class UncertaintyBalancer(Balancer):
    """Kendall et al. 2018: loss_t -> exp(-s_t) * loss_t + s_t, with s_t learned (starts at 0)."""

    name = "uncertainty"

    def __init__(self, tasks, weights=None, **_):
        super().__init__(tasks, weights)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def weight(self, task):
        return float(torch.exp(-self.log_vars[self.tasks.index(task)]).item()) * self.fixed[task]

    def forward(self, task, loss):
        s = self.log_vars[self.tasks.index(task)]
        return self.fixed[task] * (torch.exp(-s) * loss + s)


class PCGradBalancer(Balancer):
    """Yu et al. 2020: project each task's gradient off the others it conflicts with, then sum.

    The order in which the other tasks are visited is random (torch's global RNG, reseeded by the
    trainer every step, so a resumed run repeats it).
    """

    name = "pcgrad"
    uses_gradients = True

    def combine(self, grads):
        names = list(grads)
        projected = []
        for t in names:
            g = grads[t].clone()
            others = [names[i] for i in torch.randperm(len(names)).tolist() if names[i] != t]
            for o in others:
                h = grads[o]
                dot = torch.dot(g, h)
                if dot < 0:
                    g -= dot / h.dot(h).clamp_min(1e-20) * h
            projected.append(g)
        return torch.stack(projected).sum(0)


BALANCERS: dict[str, Callable[..., Balancer]] = {
    "fixed": Balancer, "magnitude": MagnitudeBalancer, "uncertainty": UncertaintyBalancer, "pcgrad": PCGradBalancer,
}
CLIP_MODES = ("none", "global", "task")
CLIP_COMMON = ("step", "running")  # task clipping's common norm: this step's tasks, or every task's last norm


def register_balancer(name: str, factory: Callable[..., Balancer]) -> None:
    """Add a balancing method: factory(tasks, weights=..., ratio=...) -> Balancer."""
    BALANCERS[name] = factory


def make_balancer(name: str, tasks: Sequence[str], weights: dict[str, float] | None = None,
                  ratio: float = 10.0) -> Balancer:
    if name not in BALANCERS:
        raise RunError(f"unknown loss balancing {name!r}; choose one of {', '.join(BALANCERS)}")
    return BALANCERS[name](tasks, weights=weights, ratio=ratio)


def common_norm(norms: Iterable[float], max_norm: float) -> float | None:
    """Task clipping's common norm: min(max_norm, the mean of the nonzero task norms); None if all are 0."""
    nonzero = [n for n in norms if n > 0]
    return min(max_norm, sum(nonzero) / len(nonzero)) if nonzero else None


def clip_task_gradients(grads: dict[str, torch.Tensor], max_norm: float,
                        absent: dict[str, float] | None = None) -> dict[str, torch.Tensor]:
    """Task-level backbone-oriented clipping: clip each task on its own, then rescale all to one norm.

    Args:
        grads: task -> flat backbone gradient.
        max_norm: the clipping threshold of each task.
        absent: task -> the norm of its last backbone gradient, for the tasks this step has no batch of
            (one task a step, equal-compute sampling): they count towards the common norm, so that a
            task's gradient is rescaled to the same norm whether or not the others share its step.
    Returns:
        task -> gradient of norm c = min(max_norm, mean of the tasks' norms); a zero gradient stays zero.
    """
    norms = {t: float(g.norm()) for t, g in grads.items()}
    common = common_norm([*norms.values(), *(absent or {}).values()], max_norm)
    if common is None:
        return dict(grads)
    return {t: g * (common / norms[t]) if norms[t] > 0 else g for t, g in grads.items()}
