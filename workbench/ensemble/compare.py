"""Compare members and their equal-weight blend on a labelled split, with paired bootstrap intervals.

Each row (a member alone, then the blend) is scored exactly as `wb score` would (Top-1, pycocotools
mAP50, mIoU from confusion matrices, their mean). For each row, the 95% interval of its difference
from the best single member comes from resampling the images of each task with replacement (the
same resamples for every row: a paired bootstrap). mAP50 of a resample is pycocotools' own
`accumulate()` over the per-image matches that `evaluate()` computed once per row.
"""
from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from workbench.data.spec import DatasetSpec, read_mask
from workbench.ensemble.members import Member, member_predictions
from workbench.fuse import blend
from workbench.io import atomic_path
from workbench.metrics.det import _build_gt, _build_results
from workbench.metrics.scoring import METRICS, GroundTruth, split_ground_truth
from workbench.metrics.seg import confusion_matrix, mean_iou
from workbench.predictions import Predictions, to_submission

TASKS = ("cls", "det", "seg")
COLUMNS = [*METRICS.values(), "score"]


def coco_evaluated(gt: dict, detections: list[dict]) -> COCOeval | None:
    """A COCOeval (bbox) after evaluate(): per-image matches, ready for accumulate(). None: no detections."""
    gt = _build_gt(gt)
    results = _build_results(gt, detections)
    if not results:
        return None
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.params.imgIds = [im["id"] for im in gt["images"]]  # keep the images' order
        evaluator.evaluate()
    return evaluator


def resampled_map50(evaluator: COCOeval | None, sample: np.ndarray) -> float:
    """mAP50 of the images at positions `sample` (duplicates allowed) of an evaluated COCOeval.

    Rebuilds `evalImgs` in the (category, area, image) order that accumulate() indexes, for the
    resampled image list, then reads AP at IoU 0.5 (area all, 100 detections) as summarize() does.
    """
    if evaluator is None:
        return 0.0
    pe = evaluator._paramsEval
    n_img, n_area = len(pe.imgIds), len(pe.areaRng)
    original = evaluator.evalImgs
    ids = [pe.imgIds[i] for i in sample]
    evaluator.evalImgs = [original[k * n_area * n_img + a * n_img + i]
                          for k in range(len(pe.catIds)) for a in range(n_area) for i in sample]
    saved = (list(pe.imgIds), list(evaluator.params.imgIds))
    pe.imgIds, evaluator.params.imgIds = ids, ids
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
    finally:
        evaluator.evalImgs = original
        pe.imgIds, evaluator.params.imgIds = saved
    t = list(evaluator.params.iouThrs).index(0.5)
    a = list(evaluator.params.areaRngLbl).index("all")
    m = list(evaluator.params.maxDets).index(100)
    precision = evaluator.eval["precision"][t, :, :, a, m]
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else float("nan")


@dataclass
class RowStats:
    """Per-image material of one row, from which any resample's metrics follow."""

    correct: np.ndarray  # (N_cls,) bool
    evaluator: COCOeval | None
    confusions: np.ndarray  # (N_seg, K, K)

    def metrics(self, samples: dict[str, np.ndarray]) -> dict[str, float]:
        out = {"cls_top1": float(self.correct[samples["cls"]].mean()),
               "det_map50": resampled_map50(self.evaluator, samples["det"]),
               "seg_miou": float(mean_iou(self.confusions[samples["seg"]].sum(0)))}
        out["score"] = float(np.mean([out[METRICS[t]] for t in TASKS]))
        return out


def row_stats(preds: Predictions, truth: GroundTruth, masks: dict[str, np.ndarray], classes, k_seg) -> RowStats:
    """Score material of one row: per-image correctness, an evaluated COCOeval, per-image confusions."""
    sub = to_submission(preds, classes, k_seg)
    correct = np.array([sub.cls.get(n, -1) == y for n, y in truth.cls.items()])
    ids = {im["file_name"]: im["id"] for im in truth.det["images"]}
    dets = [{**d, "image_id": ids[d["image"]]} for d in sub.det if d["image"] in ids]
    confusions = np.stack([confusion_matrix(sub.seg[n], masks[n], k_seg, truth.ignore_index) for n in truth.seg])
    return RowStats(correct, coco_evaluated(truth.det, dets), confusions)


