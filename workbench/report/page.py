"""The HTML of a report: sections, embedded PNG figures, sample grids, the page itself."""
from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from workbench.data.spec import DatasetSpec, read_image
from workbench.errors import RunError
from workbench.io import read_mask
from workbench.records import METRIC_COLUMNS, GroundTruth, Predictions, Submission, seg_logits_to_mask
from workbench.records.ensemble import EnsembleSpec
from workbench.records.tasks import TASKS
from workbench.report import figures
from workbench.report.analysis import (TEST_ROW, compute_pr_curves, count_confusion, evaluate_seg, find_most_confused,
                                       rank_cls_worst, rank_det_worst, rank_seg_worst)
from workbench.train.curves import training_figure


BOX_THRESHOLD = 0.3  # predicted boxes drawn on the det samples


# -- HTML ------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #1f2328; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f6f8fa; }
tr.blend td, tr.blend th { font-weight: 600; background: #eef6ff; }
tr.test td, tr.test th { background: #fff8e6; }
table.meta th, table.meta td { text-align: left; border: none; padding: 0.1em 0.8em 0.1em 0; }
.grid { display: flex; flex-wrap: wrap; gap: 0.6em; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 0.8em; color: #57606a; text-align: center; }
img { max-width: 100%; }
.note { color: #57606a; font-size: 0.9em; }
nav a { margin-right: 1em; }
"""


Section = tuple[str, str, str]  # (id, heading, inner HTML) of one <section>


DET_TITLE = "Detection: precision-recall at IoU 0.5"


def escape(value) -> str:
    return html.escape(str(value))


def embed_figure(fig, alt: str, css_class: str, **data) -> str:
    """An <img> holding the figure as an embedded PNG; `data` becomes data-* attributes."""
    uri = "data:image/png;base64," + base64.b64encode(figures.figure_png(fig)).decode("ascii")
    attrs = "".join(f' data-{k}="{escape(v)}"' for k, v in data.items())
    return f'<img class="{css_class}" alt="{escape(alt)}" src="{uri}"{attrs}>'


def format_cell(metrics: dict, key: str) -> str:
    if key not in metrics:
        return "<td>-</td>"
    value = float(metrics[key])
    return f'<td data-value="{value!r}">{value:.4f}</td>'


def render_scores(rows: list[tuple[str, dict]], split: str) -> Section:
    """The score table; each number carries its full value in data-value."""
    head = "".join(f"<th>{title}</th>" for _, title in METRIC_COLUMNS)
    body = []
    for label, metrics in rows:
        kind = "blend" if label == "blend" else "test" if label == TEST_ROW else "member"
        cells = "".join(format_cell(metrics, key) for key, _ in METRIC_COLUMNS)
        body.append(f'<tr class="{kind}" data-row="{escape(label)}"><th>{escape(label)}</th>{cells}</tr>')
    return ("scores", "Scores",
            f'<p class="note">On {escape(split)} unless the row says otherwise; a member is scored on the tasks it '
            f'serves only.</p><table id="score-table"><thead><tr><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def render_blend(spec: EnsembleSpec) -> Section:
    """Per task: the members with their weights, and the box fusion."""
    rows = []
    for t in TASKS:
        tb = spec.tasks[t]
        members = ", ".join(f"{escape(m.label)} &times; {w:g}" for m, w in zip(tb.members, tb.weights))
        fusion = f" ({escape(tb.fusion.det_method)}, IoU {tb.fusion.iou_thr:g}, skip &lt; {tb.fusion.skip_box_thr:g})" \
            if t == "det" else ""
        rows.append(f"<tr><th>{t}</th><td style='text-align:left'>{members}{fusion}</td></tr>")
    return "blend", "Blend", f'<table id="blend-table">{"".join(rows)}</table>'


def render_curves(run_dirs: list[Path]) -> Section:
    """Each run's training loss, gradient norm and val metrics (`workbench.train.curves`)."""
    parts = []
    for run_dir in run_dirs:
        try:
            parts.append(f"<figure>{embed_figure(training_figure(run_dir), f'training curves of {run_dir.name}', 'curves', run=run_dir.name)}"
                         f"<figcaption>{escape(run_dir.name)}</figcaption></figure>")
        except RunError as e:
            parts.append(f'<p class="note">{escape(e)}</p>')
    return "curves", "Training curves", "".join(parts)


def render_cls(sub: Submission, truth: GroundTruth, classes: list[str]) -> Section:
    """Confusion matrix heatmap (rows normalised) and the most confused pairs."""
    cm = count_confusion(sub, truth, len(classes))
    pairs = find_most_confused(cm, classes)
    rows = "".join(f"<tr><td>{escape(a)}</td><td>{escape(b)}</td><td>{n}</td><td>{share:.0%}</td></tr>"
                   for a, b, n, share in pairs) or '<tr><td colspan="4">no confusion</td></tr>'
    return ("cls", "Classification: confusion matrix",
            f'{embed_figure(figures.confusion_figure(cm, classes), "confusion matrix", "confusion")}'
            f'<h3>Most confused</h3><table id="confused"><thead><tr><th>true</th><th>predicted</th><th>images</th>'
            f'<th>of the true class</th></tr></thead><tbody>{rows}</tbody></table>')


def render_det(sub: Submission, truth: GroundTruth, categories: list[dict]) -> Section:
    """Precision-recall curves at IoU 0.5 per category, and a table of AP50 and box counts."""
    curves = compute_pr_curves(sub, truth)
    if curves is None:
        return "det", DET_TITLE, '<p class="note">no detections</p>'
    names = {int(c["id"]): c.get("name", str(c["id"])) for c in categories}
    labels = [names.get(c, str(c)) for c in curves.category_ids]
    ap = [curves.ap50[c] for c in curves.category_ids]
    counts = {c: 0 for c in curves.category_ids}
    for ann in truth.det["annotations"]:
        counts[int(ann["category_id"])] = counts.get(int(ann["category_id"]), 0) + 1
    rows = "".join(f'<tr data-category="{c}"><td>{escape(n)}</td>'
                   + ("<td>-</td>" if np.isnan(a) else f'<td data-value="{float(a)!r}">{a:.4f}</td>')
                   + f"<td>{counts[c]}</td></tr>" for c, n, a in zip(curves.category_ids, labels, ap))
    return ("det", DET_TITLE,
            f'{embed_figure(figures.pr_figure(curves.recall, curves.precision, labels, ap), "precision-recall curves", "pr")}'
            f'<table id="ap-table"><thead><tr><th>category</th><th>AP50</th><th>boxes</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def render_seg(sub: Submission, truth: GroundTruth, classes: list[str]) -> Section:
    """Per-class IoU bars in the overlay colours, and a table of IoU and pixel share."""
    ev = evaluate_seg(sub, truth)
    iou = ev.iou_per_class()
    pixels = ev.confusion.sum(axis=1)
    share = pixels / max(int(pixels.sum()), 1)
    rows = "".join(f'<tr data-class="{escape(c)}"><td>{escape(c)}</td>'
                   + ("<td>-</td>" if np.isnan(v) else f'<td data-value="{float(v)!r}">{v:.4f}</td>')
                   + f"<td>{s:.1%}</td></tr>" for c, v, s in zip(classes, iou, share))
    colors = figures.pick_colors(len(classes))
    return ("seg", "Segmentation: IoU per class",
            f'{embed_figure(figures.iou_figure(iou, classes, colors), "IoU per class", "iou")}'
            f'<table id="iou-table"><thead><tr><th>class</th><th>IoU</th><th>pixels</th></tr></thead>'
            f'<tbody>{rows}</tbody></table>')


def render_cls_samples(spec: DatasetSpec, split: str, preds: Predictions, n: int) -> list[str]:
    """The n worst images of the split (the most confident mistakes first), titled with prediction, its
    probability and truth."""
    classes = spec.cls_classes
    samples = rank_cls_worst([s for s in spec.cls_samples(split) if s.name in preds.cls], preds.cls)[:n]
    out = []
    for s in samples:
        probs = preds.cls[s.name]
        k = int(np.argmax(probs))
        title = f"pred: {classes[k]} ({float(probs[k]):.2f}) / true: {classes[s.label]}"
        fig = figures.cls_sample_figure(np.asarray(read_image(s.path)), title, k == s.label)
        out.append(f"<figure>{embed_figure(fig, title, 'sample', task='cls', image=s.name)}"
                   f"<figcaption>{escape(s.name)}</figcaption></figure>")
    return out


def render_det_samples(spec: DatasetSpec, split: str, preds: Predictions, n: int) -> list[str]:
    """The n worst images of the split (most missed + false boxes at score >= BOX_THRESHOLD first): predicted
    boxes beside the ground truth."""
    categories = spec.det_categories
    index = {int(c["id"]): i for i, c in enumerate(categories)}
    names = {int(c["id"]): c.get("name", str(c["id"])) for c in categories}
    colors = [tuple(c) for c in figures.pick_colors(len(categories))]
    samples = rank_det_worst([s for s in spec.det_samples(split) if s.name in preds.det], preds, BOX_THRESHOLD)[:n]
    out = []
    for s in samples:
        d = preds.det[s.name]
        h, w = preds.sizes["det"][s.name]
        keep = d.scores >= BOX_THRESHOLD
        top = float(d.scores.max()) if len(d.scores) else 0.0
        boxes = d.boxes[keep] * np.array([w, h, w, h], np.float32)  # normalised xyxy -> pixels
        labels, scores = d.labels[keep].tolist(), d.scores[keep].tolist()
        gt = s.labels.tolist()
        fig = figures.det_sample_figure(
            np.asarray(read_image(s.path)), boxes, [f"{names.get(c, c)} {p:.2f}" for c, p in zip(labels, scores)],
            [colors[index[c]] for c in labels], s.boxes, [str(names.get(c, c)) for c in gt], [colors[index[c]] for c in gt],
            f"predicted ({len(labels)} >= {BOX_THRESHOLD}; top score {top:.2f})")
        alt = f"{len(labels)} predicted boxes (score >= {BOX_THRESHOLD}), {len(gt)} true boxes"
        out.append(f"<figure>{embed_figure(fig, alt, 'sample', task='det', image=s.name)}"
                   f"<figcaption>{escape(s.name)}</figcaption></figure>")
    return out


def render_seg_samples(spec: DatasetSpec, split: str, preds: Predictions, n: int) -> list[str]:
    """The n worst images of the split (lowest mIoU first): predicted mask overlay beside the ground truth's."""
    colors = figures.pick_colors(len(spec.seg_classes))
    candidates = [s for s in spec.seg_samples(split) if s.name in preds.seg]
    masks = {s.name: (seg_logits_to_mask(preds.seg[s.name], preds.sizes["seg"][s.name]), read_mask(s.mask))
             for s in candidates}
    samples = rank_seg_worst(candidates, masks, len(spec.seg_classes), spec.ignore_index)[:n]
    out = []
    for s in samples:
        pred, truth = masks[s.name]
        fig = figures.seg_sample_figure(np.asarray(read_image(s.path)), pred, truth, colors, spec.ignore_index)
        out.append(f"<figure>{embed_figure(fig, 'predicted and true masks', 'sample', task='seg', image=s.name)}"
                   f"<figcaption>{escape(s.name)}</figcaption></figure>")
    return out


SAMPLE_RENDERERS = {"cls": render_cls_samples, "det": render_det_samples, "seg": render_seg_samples}


def render_samples(spec: DatasetSpec, split: str, preds: Predictions, tasks: tuple[str, ...], n: int) -> Section:
    """A grid of sample figures per task."""
    parts = []
    for t in tasks:
        figs = SAMPLE_RENDERERS[t](spec, split, preds, n)
        parts.append(f'<h3>{t}</h3><div class="grid" id="samples-{t}">{"".join(figs)}</div>')
    legend = ""
    if "seg" in tasks:
        swatches = "".join(
            f'<span style="display:inline-block;margin-right:0.8em"><span style="display:inline-block;width:0.9em;'
            f'height:0.9em;background:rgb({int(r * 255)},{int(g * 255)},{int(b * 255)});vertical-align:middle">'
            f'</span> {escape(c)}</span>' for c, (r, g, b) in zip(spec.seg_classes, figures.pick_colors(len(spec.seg_classes))))
        legend = f'<p class="note">seg colours: {swatches}; unlabelled pixels ({spec.ignore_index}) left uncoloured.</p>'
    return ("samples", f"Samples ({split}, the {n} worst of each task first)",
            f'<p class="note">Worst first: cls, the most confident mistakes (then the least sure correct '
            f'images); det, the most missed plus false boxes at score {BOX_THRESHOLD} or more (IoU 0.5, same '
            f'class); seg, the lowest per-image mIoU. det: boxes scoring at least {BOX_THRESHOLD}.</p>'
            f'{legend}{"".join(parts)}')


def render_page(title: str, meta: list[tuple[str, str]], sections: list[Section]) -> str:
    """The whole page: title, a metadata table, a line of links to the sections, the sections."""
    meta_rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in meta)
    nav = " ".join(f'<a href="#{key}">{escape(heading)}</a>' for key, heading, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{escape(heading)}</h2>{content}</section>'
                   for key, heading, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f'<style>{CSS}</style></head><body><h1>{escape(title)}</h1><table class="meta">{meta_rows}</table>'
            f'<nav>{nav}</nav>{body}</body></html>\n')
