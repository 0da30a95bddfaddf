"""Training curves of a run folder: loss, backbone gradient norm and val metrics in one PNG.

Reads `steps.csv` (one row per optimizer step) and `metrics.csv` (one row per epoch); a task is
plotted when its columns are present, so single-task and old runs work too. Without steps.csv the
per-epoch loss_/grad_ columns of metrics.csv are plotted instead.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from workbench.records.tasks import METRICS, TASKS
from workbench.errors import RunError
from workbench.io import atomic_path

CURVES = "curves.png"
TASK_COLORS = {"cls": "tab:blue", "det": "tab:orange", "seg": "tab:green"}


def read_csv(path: Path) -> pd.DataFrame | None:
    """Read a run's CSV file; None when it does not exist, RunError naming it when it is unreadable."""
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise RunError(f"{path}: cannot read CSV ({e})") from None


def moving_average(values: pd.Series, window: int) -> pd.Series:
    """Trailing mean over `window` rows (fewer at the start)."""
    return values.rolling(window, min_periods=1).mean()


def smoothing_window(n: int) -> int:
    """Moving-average window for n points: about a tenth of them, between 1 and 50."""
    return max(1, min(50, n // 10))


def set_integer_ticks(ax: Axes, values: pd.Series) -> None:
    """Integer x ticks: each value when there are few (a single epoch too), else a few round ones."""
    distinct = sorted(values.dropna().unique())
    if len(distinct) <= 10:
        ax.set_xticks(distinct)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_series(ax: Axes, table: pd.DataFrame, x: str, prefix: str, per_step: bool) -> int:
    """Draw one line per task from the columns `<prefix><task>` of table.

    Args:
        ax: the panel.
        table: steps.csv rows (per_step) or metrics.csv rows.
        x: the x column ("step" or "epoch").
        prefix: "loss_" or "grad_".
        per_step: draw the raw values as a light unlabelled line under a moving average.
    Returns:
        The number of tasks drawn (labelled lines).
    """
    drawn = 0
    for task in TASKS:
        column = f"{prefix}{task}"
        if column not in table or not table[column].notna().any():  # e.g. no backbone gradient in headft
            continue
        color = TASK_COLORS[task]
        if per_step:
            ax.plot(table[x], table[column], color=color, alpha=0.25, linewidth=0.8, label=f"_{task} raw")
            smooth = moving_average(table[column], smoothing_window(len(table)))
            ax.plot(table[x], smooth, color=color, linewidth=1.6, label=task)
        else:
            ax.plot(table[x], table[column], color=color, marker="o", markersize=4, label=task)
        drawn += 1
    return drawn


def draw_training_panel(ax: Axes, steps: pd.DataFrame | None, epochs: pd.DataFrame | None, prefix: str,
                        title: str) -> int:
    """Fill the loss or gradient panel from steps.csv, or from metrics.csv when steps.csv is missing.

    Returns:
        The number of tasks drawn.
    """
    per_step = steps is not None
    table, x = (steps, "step") if per_step else (epochs, "epoch")
    drawn = plot_series(ax, table, x, prefix, per_step) if table is not None else 0
    ax.set_title(title + ("" if per_step else " (per epoch)"))
    ax.set_xlabel(x)
    if drawn:
        set_integer_ticks(ax, table[x])
        ax.legend(loc="best")
    else:
        ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes, color="gray")
    return drawn


def draw_metric_panel(ax: Axes, epochs: pd.DataFrame | None) -> None:
    """Val metric per task per epoch, plus the combined score when more than one task is trained."""
    ax.set_title("validation")
    ax.set_xlabel("epoch")
    if epochs is None or epochs.empty:
        ax.text(0.5, 0.5, "no epoch finished yet", ha="center", va="center", transform=ax.transAxes, color="gray")
        return
    tasks = [t for t in TASKS if METRICS[t] in epochs]
    for task in tasks:
        ax.plot(epochs["epoch"], epochs[METRICS[task]], color=TASK_COLORS[task], marker="o", markersize=4,
                label=METRICS[task])
    if len(tasks) > 1 and "score" in epochs:  # a single-task run's score is its one metric: no second line
        ax.plot(epochs["epoch"], epochs["score"], color="black", linewidth=2, marker="o", markersize=4, label="score")
    if tasks:
        set_integer_ticks(ax, epochs["epoch"])
        ax.legend(loc="best")


def training_figure(run_dir: Path) -> Figure:
    """Build the three-panel figure of a run without saving it.

    Args:
        run_dir: a run folder with steps.csv and/or metrics.csv.
    Returns:
        A Figure (Agg canvas) whose axes are, in order: training loss per task (per step, or per
        epoch without steps.csv), backbone gradient norm per task (log y), val metrics per epoch.
    """
    run_dir = Path(run_dir)
    steps = read_csv(run_dir / "steps.csv")
    epochs = read_csv(run_dir / "metrics.csv")
    if steps is None and epochs is None:
        raise RunError(f"{run_dir}: no steps.csv or metrics.csv to plot")
    fig = Figure(figsize=(16, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    loss_ax, grad_ax, metric_ax = fig.subplots(1, 3)
    draw_training_panel(loss_ax, steps, epochs, "loss_", "training loss")
    if draw_training_panel(grad_ax, steps, epochs, "grad_", "backbone gradient norm"):
        grad_ax.set_yscale("log")
    draw_metric_panel(metric_ax, epochs)
    fig.suptitle(run_dir.resolve().name)
    return fig


def plot_training_curves(run_dir: Path) -> Path:
    """Write `run_dir/curves.png` (atomically) with the loss, gradient-norm and val-metric panels.

    Args:
        run_dir: a run folder with steps.csv and/or metrics.csv.
    Returns:
        The path of the PNG.
    """
    path = Path(run_dir) / CURVES
    fig = training_figure(run_dir)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
