"""Ensemble benchmark: time `ensemble compare` and `ensemble search` with a warm cache, and report
what the searched blend gains over the best member on val (search half, held-out half, bootstrap).

    python bench/ensemble.py --data ../shared/data/traffic/dataset.yaml --out bench/ENSEMBLE.md MEMBER ...
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import header  # noqa: E402  (bench/ is the script folder)
from workbench.ensemble.compare import compare_members
from workbench.records.tasks import TASKS
from workbench.ensemble.members import member_predictions
from workbench.records.ensemble import parse_member
from workbench.ensemble.search import SearchConfig, search_ensemble
from workbench.data.spec import DatasetSpec
from workbench.fuse import blend
from workbench.fuse.det import fuse_boxes
from workbench.metrics.scoring import score_predictions
from workbench.models.inference import merge_tasks


def wbf_cost(members, data: str) -> tuple[float, float]:
    """Mean ms per image of fusing all members' val boxes with WBF, and mean input boxes per image."""
    preds = member_predictions(members, data, "val", "cpu")
    names = list(preds[0].det)
    t0 = time.perf_counter()
    for n in names:
        fuse_boxes([p.det[n] for p in preds])
    boxes = np.mean([sum(len(p.det[n].scores) for p in preds) for n in names])
    return 1000 * (time.perf_counter() - t0) / len(names), float(boxes)


def fusion_vs_scoring(members, data: str) -> dict[str, float]:
    """Seconds to fuse all members' val predictions (per task) and to score the fused result."""
    spec = DatasetSpec(data)
    truth = spec.ground_truth("val")
    preds = member_predictions(members, data, "val", "cpu")
    out = {}
    parts = {}
    for task in TASKS:
        t0 = time.perf_counter()
        parts[task] = blend(preds, tasks=(task,))
        out[f"fuse_{task}_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    score_predictions(merge_tasks(parts["cls"], parts["det"], parts["seg"]), truth)
    out["score_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("members", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", default="bench/ENSEMBLE.md")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    members = [parse_member(m) for m in args.members]
    member_predictions(members, args.data, "val", "cpu")  # warm the cache: the timings below exclude prediction

    t0 = time.perf_counter()
    compared = compare_members(members, args.data, "val", args.n_boot, 0, "cpu")
    compare_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    spec = search_ensemble(SearchConfig(tuple(members), args.data, rounds=args.rounds, device="cpu"))
    search_s = time.perf_counter() - t0
    wbf_ms, boxes = wbf_cost(members, args.data)
    split = fusion_vs_scoring(members, args.data)

    lines = [*header(f"Ensemble benchmark on {Path(args.data).parent.name} val",
                     f"python bench/ensemble.py --data {args.data} --out {args.out} {' '.join(args.members)}"), "",
             "## Timings (cache warm)", "",
             f"- `ensemble compare`, {len(members)} members + blend, {args.n_boot} bootstrap resamples: {compare_s:.1f} s",
             f"- `ensemble search`, {args.rounds} rounds, fusion grid: {search_s:.1f} s for "
             f"{spec.info['search']['blends_evaluated']} candidate blends",
             f"- WBF of all members' boxes: {wbf_ms:.1f} ms per image ({boxes:.0f} input boxes per image)",
             f"- one equal-weight blend of all members on val: fusion {split['fuse_cls_s']:.2f} s (cls) + "
             f"{split['fuse_det_s']:.2f} s (det) + {split['fuse_seg_s']:.2f} s (seg), scoring it "
             f"(Top-1, pycocotools mAP50, mIoU at full mask size) {split['score_s']:.2f} s", "",
             "## Compare (each member alone, the equal-weight blend)", "", "```", compared.to_table(), "```", "",
             "## Search", "", "Chosen blend:", ""]
    for task, tb in spec.tasks.items():
        blend = " + ".join(f"{w:g} x `{m.label}`" for m, w in zip(tb.members, tb.weights))
        extra = f" (fusion {tb.fusion.det_method}, iou {tb.fusion.iou_thr}, skip {tb.fusion.skip_box_thr})" if task == "det" else ""
        lines.append(f"- {task}: {blend}{extra}")
    lines += ["", "| task | best member | member: search half | blend: search half | member: held-out half | blend: held-out half |",
              "|---|---|---|---|---|---|"]
    for task, h in spec.info["halves"].items():
        lines.append(f"| {task} | `{h['best_member']}` | {h['member_search']:.4f} | {h['blend_search']:.4f} | "
                     f"{h['member_holdout']:.4f} | {h['blend_holdout']:.4f} |")
    lines += ["", "Exact val scores (whole split; the blend was searched on half of it):", "",
              "| row | Top-1 | mAP50 | mIoU | score |", "|---|---|---|---|---|"]
    for label, m in spec.info["val"].items():
        lines.append(f"| `{label}` | {m['cls_top1']:.4f} | {m['det_map50']:.4f} | {m['seg_miou']:.4f} | {m['score']:.4f} |")
    text = "\n".join(lines) + "\n"
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