@dataclass
class CompareResult:
    """Rows (label, metrics), the best single member, and per row the 95% interval of its difference
    from the best member (metric -> (low, high))."""

    rows: list[tuple[str, dict[str, float]]]
    best: str
    intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)

    def to_table(self) -> str:
        width = max(len(label) for label, _ in self.rows)
        head = f"{'':<{width}}  " + "  ".join(f"{c:>9}" for c in ("Top-1", "mAP50", "mIoU", "score")) + \
            "   score - best [95% interval]"
        lines = [head]
        for label, m in self.rows:
            lo, hi = self.intervals[label]["score"]
            diff = m["score"] - dict(self.rows)[self.best]["score"]
            lines.append(f"{label:<{width}}  " + "  ".join(f"{m[c]:9.4f}" for c in COLUMNS) +
                         f"   {diff:+.4f} [{lo:+.4f}, {hi:+.4f}]" + ("  (best member)" if label == self.best else ""))
        return "\n".join(lines)

    def write(self, out_dir: Path) -> list[Path]:
        """compare.csv and compare.png (bars: each row's metrics; error bars: the row's difference
        interval drawn around its own value)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(out_dir / "compare.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", *COLUMNS, *(f"{c}_diff_{b}" for c in COLUMNS for b in ("low", "high"))])
                for label, m in self.rows:
                    w.writerow([label, *(f"{m[c]:.6f}" for c in COLUMNS),
                                *(f"{v:.6f}" for c in COLUMNS for v in self.intervals[label][c])])
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(2 + 1.6 * len(COLUMNS), 4))
        width = 0.8 / len(self.rows)
        best = dict(self.rows)[self.best]
        for r, (label, m) in enumerate(self.rows):
            x = np.arange(len(COLUMNS)) + r * width
            values = [m[c] for c in COLUMNS]
            # the error bar spans best + [low, high] of (row - best): a bar whose error bar does
            # not reach the best member's level differs from it beyond bootstrap noise
            err = np.array([[m[c] - (best[c] + self.intervals[label][c][0]) for c in COLUMNS],
                            [(best[c] + self.intervals[label][c][1]) - m[c] for c in COLUMNS]])
            ax.bar(x, values, width, label=label, yerr=np.clip(err, 0, None), capsize=3)
        ax.set_xticks(np.arange(len(COLUMNS)) + width * (len(self.rows) - 1) / 2, ["Top-1", "mAP50", "mIoU", "score"])
        ax.set_ylim(0, 1)
        ax.set_title("val metrics; error bars: 95% bootstrap interval of the difference from the best member")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(out_dir / "compare.png") as tmp:
            fig.savefig(tmp, format="png", dpi=120)
        plt.close(fig)
        return [out_dir / "compare.csv", out_dir / "compare.png"]


def compare_members(members: list[Member], data: str, split: str = "val", n_boot: int = 500, seed: int = 0,
                    device: str = "auto", out_dir: Path | None = None, progress: bool = False) -> CompareResult:
    """Score each member and their equal-weight blend on a labelled split, with paired bootstrap
    intervals of each row's difference from the best member (by combined score).

    Args:
        members: RUN or RUN@TTA members (their cached predictions are used or made).
        data: dataset.yaml; split: a labelled split (val).
        n_boot: bootstrap resamples; seed: their random seed.
        out_dir: where to write compare.csv and compare.png (None: nothing written).
    Returns:
        CompareResult with rows in member order, then "blend" when there are 2+ members.
    """
    spec = DatasetSpec(data)
    truth = split_ground_truth(spec, split)
    preds = member_predictions(members, data, split, device, progress)
    labelled = [(m.label, p) for m, p in zip(members, preds)]
    if len(members) > 1:
        labelled.append(("blend", blend(preds)))
    masks = {n: read_mask(path) for n, path in truth.seg.items()}
    classes, k_seg = spec.cls_classes, len(spec.seg_classes)
    stats = {label: row_stats(p, truth, masks, classes, k_seg) for label, p in labelled}
    everything = {t: np.arange(len(truth.names(t))) for t in TASKS}
    rows = [(label, s.metrics(everything)) for label, s in stats.items()]
    best = max((r for r in rows[: len(members)]), key=lambda r: r[1]["score"])[0]

    rng = np.random.default_rng(seed)
    samples = [{t: rng.integers(0, len(idx), len(idx)) for t, idx in everything.items()} for _ in range(n_boot)]
    boot = {label: np.array([[s.metrics(sample)[c] for c in COLUMNS] for sample in samples])
            for label, s in stats.items()}
    intervals = {}
    for label in stats:
        diff = boot[label] - boot[best]
        low, high = np.nanpercentile(diff, [2.5, 97.5], axis=0)
        intervals[label] = {c: (float(low[i]), float(high[i])) for i, c in enumerate(COLUMNS)}
    result = CompareResult(rows, best, intervals)
    if out_dir is not None:
        result.write(Path(out_dir))
    return result
