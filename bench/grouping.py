"""Which tasks should share a backbone on the real benchmark (issue 20): a joint run measuring lookahead
affinity, the ranking of the five groupings it predicts, and the ranking they reach when each is trained
at an equal total budget, with the rank correlation between the two and the cost of the measurement.

    python bench/grouping.py --data ../shared/data/traffic/dataset.yaml --weights ../shared/weights \\
        --affinity-budget 6m --budget 6m --out bench/GROUPING.md

Every run is fine-tuned from ImageNet EfficientNet-Lite0 with the make-bench recipe (sizes cls=64,
det=320x256, seg=256x320, task clipping, 3 epochs); the groups' runs take the affinity run's settings
(`mtwb grouping --train`). One seed: DESIGN.md measured a 3.4-point seed spread of the combined score.
Runs already trained are reused.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402

MTWB = [sys.executable, "-m", "workbench"]


def mtwb(args: list[str], capture: bool = False) -> tuple[str, float]:
    """Run an mtwb command (printing it); (its stdout if captured, wall seconds)."""
    print("$ mtwb " + " ".join(shlex.quote(a) for a in args), flush=True)
    t0 = time.time()
    proc = subprocess.run(MTWB + args, text=True, stdout=subprocess.PIPE if capture else None)
    if proc.returncode:
        raise SystemExit(f"bench: mtwb {args[0]} failed ({proc.returncode})")
    return proc.stdout or "", time.time() - t0


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--weights", required=True, help="folder of efficientnet_lite0.imagenet.safetensors")
    parser.add_argument("--affinity-budget", default="6m")
    parser.add_argument("--affinity-every", default="10")
    parser.add_argument("--budget", default="6m", help="training time of one grouping (shared by its groups)")
    parser.add_argument("--max-backbones", default="3")
    parser.add_argument("--img-size", default="cls=64,det=320x256,seg=256x320")
    parser.add_argument("--name", default="bench-affinity-lite0")
    parser.add_argument("--out", default="bench/GROUPING.md")
    args = parser.parse_args(argv)
    t_all = time.time()
    weights = str(Path(args.weights) / "efficientnet_lite0.imagenet.safetensors")
    train = ["train", "joint", "--data", args.data, "--backbone", "efficientnet_lite0", "--pretrained", weights,
             "--norm", "0.5,0.5", "--img-size", args.img_size, "--clip", "task", "--epochs", "3",
             "--budget", args.affinity_budget, "--affinity-every", args.affinity_every, "--name", args.name]
    run = Path("runs") / args.name
    if not (run / "run.json").is_file() or json.loads((run / "run.json").read_text())["status"] != "complete":
        mtwb(train + (["--overwrite"] if run.exists() else []))
    info = json.loads((run / "run.json").read_text())
    aff = info["affinity"]
    step_s = info["wall_time_s"] / info["steps"]
    predicted_cmd = ["grouping", "--from", args.name, "--max-backbones", args.max_backbones]
    predicted_text, _ = mtwb(predicted_cmd, capture=True)
    trained_cmd = predicted_cmd + ["--train", "--data", args.data, "--budget", args.budget]
    trained_text, trained_s = mtwb(trained_cmd + ["--json"], capture=True)
    rows = json.loads(trained_text)
    table, _ = mtwb(trained_cmd, capture=True)  # every run reused: the printed table of the same numbers
    table = "\n".join(ln for ln in table.splitlines() if not ln.startswith(("reusing ", "training ")))

    lines = header("Task grouping from lookahead affinity (issue 20)", "python bench/grouping.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    lines += ["", "## The affinity run", "",
              f"`mtwb {' '.join(shlex.quote(a) for a in train)}`", "",
              f"- {info['steps']} steps in {info['wall_time_s']:.0f} s; val score {info['best']['score']:.4f} "
              f"(Top-1 {info['best'].get('cls_top1', float('nan')):.4f}, mAP50 {info['best'].get('det_map50', float('nan')):.4f}, "
              f"mIoU {info['best'].get('seg_miou', float('nan')):.4f})",
              f"- cost of measuring: {aff['measurements']} measurements (every {aff['every']} steps), "
              f"{aff['seconds']:.0f} s in all, {aff['seconds_per_measurement']:.2f} s each = "
              f"{aff['seconds'] / info['steps']:.2f} s per training step on average "
              f"({100 * aff['seconds'] / info['wall_time_s']:.0f}% of the run's time; a step took "
              f"{step_s:.2f} s measured over the run, the measurement included)", "",
              "## Affinity and the predicted ranking", "", "```", predicted_text.strip(), "```", "",
              f"## Trained at an equal total budget ({args.budget} per grouping)", "", "```", table.strip(), "```", "",
              "| grouping | backbones | predicted | predicted rank | Top-1 | mAP50 | mIoU | val score | trained rank |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['grouping'].replace('|', '/')} | {r['backbones']:g} | {r['predicted']:+.3g} | {r['predicted_rank']} | "
                     f"{r['cls_top1']:.4f} | {r['det_map50']:.4f} | {r['seg_miou']:.4f} | {r['score']:.4f} | "
                     f"{r['trained_rank']} |")
    runs = sorted({run for r in rows for run in r["runs"].split()})
    train_s = sum(json.loads((Path("runs") / run / "run.json").read_text())["wall_time_s"] for run in runs)
    lines += ["", f"The {len(runs)} group runs trained for {train_s / 60:.0f} min in all (their run.json wall times: "
              "each grouping's budget, the runs a grouping shares with another counted once); this invocation "
              f"took {trained_s / 60:.0f} min (runs reused where they existed), the whole bench "
              f"{(time.time() - t_all) / 60:.0f} min.", ""]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
