"""TTA benchmark: val metrics per task without TTA, with each view, and fused, with the time per image
of each and the disk size of each cache entry. Writes a markdown report.

    python bench/tta.py --data ../shared/data/traffic/dataset.yaml --run tta-lite0 --out bench/TTA.md
"""
from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


from _common import commit, machine  # noqa: E402  (bench/ is the script folder)
from workbench.predict import PredictConfig, compare_tta, predict_run
from workbench.records.run_info import RunInfo
from workbench.records.cache_meta import CacheMeta
from workbench.records.tasks import METRICS, TASKS

DEFAULT_SPECS = ["none", "hflip", "scales=0.75:1:1.25", "hflip@det+seg,scales=1:1.25", "tencrop",
                 "hflip@det+seg,scales=1:1.25,fivecrop"]


def entry_sizes(folder: Path, n_seg: int) -> dict:
    """Bytes of each file of a cache entry, and the segmentation cost per image in kB."""
    sizes = {p.name: p.stat().st_size for p in folder.iterdir()}
    return {**sizes, "total": sum(sizes.values()), "seg_kb_per_image": sizes.get("seg.npz", 0) / 1024 / max(1, n_seg)}


def cell(value) -> str:
    return "" if value is None else f"{value:.4f}"


def view_table(rows: list[tuple[str, dict]]) -> list[str]:
    """Markdown rows: each view alone and the fused views."""
    lines = ["| view | Top-1 | mAP50 | mIoU | cls ms/img | det ms/img | seg ms/img |", "|---|---|---|---|---|---|---|"]
    for label, m in rows:
        metrics = [cell(m.get(METRICS[t])) for t in TASKS]
        times = [f"{m[f'{t}_ms']:.1f}" if METRICS[t] in m else "" for t in TASKS]
        lines.append(f"| {label} | " + " | ".join(metrics + times) + " |")
    return lines


def run_spec(run: str, data: str, spec: str) -> dict:
    """compare_tta rows, the cached entry's fused metrics, timings and disk size for one spec."""
    config = PredictConfig(run, data, "val", "cpu", tta=spec)
    t0 = time.perf_counter()
    rows = compare_tta(config, progress=False)
    compare_s = time.perf_counter() - t0
    _, folder, _ = predict_run(config, progress=False)
    meta = CacheMeta.read(folder)
    fused = next((m for label, m in rows if label.startswith("fused")), None)
    identity = dict(rows).get("id", {})
    final = {t: (fused or {}).get(METRICS[t], identity.get(METRICS[t])) for t in TASKS}
    return {"spec": spec, "key": meta.tta, "rows": rows, "final": final, "ms": meta.ms_per_image,
            "compare_s": compare_s, "disk": entry_sizes(folder, len(meta.images["seg"])), "views": meta.views}


def findings(results: list[dict]) -> list[str]:
    """Per task: the spec that moved the metric most, those that lowered it, and the single views
    that score below the identity view."""
    base, lines = results[0], []
    for t in TASKS:
        moved = [(r["final"][t] - base["final"][t], r) for r in results[1:]]
        gain, best = max(moved, key=lambda x: x[0])
        hurt = [f"`{r['spec']}` ({d:+.4f})" for d, r in moved if d < 0]
        ratio = best["ms"][t] / max(1e-9, base["ms"][t])
        lines.append(f"- {t}: best `{best['spec']}` {gain:+.4f} at {ratio:.1f}x the time; "
                     f"lower than no TTA: {', '.join(hurt) or 'none'}.")
        worse_views = sorted({label for r in results[1:] for label, m in r["rows"]
                              if not label.startswith("fused") and label != "id" and METRICS[t] in m
                              and m[METRICS[t]] < base["final"][t] - 1e-9})
        if worse_views:
            lines.append(f"  single views below the plain prediction for {t}: {', '.join(worse_views)}.")
    return lines


def report(results: list[dict], args, train_lines: list[str], seconds: float) -> str:
    base = results[0]
    out = [f"# TTA benchmark on {Path(args.data).parent.name} val", "",
           f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
           f"- machine: {machine()}", f"- commit: {commit()}",
           f"- command: `python bench/tta.py --data {args.data} --run {args.run} --out {args.out}`",
           f"- bench time: {seconds:.0f} s", ""]
    out += ["## The run", "", *train_lines, ""]
    out += ["## Summary: fused views per spec vs no TTA", "",
            "| spec | Top-1 | mAP50 | mIoU | dTop-1 | dmAP50 | dmIoU | time vs none (cls / det / seg) | cache |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        deltas = [f"{r['final'][t] - base['final'][t]:+.4f}" for t in TASKS]
        times = " / ".join(f"{r['ms'][t] / max(1e-9, base['ms'][t]):.1f}x" for t in TASKS)
        out.append(f"| `{r['spec']}` | " + " | ".join(cell(r["final"][t]) for t in TASKS) + " | "
                   + " | ".join(deltas) + f" | {times} | {r['disk']['total'] / 1e6:.1f} MB |")
    out += ["", "Time is the cached predict's per-task milliseconds per image (all views of the task, batched).", ""]
    out += ["## Findings (from the numbers above)", "", *findings(results), ""]
    for r in results[1:]:
        out += [f"## `{r['spec']}` (entry `{r['key']}`)", "", *view_table(r["rows"]), ""]
    out += ["## Cache entries on disk", "", "| spec | cls.npz | det.npz | seg.npz | seg kB / image | total |",
            "|---|---|---|---|---|---|"]
    for r in results:
        d = r["disk"]
        out.append(f"| `{r['spec']}` | {d.get('cls.npz', 0) / 1e3:.0f} kB | {d.get('det.npz', 0) / 1e3:.0f} kB | "
                   f"{d.get('seg.npz', 0) / 1e6:.1f} MB | {d['seg_kb_per_image']:.0f} | {d['total'] / 1e6:.1f} MB |")
    return "\n".join(out) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--out", default="bench/TTA.md")
    parser.add_argument("--tta", action="append", help="TTA spec (repeatable); default: a fixed list")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = []
    for spec in args.tta or DEFAULT_SPECS:
        results.append(run_spec(args.run, args.data, spec))
        print(f"{spec}: {results[-1]['final']} ms {results[-1]['ms']}", file=sys.stderr)
    run_dir = Path("runs") / args.run
    info = RunInfo.read(run_dir)
    metrics = (run_dir / "metrics.csv").read_text().strip().splitlines()
    train_lines = [f"`{args.run}`: {info.backbone}, input sizes {info.img_size}, "
                   f"{info.wall_time_s} s of training; config in `runs/{args.run}/config.yaml`.", "",
                   "```", *metrics, "```"]
    text = report(results, args, train_lines, time.perf_counter() - t0)
    tmp = Path(args.out).with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
