"""glibc allocator settings (DESIGN.md) measured cleanly: the joint train step and inference, each
setting in fresh processes, alternating, several repeats; minimum / median / maximum.

    python bench/allocator.py --data ../shared/data/traffic/dataset.yaml --repeats 3 --out bench/ALLOCATOR.md

The settings only take effect at process start, so every measurement is a new `--worker` process.
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

TUNED = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "17179869184", "MALLOC_TOP_PAD_": "536870912"}
SETTINGS = {"glibc default": {}, "DESIGN.md thresholds (environment)": TUNED,
            "workbench.allocator (mallopt in process)": {"WB_BENCH_MALLOPT": "1"}}


def worker(data: str, steps: int, warmup: int) -> dict:
    """Seconds per joint train step (data loading included, as users run it) and ms per image of inference."""
    if os.environ.get("WB_BENCH_MALLOPT"):
        from workbench.allocator import tune_allocator
        assert tune_allocator()
    import torch

    from workbench.records.tasks import TASKS
    from workbench.train.trainer import Trainer, TrainConfig

    with tempfile.TemporaryDirectory() as tmp:
        config = TrainConfig(data=data, backbone="efficientnet_lite0", epochs=1, name="alloc", runs_dir=tmp,
                             img_size={"cls": 64, "det": 256, "seg": 256}, device="cpu")
        trainer = Trainer(config, Path(tmp) / "alloc")
        for _ in range(warmup):
            trainer.train_step()
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        step_s = (time.perf_counter() - t0) / steps
        model = trainer.model.eval()
        images = torch.rand(8, 3, 256, 256).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(2):
                model(images, tasks=TASKS)
            t0 = time.perf_counter()
            reps = 5
            for _ in range(reps):
                model(images, tasks=TASKS)
        infer_ms = 1000 * (time.perf_counter() - t0) / (reps * len(images))
    return {"step_s": step_s, "infer_ms_per_image": infer_ms}


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="bench/ALLOCATOR.md")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.data, args.steps, args.warmup)))
        return
    from _common import header

    results: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for r in range(args.repeats):
        for name, env in SETTINGS.items():  # alternating, so drift on the machine hits both alike
            clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            out = subprocess.run([sys.executable, __file__, "--worker", "--data", args.data, "--steps", str(args.steps),
                                  "--warmup", str(args.warmup)], env={**clean, **env}, capture_output=True, text=True,
                                 check=True)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"repeat {r + 1} {name}: {results[name][-1]}", file=sys.stderr)
    medians = {n: (statistics.median(x["step_s"] for x in results[n]),
                   statistics.median(x["infer_ms_per_image"] for x in results[n])) for n in SETTINGS}
    default = medians["glibc default"]
    lines = header("glibc allocator settings", f"python bench/allocator.py --data {args.data} --repeats {args.repeats}")
    lines += ["", f"Joint efficientnet_lite0 train step (cls 64 px, det/seg 256 px, default batches, data loading "
                  f"included; {args.steps} steps after {args.warmup}) and inference (batch 8, 256 px, all three heads), "
                  f"each in a fresh process per repeat, settings alternating. min / median / max over "
                  f"{args.repeats} repeats.", "",
              "| setting | s / train step | inference ms / image |", "|---|---|---|"]
    for name in SETTINGS:
        lines.append(f"| {name} | {spread([x['step_s'] for x in results[name]])} | "
                     f"{spread([x['infer_ms_per_image'] for x in results[name]])} |")
    lines += [""] + [f"Median ratio to the default, {n}: train step {m[0] / default[0]:.3f}, inference "
                     f"{m[1] / default[1]:.3f}." for n, m in medians.items() if n != "glibc default"]
    lines += [f"Environment thresholds: {' '.join(f'{k}={v}' for k, v in TUNED.items())}; in process: the same "
              f"through mallopt, the trim threshold capped at 2 GiB - 1 (mallopt takes a C int)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
