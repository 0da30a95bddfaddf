"""bench/plain.py (the plain timm baselines) end to end on the tiny set, and bench/quality.py reading its output."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import plain  # noqa: E402  (bench/ is a script folder)
import quality  # noqa: E402


@pytest.mark.parametrize("task", ["cls", "det", "seg"])
def test_plain_script_writes_predictions_that_rescore_to_its_metric(tiny_data, tmp_path, task):
    out = tmp_path / task
    plain.main(["--data", str(tiny_data), "--task", task, "--budget", "2s", "--seed", "0", "--out", str(out),
                "--weights", ""])
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == task and result["steps"] >= 1 and result["train_s"] < 30
    metric = {"cls": "cls_top1", "det": "det_map50", "seg": "seg_miou"}[task]
    assert 0.0 <= result[metric] <= 1.0
    values, samples = quality.samples_of([str(out)], str(tiny_data), n_boot=20, seed=0)
    assert values[metric][0] == pytest.approx(result[metric], abs=1e-9)  # the same predictions, the same scorer
    others = [m for m in ("cls_top1", "det_map50", "seg_miou") if m != metric]
    assert all(values[m][0] != values[m][0] for m in others)  # NaN: a plain row serves one task
    assert samples[metric].shape == (1, 20)
