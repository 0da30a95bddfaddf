"""One backbone pass for all three tasks: what merging a joint run's per-task BatchNorm statistics
(`mtwb train headft --one-pass`) costs in quality and saves in inference, over several seeds.

    python bench/one_pass.py --seeds 0,1,2 --out bench/ONE_PASS.md \\
        --singles 'cls=runs/eq-cls-wb-s{seed},det=runs/eq-det-shapedsep-s{seed},seg=runs/eq-seg-shapedsep-s{seed}' \\
        --joint 'runs/eqj-joint9-s{seed}' --headft 'runs/eqop-headft-s{seed}' --onepass 'runs/eqop-onepass-s{seed}'

The runs are made beforehand (the headft and one-pass runs of a seed from the same joint run, side by
side, one core each); this script reads val (the equal-budget table: bench/equal_budget.py) and times
inference on this machine: per seed, the joint run (per-task statistics: one backbone pass per task),
the one-pass checkpoint and the three single-task models of that seed, interleaved over 5 rounds, on one
batch of 8 images at the det size (bench/run.py allinone_vs_singles).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402
from equal_budget import Row, equal_budget_table  # noqa: E402
from run import allinone_vs_singles, ratio  # noqa: E402
from workbench.records import TASKS  # noqa: E402
from workbench.runs import open_run  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/traffic/dataset.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--singles", required=True, help="cls=FOLDER,det=FOLDER,seg=FOLDER, with {seed}")
    parser.add_argument("--joint", required=True, help="the joint runs (per-task statistics), with {seed}")
    parser.add_argument("--headft", help="their headft runs (per-task statistics), with {seed}; without it, the "
                        "table has no per-task headft row")
    parser.add_argument("--onepass", required=True, help="their headft --one-pass runs, with {seed}")
    parser.add_argument("--budgets", default="4m + 4m + 4m|9m + 3m", help="SINGLES|JOINT+HEADFT, as labels")
    parser.add_argument("--row", action="append", default=[],
                        help="a further row of the quality table, as bench/equal_budget.py: NAME|BUDGET|SOURCES[|REFERENCES]")
    parser.add_argument("--also", action="append", default=[],
                        help="a further one-pass checkpoint timed against its own single-task runs: "
                             "LABEL|ONEPASS|cls=FOLDER,det=FOLDER,seg=FOLDER (with {seed})")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per seed")
    parser.add_argument("--title", default="One backbone pass for all three tasks")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--note", action="append", default=[], help="a paragraph written under the tables")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    singles_budget, joint_budget = args.budgets.split("|")
    singles = "three single-task runs"
    per_task = "one checkpoint: joint + headft (per-task statistics)"
    rows = [Row(singles, singles_budget, dict(s.split("=", 1) for s in args.singles.split(","))),
            *([Row(per_task, joint_budget, {"all": args.headft}, [singles])] if args.headft else []),
            Row("one checkpoint, one backbone pass: joint + headft --one-pass", joint_budget, {"all": args.onepass},
                [singles, *([per_task] if args.headft else [])]),
            *(Row.parse(text) for text in args.row)]
    table = equal_budget_table(rows, seeds, args.data, args.n_boot)

    timing = ["| seed | singles ms (cls + det + seg) | joint, per-task statistics: ms, ratio | one-pass: ms, ratio |",
              "|---|---|---|---|"]
    ratios = []
    for seed in seeds:
        size = open_run(args.onepass.format(seed=seed)).info.img_size["det"]
        t = allinone_vs_singles({"joint": args.joint.format(seed=seed), "onepass": args.onepass.format(seed=seed)},
                                {task: rows[0].folder(task, seed) for task in TASKS}, size, rounds=args.rounds)
        ratios.append(t["onepass"]["ratio"])
        timing.append(f"| {seed} | {' + '.join(f'{v:.1f}' for v in t['onepass']['singles_ms'].values())} | "
                      f"{t['joint']['joint_ms']:.1f}, {ratio(t['joint'])} | {t['onepass']['joint_ms']:.1f}, "
                      f"{ratio(t['onepass'])} |")
    also = []
    for text in args.also:
        label, onepass, sources = text.split("|")
        folders = dict(s.split("=", 1) for s in sources.split(","))
        also += [f"{label}:", "", "| seed | singles ms (cls + det + seg) | one-pass: ms, ratio |", "|---|---|---|"]
        other = []
        for seed in seeds:
            t = allinone_vs_singles({"onepass": onepass.format(seed=seed)},
                                    {task: folders[task].format(seed=seed) for task in TASKS},
                                    open_run(onepass.format(seed=seed)).info.img_size["det"], rounds=args.rounds)["onepass"]
            other.append(t["ratio"])
            also.append(f"| {seed} | {' + '.join(f'{v:.1f}' for v in t['singles_ms'].values())} | "
                        f"{t['joint_ms']:.1f}, {ratio(t)} |")
        also += ["", f"Ratio over the seeds: median {np.median(other):.2f}x.", ""]
    lines = [*header(args.title, "python bench/one_pass.py " + " ".join(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))), "",
        "## Quality (val)", "", *table, "",
        f"Intervals: {args.n_boot} resamples of the val images (per task, paired across rows) and of the "
        f"{len(seeds)} seeds; percentile 95%.", "",
        f"## Inference, one image at the det size, all three tasks (median of {args.rounds} interleaved rounds, "
        "[min, max] of the rounds' ratios to the summed single-task models)", "", *timing, "",
        f"One-pass ratio over the seeds: median {np.median(ratios):.2f}x (goal: at most 0.40x).", "", *also,
        *(x for note in args.note for x in ("", note))]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
