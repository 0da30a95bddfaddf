"""Figures of the HTML report: each function draws one matplotlib Figure (Agg canvas, no pyplot
state) from plain NumPy arrays; `figure_png` turns a figure into PNG bytes.

Coordinates: det boxes here are in pixels, predicted ones x1, y1, x2, y2 and ground-truth ones
x, y, w, h (COCO), as the data set and the predictions hold them.
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

DPI = 80
GOOD, BAD = "#1a7f37", "#cf222e"


def new_figure(width: float, height: float) -> Figure:
    """A Figure of width x height inches on an Agg canvas (constrained layout)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Figure, dpi: int = DPI, palette: bool = True) -> bytes:
    """Render a figure to PNG bytes.

    palette: store 256 colours (median cut, no dithering) instead of RGBA: 3-4x smaller for photos
    (a 560x260 image pair drops from about 100 to 25 kB), no visible change for charts.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    if not palette:
        return buf.getvalue()
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(256, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def pick_colors(k: int) -> np.ndarray:
    """(k, 3) float RGB colours in [0, 1], one per class: tab10 / tab20 when they suffice, else hsv."""
    if k <= 10:
        return np.asarray(colormaps["tab10"].colors[:k], float)
    if k <= 20:
        return np.asarray(colormaps["tab20"].colors[:k], float)
    return colormaps["hsv"](np.linspace(0, 1, k, endpoint=False))[:, :3]


def shorten(name: str, width: int = 18) -> str:
    """A class name cut to `width` characters (an ellipsis marks the cut)."""
    return name if len(name) <= width else name[:width - 1] + "…"


def confusion_figure(cm: np.ndarray, classes: list[str]) -> Figure:
    """Heatmap of a row-normalised confusion matrix.

    Args:
        cm: (K, K) counts, rows = true class, columns = predicted class.
        classes: K names, index order.
    Returns:
        The figure; each row sums to 1 (a class without images stays 0).
    """
    k = len(classes)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    side = min(9.0, 3.0 + 0.14 * k)
    fontsize = max(4.0, min(8.0, 260 / max(k, 1)))
    fig = new_figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    labels = [shorten(c) for c in classes]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(k), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    return fig


def pr_figure(recall: np.ndarray, precision: np.ndarray, names: list[str], ap50: list[float]) -> Figure:
    """Precision-recall curves at IoU 0.5, one line per class.

    Args:
        recall: (R,) recall thresholds (COCOeval's recThrs).
        precision: (R, K) interpolated precision; a column of -1 (no ground truth) is not drawn.
        names: K class names.
        ap50: K AP50 values (NaN without ground truth), shown in the legend.
    """
    fig = new_figure(6.0, 4.2)
    ax = fig.subplots()
    colors = pick_colors(len(names))
    for k, name in enumerate(names):
        p = precision[:, k]
        if (p < 0).any():
            ax.plot([], [], color=colors[k], label=f"{shorten(name)}: no ground truth")
            continue
        ax.plot(recall, p, color=colors[k], linewidth=1.6, label=f"{shorten(name)}: AP50 {ap50[k]:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    return fig


def iou_figure(iou: np.ndarray, classes: list[str], colors: np.ndarray) -> Figure:
    """Horizontal bars of per-class IoU, each in its class colour (the overlays' colours).

    Args:
        iou: (K,) IoU per class, NaN for a class absent from both truth and prediction.
        classes: K names.
        colors: (K, 3) RGB in [0, 1].
    """
    k = len(classes)
    fig = new_figure(6.0, 0.8 + 0.28 * k)
    ax = fig.subplots()
    y = np.arange(k)
    values = np.nan_to_num(iou, nan=0.0)
    ax.barh(y, values, color=colors, edgecolor="black", linewidth=0.4)
    for i, v in enumerate(iou):
        ax.text(min(float(np.nan_to_num(v)) + 0.01, 0.9), i, "n/a" if np.isnan(v) else f"{v:.3f}",
                va="center", fontsize=8)
    ax.set_yticks(y, [shorten(c) for c in classes], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.grid(axis="x", alpha=0.3)
    return fig


def cls_sample_figure(image: np.ndarray, title: str, correct: bool) -> Figure:
    """One classification image under its "pred ... / true ..." title, green if right, red if wrong."""
    fig = new_figure(2.2, 2.5)
    ax = fig.subplots()
    ax.imshow(image)
    ax.set_title(title.replace(" / ", "\n"), fontsize=8, color=GOOD if correct else BAD)
    ax.axis("off")
    return fig


def draw_boxes(ax, boxes_xywh: np.ndarray, captions: list[str], colors: list) -> None:
    """Outline boxes (x, y, w, h pixels) on an image panel, each with its caption above it."""
    for (x, y, w, h), caption, color in zip(boxes_xywh.tolist(), captions, colors):
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=color, linewidth=1.5))
        ax.text(x, y, caption, fontsize=7, color="white", va="bottom",
                bbox={"facecolor": color, "alpha": 0.8, "pad": 1, "edgecolor": "none"})


def det_sample_figure(image: np.ndarray, pred_xyxy: np.ndarray, pred_captions: list[str], pred_colors: list,
                      gt_xywh: np.ndarray, gt_captions: list[str], gt_colors: list, pred_title: str) -> Figure:
    """An image with its predicted boxes (left) beside the same image with its ground truth (right).

    Args:
        image: (H, W, 3) uint8.
        pred_xyxy: (M, 4) predicted boxes, x1, y1, x2, y2 in pixels.
        gt_xywh: (N, 4) ground-truth boxes, x, y, w, h in pixels.
        *_captions, *_colors: one caption and one colour per box.
        pred_title: the left panel's title (the right one reads "ground truth (N)").
    """
    h, w = image.shape[:2]
    fig = new_figure(7.0, 0.45 + 3.4 * h / max(w, 1))
    pred_ax, gt_ax = fig.subplots(1, 2)
    pred_xywh = np.concatenate([pred_xyxy[:, :2], pred_xyxy[:, 2:] - pred_xyxy[:, :2]], axis=1)
    for ax, boxes, captions, colors, title in (
            (pred_ax, pred_xywh, pred_captions, pred_colors, pred_title),
            (gt_ax, gt_xywh, gt_captions, gt_colors, f"ground truth ({len(gt_captions)})")):
        ax.imshow(image)
        draw_boxes(ax, boxes, captions, colors)
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.axis("off")
    return fig


def overlay_mask(mask: np.ndarray, colors: np.ndarray, ignore_index: int, alpha: float = 0.55) -> np.ndarray:
    """(H, W) class mask -> (H, W, 4) RGBA overlay; ignore_index (and values outside the classes) transparent."""
    overlay = np.zeros((*mask.shape, 4), float)
    valid = (mask != ignore_index) & (mask < len(colors))
    overlay[valid, :3] = colors[mask[valid]]
    overlay[valid, 3] = alpha
    return overlay


def seg_sample_figure(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, colors: np.ndarray,
                      ignore_index: int) -> Figure:
    """An image with its predicted mask overlaid (left) beside the ground-truth overlay (right).

    Args:
        image: (H, W, 3) uint8.
        pred, truth: (H, W) class indices; `ignore_index` pixels of the truth are left uncoloured.
        colors: (K, 3) RGB in [0, 1], one per class.
    """
    h, w = image.shape[:2]
    fig = new_figure(7.0, 0.45 + 3.4 * h / max(w, 1))
    for ax, mask, title in zip(fig.subplots(1, 2), (pred, truth), ("predicted", "ground truth")):
        ax.imshow(image)
        ax.imshow(overlay_mask(mask, colors, ignore_index), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return fig
