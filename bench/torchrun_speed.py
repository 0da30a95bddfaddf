"""Joint training images/s at world size 1 and 2 under torchrun (gloo on this CPU): for the record.

    python bench/torchrun_speed.py --data ../shared/data/traffic/dataset.yaml \
        --pretrained ../shared/weights/efficientnet_lite0.imagenet.safetensors --out bench/TORCHRUN.md

Each world size runs in fresh processes started by torchrun (`--worker`), with the machine's cores
shared out (`OMP_NUM_THREADS` = cores / world size), alternating over `--repeats`; the same global
batches (cls 32, det 8, seg 8: 48 images a step) at the make-bench sizes. A step's time is rank 0's,
after `--warmup` steps. Correctness is tests/distributed/test_torchrun.py's job; this is the speed on this
machine kind, for the record (both world sizes share the same two cores; launches vary by 10-20%,
so compare medians of several repeats).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {"cls": 64, "det": (320, 256), "seg": (256, 320)}
BATCH = {"cls": 32, "det": 8, "seg": 8}


def worker(data: str, runs_dir: str, pretrained: str | None, steps: int, warmup: int, out: str) -> None:
    from workbench.train.trainer import Trainer, TrainConfig

    config = TrainConfig(data=data, backbone="efficientnet_lite0", pretrained=pretrained, mean=(0.5,) * 3,
                         std=(0.5,) * 3, epochs=1, name="speed", runs_dir=runs_dir, clip="task", device="cpu",
                         img_size=dict(SIZES), batch_size=dict(BATCH), steps_per_epoch=1000)
    run_dir = Path(runs_dir) / "speed"
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, run_dir)
    trainer.recipe.set_train_mode(trainer.model)
    for _ in range(warmup):
        trainer.train_step()
    trainer.dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    step_s = (time.perf_counter() - t0) / steps
    if trainer.dist.main:
        Path(out).write_text(json.dumps({"step_s": step_s, "world": trainer.dist.world}))


def measure(args, world: int, runs_dir: str) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(world),
               "--master_addr", "127.0.0.1", "--master_port", str(port), __file__, "--worker", "--data", args.data,
               "--runs-dir", runs_dir, "--steps", str(args.steps), "--warmup", str(args.warmup), "--result", out.name]
        if args.pretrained:
            cmd += ["--pretrained", args.pretrained]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // world))}
        subprocess.run(cmd, check=True, env=env)
        return json.loads(Path(out.name).read_text())["step_s"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--pretrained")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--worlds", default="1,2")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.data, args.runs_dir, args.pretrained, args.steps, args.warmup, args.result)
        return
    from _common import header
    worlds = [int(w) for w in args.worlds.split(",")]
    times: dict[int, list[float]] = {w: [] for w in worlds}
    with tempfile.TemporaryDirectory() as runs_dir:  # the first worker builds the image cache here
        for _ in range(args.repeats):
            for w in worlds:
                times[w].append(measure(args, w, runs_dir))
    images = sum(BATCH.values())
    command = "python bench/torchrun_speed.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    lines = header("Joint training under torchrun: images/s by world size", command) + [
        "", f"efficientnet_lite0 joint step (task clipping), global batches {BATCH} = {images} images a step at "
        f"{SIZES}; threads per process = {os.cpu_count()} cores / world size; median [min, max] of "
        f"{args.repeats} fresh launches, {args.steps} timed steps after {args.warmup}.", "",
        "| world size | backend | s / step | images / s | vs world size 1 |", "|---|---|---|---|---|"]
    base = statistics.median(times[worlds[0]])
    for w in worlds:
        med = statistics.median(times[w])
        backend = "gloo (CPU)" if w > 1 else "none (one process)"
        lines.append(f"| {w} | {backend} | {med:.3f} [{min(times[w]):.3f}, {max(times[w]):.3f}] | "
                     f"{images / med:.1f} | {base / med:.2f}x |")
    lines += ["", __doc__.split("\n\n", 2)[2].strip().replace("\n", " ")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
