"""Run a model over a split, under one or more TTA views, and return Predictions per view in
original image coordinates.

Training's validation and `mtwb predict` both go through these functions, so the numbers a run
reports for val are the numbers its cached predictions give. Views whose augmented batches have
the same size run in one batched forward; every view is undone before anything leaves here.
"""
from __future__ import annotations

import time
from collections import defaultdict
from contextlib import nullcontext
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from workbench.data.loaders import ClsDataset, DetDataset, SegDataset, collate_det
from workbench.records.tasks import TASKS
from workbench.data.transforms import Letterbox, canvas_hw
from workbench.models.losses import decode_detections
from workbench.records.predictions import DetBoxes, Predictions, reduced_size
from workbench.progress import Progress
from workbench.tta.views import View

IDENTITY = (View(),)


def _loader(dataset, batch_size: int, collate=None, part: slice | None = None) -> DataLoader:
    """The images of `dataset` in order (only those of `part`: one process's share of a split)."""
    if part is not None:
        dataset = Subset(dataset, range(len(dataset))[part])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


def _start(part: slice | None) -> int:
    return part.start if part is not None else 0


def _bar(loader, desc: str, progress: bool):
    """The loader's batches, with a bar on a terminal and a line every ~10% (or 30 s) in a log."""
    bar = Progress(len(loader), desc, enabled=progress, unit="batch")
    for batch in loader:
        yield batch
        bar.update(1, items=len(batch[0]))
    bar.close()


def run_views(model, images: torch.Tensor, views: Sequence[View], task: str) -> list:
    """Forward a batch under every view, batching views whose augmented inputs share a size.

    Returns:
        One raw model output per view (for det a dict of maps), in the order of `views`.
    """
    size = tuple(images.shape[-2:])
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, v in enumerate(views):
        groups[v.output_size(size)].append(i)
    outputs: list = [None] * len(views)
    for members in groups.values():
        augmented = [views[i].augment(images) for i in members]
        out = model(torch.cat(augmented), tasks=(task,))[task]
        start = 0
        for i, a in zip(members, augmented):
            part = slice(start, start + len(a))
            outputs[i] = {k: v[part] for k, v in out.items()} if isinstance(out, dict) else out[part]
            start += len(a)
    return outputs


@torch.no_grad()
def predict_cls(model, dataset: ClsDataset, device: torch.device, batch_size: int = 64,
                progress: bool = False, views: Sequence[View] = IDENTITY, part: slice | None = None) -> list[Predictions]:
    """Class probabilities (softmax; crops averaged) of every image (of `part`), one Predictions per view."""
    model.eval()
    per_view: list[list[torch.Tensor]] = [[] for _ in views]
    for images, _ in _bar(_loader(dataset, batch_size, part=part), "predict cls", progress):
        images = images.to(device).float() / 255.0
        for i, (v, out) in enumerate(zip(views, run_views(model, images, views, "cls"))):
            per_view[i].append(v.undo_cls(torch.softmax(out.float(), 1), len(images)).cpu())
    result = []
    for chunks in per_view:
        preds = Predictions()
        probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
        preds.cls = {s.name: p for s, p in zip(dataset.samples[part or slice(None)], probs)}
        result.append(preds)
    return result


@torch.no_grad()
def predict_det(model, dataset: DetDataset, category_ids: Sequence[int], device: torch.device,
                batch_size: int = 16, progress: bool = False, views: Sequence[View] = IDENTITY,
                part: slice | None = None) -> list[Predictions]:
    """Boxes of every image (of `part`; normalised xyxy of the original image, COCO category ids), per view."""
    model.eval()
    cat = np.asarray(category_ids, np.int64)
    result = [Predictions() for _ in views]
    size = canvas_hw(dataset.size)
    i = _start(part)
    for images, _, _ in _bar(_loader(dataset, batch_size, collate_det, part), "predict det", progress):
        images = images.to(device).float() / 255.0
        decoded = [decode_detections(out) for out in run_views(model, images, views, "det")]
        for b in range(len(images)):
            s = dataset.samples[i + b]
            scale = Letterbox(s.height, s.width, dataset.size).scale
            norm = np.array([s.width, s.height, s.width, s.height], np.float32) * scale
            for preds, v, dets in zip(result, views, decoded):
                det = dets[b]
                boxes = np.clip(v.undo_boxes(det["boxes"], size).cpu().numpy() / norm, 0, 1)
                keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
                preds.det[s.name] = DetBoxes(boxes[keep].astype(np.float32), det["scores"].cpu().numpy()[keep],
                                             cat[det["labels"].cpu().numpy()[keep]])
                preds.sizes["det"][s.name] = (s.height, s.width)
        i += len(images)
    return result


