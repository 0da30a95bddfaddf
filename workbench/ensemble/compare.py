"""Compare ensemble members and their equal-weight blend on a labelled split, with paired bootstrap
intervals of each row's difference from the best single member: a real gain or noise?

Point scores are those of `workbench.metrics.scoring.score` on the hard predictions; the intervals
resample each task's images (each task has its own images, so its own resamples) and score every
row on the same resamples (`workbench.ensemble.bootstrap`).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from workbench.data.spec import DatasetSpec
from workbench.io import read_mask
from workbench.ensemble.bootstrap import (
    bootstrap_means,
    bootstrap_miou,
    map50_resamples,
    paired_differences,
    percentile_interval,
    resample_indices,
)
from workbench.ensemble.members import member_predictions, member_tasks, serving
from workbench.records.ensemble import Member
from workbench.ensemble.spec import blend_spec
from workbench.errors import WorkbenchError
from workbench.fuse import blend
from workbench.io import atomic_path
from workbench.metrics.seg import confusion_matrix
from workbench.models.inference import merge_tasks
from workbench.records import METRIC_COLUMNS, METRICS, TASKS, GroundTruth, Submission, to_submission

COLUMNS = dict(METRIC_COLUMNS)
LEVEL = 0.95


@dataclass
class CompareRow:
    """One member (or the blend): its metrics on the split and, per metric, the (low, high) bootstrap
    interval of (this row - the best member)."""

    label: str
    metrics: dict[str, float]
    ci: dict[str, tuple[float, float]]

    def diff(self, best: "CompareRow", metric: str) -> float:
        """This row's metric minus the best member's."""
        return self.metrics[metric] - best.metrics[metric]


@dataclass
class CompareResult:
    """Rows in input order (members, then "blend" when there are 2+ members), the best member's
    label (by combined score) and how the intervals were drawn."""

    rows: list[CompareRow]
    best: str
    split: str = "val"
    n_boot: int = 1000
    seed: int = 0
    level: float = LEVEL
    n_images: dict[str, int] = field(default_factory=dict)

    def row(self, label: str) -> CompareRow:
        """The row of a label (KeyError if absent)."""
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)

    def records(self) -> list[dict]:
        """One dict per row: member, best (bool), each metric, its difference from the best member and
        that difference's interval (`<metric>_diff`, `_diff_low`, `_diff_high`); NaN where a row does
        not serve a task. The CSV's lines and `--json`'s objects."""
        best = self.row(self.best)
        out = []
        for r in self.rows:
            record = {"member": r.label, "best": r.label == self.best, **{m: r.metrics[m] for m in COLUMNS}}
            for m in COLUMNS:
                record.update({f"{m}_diff": r.diff(best, m), f"{m}_diff_low": r.ci[m][0], f"{m}_diff_high": r.ci[m][1]})
            out.append(record)
        return out

    def to_table(self) -> str:
        """Aligned text: label, Top-1, mAP50, mIoU, score, and score diff [low, high] from the best member."""
        best = self.row(self.best)
        width = max(len(self.split), *(len(r.label) + 2 for r in self.rows))
        lines = [f"{self.split:<{width}}" + "".join(f"{h:>9}" for h in COLUMNS.values()) + "   score diff [low, high]"]
        for r in self.rows:
            label = r.label + (" *" if r.label == self.best else "")
            low, high = r.ci["score"]
            diff = (f"   {r.diff(best, 'score'):+.4f} [{low:+.4f}, {high:+.4f}]" if np.isfinite(r.metrics["score"])
                    else "   (serves " + ", ".join(t for t, m in zip(TASKS, METRICS.values()) if np.isfinite(r.metrics[m])) + ")")
            lines.append(f"{label:<{width}}" + "".join(f"{r.metrics[m]:>9.4f}" if np.isfinite(r.metrics[m]) else f"{'-':>9}"
                                                        for m in COLUMNS) + diff)
        images = ", ".join(f"{t} {n}" for t, n in self.n_images.items())
        lines.append(f"* best member. score diff: row - best member, [low, high] its {100 * self.level:g}% interval "
                     f"over {self.n_boot} paired bootstrap resamples of the images ({images}), seed {self.seed}; "
                     "an interval holding 0 is no clear difference.")
        return "\n".join(lines)


def compare_members(members: list[Member], data: str, split: str = "val", n_boot: int = 1000, seed: int = 0,
                    device: str = "auto", out: Path | None = None, progress: bool = False,
                    specs: dict | None = None) -> CompareResult:
    """Score each member and their equal-weight blend on a labelled split, with bootstrap intervals.

    Rows are each member alone (in the order given, labelled `Member.label`) and, when there are 2+
    members, "blend": the equal-weight `workbench.fuse.blend` of all of them (mean class
    probabilities, WBF boxes, mean segmentation probabilities). A row's metrics are exactly
    `score_predictions(preds, spec.ground_truth(split))`. For each row and metric, the
    interval is the percentile 95% bootstrap interval of (row - best member), the best member being
    the one with the highest combined score; images are resampled with replacement per task
    (`n_boot` times, from `seed`), every row on the same resamples (paired), and the combined
    score's difference is the mean of the three task differences of each resample.

    Args:
        members: runs with their TTA specs; predictions come from each one's cache entry (predicted
            where no valid entry exists, on `device`).
        data: path of the data set's dataset.yaml.
        split: a labelled split ("val" or "train").
        n_boot: bootstrap resamples (1000 takes about 4 s per row for 175 detection images with
            ~75 boxes each on one CPU core; cls and seg are negligible).
        seed: seed of the resamples (same seed, same intervals).
        device: "auto", "cpu", "cuda", ... for members that must be predicted.
        out: when given, a CSV file written there (one line per row, `CompareResult.records`) and
            its bar chart beside it with suffix .png (grouped bars per metric with the intervals),
            both atomically.
        progress: show a progress bar while a member has to be predicted.
        specs: label -> EnsembleSpec (e.g. a searched blend): one more row each, after the blend; every
            member of a spec must be among `members`.
    Returns:
        CompareResult: rows with metrics {"cls_top1", "det_map50", "seg_miou", "score"} and ci
        {metric: (low, high)} of the difference from the best member (the best's own row is
        (0.0, 0.0)); `best`; `to_table()` for printing.
    Raises:
        WorkbenchError: no members or n_boot < 1; DataError / RunError from reading the data set,
            the runs or their predictions (file named in the message).
    """
    if not members:
        raise WorkbenchError("nothing to compare: no members")
    if n_boot < 1:
        raise WorkbenchError(f"n_boot must be at least 1, got {n_boot}")
    spec = DatasetSpec(data)
    truth = spec.ground_truth(split)
    preds = member_predictions(list(members), data, split, device, progress)
    labels = unique_labels([m.label for m in members])
    serves = [set(member_tasks(m)) for m in members]  # a single-task member has a row for its task only
    if len(preds) >= 2:
        parts = {t: blend([preds[i] for i in serving(list(members), t)], tasks=(t,)) for t in TASKS}
        preds.append(merge_tasks(parts["cls"], parts["det"], parts["seg"]))
        labels.append("blend")
        serves.append(set(TASKS))
    if specs:
        by_member = dict(zip(members, preds))
        for label, spec_ in specs.items():
            missing = [m.ref for m in spec_.members() if m not in by_member]
            if missing:
                raise WorkbenchError(f"ensemble {label}: member(s) {', '.join(missing)} not among the compared members")
            preds.append(blend_spec(spec_, by_member))
            labels.append(label)
            serves.append(set(TASKS))
    subs = [to_submission(p, spec.cls_classes, len(spec.seg_classes)) for p in preds]

    rng = np.random.default_rng(seed)
    names = {t: truth.names(t) for t in TASKS}
    for t, n in names.items():
        if not n:
            raise WorkbenchError(f"{spec.path}: the {split} split has no {t} images to compare on")
    per_image = build_per_image(subs, truth, names, serves)
    values, samples = {}, {}  # metric -> (R,) values on the split / (R, B) values on each resample
    for task, metric in METRICS.items():
        n = len(names[task])
        # row 0 of the index matrix is the split itself, so one pycocotools evaluate() serves both
        idx = np.concatenate([np.arange(n)[None], resample_indices(n, n_boot, rng)])  # (1 + B, N)
        both = task_resamples(task, per_image[task], truth, idx)
        both[[task not in s for s in serves]] = np.nan
        values[metric], samples[metric] = both[:, 0], both[:, 1:]
    values["score"] = np.mean([values[m] for m in METRICS.values()], axis=0)  # NaN for a partial member
    samples["score"] = np.mean([samples[m] for m in METRICS.values()], axis=0)

    n_members = len(members)
    full = [r for r in range(n_members) if np.isfinite(values["score"][r])]
    if not full:
        raise WorkbenchError("compare needs at least one member that serves all three tasks "
                             f"({', '.join(m.ref for m in members)})")
    best = max(full, key=lambda r: values["score"][r])
    rows = []
    for r, label in enumerate(labels):
        ci = {m: tuple(float(v) for v in percentile_interval(paired_differences(samples[m], best)[r], LEVEL))
              for m in COLUMNS}
        rows.append(CompareRow(label, {m: float(values[m][r]) for m in COLUMNS}, ci))
    result = CompareResult(rows, labels[best], split, n_boot, seed, LEVEL, {t: len(n) for t, n in names.items()})
    if out is not None:
        write_compare_csv(result, Path(out))
        write_compare_png(result, Path(out).with_suffix(".png"))
    return result


def unique_labels(labels: list[str]) -> list[str]:
    """Labels with repeats numbered (`a`, `a#2`), so that every row can be told apart."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def build_per_image(subs: list[Submission], truth: GroundTruth, names: dict[str, list[str]],
                    serves: list[set] | None = None) -> dict:
    """Per-image material of every row, each in the task's image order `names[task]`. A row that does
    not serve a task (`serves[r]`) gets empty material for it (its metric is masked afterwards).

    Returns:
        {"cls": (R, N) float64 correctness, "det": R lists of COCO results (image ids of truth.det),
        "seg": (R, N, K, K) int64 confusion matrices at the original mask size}.
    """
    cls = np.array([[float(s.cls.get(n, -1) == truth.cls[n]) for n in names["cls"]] for s in subs])
    ids = {im["file_name"]: im["id"] for im in truth.det["images"]}
    det = [[{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
            for d in s.det if d["image"] in ids] for s in subs]
    k = truth.seg_num_classes
    seg = np.zeros((len(subs), len(names["seg"]), k, k), np.int64)
    for j, name in enumerate(names["seg"]):
        target = read_mask(truth.seg[name])  # read once for every row
        for r, s in enumerate(subs):
            if serves is not None and "seg" not in serves[r]:
                continue
            if name not in s.seg or s.seg[name].shape != target.shape:
                raise WorkbenchError(f"{truth.seg[name]}: row {r + 1} has no mask of the image's size for {name}")
            seg[r, j] = confusion_matrix(s.seg[name], target, k, truth.ignore_index)
    return {"cls": cls, "det": det, "seg": seg}


def task_resamples(task: str, material, truth: GroundTruth, idx: np.ndarray) -> np.ndarray:
    """(R, B) metric of every row on each resample of one task's images."""
    if task == "cls":
        return bootstrap_means(material, idx)
    if task == "seg":
        return bootstrap_miou(material, idx)
    return np.stack([map50_resamples(truth.det, dets, idx) for dets in material])


def write_compare_csv(result: CompareResult, path: Path) -> None:
    """One line per row: label, best (0/1), each metric, its difference from the best member and the
    interval bounds of that difference (`<metric>_diff_low`, `<metric>_diff_high`)."""
    records = result.records()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(records[0])
    for record in records:
        writer.writerow([int(v) if isinstance(v, bool) else f"{v:.6f}" if isinstance(v, float) else v
                         for v in record.values()])
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def write_compare_png(result: CompareResult, path: Path) -> None:
    """Grouped bars (one group per metric, one bar per row). Each bar's error bar spans the best
    member's value + the interval of (row - best): where it reaches the best member's value (the
    dashed line), the difference is within noise."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, fine without a display

    best = result.row(result.best)
    metrics = list(COLUMNS)
    n_rows = len(result.rows)
    width = 0.8 / n_rows
    fig = Figure(figsize=(2.0 + 1.6 * len(metrics) + 0.3 * n_rows, 4.5))
    ax = fig.add_subplot()
    for r, row in enumerate(result.rows):
        x = np.arange(len(metrics)) + (r - (n_rows - 1) / 2) * width
        heights = [row.metrics[m] for m in metrics]
        label = row.label + (" (best)" if row.label == result.best else "")
        ax.bar(x, heights, width * 0.9, label=label)
        low = [best.metrics[m] + row.ci[m][0] for m in metrics]
        high = [best.metrics[m] + row.ci[m][1] for m in metrics]
        ax.vlines(x, low, high, color="black", linewidth=1)
        ax.hlines(low + high, np.concatenate([x, x]) - width * 0.2, np.concatenate([x, x]) + width * 0.2,
                  color="black", linewidth=1)
    for g, m in enumerate(metrics):
        ax.hlines(best.metrics[m], g - 0.45, g + 0.45, colors="grey", linestyles="dashed", linewidth=1)
    ax.set_xticks(np.arange(len(metrics)), [COLUMNS[m] for m in metrics])
    ax.set_ylabel(f"{result.split} value")
    ax.set_title(f"{result.split}: bars = value; error bars = best member + {100 * result.level:g}% paired "
                 f"bootstrap interval\nof (row - best) over {result.n_boot} image resamples; dashed = best member",
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the bars, never over them
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


__all__ = ["CompareResult", "CompareRow", "compare_members", "write_compare_csv", "write_compare_png"]
