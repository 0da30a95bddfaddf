"""bench/run.py's "recipes at equal budget" table on the tiny set: plain-script outputs and a run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import plain  # noqa: E402  (bench/ is a script folder)
import run  # noqa: E402

METRIC = {"cls": "cls_top1", "det": "det_map50", "seg": "seg_miou"}


@pytest.fixture(scope="module")
def plain_outputs(tiny_data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("plain")
    for task in METRIC:
        plain.main(["--data", str(tiny_data), "--task", task, "--budget", "1s", "--seed", "0",
                    "--out", str(root / task), "--weights", ""])
    return {t: root / t for t in METRIC}


def cells(table: list[str], recipe: str) -> list[str]:
    line = next(ln for ln in table if ln.startswith(f"| {recipe} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_equal_budget_table(tiny_data, tiny_run, plain_outputs):
    budget = {"single-cls": "1m", "single-det": "2m", "single-seg": "2m", "joint": "4m", "headft": "1m"}
    # the plain outputs stand in for the single-task runs too, and one run for both joint and headft
    table = run.equal_budget(plain_outputs, plain_outputs, str(tiny_run), str(tiny_run), str(tiny_data), budget,
                             n_boot=50)
    assert table[0].split("|")[1:4] == [" recipe ", " budget ", " Top-1 "]
    result = {t: json.loads((plain_outputs[t] / "result.json").read_text())[METRIC[t]] for t in METRIC}
    for t, col in zip(METRIC, (2, 3, 4)):
        row = cells(table, f"plain script {t}")
        assert row[1] == budget[f"single-{t}"] and row[col] == f"{result[t]:.4f}"
        assert [c for i, c in enumerate(row[2:6], 2) if i != col] == ["-"] * 3  # a plain row serves one task
        # the same predictions against themselves: a zero difference, a zero-width interval
        assert cells(table, f"workbench single {t}")[6] == "+0.0000 [+0.0000, +0.0000]"
    three = cells(table, "three plain scripts")
    assert three[1] == "1m + 2m + 2m"
    assert three[2:6] == [f"{v:.4f}" for v in [*result.values(), np.mean(list(result.values()))]]
    one, alone = cells(table, "one checkpoint: joint + headft"), cells(table, "joint alone (before headft)")
    assert one[1] == "4m + 1m" and alone[1] == "4m"
    assert one[2:] == alone[2:]  # the same run in both rows
    # the difference of the two printed scores (to their rounding), and singles are the plain outputs here
    assert float(one[6].split()[0]) == pytest.approx(float(one[5]) - float(three[5]), abs=1.1e-4)
    assert one[7] == one[6]
