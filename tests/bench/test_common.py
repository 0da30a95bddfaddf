"""Tests of bench/_common.py: a stage's own peak memory and seconds."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from _common import run_measured  # noqa: E402  (bench/ is a script folder)


def test_run_measured_reports_the_childs_own_peak():
    big = [sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); print('done')"]
    code, out, seconds, rss = run_measured(big, capture=True)
    assert (code, out.strip()) == (0, "done") and seconds > 0
    assert 300 <= rss < 600  # 300 MiB touched, plus the interpreter
    code, _, _, small = run_measured([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert code == 3 and small < 100  # its own peak, not the largest child's so far
