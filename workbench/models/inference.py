"""Run a model over a split and return Predictions in original image coordinates.

Training's validation and `wb predict` both go through these functions, so the numbers a run
reports for val are the numbers its cached predictions give.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from workbench.data.loaders import ClsDataset, DetDataset, SegDataset, collate_det
from workbench.data.spec import DetSample
from workbench.data.transforms import Letterbox
from workbench.models.losses import decode_detections
from workbench.predictions import DetBoxes, Predictions, reduced_size


def _loader(dataset, batch_size: int, collate=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate)


@torch.no_grad()
def predict_cls(model, dataset: ClsDataset, device: torch.device, batch_size: int = 64,
                progress: bool = False) -> Predictions:
    """Class probabilities (softmax) of every image of a ClsDataset."""
    model.eval()
    probs = []
    for images, _ in tqdm(_loader(dataset, batch_size), desc="predict cls", disable=None if progress else True, leave=False):
        probs.append(torch.softmax(model(images.to(device), tasks=("cls",))["cls"].float(), 1).cpu())
    probs = torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32)
    preds = Predictions()
    for s, p in zip(dataset.samples, probs):
        preds.cls[s.name] = p
    return preds


@torch.no_grad()
def predict_det(model, dataset: DetDataset, category_ids: Sequence[int], device: torch.device,
                batch_size: int = 16, progress: bool = False) -> Predictions:
    """Boxes of every image of a DetDataset, normalised xyxy of the original image, COCO category ids."""
    model.eval()
    cat = np.asarray(category_ids, np.int64)
    preds = Predictions()
    samples: list[DetSample] = dataset.samples
    i = 0
    for images, _, _ in tqdm(_loader(dataset, batch_size, collate_det), desc="predict det",
                             disable=None if progress else True, leave=False):
        for det in decode_detections(model(images.to(device), tasks=("det",))["det"]):
            s = samples[i]
            i += 1
            scale = Letterbox(s.height, s.width, dataset.size).scale
            boxes = det["boxes"].cpu().numpy() / scale
            boxes = np.clip(boxes / np.array([s.width, s.height, s.width, s.height], np.float32), 0, 1)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            preds.det[s.name] = DetBoxes(boxes[keep].astype(np.float32), det["scores"].cpu().numpy()[keep],
                                         cat[det["labels"].cpu().numpy()[keep]])
            preds.sizes["det"][s.name] = (s.height, s.width)
    return preds


@torch.no_grad()
def predict_seg(model, dataset: SegDataset, device: torch.device, batch_size: int = 8,
                progress: bool = False) -> Predictions:
    """Segmentation logits of every image of a SegDataset, float16 at 1/4 of the original size."""
    model.eval()
    preds = Predictions()
    i = 0
    size = dataset.size
    for images, _ in tqdm(_loader(dataset, batch_size), desc="predict seg", disable=None if progress else True, leave=False):
        logits = model(images.to(device), tasks=("seg",))["seg"].float()
        logits = F.interpolate(logits, size=(size, size), mode="bilinear", align_corners=False)
        for lg in logits:
            name, hw = dataset.samples[i].name, dataset.image_size(i)
            i += 1
            h, w = Letterbox(*hw, size).inner  # drop the padding, then resize to 1/4 of the original
            out = F.interpolate(lg[None, :, :h, :w], size=reduced_size(hw), mode="bilinear", align_corners=False)[0]
            preds.seg[name] = out.cpu().numpy().astype(np.float16)
            preds.sizes["seg"][name] = hw
    return preds


def predict_all(model, datasets: dict, category_ids: Sequence[int], device: torch.device,
                batch_size: int = 16, progress: bool = False) -> tuple[Predictions, dict[str, float]]:
    """Predictions of all three tasks for a split's datasets {"cls", "det", "seg"}.

    Returns:
        (predictions, seconds spent per task {"cls_s", "det_s", "seg_s"}).
    """
    preds, timings = Predictions(), {}
    t = time.perf_counter()
    preds.cls = predict_cls(model, datasets["cls"], device, batch_size, progress).cls
    timings["cls_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    part = predict_det(model, datasets["det"], category_ids, device, batch_size, progress)
    preds.det, preds.sizes["det"] = part.det, part.sizes["det"]
    timings["det_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    part = predict_seg(model, datasets["seg"], device, batch_size, progress)
    preds.seg, preds.sizes["seg"] = part.seg, part.sizes["seg"]
    timings["seg_s"] = round(time.perf_counter() - t, 3)
    return preds, timings
