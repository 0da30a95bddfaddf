"""A run's val predictions with PyTorch and with its ONNX export in onnxruntime (issue 18): images/s per
task and the val metrics of both.

    python bench/onnx_speed.py --run bench-joint-lite0 --data ../shared/data/traffic/dataset.yaml --out bench/ONNX.md

The run is exported (`mtwb export`), then each backend predicts the val split `--repeats` times,
alternating, each time into a fresh cache entry (the entry's own timing of the forward passes and
decoding, `meta.json` ms_per_image); the table keeps each backend's fastest repeat. Batch 16, CPU, the
machine's threads for both.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import header  # noqa: E402
from workbench.data.spec import DatasetSpec  # noqa: E402
from workbench.export import export_run  # noqa: E402
from workbench.metrics.scoring import score_predictions  # noqa: E402
from workbench.predict import PredictConfig, predict_run  # noqa: E402
from workbench.records.cache_meta import CacheMeta  # noqa: E402
from workbench.records.tasks import METRIC_COLUMNS, TASKS  # noqa: E402
from workbench.runs import open_run  # noqa: E402

BACKENDS = ("torch", "onnxruntime")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="bench/ONNX.md")
    args = parser.parse_args(argv)
    run = open_run(args.run)
    export_run(args.run)
    truth = DatasetSpec(args.data).ground_truth("val")
    best: dict[str, dict[str, float]] = {}
    metrics: dict[str, dict] = {}
    for _ in range(args.repeats):
        for backend in BACKENDS:
            config = PredictConfig(args.run, args.data, "val", "cpu", backend=backend)
            _, folder, _ = predict_run(config, progress=False)
            shutil.rmtree(folder)  # the next repeat predicts again
            preds, folder, _ = predict_run(config, progress=False)
            ms = CacheMeta.read(folder).ms_per_image
            best[backend] = {t: min(ms[t], best.get(backend, {}).get(t, float("inf"))) for t in ms}
            metrics[backend] = score_predictions(preds, truth, tasks=run.tasks)
            print(f"{backend}: ms / image {ms}", flush=True)
    tasks = [t for t in TASKS if t in best["torch"]]
    size_mb = run.onnx.stat().st_size / 2**20
    lines = [*header("ONNX export vs PyTorch", f"python bench/onnx_speed.py --run {args.run} --data {args.data} "
                                               f"--repeats {args.repeats} --out {args.out}"), "",
             f"Run `{run.id}`; its export `{run.onnx}` ({size_mb:.1f} MB). Val split, batch 16, CPU; the fastest of "
             f"{args.repeats} repeats per backend (forward passes and decoding, `meta.json` ms_per_image).", "",
             "| backend | " + " | ".join(f"{t} images/s" for t in tasks) + " | "
             + " | ".join(title for _, title in METRIC_COLUMNS) + " |",
             "|---" * (1 + len(tasks) + len(METRIC_COLUMNS)) + "|"]
    for backend in BACKENDS:
        lines.append(f"| {backend} | " + " | ".join(f"{1000 / best[backend][t]:.1f}" for t in tasks) + " | "
                     + " | ".join(f"{metrics[backend][k]:.4f}" if k in metrics[backend] else "-"
                                  for k, _ in METRIC_COLUMNS) + " |")
    ratio = {t: best["torch"][t] / best["onnxruntime"][t] for t in tasks}
    lines += ["", "onnxruntime vs PyTorch, images/s: " + ", ".join(f"{t} {r:.2f}x" for t, r in ratio.items()) + "."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
