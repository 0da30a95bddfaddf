"""What every benchmark report states: the machine, the commit, the date."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch


def machine() -> str:
    """One line: cores, CPU model, torch version."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{os.cpu_count()} cores, {model}, torch {torch.__version__}, no GPU used"


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def header(title: str, command: str) -> list[str]:
    """The first lines of a report: title, date, machine, commit and the command that made it."""
    return [f"# {title}", "", f"- date: {now()}", f"- machine: {machine()}", f"- commit: {commit()}",
            f"- command: `{command}`"]


# A small process between the caller and the command: Linux carries the high-water mark of the
# address space a child was forked from into its ru_maxrss across exec, so measured straight from a
# parent holding torch, every child would "peak" at the parent's size. The launcher is a few MiB.
LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(cmd: list[str], capture: bool = False) -> tuple[int, str, float, float]:
    """Run a command; return (exit code, its stdout if captured else "", wall seconds, peak RSS in MiB).

    The peak resident set size is the command's own (rusage ru_maxrss, KiB on Linux), read by a
    small launcher process so that this process's size does not leak into it.
    """
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss_file:
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-c", LAUNCHER, rss_file.name, *cmd], text=True,
                              stdout=subprocess.PIPE if capture else None, check=False)
        seconds = time.time() - t0
        text = Path(rss_file.name).read_text().strip()
    return proc.returncode, proc.stdout or "", seconds, (int(text) / 1024 if text else float("nan"))


def bare_step_seconds(backbone_name: str, batches: list, steps: int, warmup: int, layout) -> float:
    """Seconds per step of a bare timm `features_only` backbone: forward + backward of every batch
    (float images in [0, 1]) and one AdamW step, weights and inputs in `layout` (a torch memory format)."""
    import timm

    backbone = timm.create_model(backbone_name, features_only=True).to(batches[0].device).train()
    backbone = backbone.to(memory_format=layout)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
    inputs = [b.contiguous(memory_format=layout) for b in batches]

    def step():
        optimizer.zero_grad(set_to_none=True)
        for images in inputs:
            sum(f.mean() for f in backbone(images)).backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps
