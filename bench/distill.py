"""Distillation benchmark: the teacher ensemble, the student backbone trained without pseudo-labels
(its twin: same config), and the distilled student; per-task val metrics, combined score and
inference cost of each on this machine.

    python bench/distill.py --data ../shared/data/traffic/dataset.yaml --twin joint-lite0 \
        --out bench/DISTILL.md TEACHER_MEMBER ...   (or one ensembles/NAME.yaml)

The student copies the twin's config.yaml (backbone, weights, sizes, epochs, lr) and adds the
pseudo-labelled images, so the only difference is the distillation. Runs are reused when complete.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml

from _common import header  # noqa: E402  (bench/ is the script folder)
from workbench.data.spec import DatasetSpec
from workbench.records.run_info import FILE as RUN_FILE, RunInfo
from workbench.records.tasks import TASKS
from workbench.records.cache_meta import CacheMeta
from workbench.records.tasks import METRIC_COLUMNS
from workbench.distill import PSEUDO_DIR, DistillConfig, distill
from workbench.records.ensemble import EnsembleSpec, parse_member, spec_file
from workbench.ensemble.spec import blend_spec, equal_spec
from workbench.io import read_json
from workbench.metrics.scoring import score_predictions
from workbench.predict import PredictConfig, predict_run

METRICS = METRIC_COLUMNS


def ms_per_image(run: str, data: str, tta: str = "none") -> dict[str, float]:
    """Inference ms per image per task of a run under a TTA spec, from its val cache entry's timings."""
    _, folder, _ = predict_run(PredictConfig(run, data, "val", "cpu", tta=tta), progress=False)
    return CacheMeta.read(folder).ms_per_image


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", nargs="+")
    parser.add_argument("--data", required=True)
    parser.add_argument("--twin", required=True, help="the student backbone's run without pseudo-labels")
    parser.add_argument("--name", default="bench-student")
    parser.add_argument("--route", default="cls=crop_*,det=scene_*,seg=scene_*")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", default="bench/DISTILL.md")
    args = parser.parse_args(argv)
    t_all = time.time()
    if spec_file(args.teacher):
        teacher = EnsembleSpec.load(args.teacher[0])
    else:
        teacher = equal_spec([parse_member(m) for m in args.teacher])
    twin_dir = Path(args.runs_dir) / args.twin
    twin_cfg = yaml.safe_load((twin_dir / "config.yaml").read_text())
    fields = {k: v for k, v in twin_cfg.items() if k not in ("data", "name", "runs_dir", "device", "recipe", "tasks")}
    route = dict(p.split("=", 1) for p in args.route.split(","))

    student_dir = Path(args.runs_dir) / args.name
    if not ((student_dir / RUN_FILE).exists() and RunInfo.read(student_dir).status == "complete"):
        distill(DistillConfig(teacher, args.data, args.name, route=route, device="cpu", runs_dir=args.runs_dir,
                              overwrite=True, train=fields))
    pseudo_meta = read_json(Path(args.runs_dir) / PSEUDO_DIR / args.name / "meta.json")

    spec = DatasetSpec(args.data)
    truth = spec.ground_truth("val")
    members = teacher.members()
    preds = {m: predict_run(PredictConfig(m.run, args.data, "val", "cpu", tta=m.tta), progress=False)[0] for m in members}
    teacher_metrics = score_predictions(blend_spec(teacher, preds), truth)
    teacher_ms = {t: 0.0 for t in TASKS}
    for t in TASKS:  # a member counts for the tasks the teacher uses it for
        for m in dict.fromkeys(teacher.tasks[t].members):
            teacher_ms[t] += ms_per_image(m.run, args.data, m.tta)[t]
    rows = [("teacher: " + " + ".join(m.label for m in members), teacher_metrics, teacher_ms, None)]
    for label, run in ((f"twin: {args.twin} (no pseudo-labels)", args.twin), (f"student: {args.name}", args.name)):
        info = RunInfo.read(Path(args.runs_dir) / run)
        path = str(Path(args.runs_dir) / run)
        metrics = score_predictions(preds_of(path, args.data), truth)
        rows.append((label, metrics, ms_per_image(path, args.data), info.wall_time_s))

    def total(ms):
        return sum(ms.values())
    table = ["| model | Top-1 | mAP50 | mIoU | score | ms / image (cls + det + seg) | images/s (all three tasks) | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for label, m, ms, train_s in rows:
        table.append(f"| {label} | " + " | ".join(f"{m[k]:.4f}" for k, _ in METRICS)
                     + f" | {ms['cls']:.1f} + {ms['det']:.1f} + {ms['seg']:.1f} = {total(ms):.1f} | {1000 / total(ms):.1f} | "
                     + (f"{train_s:.0f}" if train_s else "-") + " |")
    teacher_row, twin_row, student_row = rows
    kept = student_row[1]["score"] / teacher_row[1]["score"]
    cost = total(student_row[2]) / total(teacher_row[2])
    verdict = [f"- The student keeps {100 * kept:.1f}% of the teacher's combined score (goal: at least 97%) at "
               f"{cost:.2f}x its inference cost (goal: at most 0.33x).",
               f"- Against its twin trained without pseudo-labels: {student_row[1]['score'] - twin_row[1]['score']:+.4f} "
               f"combined ({', '.join(f'{t} {student_row[1][k] - twin_row[1][k]:+.4f}' for k, t in METRICS[:3])})."]
    counts = pseudo_meta["counts"]
    lines = [*header(f"Distillation on {Path(args.data).parent.name} val",
                     f"python bench/distill.py --data {args.data} --twin {args.twin} --name {args.name} "
                     f"--route '{args.route}' --out {args.out} {' '.join(args.teacher)}"),
             f"- pseudo-labels: {counts['cls']} crops (soft class probabilities, temperature "
             f"{fields.get('temperature', 2.0)}), {counts['det_images']} scenes with {counts['det_boxes']} boxes at "
             f"score >= {pseudo_meta['det_threshold']:.3f} (F1 {pseudo_meta['det_threshold_f1_on_val']:.3f} on val, "
             f"the maximum), {counts['seg']} scenes (soft probabilities, pixels under "
             f"{pseudo_meta['seg_confidence']} ignored)",
             "- inference cost: the ms per image recorded in each val cache entry (batched, this CPU); the teacher's "
             "is, per task, the sum of the members it blends for that task (each with its TTA)",
             f"- benchmark wall time: {time.time() - t_all:.0f} s", "",
             *table, "", *verdict, ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


def preds_of(run: str, data: str):
    return predict_run(PredictConfig(run, data, "val", "cpu"), progress=False)[0]


if __name__ == "__main__":
    main()
