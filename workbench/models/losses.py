"""Task losses and the detection decoder (CenterNet: heatmap focal loss, L1 on size and offset).

Every loss is a sum divided by a count (images, labelled pixels, object centres). `count` maps the
batch's own count to the one to divide by: the identity in one process; under torchrun the count
summed over the ranks (workbench.dist.Dist.count), so that each rank's loss is its share of the
global batch's mean and the ranks' summed gradients are the global batch's gradient.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from workbench.records.tasks import DET_STRIDE


Count = Callable[[torch.Tensor], torch.Tensor]


def _own(n: torch.Tensor) -> torch.Tensor:
    return n


def cls_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.1,
             weight: torch.Tensor | None = None, count: Count = _own) -> torch.Tensor:
    """Cross-entropy (torch's mean: divided by the images, or by their class weights' sum).
    logits (B, K), labels (B,) int; weight: optional (K,) class weights."""
    total = F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing, reduction="sum")
    n = weight[labels].sum() if weight is not None else torch.tensor(float(len(labels)), device=logits.device)
    return total / count(n).clamp_min(1e-12)


def seg_loss(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = 255,
             weight: torch.Tensor | None = None, count: Count = _own) -> torch.Tensor:
    """Cross-entropy at full resolution, divided by the labelled pixels (or their class weights' sum).
    logits (B, K, H/4, W/4), masks (B, H, W) with ignore_index; weight: optional (K,) class weights.
    A batch of ignore-only masks gives 0 (and keeps the graph)."""
    up = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
    valid = masks != ignore_index
    n = weight[masks[valid]].sum() if weight is not None else valid.sum().float()
    total = (F.cross_entropy(up, masks, weight=weight, ignore_index=ignore_index, reduction="sum")
             if valid.any() else up.sum() * 0.0)
    return total / count(n).clamp_min(1.0 if weight is None else 1e-12)


def soft_cls_loss(logits: torch.Tensor, probs: torch.Tensor, temperature: float = 1.0,
                  count: Count = _own) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): T^2 * KL(teacher_T || student_T).

    Args:
        logits: (B, K) student logits.
        probs: (B, K) teacher probabilities (at temperature 1); sharpened or softened to
            temperature T as softmax(log p / T).
    """
    teacher = torch.softmax(torch.log(probs.clamp_min(1e-8)) / temperature, dim=1)
    student = torch.log_softmax(logits / temperature, dim=1)
    n = torch.tensor(float(len(logits)), device=logits.device)
    return F.kl_div(student, teacher, reduction="sum") * temperature**2 / count(n)


def soft_seg_loss(logits: torch.Tensor, probs: torch.Tensor, confidence: float = 0.5,
                  count: Count = _own) -> torch.Tensor:
    """Soft cross-entropy with the teacher's per-pixel probabilities at 1/4 resolution, over the
    pixels where the teacher is confident (max probability >= confidence; padding has none).

    Args:
        logits: (B, K, h, w) student logits; probs: (B, K, h, w) teacher probabilities.
    """
    top = probs.max(dim=1).values
    weight = ((top >= confidence) & (top > 0)).float()  # letterbox padding holds no probability
    n = count(weight.sum())
    if n == 0:
        return logits.sum() * 0.0
    ce = -(probs * torch.log_softmax(logits, dim=1)).sum(dim=1)
    return (ce * weight).sum() / n


def encode_det_targets(boxes: list[torch.Tensor], labels: list[torch.Tensor], num_classes: int,
                       out_hw: tuple[int, int], stride: int = DET_STRIDE, alpha: float = 0.54):
    """Build CenterNet targets on the (h, w) output grid.

    Args:
        boxes: per image (N, 4) xyxy in input pixels; labels: per image (N,) class index.
        out_hw: (h, w) of the head's output; stride: input pixels per output cell.
        alpha: Gaussian radius factor (TTFNet): sigma_x = alpha * box_w / 6, in cells.
    Returns:
        heatmap (B, K, h, w) in [0, 1]; and for positives: batch index, cell y, cell x (M,) long,
        size target (M, 2) box w, h in cells, offset target (M, 2) sub-cell centre in [0, 1).
    """
    h, w = out_hw
    heat = torch.zeros(len(boxes), num_classes, h, w)
    ys = torch.arange(h, dtype=torch.float32).view(-1, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, -1)
    index, sizes, offsets = [], [], []
    for b, (bx, lb) in enumerate(zip(boxes, labels)):
        for (x1, y1, x2, y2), k in zip((bx / stride).tolist(), lb.tolist()):
            bw, bh = x2 - x1, y2 - y1
            if bw <= 0 or bh <= 0:
                continue
            cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
            ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
            sx, sy = max(alpha * bw / 6, 0.5), max(alpha * bh / 6, 0.5)
            g = torch.exp(-((xs - ix) ** 2) / (2 * sx**2) - ((ys - iy) ** 2) / (2 * sy**2))
            heat[b, k] = torch.maximum(heat[b, k], g)
            index.append((b, iy, ix))
            sizes.append((bw, bh))
            offsets.append((cx - ix, cy - iy))
    idx = torch.tensor(index, dtype=torch.long).view(-1, 3)
    return heat, idx, torch.tensor(sizes).view(-1, 2), torch.tensor(offsets).view(-1, 2)


def focal_heatmap_loss(logits: torch.Tensor, target: torch.Tensor, a: float = 2.0, b: float = 4.0,
                       count: Count = _own) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of peaks (at least 1)."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -(torch.log(p) * (1 - p) ** a * pos).sum()
    neg_loss = -(torch.log(1 - p) * p**a * (1 - target) ** b * (1 - pos)).sum()
    return (pos_loss + neg_loss) / count(pos.sum()).clamp(min=1.0)


def det_loss(out: dict[str, torch.Tensor], boxes: list[torch.Tensor], labels: list[torch.Tensor],
             size_weight: float = 0.1, count: Count = _own) -> torch.Tensor:
    """CenterNet loss: focal heatmap + size_weight * L1(size) + L1(offset), the L1s means over the
    object centres' coordinates."""
    num_classes, h, w = out["heatmap"].shape[1:]
    heat, idx, size_t, off_t = encode_det_targets(boxes, labels, num_classes, (h, w))
    dev = out["heatmap"].device
    loss = focal_heatmap_loss(out["heatmap"], heat.to(dev), count=count)
    n = count(torch.tensor(2.0 * len(idx), device=dev))  # the L1s' elements: (w, h) and (dx, dy) per centre
    if len(idx):
        b, y, x = idx.to(dev).unbind(1)
        size_p = out["size"][b, :, y, x]
        off_p = out["offset"][b, :, y, x]
        l1 = (size_weight * F.l1_loss(size_p, size_t.to(dev), reduction="sum")
              + F.l1_loss(off_p, off_t.to(dev), reduction="sum"))
        loss = loss + l1 / n
    else:  # no centre here (another rank may have some): no L1 term, keep the graph
        loss = loss + 0.0 * (out["size"].sum() + out["offset"].sum())
    return loss


@torch.no_grad()
def decode_detections(out: dict[str, torch.Tensor], top_k: int = 100, score_thr: float = 0.01,
                      nms_iou: float = 0.6, stride: int = DET_STRIDE) -> list[dict[str, torch.Tensor]]:
    """Turn head maps into boxes.

    Peaks are 3x3 local maxima of the class heatmaps; the top_k of them become boxes, and
    torchvision's batched NMS removes the duplicates that neighbouring peaks can make.

    Returns:
        Per image {"boxes": (M, 4) xyxy in input pixels, "scores": (M,), "labels": (M,) class index}.
    """
    heat = torch.sigmoid(out["heatmap"])
    bsz, k, h, w = heat.shape
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, flat = peaks.reshape(bsz, -1).topk(min(top_k, k * h * w))
    labels = torch.div(flat, h * w, rounding_mode="floor")
    cell = flat % (h * w)
    ys, xs = torch.div(cell, w, rounding_mode="floor"), cell % w
    results = []
    for i in range(bsz):
        keep = scores[i] > score_thr
        y, x, lab, sc = ys[i][keep], xs[i][keep], labels[i][keep], scores[i][keep]
        bw, bh = out["size"][i, 0, y, x], out["size"][i, 1, y, x]
        cx, cy = x + out["offset"][i, 0, y, x], y + out["offset"][i, 1, y, x]
        boxes = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * stride
        valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        boxes, sc, lab = boxes[valid], sc[valid], lab[valid]
        kept = batched_nms(boxes, sc, lab, nms_iou)
        results.append({"boxes": boxes[kept], "scores": sc[kept], "labels": lab[kept]})
    return results

