"""Recipe benchmark: single-task runs vs joint (equal weights, magnitude normalisation, task-level
clipping) vs head fine-tuning, one backbone, one equal budget of optimizer steps; and the training
step cost of `joint` against a bare timm forward + backward of the same backbone on the same images.

    python bench/recipes.py --data ../shared/data/traffic/dataset.yaml --out bench/RECIPES.md

Runs are named <prefix>-<recipe> under runs/ and reused when complete, so a second call only
rewrites the report. Only the val split is read (no test labels).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import bare_step_seconds, header  # noqa: E402  (bench/ is the script folder)
from workbench.data.loaders import collate_det
from workbench.records.run_info import FILE as RUN_FILE, RunInfo
from workbench.records.tasks import METRIC_COLUMNS, METRICS as METRIC_KEYS, TASKS
from workbench.errors import RunError
from workbench.train.streams import make_batch
from workbench.train.trainer import DEFAULT_BATCH, Trainer, TrainConfig, train

METRICS = METRIC_COLUMNS[:3]  # the task metrics, without the score


def run_or_reuse(config: TrainConfig) -> RunInfo:
    """Train a run unless a complete one of that name exists; its run.json."""
    path = Path(config.runs_dir) / config.name
    if (path / RUN_FILE).exists():
        info = RunInfo.read(path)
        if info.status == "complete":
            print(f"reusing {path}")
            return info
    print(f"training {config.name}")
    train(config, overwrite=True)
    return RunInfo.read(path)


def step_cost(config: TrainConfig, run_dir: Path, steps: int = 6, warmup: int = 2) -> dict:
    """Seconds per optimizer step of the joint recipe vs a bare timm backbone forward + backward (AdamW
    step included) on the same three batches."""
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, run_dir)
    for _ in range(warmup):
        trainer.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    joint = (time.perf_counter() - t0) / steps

    batches = []
    for task in TASKS:
        batch = make_batch(trainer.train_sets[task], trainer.streams[task].next(), collate_det if task == "det" else None)
        batches.append(batch[0].float().div(255).to(trainer.device))

    def bare(layout) -> float:
        """Seconds per step of the bare backbone with its weights and inputs in `layout`."""
        return bare_step_seconds(config.backbone, batches, steps, warmup, layout)

    # like for like: the workbench model runs channels-last, so the overhead is against the same layout;
    # a plain timm loop in the default NCHW layout is reported beside it.
    bare_cl, bare_nchw = bare(torch.channels_last), bare(torch.contiguous_format)
    return {"joint_s": joint, "bare_s": bare_cl, "bare_nchw_s": bare_nchw, "overhead": joint / bare_cl - 1}


def cell(best: dict | None, key: str) -> str:
    return f"{best[key]:.4f}" if best and key in best else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--pretrained", default="../shared/weights/efficientnet_lite0.imagenet.safetensors")
    parser.add_argument("--norm", default="0.5,0.5", help="mean,std of the pretrained weights")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=86, help="the same for every run: one equal budget")
    parser.add_argument("--img-size", default="cls=64,det=256,seg=256")
    parser.add_argument("--prefix", default="bench-rec")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--out", default="bench/RECIPES.md")
    args = parser.parse_args(argv)
    sizes = {k: int(v) for k, v in (p.split("=") for p in args.img_size.split(","))}
    mean, std = (float(x) for x in args.norm.split(",")) if args.norm else (None, None)
    pretrained = None if args.pretrained in ("", "none") else args.pretrained
    base = dict(data=args.data, backbone=args.backbone, pretrained=pretrained, mean=(mean,) * 3 if mean else None,
                std=(std,) * 3 if std else None,
                epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, img_size=sizes, runs_dir=args.runs_dir)
    t_all = time.time()
    runs: list[tuple[str, str, dict]] = []
    for task in TASKS:
        runs.append((f"single {task}", f"`mtwb train single --task {task}`",
                     run_or_reuse(TrainConfig(**base, recipe="single", tasks=(task,), name=f"{args.prefix}-single-{task}"))))
    variants = [("joint, equal weights", "equal", "`mtwb train joint`", {}),
                ("joint + magnitude normalisation", "magnitude", "`--balance magnitude --balance-ratio 10`",
                 {"balance": "magnitude"}),
                ("joint + task-level clipping", "taskclip", "`--clip task --clip-norm 1`", {"clip": "task", "clip_norm": 1.0})]
    for label, slug, how, extra in variants:
        runs.append((label, how, run_or_reuse(TrainConfig(**base, name=f"{args.prefix}-joint-{slug}", **extra))))
    joints = [r for r in runs if r[0].startswith("joint")]
    best_joint = max(joints, key=lambda r: r[2].best["score"])
    runs.append((f"headft from {best_joint[2].run_id}", f"`mtwb train headft --from {best_joint[2].run_id}`",
                 run_or_reuse(TrainConfig(data=args.data, recipe="headft", from_run=best_joint[2].run_id,
                                          epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                          runs_dir=args.runs_dir, name=f"{args.prefix}-headft"))))
    cost = step_cost(TrainConfig(**base, name=f"{args.prefix}-stepcost", device="cpu"),
                     Path(args.runs_dir) / f"{args.prefix}-stepcost")

    singles = {r[2].tasks[0]: r[2].best for r in runs if r[0].startswith("single")}
    combined = {k: singles[t][k] for t, (k, _) in zip(TASKS, METRICS)}
    combined["score"] = sum(combined.values()) / 3
    table = ["| recipe | how | Top-1 | mAP50 | mIoU | score | train s |", "|---|---|---|---|---|---|---|"]
    for label, how, info in runs:
        b = info.best
        table.append(f"| {label} | {how} | " + " | ".join(cell(b, k) for k, _ in METRICS)
                     + f" | {cell(b, 'score')} | {info.wall_time_s or 0:.0f} |")
    table.append("| three single runs together | (three models) | " + " | ".join(f"{combined[k]:.4f}" for k, _ in METRICS)
                 + f" | {combined['score']:.4f} | {sum(r[2].get('wall_time_s', 0) for r in runs[:3]):.0f} |")

    winners = []
    rows = [(label, info.best) for label, _, info in runs] + [("three single runs", combined)]
    for key, title in METRICS:
        label, b = max(((label, b) for label, b in rows if key in b and not label.startswith("three")), key=lambda x: x[1][key])
        winners.append(f"- {title}: **{label}** ({b[key]:.4f}).")
    multi = [(label, b) for label, b in rows if all(METRIC_KEYS[t] in b for t in TASKS)]
    label, b = max(multi, key=lambda x: x[1]["score"])
    winners.append(f"- Combined score of one model: **{label}** ({b['score']:.4f}); the three single-task models "
                   f"together score {combined['score']:.4f} at three times the inference cost.")
    total_steps = args.epochs * args.steps_per_epoch
    lines = [*header(f"Training recipes on {Path(args.data).parent.name} val",
                     f"python bench/recipes.py --data {args.data} --backbone {args.backbone} --epochs {args.epochs} "
                     f"--steps-per-epoch {args.steps_per_epoch} --img-size {args.img_size}"),
             f"- every run: {args.backbone} from `{args.pretrained}` (norm {args.norm}), {total_steps} optimizer steps "
             f"({args.epochs} epochs x {args.steps_per_epoch}), input {args.img_size}, batch "
             f"{' / '.join(f'{t} {b}' for t, b in DEFAULT_BATCH.items())}, "
             "AdamW lr 2e-3, warmup + cosine; a joint step takes one batch of every task, a single run's step one "
             "batch of its task; best epoch by val score", f"- benchmark wall time: {time.time() - t_all:.0f} s", "",
             "## Val metrics (best epoch of each run)", "", *table, "",
             "## Which recipe won", "", *winners, "",
             "## Training step cost", "",
             f"- `joint` optimizer step (3 batches, heads, losses, per-task backward, augmentation and batching): "
             f"{cost['joint_s'] * 1000:.0f} ms",
             f"- bare timm `{args.backbone}` features forward + backward + AdamW on the same three batches: "
             f"{cost['bare_s'] * 1000:.0f} ms channels-last (the workbench's layout), "
             f"{cost['bare_nchw_s'] * 1000:.0f} ms in timm's default NCHW",
             f"- overhead of heads and data pipeline: {cost['overhead'] * 100:+.1f}% (goal: at most +15%)", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except RunError as e:
        raise SystemExit(f"error: {e}")
