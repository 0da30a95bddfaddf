"""Tests of workbench/train/curves.py on hand-written steps.csv / metrics.csv files."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from workbench.errors import RunError
from workbench.train.curves import plot_training_curves, training_figure

TASK_METRICS = {"cls": "cls_top1", "det": "det_map50", "seg": "seg_miou"}


def write_run_csvs(run_dir: Path, tasks: list[str], epochs: int, steps_per_epoch: int | None) -> Path:
    """Write metrics.csv (and steps.csv unless steps_per_epoch is None) for the given tasks."""
    run_dir.mkdir(parents=True)
    rows = [{"epoch": e, **{f"loss_{t}": 1.0 / e for t in tasks}, **{f"grad_{t}": 10.0 ** i / e for i, t in enumerate(tasks)},
             **{TASK_METRICS[t]: 0.1 * e for t in tasks}, "score": 0.1 * e, "lr": 1e-3, "time_s": 2.0 * e}
            for e in range(1, epochs + 1)]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    if steps_per_epoch is not None:
        n = epochs * steps_per_epoch
        steps = [{"step": s, "epoch": s // steps_per_epoch + 1, "lr": 1e-3,
                  **{f"loss_{t}": 2.0 / (s + 1) for t in tasks}, **{f"grad_{t}": 10.0 ** i for i, t in enumerate(tasks)}}
                 for s in range(n)]
        pd.DataFrame(steps).to_csv(run_dir / "steps.csv", index=False)
    return run_dir


def labelled_lines(ax) -> int:
    """Lines that appear in the legend (the raw per-step lines are unlabelled)."""
    return len([line for line in ax.get_lines() if not line.get_label().startswith("_")])


def test_full_run_writes_png(tmp_path):
    run = write_run_csvs(tmp_path / "full", ["cls", "det", "seg"], epochs=3, steps_per_epoch=20)
    path = plot_training_curves(run)
    assert path == run / "curves.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0
    assert not list(run.glob(".*.tmp"))


def test_single_task_run_without_steps_csv(tmp_path):
    run = write_run_csvs(tmp_path / "single", ["seg"], epochs=1, steps_per_epoch=None)
    with Image.open(plot_training_curves(run)) as image:
        assert image.format == "PNG" and image.size[0] > 0
    loss_ax, grad_ax, metric_ax = training_figure(run).axes
    assert (labelled_lines(loss_ax), labelled_lines(grad_ax), labelled_lines(metric_ax)) == (1, 1, 1)
    assert loss_ax.get_xlabel() == "epoch"


@pytest.mark.parametrize("tasks", [["cls", "det", "seg"], ["cls", "det"]])
def test_every_panel_has_a_line_per_task(tmp_path, tasks):
    run = write_run_csvs(tmp_path / "run", tasks, epochs=2, steps_per_epoch=5)
    fig = training_figure(run)
    assert len(fig.axes) == 3
    loss_ax, grad_ax, metric_ax = fig.axes
    n = len(tasks)
    assert labelled_lines(loss_ax) == n and len(loss_ax.get_lines()) == 2 * n  # raw + moving average
    assert labelled_lines(grad_ax) == n and grad_ax.get_yscale() == "log"
    assert labelled_lines(metric_ax) == n + 1  # + the combined score
    assert loss_ax.get_xlabel() == "step" and metric_ax.get_xlabel() == "epoch"


def test_folder_without_csvs_is_an_error(tmp_path):
    with pytest.raises(RunError, match="no steps.csv or metrics.csv"):
        training_figure(tmp_path)
