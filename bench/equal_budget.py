"""Recipes at an equal budget: plain timm scripts, workbench single-task runs and one joint checkpoint,
over several seeds, with paired bootstrap intervals on val.

    python bench/equal_budget.py --seeds 0,1,2 --out bench/EQUAL_BUDGET.md \\
        --row "plain script seg|4m|seg=runs/eq-plain-seg-s{seed}" \\
        --row "workbench single seg|4m|seg=runs/eq-seg-wb-s{seed}|plain script seg" ...

A row is NAME|BUDGET|SOURCES[|REFERENCE;REFERENCE...]: SOURCES is task=FOLDER,... (each task's metric
from that folder: a run, or a bench/plain.py output) or all=FOLDER (one run serving every task), with
{seed} in the folder names. A row that serves every task has a score (the mean of the three). Each
reference is an earlier row: the difference is taken in the one metric both serve alone, else in the
score, with a 95% interval from paired resamples of both the val images (per task, the same for
every row) and the seeds (the same seed draw for every row). The runs are made beforehand (bench
runs them side by side, one core each, in bench/EQUAL_BUDGET.md); this script only reads val.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402
from quality import samples_of  # noqa: E402
from workbench.ensemble.bootstrap import percentile_interval  # noqa: E402
from workbench.records import METRIC_COLUMNS, METRICS, TASKS  # noqa: E402


@dataclass
class Row:
    name: str
    budget: str
    sources: dict[str, str]  # task (or "all") -> folder, with {seed}
    references: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> "Row":
        parts = text.split("|")
        if len(parts) not in (3, 4):
            raise SystemExit(f"equal_budget: --row {text!r}: expected NAME|BUDGET|SOURCES[|REFERENCES]")
        sources = dict(s.split("=", 1) for s in parts[2].split(","))
        if not set(sources) <= {*TASKS, "all"}:
            raise SystemExit(f"equal_budget: --row {text!r}: sources are task=FOLDER or all=FOLDER")
        refs = [r for r in parts[3].split(";") if r] if len(parts) == 4 else []
        return cls(parts[0], parts[1], sources, refs)

    def folder(self, task: str, seed: int) -> str | None:
        template = self.sources.get(task, self.sources.get("all"))
        return None if template is None else template.format(seed=seed)

    def tasks(self) -> list[str]:
        return [t for t in TASKS if self.folder(t, 0) is not None]


def equal_budget_table(rows: list[Row], seeds: list[int], data: str, n_boot: int = 1000) -> list[str]:
    """Markdown table lines: each row's metrics (one seed: the value; several: mean [min, max]) and its
    differences from its references with paired image-and-seed bootstrap 95% intervals."""
    names = [r.name for r in rows]
    for r in rows:
        for ref in r.references:
            if ref not in names[:names.index(r.name)]:
                raise SystemExit(f"equal_budget: row {r.name!r}: reference {ref!r} is not an earlier row")
    folders = sorted({r.folder(t, s) for r in rows for t in r.tasks() for s in seeds})
    values, samples = samples_of(folders, data, n_boot, 0)
    at = {f: i for i, f in enumerate(folders)}
    k = len(seeds)
    seed_draw = np.random.default_rng(1).integers(0, k, size=(n_boot, k))  # the same for every row

    def metric_of(row: Row, metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(k,) values over the seeds and (k, B) resampled values, or None if the row lacks it."""
        if metric == "score":
            if len(row.tasks()) < len(TASKS):
                return None
            parts = [metric_of(row, METRICS[t]) for t in TASKS]
            return np.mean([p[0] for p in parts], axis=0), np.mean([p[1] for p in parts], axis=0)
        task = next(t for t, m in METRICS.items() if m == metric)
        if task not in row.tasks():
            return None
        idx = [at[row.folder(task, s)] for s in seeds]
        return values[metric][idx], samples[metric][idx]

    def seed_mean(resampled: np.ndarray) -> np.ndarray:  # (k, B) -> (B,) over a resample of the seeds
        return resampled[seed_draw.T, np.arange(n_boot)].mean(0)

    def cell(v: np.ndarray | None) -> str:
        if v is None:
            return "-"
        return f"{v.mean():.4f}" if k == 1 else f"{v.mean():.4f} [{v.min():.4f}, {v.max():.4f}]"

    by_name = {r.name: r for r in rows}
    head = "value" if k == 1 else f"mean [min, max] of {k} seeds"
    lines = ["| recipe | budget | " + " | ".join(f"{h} ({head})" if i == 0 else h for i, (_, h) in
                                               enumerate(METRIC_COLUMNS)) + " | difference, 95% |",
             "|---" * (len(METRIC_COLUMNS) + 3) + "|"]
    for row in rows:
        diffs = []
        for ref_name in row.references:
            ref = by_name[ref_name]
            shared = [METRICS[t] for t in TASKS if t in row.tasks() and t in ref.tasks()]
            metric = shared[0] if len(shared) == 1 else "score"
            mine, theirs = metric_of(row, metric), metric_of(ref, metric)
            low, high = percentile_interval(seed_mean(mine[1]) - seed_mean(theirs[1]), 0.95)
            title = dict(METRIC_COLUMNS)[metric]
            diffs.append(f"{title} vs {ref_name}: {mine[0].mean() - theirs[0].mean():+.4f} [{low:+.4f}, {high:+.4f}]")
        got = [metric_of(row, m) for m, _ in METRIC_COLUMNS]
        lines.append(f"| {row.name} | {row.budget} | " + " | ".join(cell(g[0] if g else None) for g in got)
                     + f" | {'; '.join(diffs) or '-'} |")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--row", action="append", required=True, help="NAME|BUDGET|SOURCES[|REFERENCES]")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--note", action="append", default=[], help="a paragraph written under the table")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    table = equal_budget_table([Row.parse(r) for r in args.row], seeds, args.data, args.n_boot)
    lines = [*header("Recipes at an equal budget", "python bench/equal_budget.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))), "", *table, "",
        f"Val only. Intervals: {args.n_boot} resamples of the val images (per task, paired across every row) and "
        f"of the {len(seeds)} seeds (paired across rows); percentile 95%. A difference whose interval holds 0 is "
        "not shown to be real.", *(x for note in args.note for x in ("", note))]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
