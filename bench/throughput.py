"""Training-step throughput: where the joint step's time goes, against a bare timm loop on the same batches.

    python bench/throughput.py --data ../shared/data/traffic/dataset.yaml --repeats 3 --out bench/THROUGHPUT.md

Each setting runs in a fresh `--worker` process per repeat, settings alternating (drift on the
machine hits all alike); min / median / max over the repeats. The settings:

- before: images decoded lazily inside the steps (the first pass of a run), batches built in the
  step, every task's backbone gradient copied into a flat vector (the trainer before the image
  cache, the prefetch thread and the in-place gradient sum);
- cache, no prefetch: images read from the memory-mapped decoded-image cache, batches built in the
  step, per-task gradients summed in place (the default on a CPU);
- cache, no prefetch, flat gradients: the same with the flat per-task copies (what PCGrad needs);
- cache + prefetch: the next step's batches assembled in a background thread (the default on a GPU);
- bare timm: efficientnet_lite0 `features_only` forward + backward + AdamW on the same three
  batches, channels-last like the workbench's model, inputs already tensors.

The first worker builds the decoded-image cache (its seconds and size are reported); the others reuse it.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {
    "before: lazy decoding, no prefetch, flat gradients": dict(cache_images=False, prefetch=False, flat=True),
    "cache, no prefetch (the CPU default)": dict(cache_images=True, prefetch=False, flat=False),
    "cache, no prefetch, flat gradients": dict(cache_images=True, prefetch=False, flat=True),
    "cache + prefetch": dict(cache_images=True, prefetch=True, flat=False),
}
BARE = "bare timm, channels-last"


def worker(data: str, runs_dir: str, setting: str, steps: int, warmup: int, pretrained: str | None) -> dict:
    import torch

    from _common import bare_step_seconds
    from workbench.allocator import tune_allocator
    from workbench.data.loaders import collate_det
    from workbench.records.tasks import TASKS
    from workbench.train.streams import make_batch
    from workbench.train.trainer import Trainer, TrainConfig

    tune_allocator()  # as `mtwb train` runs
    name = f"tp-{time.time_ns()}"
    config = TrainConfig(data=data, backbone="efficientnet_lite0", pretrained=pretrained, mean=(0.5,) * 3,
                         std=(0.5,) * 3, epochs=1, name=name, runs_dir=runs_dir, clip="task", device="cpu",
                         img_size={"cls": 64, "det": 256, "seg": 256}, steps_per_epoch=1000)
    if setting == BARE:
        config = TrainConfig(**{**config.to_yaml_dict(), "prefetch": False})
    else:
        s = SETTINGS[setting]
        config = TrainConfig(**{**config.to_yaml_dict(), "cache_images": s["cache_images"], "prefetch": s["prefetch"]})
    t0 = time.perf_counter()
    trainer = Trainer(config, Path(runs_dir) / name)
    setup_s = time.perf_counter() - t0
    caches = {k: {"mib": c.nbytes / 2**20, "reused": c.reused, "seconds": c.seconds} for k, c in trainer.image_caches.items()}
    if setting != BARE:
        trainer.balancer.uses_gradients = SETTINGS[setting]["flat"]
        for _ in range(warmup):
            trainer.train_step(prefetch_next=config.prefetch)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step(prefetch_next=config.prefetch)
        step_s = (time.perf_counter() - t0) / steps
        trainer.close()
        return {"step_s": step_s, "setup_s": setup_s, "caches": caches}
    batches = []
    for task in TASKS:
        batch = make_batch(trainer.train_sets[task], trainer.streams[task].next(), collate_det if task == "det" else None)
        batches.append(batch[0].float().div(255))
    bare = bare_step_seconds("efficientnet_lite0", batches, steps, warmup, torch.channels_last)
    return {"step_s": bare, "setup_s": setup_s, "caches": caches}


def spread(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    return " / ".join(f"{v * scale:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--pretrained", default="../shared/weights/efficientnet_lite0.imagenet.safetensors")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="bench/THROUGHPUT.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pretrained = args.pretrained if args.pretrained and Path(args.pretrained).is_file() else None
    if args.worker:
        print(json.dumps(worker(args.data, args.runs_dir, args.worker, args.steps, args.warmup, pretrained)))
        return
    from _common import header

    names = [*SETTINGS, BARE]
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as runs_dir:
        for r in range(args.repeats):
            for name in names:
                out = subprocess.run([sys.executable, __file__, "--worker", name, "--runs-dir", runs_dir, "--data", args.data,
                                      "--pretrained", args.pretrained or "", "--steps", str(args.steps),
                                      "--warmup", str(args.warmup)], capture_output=True, text=True)
                if out.returncode:
                    sys.exit(f"worker {name!r} failed:\n{out.stderr[-3000:]}")
                results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"repeat {r + 1} {name}: {results[name][-1]['step_s']:.3f} s/step", file=sys.stderr, flush=True)
    first_cached = next(x for n in names for x in results[n] if x["caches"] and not any(c["reused"] for c in x["caches"].values()))
    reused = [x["setup_s"] for n in names for x in results[n] if x["caches"] and all(c["reused"] for c in x["caches"].values())]
    median = {n: statistics.median(x["step_s"] for x in results[n]) for n in names}
    bare = median[BARE]
    lines = header("Training-step throughput", f"python bench/throughput.py --data {args.data} --repeats {args.repeats}")
    lines += ["", f"Joint efficientnet_lite0 (ImageNet weights), cls 64 px, det/seg 256 px, default batches "
                  f"(cls 32, det 8, seg 8), task clipping; {args.steps} steps after {args.warmup}, the first steps "
                  f"of a run; each setting in a fresh process per repeat, alternating. ms per optimizer step, "
                  f"min / median / max over {args.repeats} repeats.", "",
              "| setting | ms / step | median vs bare timm |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {spread([x['step_s'] for x in results[n]], 1000)} | "
                     f"{'-' if n == BARE else f'{median[n] / bare - 1:+.1%}'} |")
    lines += ["", "Decoded-image cache (train and val of the three tasks at these sizes): "
              + ", ".join(f"{k} {c['mib']:.1f} MiB" for k, c in first_cached["caches"].items())
              + f"; {sum(c['mib'] for c in first_cached['caches'].values()):.0f} MiB in all, built in "
              f"{max(c['seconds'] for c in first_cached['caches'].values()):.1f} s at most per data set "
              f"({sum(c['seconds'] for c in first_cached['caches'].values()):.1f} s in all, {os.cpu_count()} decoding threads"
              f"); a later run's trainer set-up with every cache reused: {spread(reused, 1, 1)} s "
              f"(min / median / max)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    Path(args.out).with_suffix(".json").write_text(json.dumps(
        {"median_s": median, "bare": BARE, "default_cpu": "cache, no prefetch (the CPU default)"}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