@torch.no_grad()
def predict_seg(model, dataset: SegDataset, device: torch.device, batch_size: int = 8,
                progress: bool = False, views: Sequence[View] = IDENTITY, part: slice | None = None) -> list[Predictions]:
    """Segmentation logits of every image (of `part`), float16 at 1/4 of the original size, per view."""
    model.eval()
    result = [Predictions() for _ in views]
    size = canvas_hw(dataset.size)
    i = _start(part)
    for images, _ in _bar(_loader(dataset, batch_size, part=part), "predict seg", progress):
        images = images.to(device).float() / 255.0
        outs = [v.undo_seg(out.float(), size) for v, out in zip(views, run_views(model, images, views, "seg"))]
        for b in range(len(images)):
            name, hw = dataset.samples[i + b].name, dataset.image_size(i + b)
            h, w = Letterbox(*hw, dataset.size).inner  # drop the padding, then resize to 1/4 of the original
            for preds, logits in zip(result, outs):
                out = torch.nn.functional.interpolate(logits[b:b + 1, :, :h, :w], size=reduced_size(hw),
                                                      mode="bilinear", align_corners=False)[0]
                preds.seg[name] = out.contiguous().cpu().numpy().astype(np.float16)
                preds.sizes["seg"][name] = hw
        i += len(images)
    return result


def predict_all(model, datasets: dict, category_ids: Sequence[int], device: torch.device, batch_size: int = 16,
                progress: bool = False, views: dict[str, Sequence[View]] | None = None,
                parts: dict[str, slice] | None = None) -> tuple[dict[str, list[Predictions]], dict[str, float]]:
    """Predictions of each task in a split's datasets (some of {"cls", "det", "seg"}).

    Args:
        views: task -> its TTA views (default: identity only).
        parts: task -> the slice of its images to predict (one process's share; default: all).
    Returns:
        (task -> one Predictions per view, seconds spent per task {"cls_s", "det_s", "seg_s"}).
    """
    views = views or {}
    out, timings = {}, {}
    with folded(model):
        for task in [t for t in TASKS if t in datasets]:
            t = time.perf_counter()
            v = tuple(views.get(task, IDENTITY))
            part = (parts or {}).get(task)
            if task == "cls":
                out[task] = predict_cls(model, datasets["cls"], device, batch_size, progress, v, part)
            elif task == "det":
                out[task] = predict_det(model, datasets["det"], category_ids, device, batch_size, progress, v, part)
            else:
                out[task] = predict_seg(model, datasets["seg"], device, batch_size, progress, v, part)
            timings[f"{task}_s"] = round(time.perf_counter() - t, 3)
    return out, timings


def folded(model):
    """`model` in eval mode with its BatchNorm folded into its convolutions for the block
    (MultiTaskModel.folded_norms); any other model (an onnxruntime session folds its own) as it is."""
    if not hasattr(model, "folded_norms"):
        return nullcontext(model)
    return model.eval().folded_norms()


def merge_tasks(cls: Predictions, det: Predictions, seg: Predictions) -> Predictions:
    """One Predictions holding each task's part of three."""
    return Predictions(cls=cls.cls, det=det.det, seg=seg.seg,
                       sizes={"cls": cls.sizes["cls"], "det": det.sizes["det"], "seg": seg.sizes["seg"]})
