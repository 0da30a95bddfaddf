"""Paired bootstrap over images: resamples, metrics per resample, percentile intervals.

A resample is a (B, N) integer matrix: row b lists the N images (indices into one task's image
list, duplicates allowed) of resample b. Every row of a comparison (each member, the blend) is
scored on the SAME resamples, so differences between rows are paired and much tighter than the
intervals of each row alone. Each task has its own images, hence its own resample matrix.

Metric math is never redone here: Top-1 is a mean of per-image correctness, mIoU comes from summed
per-image confusion matrices through `workbench.metrics.seg`, mAP50 from pycocotools' own
`COCOeval.evaluate` run once, then `accumulate()`'s arithmetic weighted by how often each image is
drawn (`resample_map50`, checked against pycocotools on really duplicated data).
"""
from __future__ import annotations

import warnings

import numpy as np
from pycocotools.cocoeval import COCOeval

# The copy / validation helpers of `map50`, reused so that both evaluate exactly the same input.
from workbench.metrics.det import _has_gt, evaluate_detections
from workbench.metrics.seg import mean_iou


def resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Draw `n_boot` bootstrap resamples of n images (with replacement).

    Returns:
        (n_boot, n) int64 indices in 0..n-1.
    """
    if n < 1 or n_boot < 1:
        raise ValueError(f"resample_indices: need n >= 1 and n_boot >= 1, got n={n}, n_boot={n_boot}")
    return rng.integers(0, n, size=(n_boot, n), dtype=np.int64)


def resample_counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, N') resample indices -> (B, n) int64: how often each image is in each resample."""
    idx = np.asarray(idx, np.int64)
    offsets = np.arange(idx.shape[0], dtype=np.int64)[:, None] * n
    return np.bincount((idx + offsets).ravel(), minlength=idx.shape[0] * n).reshape(idx.shape[0], n)


