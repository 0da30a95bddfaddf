"""BatchNorm folded into the convolutions at inference (MultiTaskModel.folded_norms, what `mtwb predict`,
validation and `ensemble` run): the speed it buys and proof that it changes no val metric.

    python bench/inference.py --runs runs/single-cls-s0,runs/single-det-s0,runs/single-seg-s0,runs/op2-s0 \\
        --singles 'cls=runs/single-cls-s{seed},det=runs/single-det-s{seed},seg=runs/single-seg-s{seed}' \\
        --onepass 'runs/op2-s{seed}' --seeds 0,1,2 --out bench/INFERENCE.md

Per run: the forward of one batch of 8 images at the run's det size (its cls size for a cls-only run)
with all its tasks, unfolded and folded, interleaved over 7 rounds (median ms per image and the median
of the rounds' ratios); the largest difference between the two outputs; the val metrics predicted both
ways. Then the AllInOne ratio (bench/run.py allinone_vs_singles) of the one-pass checkpoints against the
three single-task models, both ways.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402
from run import allinone_vs_singles, ratio  # noqa: E402
from workbench.data.loaders import build_datasets  # noqa: E402
from workbench.data.spec import DatasetSpec  # noqa: E402
from workbench.data.transforms import canvas_hw  # noqa: E402
from workbench.models import inference  # noqa: E402
from workbench.records import TASKS  # noqa: E402
from workbench.runs import load_model, open_run  # noqa: E402
from workbench.train.trainer import validate  # noqa: E402


def forward_times(model, tasks, size, rounds: int = 7, reps: int = 3, batch: int = 8) -> dict:
    torch.manual_seed(0)
    images = torch.randint(0, 256, (batch, 3, *canvas_hw(size)), dtype=torch.uint8)

    def timed(fold: bool) -> float:
        with torch.no_grad(), (model.folded_norms() if fold else nullcontext()):
            model(images, tasks)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(images, tasks)
            return (time.perf_counter() - t0) / reps / batch * 1000

    plain, folded = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        folded.append(timed(True))
    with torch.no_grad():
        a = model(images, tasks)
        with model.folded_norms():
            b = model(images, tasks)
    diff = max(float((b[t][k] - a[t][k]).abs().max()) if isinstance(a[t], dict) else float((b[t] - a[t]).abs().max())
               for t in a for k in (a[t] if isinstance(a[t], dict) else [None]))
    return {"plain_ms": float(np.median(plain)), "folded_ms": float(np.median(folded)),
            "speedup": float(np.median([p / f for p, f in zip(plain, folded)])), "max_diff": diff}


def val_metrics(run, model, data: str) -> tuple[dict, dict]:
    """The run's val metrics predicted (validate, as training does) unfolded and folded."""
    spec = DatasetSpec(data)
    tasks = tuple(run.info.tasks)
    sets = build_datasets(spec, "val", run.info.img_size, train=False, tasks=tasks)
    truth = spec.ground_truth("val")
    with mock.patch.object(inference, "folded", lambda m: nullcontext(m)):
        plain = validate(model, sets, spec, truth, tasks, torch.device("cpu"))
    return plain, validate(model, sets, spec, truth, tasks, torch.device("cpu"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--runs", required=True, help="run folders, comma-separated")
    parser.add_argument("--singles", help="cls=FOLDER,det=FOLDER,seg=FOLDER with {seed}: the AllInOne ratio")
    parser.add_argument("--onepass", help="the one-pass checkpoints, with {seed}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    lines = [*header("BatchNorm folded into the convolutions at inference", "python bench/inference.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))), "",
        "## Forward, one batch of 8 images with all the run's tasks (median of 7 interleaved rounds)", "",
        "| run | tasks | size | unfolded ms/image | folded ms/image | speed-up | largest output difference |",
        "|---|---|---|---|---|---|---|"]
    metric_rows = ["| run | metric | unfolded | folded |", "|---|---|---|---|"]
    for folder in args.runs.split(","):
        run = open_run(folder)
        tasks = tuple(run.info.tasks)
        size = run.info.img_size["det" if "det" in tasks else tasks[0]]
        model = load_model(run, torch.device("cpu"))
        t = forward_times(model, tasks, size)
        lines.append(f"| {run.id} | {','.join(tasks)} | {size} | {t['plain_ms']:.2f} | {t['folded_ms']:.2f} | "
                     f"{t['speedup']:.2f}x | {t['max_diff']:.1e} |")
        plain, folded = val_metrics(run, model, args.data)
        metric_rows += [f"| {run.id} | {k} | {plain[k]:.5f} | {folded[k]:.5f} |" for k in plain]
        print(lines[-1], flush=True)
    lines += ["", "## Val metrics predicted both ways", "", *metric_rows]
    if args.singles and args.onepass:
        lines += ["", "## AllInOne: one-pass checkpoint vs the three single-task models, one image at the det size "
                  "(bench/run.py allinone_vs_singles, 5 interleaved rounds)", "",
                  "| seed | unfolded: ratio | folded: ratio |", "|---|---|---|"]
        singles = dict(s.split("=", 1) for s in args.singles.split(","))
        for seed in (int(s) for s in args.seeds.split(",")):
            onepass = args.onepass.format(seed=seed)
            members = {t: singles[t].format(seed=seed) for t in TASKS}
            size = open_run(onepass).info.img_size["det"]
            both = {fold: allinone_vs_singles({"onepass": onepass}, members, size, fold=fold)["onepass"]
                    for fold in (False, True)}
            lines.append(f"| {seed} | {ratio(both[False])} | {ratio(both[True])} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
