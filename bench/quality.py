"""Recipe variants at an equal time budget, over several seeds, with paired bootstrap intervals on val.

    python bench/quality.py --data ../shared/data/traffic/dataset.yaml --budget 5m --seeds 0,1,2 \\
        --common "train joint --backbone efficientnet_lite0 --pretrained W --norm 0.5,0.5 --epochs 4" \\
        --variant shared= --variant "task=--norm-stats task" --out bench/NORM_STATS.md

Every (variant, seed) is one `mtwb <common> <variant args> --seed S --budget B` run, named
<prefix>-<variant>-s<seed> and reused while its command is unchanged. Each run is predicted on val
(the prediction cache is reused) and scored; the report gives every seed's val metrics, each
variant's mean and range over seeds, and the difference of each variant's seed-mean from the first
variant's with a 95% interval from paired resamples of BOTH the images (per task, the same for every
run) and the seeds (the same seed draw for both variants): a difference whose interval holds 0 is
not shown to be real. Only val is read.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402
from workbench.data.spec import DatasetSpec  # noqa: E402
from workbench.ensemble.bootstrap import percentile_interval, resample_indices  # noqa: E402
from workbench.ensemble.compare import build_per_image, task_resamples  # noqa: E402
from workbench.ensemble.members import member_predictions, member_tasks  # noqa: E402
from workbench.records import METRIC_COLUMNS, METRICS, TASKS, Submission, to_submission  # noqa: E402
from workbench.records.ensemble import parse_member  # noqa: E402
from workbench.records.run_info import FILE as RUN_FILE, RunInfo  # noqa: E402

COMMAND_FILE = "bench_command.txt"


def train(cli: str, argv: list[str], runs_dir: Path, name: str) -> tuple[RunInfo, float | None]:
    """Run `mtwb argv --name name --overwrite` unless a complete run of that name was made by the same
    command; (its run.json, seconds if trained now)."""
    full = [*argv, "--name", name, "--overwrite"]
    run = runs_dir / name
    done = run / COMMAND_FILE
    if (run / RUN_FILE).exists() and RunInfo.read(run).status == "complete" and done.exists() \
            and done.read_text() == " ".join(full):
        print(f"[quality] reusing {run}", flush=True)
        return RunInfo.read(run), None
    print(f"[quality] mtwb {' '.join(shlex.quote(a) for a in full)}", flush=True)
    t0 = time.time()
    subprocess.run([cli, *full], check=True)
    done.write_text(" ".join(full))
    return RunInfo.read(run), time.time() - t0


def plain_submission(folder: Path, spec: DatasetSpec) -> tuple[Submission, str]:
    """The val predictions bench/plain.py wrote into `folder`, and the task they serve."""
    result = json.loads((folder / "result.json").read_text())
    preds = json.loads((folder / "val.json").read_text())
    seg = dict(np.load(folder / "val_seg.npz")) if (folder / "val_seg.npz").exists() else {}
    return Submission(cls=preds["cls"], det=preds["det"], seg=seg, cls_classes=spec.cls_classes,
                      seg_num_classes=len(spec.seg_classes)), result["task"]


def samples_of(rows: list[str], data: str, n_boot: int, seed: int) -> tuple[dict, dict]:
    """Per metric: (R,) values on val and (R, B) values on B paired resamples of the images (NaN for a
    task a row does not serve). A row is a run folder, or a bench/plain.py output folder."""
    spec = DatasetSpec(data)
    truth = spec.ground_truth("val")
    subs, serves = [], []
    for row in rows:
        if (Path(row) / "result.json").exists():
            sub, task = plain_submission(Path(row), spec)
            subs.append(sub)
            serves.append({task})
        else:
            member = parse_member(row)
            pred = member_predictions([member], data, "val", "auto", False)[0]
            subs.append(to_submission(pred, spec.cls_classes, len(spec.seg_classes)))
            serves.append(set(member_tasks(member)))
    names = {t: truth.names(t) for t in TASKS}
    per_image = build_per_image(subs, truth, names, serves)
    rng = np.random.default_rng(seed)
    values, samples = {}, {}
    for task, metric in METRICS.items():
        n = len(names[task])
        idx = np.concatenate([np.arange(n)[None], resample_indices(n, n_boot, rng)])
        if any(task in s for s in serves):
            both = task_resamples(task, per_image[task], truth, idx)
        else:
            both = np.full((len(rows), n_boot + 1), np.nan)
        both[[task not in s for s in serves]] = np.nan
        values[metric], samples[metric] = both[:, 0], both[:, 1:]
    values["score"] = np.mean([values[m] for m in METRICS.values()], axis=0)
    samples["score"] = np.mean([samples[m] for m in METRICS.values()], axis=0)
    return values, samples


def cell(value: float) -> str:
    return f"{value:.4f}" if np.isfinite(value) else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--common", required=True, help="mtwb arguments every run shares (quoted)")
    parser.add_argument("--variant", action="append", required=True, help="NAME=ARGS; the first is the reference")
    parser.add_argument("--reference", help="NAME=FOLDER with {seed}: bench/plain.py outputs, one per seed, put "
                                            "first (the reference of every difference)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", required=True)
    parser.add_argument("--prefix", default="q")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    cli = str(Path(sys.executable).with_name("mtwb"))
    seeds = [int(s) for s in args.seeds.split(",")]
    variants = [(v.split("=", 1)[0], shlex.split(v.split("=", 1)[1])) for v in args.variant]
    common = shlex.split(args.common)
    runs: dict[str, list[str]] = {}
    seconds: dict[str, list[float]] = {}
    for seed in seeds:  # seed-major: an interrupted bench has every variant of the first seeds
        for name, extra in variants:
            run_name = f"{args.prefix}-{name}-s{seed}"
            info, _ = train(cli, [*common, *extra, "--data", args.data, "--seed", str(seed), "--budget", args.budget],
                            Path(args.runs_dir), run_name)
            runs.setdefault(name, []).append(str(Path(args.runs_dir) / run_name))
            seconds.setdefault(name, []).append(info.wall_time_s or 0.0)
    if args.reference:
        ref_name, template = args.reference.split("=", 1)
        runs = {ref_name: [template.format(seed=s) for s in seeds], **runs}
        seconds = {ref_name: [json.loads((Path(r) / "result.json").read_text())["total_s"] for r in runs[ref_name]],
                   **seconds}
        variants = [(ref_name, ["(bench/plain.py)"]), *variants]
    order = [r for name, _ in variants for r in runs[name]]
    values, samples = samples_of(order, args.data, args.n_boot, 0)
    k = len(seeds)
    rng = np.random.default_rng(1)
    seed_draw = rng.integers(0, k, size=(args.n_boot, k))  # resampled seeds, the same for every variant

    def seed_mean(v: int, metric: str) -> np.ndarray:
        """(B,) the variant's mean over a resample of its seeds, each run on the same image resample."""
        block = samples[metric][v * k:(v + 1) * k]  # (k, B)
        return block[seed_draw.T, np.arange(args.n_boot)].mean(0)

    cols = METRIC_COLUMNS
    lines = header("Recipe variants at an equal budget", "python bench/quality.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
    lines += ["", f"Budget {args.budget} per run (`--budget`), seeds {args.seeds}; val only. Common: "
                  f"`mtwb {args.common}`.", "", "| variant | seed | " + " | ".join(h for _, h in cols)
              + " | train s |", "|---" * (len(cols) + 3) + "|"]
    for v, (name, extra) in enumerate(variants):
        for j, seed in enumerate(seeds):
            r = v * k + j
            lines.append(f"| {name} | {seed} | " + " | ".join(cell(values[m][r]) for m, _ in cols)
                         + f" | {seconds[name][j]:.0f} |")
    lines += ["", "| variant (args) | " + " | ".join(f"{h} mean [min, max]" for _, h in cols)
              + " | diff vs " + variants[0][0] + " [95%] |", "|---" * (len(cols) + 2) + "|"]
    for v, (name, extra) in enumerate(variants):
        block = {m: values[m][v * k:(v + 1) * k] for m, _ in cols}
        cells = " | ".join(f"{cell(block[m].mean())} [{cell(block[m].min())}, {cell(block[m].max())}]"
                           if np.isfinite(block[m]).all() else "-" for m, _ in cols)
        if v == 0:
            diff = "-"
        else:
            parts = []
            for m, h in cols:
                point = values[m][v * k:(v + 1) * k].mean() - values[m][:k].mean()
                if not np.isfinite(point):
                    continue
                low, high = percentile_interval(seed_mean(v, m) - seed_mean(0, m), 0.95)
                parts.append(f"{h} {point:+.4f} [{low:+.4f}, {high:+.4f}]")
            diff = "; ".join(parts)
        lines.append(f"| {name} (`{' '.join(extra) or '-'}`) | {cells} | {diff} |")
    lines += ["", f"Intervals: {args.n_boot} resamples of the val images (per task, paired across every run) "
                  f"and of the {k} seeds (paired across variants); percentile 95%."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