def bootstrap_means(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Mean of per-image values over each resample (Top-1 from per-image correctness).

    Args:
        values: (R, N) per-image values of R rows (e.g. 1.0 where the row's class is right).
        idx: (B, N') resample indices into 0..N-1.
    Returns:
        (R, B) float64 means.
    """
    values = np.asarray(values, np.float64)
    return values[:, np.asarray(idx)].mean(axis=-1)


def bootstrap_miou(confusions: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """mIoU of the confusion matrix summed over each resample (an image counted as often as drawn).

    Args:
        confusions: (R, N, K, K) int per-image confusion matrices (rows = target, columns = pred)
            of R rows, from `workbench.metrics.seg.confusion_matrix`.
        idx: (B, N') resample indices into 0..N-1.
    Returns:
        (R, B) float64 mIoU (`workbench.metrics.seg.mean_iou`; NaN where no class is present).
    """
    confusions = np.asarray(confusions, np.int64)
    counts = resample_counts(idx, confusions.shape[1])  # (B, N)
    summed = np.einsum("bn,rnkl->rbkl", counts, confusions)  # (R, B, K, K), exact in int64
    return np.array([[mean_iou(cm) for cm in row] for row in summed], np.float64).reshape(summed.shape[:2])


def resample_map50(evaluator: COCOeval, idx: np.ndarray) -> np.ndarray:
    """mAP50 of each resample from an evaluated COCOeval, without matching boxes again.

    Boxes are matched within their image only, so the per-image results of `evaluate()`
    (`evalImgs`, ordered category k, area range a, image i) stay valid for any list of images: a
    resample that draws an image c times is the data set holding c copies of it (its detections,
    matches and ground truth c times). For each category the detections of all images are sorted
    once, as `accumulate()` sorts them (stable, by descending score, at most 100 per image), and every
    resample weighs them by how often their image was drawn: weighted cumulative true and false
    positives, pycocotools' precision envelope and its 101 recall thresholds, all resamples at once.
    This is `accumulate()`'s arithmetic for IoU 0.5, area "all", maxDets 100 (the entry `summarize()`
    reads for stats[1]) on B resamples in one pass; it equals pycocotools on really duplicated data
    (tests/ensemble/test_bootstrap.py) except that detections of equal score in different images
    keep the original image order rather than the resample's.

    Args:
        evaluator: a COCOeval after `evaluate()` with the default bbox parameters.
        idx: (B, N') indices into `evaluator.params.imgIds` (the sorted image ids).
    Returns:
        (B,) float64 mAP50 (mean AP over categories with ground truth in the resample; NaN if none).
    """
    pe = evaluator._paramsEval
    t = int(np.flatnonzero(pe.iouThrs == 0.5)[0])
    a = pe.areaRngLbl.index("all")
    if pe.maxDets[-1] != 100:
        raise ValueError(f"resample_map50: expected maxDets ending in 100, got {pe.maxDets}")
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    counts = resample_counts(np.asarray(idx), n_img).astype(np.float64)  # (B, I)
    rec_thrs = np.asarray(pe.recThrs, np.float64)
    # precision[b, r, k] at recall threshold r, laid out as COCOeval's eval["precision"][t, :, :, a, m]
    precision_at = np.full((len(counts), len(rec_thrs), len(pe.catIds) if pe.useCats else 1), -1.0)
    for k in range(precision_at.shape[2]):
        scores, image, tp, fp, n_gt = [], [], [], [], np.zeros(n_img)
        for i in range(n_img):
            e = evaluator.evalImgs[k * n_area * n_img + a * n_img + i]
            if e is None:
                continue
            s = np.asarray(e["dtScores"][:100], np.float64)
            order = np.argsort(-s, kind="mergesort")
            matched = np.asarray(e["dtMatches"])[t, :100][order] != 0
            ignored = np.asarray(e["dtIgnore"])[t, :100][order].astype(bool)
            scores.append(s[order])
            image.append(np.full(len(s), i))
            tp.append(matched & ~ignored)
            fp.append(~matched & ~ignored)
            n_gt[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        npig = counts @ n_gt  # (B,)
        has_gt = npig > 0
        if not sum(map(len, scores)):  # ground truth but no detection of this category: AP 0
            precision_at[has_gt, :, k] = 0.0
            continue
        order = np.argsort(-np.concatenate(scores), kind="mergesort")
        weights = counts[:, np.concatenate(image)[order]]  # (B, D)
        tp_sum = np.cumsum(weights * np.concatenate(tp)[order], axis=1)
        fp_sum = np.cumsum(weights * np.concatenate(fp)[order], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = tp_sum / npig[:, None]
        precision = tp_sum / (tp_sum + fp_sum + np.spacing(1))
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        for b in np.flatnonzero(has_gt):
            at = np.searchsorted(recall[b], rec_thrs, side="left")
            precision_at[b, :, k] = np.where(at < envelope.shape[1], envelope[b, np.minimum(at, envelope.shape[1] - 1)], 0.0)
    # summarize(): the mean of the entries > -1, NaN (our rule for "no ground truth") where none
    return np.array([p[p > -1].mean() if (p > -1).any() else np.nan for p in precision_at], np.float64)


def map50_resamples(gt: dict, detections: list[dict], idx: np.ndarray) -> np.ndarray:
    """mAP50 (pycocotools) of each resample of a detection set's images.

    Args:
        gt: COCO ground truth (as for `workbench.metrics.det.map50`).
        detections: COCO results on those images.
        idx: (B, N) indices into gt["images"] (in that list's order).
    Returns:
        (B,) float64; the rules of `map50`: 0.0 with no detections, NaN with no ground-truth box
        in the resample. With idx = arange(N)[None] this is `map50(gt, detections)`.
    """
    idx = np.asarray(idx, np.int64)
    images = gt["images"]
    if not _has_gt(gt):
        return np.full(len(idx), np.nan)
    evaluator = evaluate_detections(gt, detections)
    if evaluator is None:
        counted = {a["image_id"] for a in gt["annotations"] if not a.get("iscrowd", 0)}
        has_gt = np.array([im["id"] in counted for im in images])
        return np.where(has_gt[idx].any(axis=1), 0.0, np.nan)
    position = {int(i): p for p, i in enumerate(evaluator._paramsEval.imgIds)}
    order = np.array([position[int(im["id"])] for im in images], np.int64)
    return resample_map50(evaluator, order[idx])


def paired_differences(samples: np.ndarray, ref: int) -> np.ndarray:
    """(R, B) per-resample values -> (R, B) differences from row `ref` (row `ref` becomes 0)."""
    samples = np.asarray(samples, np.float64)
    return samples - samples[ref]


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> np.ndarray:
    """Percentile bootstrap interval over the last axis (NaN resamples left out).

    Args:
        samples: (..., B) values of B resamples.
        level: coverage, e.g. 0.95 -> the 2.5th and 97.5th percentiles (linear interpolation).
    Returns:
        (..., 2) float64 (low, high); NaN where every resample is NaN.
    """
    if not 0 < level < 1:
        raise ValueError(f"percentile_interval: level must be in (0, 1), got {level}")
    tail = 100 * (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, as documented
        low, high = np.nanpercentile(np.asarray(samples, np.float64), [tail, 100 - tail], axis=-1)
    return np.stack([low, high], axis=-1)


__all__ = ["bootstrap_means", "bootstrap_miou", "evaluate_detections", "map50_resamples", "paired_differences",
           "percentile_interval", "resample_counts", "resample_indices", "resample_map50"]
