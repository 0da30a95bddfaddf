"""What every benchmark report states: the machine, the commit, the date."""
from __future__ import annotations

import os
import platform
import subprocess
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
