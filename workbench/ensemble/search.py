"""Search blends on validation: per task, greedy ensemble selection with replacement (Caruana et
al. 2004), then for detection the box fusion method and its parameters.

Val images of each task are split at random into two halves: the search sees only the first; the
second, held out, tells how much of the searched gain is real. The search's inner scores are fast
but exact for cls and det (Top-1; pycocotools mAP50 of the fused boxes); for seg the blended mask
is taken at the cache's 1/4 resolution and upsampled by nearest neighbour, a close proxy of the
exact scorer (which upsamples the blended probabilities bilinearly). The scores written to the spec
are the exact ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from workbench.data.spec import DatasetSpec
from workbench.io import read_mask
from workbench.ensemble.members import member_predictions, member_tasks, serving
from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend
from workbench.ensemble.spec import TASKS, blend_spec
from workbench.fuse.det import fuse_boxes, list_fusions
from workbench.fuse.seg import softmax
from workbench.metrics.det import map50
from workbench.metrics.scoring import score_predictions
from workbench.metrics.seg import confusion_matrix, mean_iou
from workbench.records import METRICS, GroundTruth, Predictions

FUSION_GRID = [FusionConfig(method, iou, skip) for method in ("wbf", "nms", "soft-nms")
               for iou in (0.4, 0.55, 0.7) for skip in (0.0, 0.05)]


@dataclass(frozen=True)
class SearchConfig:
    """Members to choose from, the data set, and how hard to search."""

    members: tuple[Member, ...]
    data: str
    split: str = "val"
    rounds: int = 10  # greedy additions per task (with replacement)
    seed: int = 0
    search_fusion: bool = True
    device: str = "auto"


def greedy_selection(n_members: int, evaluate: Callable[[tuple[int, ...]], float], rounds: int
                     ) -> tuple[tuple[int, ...], float, int]:
    """Caruana's forward selection with replacement.

    Starts from the best single member and adds, one at a time, the member whose addition gives the
    best score; stops after `rounds` additions or when no addition improves the score.

    Args:
        n_members: how many members there are.
        evaluate: counts (how often each member is in the blend; weights = counts) -> score.
        rounds: the most members (counting repeats) in the blend.
    Returns:
        (counts, best score, number of blends evaluated).
    """
    evaluated = 0

    def one_more(counts: tuple[int, ...], i: int) -> tuple[int, ...]:
        return tuple(c + (j == i) for j, c in enumerate(counts))

    counts = (0,) * n_members
    best = -np.inf
    for _ in range(max(1, rounds)):
        trials = [(evaluate(one_more(counts, i)), -i) for i in range(n_members)]
        evaluated += len(trials)
        value, neg_i = max(trials)
        if value <= best:
            break
        counts, best = one_more(counts, -neg_i), value
    return counts, float(best), evaluated


class TaskScorer:
    """Scores a weighted blend of members on a subset of one task's images, fast enough to search.

    Memoised by (counts, fusion, subset) so that a blend is never scored twice.
    """

    def __init__(self, task: str, preds: list[Predictions], truth: GroundTruth, names: list[str]):
        self.task, self.names = task, names
        self._memo: dict = {}
        if task == "cls":
            self.probs = np.stack([np.stack([p.cls[n] for n in names]) for p in preds])  # (M, N, K)
            self.labels = np.array([truth.cls[n] for n in names])
        elif task == "det":
            self.boxes = [[p.det[n] for n in names] for p in preds]
            self.sizes = [preds[0].sizes["det"][n] for n in names]
            self.truth = truth.det
            ids = {im["file_name"]: im for im in truth.det["images"]}
            self.images = [ids[n] for n in names]
        else:
            self.probs = [[softmax(p.seg[n].astype(np.float32)) for n in names] for p in preds]
            self.targets = [read_mask(truth.seg[n]) for n in names]
            self.num_classes, self.ignore = truth.seg_num_classes, truth.ignore_index

    def __call__(self, counts: tuple[int, ...], subset: np.ndarray, fusion: FusionConfig = FusionConfig()) -> float:
        key = (counts, fusion, subset.tobytes())
        if key not in self._memo:  # NaN (a subset with no ground-truth box) scores as 0
            value = getattr(self, f"_score_{self.task}")(np.asarray(counts, np.float64), subset, fusion)
            self._memo[key] = float(np.nan_to_num(value))
        return self._memo[key]

    def _score_cls(self, w, subset, fusion):
        mean = np.tensordot(w / w.sum(), self.probs[:, subset], axes=1)
        return float((mean.argmax(1) == self.labels[subset]).mean())

    def _score_det(self, w, subset, fusion):
        used = np.flatnonzero(w)
        gt_images = [self.images[i] for i in subset]
        ids = {im["id"] for im in gt_images}
        gt = {**self.truth, "images": gt_images,
              "annotations": [a for a in self.truth["annotations"] if a["image_id"] in ids]}
        dets = []
        for i in subset:
            fused = fuse_boxes([self.boxes[m][i] for m in used], w[used], fusion.det_method, fusion.iou_thr,
                               fusion.skip_box_thr)
            h, wd = self.sizes[i]
            for (x1, y1, x2, y2), s, lab in zip(fused.boxes.tolist(), fused.scores.tolist(), fused.labels.tolist()):
                dets.append({"image_id": self.images[i]["id"], "category_id": int(lab),
                             "bbox": [x1 * wd, y1 * h, (x2 - x1) * wd, (y2 - y1) * h], "score": float(s)})
        return map50(gt, dets, backend="faster-coco-eval")  # the same AP as pycocotools, ~10x faster

    def _score_seg(self, w, subset, fusion):
        w = w / w.sum()
        cm = np.zeros((self.num_classes, self.num_classes), np.int64)
        for i in subset:
            mask = sum(wi * self.probs[m][i] for m, wi in enumerate(w) if wi > 0).argmax(0)
            target = self.targets[i]
            rows = np.minimum(np.arange(target.shape[0]) * mask.shape[0] // target.shape[0], mask.shape[0] - 1)
            cols = np.minimum(np.arange(target.shape[1]) * mask.shape[1] // target.shape[1], mask.shape[1] - 1)
            cm += confusion_matrix(mask[np.ix_(rows, cols)], target, self.num_classes, self.ignore)
        return float(mean_iou(cm))


def split_halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random split of range(n) into a search half and a held-out half (sorted index arrays)."""
    order = rng.permutation(n)
    return np.sort(order[: (n + 1) // 2]), np.sort(order[(n + 1) // 2:])


def search_ensemble(config: SearchConfig, progress: bool = False) -> EnsembleSpec:
    """Choose per-task members, weights and (det) fusion on the search half of val.

    Returns:
        The EnsembleSpec; its info holds, per task, the best single member's and the blend's scores
        on the search half and on the held-out half, the exact val scores of the blend and of every
        member, the number of blends evaluated and the time spent.
    """
    t0 = time.perf_counter()
    spec = DatasetSpec(config.data)
    members = list(config.members)
    preds = member_predictions(members, config.data, config.split, config.device, progress)
    truth = spec.ground_truth(config.split)
    rng = np.random.default_rng(config.seed)
    blends, halves, evaluated = {}, {}, 0
    for task in TASKS:
        names = truth.names(task)
        idx = serving(members, task)  # single-task members take part in their own task only
        scorer = TaskScorer(task, [preds[i] for i in idx], truth, names)
        search, held = split_halves(len(names), rng)
        counts, _, n = greedy_selection(len(idx), lambda c: scorer(c, search), config.rounds)
        evaluated += n
        fusion = FusionConfig()
        if task == "det" and config.search_fusion:
            trials = [(scorer(counts, search, f), -k) for k, f in enumerate(FUSION_GRID)]
            evaluated += len(trials)
            fusion = FUSION_GRID[-max(trials)[1]]
        singles = [tuple(int(i == j) for j in range(len(idx))) for i in range(len(idx))]
        best_single = max(range(len(idx)), key=lambda i: scorer(singles[i], search))
        halves[task] = {
            "best_member": members[idx[best_single]].ref,
            "member_search": round(scorer(singles[best_single], search), 5),
            "member_holdout": round(scorer(singles[best_single], held), 5),
            "blend_search": round(scorer(counts, search, fusion), 5),
            "blend_holdout": round(scorer(counts, held, fusion), 5),
        }
        used = [i for i, c in enumerate(counts) if c]
        blends[task] = TaskBlend(tuple(members[idx[i]] for i in used), tuple(float(counts[i]) for i in used), fusion)
    result = EnsembleSpec(blends)
    by_member = dict(zip(members, preds))
    fast = "faster-coco-eval"  # the same mAP50 as pycocotools to the last digit (tests/metrics/test_det.py)
    exact = {m.ref: _rounded(score_predictions(p, truth, tasks=member_tasks(m), det_backend=fast))
             for m, p in by_member.items()}
    exact["blend"] = _rounded(score_predictions(blend_spec(result, by_member), truth, det_backend=fast))
    info = {"data": str(spec.path), "split": config.split,
            "search": {"rounds": config.rounds, "seed": config.seed, "fusion_searched": config.search_fusion,
                       "blends_evaluated": evaluated, "seconds": round(time.perf_counter() - t0, 1),
                       "seg_inner_score": "nearest-upsampled argmax at 1/4 resolution (proxy)"},
            "halves": halves, "val": exact,
            "members": [m.ref for m in members]}
    return EnsembleSpec(blends, info)


def _rounded(d: dict) -> dict:
    return {k: round(float(v), 5) for k, v in d.items()}


__all__ = ["FUSION_GRID", "METRICS", "SearchConfig", "TaskScorer", "greedy_selection", "list_fusions",
           "search_ensemble", "split_halves"]
