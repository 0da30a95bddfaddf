"""Start-up time of the command line (issue 18: `--help`, `runs`, `score`, completion under 1.5 s).

    python bench/startup.py --out bench/STARTUP.md

Each command runs `--repeats` times in a fresh process (the console script of this venv), after one
untimed run that warms the file cache; the table gives the median and the slowest wall time. `mtwb runs`
lists the runs folder of the working directory (its work is reading run.json files), completion is
click's bash completion of `mtwb tr<TAB>`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import header  # noqa: E402

GOAL_S = 1.5


def commands(cli: str) -> list[tuple[str, list[str], dict]]:
    """(label, argv, extra environment) of each timed command."""
    return [
        ("`mtwb --help`", [cli, "--help"], {}),
        ("`mtwb train joint --help`", [cli, "train", "joint", "--help"], {}),
        ("`mtwb runs`", [cli, "runs"], {}),
        ("`mtwb score --help`", [cli, "score", "--help"], {}),
        ("`mtwb --version`", [cli, "--version"], {}),
        ("completion of `mtwb tr<TAB>`", [cli], {"_MTWB_COMPLETE": "bash_complete", "COMP_WORDS": "mtwb tr",
                                                 "COMP_CWORD": "1"}),
        ("`python -c 'import torch'` (for scale)", [sys.executable, "-c", "import torch"], {}),
    ]


def timed(argv: list[str], env: dict, repeats: int) -> list[float]:
    full = {**os.environ, **env}
    subprocess.run(argv, env=full, capture_output=True, check=False)  # warm the file cache
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=full, capture_output=True)
        out.append(time.perf_counter() - t0)
        if proc.returncode not in (0, 1):
            raise SystemExit(f"startup: {' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/STARTUP.md")
    args = parser.parse_args(argv)
    cli = str(Path(sys.executable).with_name("mtwb"))
    rows = []
    for label, cmd, env in commands(cli):
        times = timed(cmd, env, args.repeats)
        rows.append((label, statistics.median(times), max(times)))
        print(f"{label}: median {rows[-1][1]:.2f} s, slowest {rows[-1][2]:.2f} s", flush=True)
    cli_rows = [r for r in rows if not r[0].startswith("`python")]
    lines = [*header("Command-line start-up", f"python bench/startup.py --repeats {args.repeats} --out {args.out}"),
             "", f"Wall time of a fresh process, {args.repeats} runs after a warm-up run (goal: at most {GOAL_S} s).", "",
             "| command | median s | slowest s |", "|---|---|---|",
             *(f"| {label} | {med:.2f} | {worst:.2f} |" for label, med, worst in rows), "",
             f"Every command line call within the goal: {'yes' if all(w <= GOAL_S for _, _, w in cli_rows) else 'NO'}."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
