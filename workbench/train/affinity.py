"""Inter-task affinity by lookahead (Fifty et al., NeurIPS 2021, "Efficiently Identifying Task Groupings"):
how much a step on task i's batch alone changes task j's loss on its own batch.

    Z[i -> j] = 1 - L_j(batch_j; shared - lr * grad_shared L_i(batch_i)) / L_j(batch_j; shared)

Positive: i's gradient also lowers j's loss (they pull the shared backbone the same way); negative: it
raises it. Only the shared parameters (backbone and neck) take the virtual step; the heads stay. A
measurement leaves the model exactly as it found it (parameters, BatchNorm buffers, random state), so a
run with `--affinity-every K` trains the same weights as one without.

Unlike the paper's setting, each task here has its own data set: batch_j is task j's batch of the same
optimizer step, so the affinity says how i's data moves j's loss on j's data.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np
import torch


def lookahead_affinity(model: torch.nn.Module, shared: list[torch.nn.Parameter],
                       losses: dict[str, Callable[[], torch.Tensor]], lr: float) -> dict[tuple[str, str], float]:
    """One affinity measurement.

    Args:
        model: the multi-task model (in the mode it trains in).
        shared: the parameters the tasks share (they take the virtual step).
        losses: task -> a function computing that task's loss on its batch (the same batch every call).
        lr: the virtual SGD step's learning rate.

    Returns:
        (source i, target j) -> Z[i -> j] for every pair of tasks, i == j included (a task's own step).
    """
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    originals = [p.detach().clone() for p in shared]
    devices = sorted({p.device.index for p in shared if p.device.type == "cuda"})
    out = {}
    with torch.random.fork_rng(devices=devices):  # dropout and friends draw as if nothing happened
        state = torch.random.get_rng_state()

        def evaluate(task):
            torch.random.set_rng_state(state)  # every evaluation of a task sees the same random draws
            with torch.no_grad():
                return float(losses[task]())
        try:
            before = {j: evaluate(j) for j in losses}
            for i in losses:
                torch.random.set_rng_state(state)
                grads = torch.autograd.grad(losses[i](), shared, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(shared, grads):
                        if g is not None:
                            p.sub_(lr * g)
                for j in losses:
                    out[(i, j)] = 1.0 - evaluate(j) / before[j] if before[j] else 0.0
                with torch.no_grad():
                    for p, o in zip(shared, originals):
                        p.copy_(o)
        finally:
            with torch.no_grad():
                for p, o in zip(shared, originals):
                    p.copy_(o)
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
    return out


def affinity_matrix(rows: list[dict], tasks: tuple[str, ...]) -> np.ndarray:
    """The mean of the measurements (rows {"step", "source", "target", "affinity"}) as a (T, T) matrix,
    row = source i, column = target j; NaN where nothing was measured."""
    sums, counts = np.zeros((len(tasks), len(tasks))), np.zeros((len(tasks), len(tasks)))
    index = {t: k for k, t in enumerate(tasks)}
    for r in rows:
        if r["source"] in index and r["target"] in index:
            sums[index[r["source"]], index[r["target"]]] += r["affinity"]
            counts[index[r["source"]], index[r["target"]]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def matrix_csv(matrix: np.ndarray, tasks: tuple[str, ...]) -> str:
    """affinity.csv: a header `source,<target>...` and one line per source task."""
    lines = ["source," + ",".join(tasks)]
    lines += [f"{s}," + ",".join("" if np.isnan(v) else f"{v:.6g}" for v in row) for s, row in zip(tasks, matrix)]
    return "\n".join(lines) + "\n"


def read_matrix_csv(text: str) -> tuple[tuple[str, ...], np.ndarray]:
    """(tasks, matrix) of an affinity.csv."""
    lines = [line.split(",") for line in text.strip().splitlines()]
    tasks = tuple(lines[0][1:])
    if [line[0] for line in lines[1:]] != list(tasks):
        raise ValueError("rows and columns name different tasks")
    return tasks, np.array([[float(v) if v else np.nan for v in line[1:]] for line in lines[1:]])


def heatmap_png(matrix: np.ndarray, tasks: tuple[str, ...], title: str) -> bytes:
    """A heat map of the matrix (diverging colours centred on 0, each cell labelled) as PNG bytes."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    fig = Figure(figsize=(1.2 + 1.1 * len(tasks), 0.9 + 1.0 * len(tasks)), dpi=100)
    ax = fig.add_subplot()
    finite = matrix[np.isfinite(matrix)]
    off = matrix[~np.eye(len(tasks), dtype=bool) & np.isfinite(matrix)]  # the diagonal would set the scale
    scale = float(np.abs(off).max()) if off.size and np.abs(off).max() > 0 else \
        float(np.abs(finite).max()) if finite.size else 1.0
    im = ax.imshow(matrix, cmap="RdBu", vmin=-scale, vmax=scale)
    for (r, c), v in np.ndenumerate(matrix):
        ax.text(c, r, "-" if np.isnan(v) else f"{v:+.3g}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_yticks(range(len(tasks)), tasks)
    ax.set_xlabel("target j (its loss)")
    ax.set_ylabel("source i (the step)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


__all__ = ["affinity_matrix", "heatmap_png", "lookahead_affinity", "matrix_csv", "read_matrix_csv"]
