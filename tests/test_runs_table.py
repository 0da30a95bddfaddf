"""Tests of workbench/runs_table.py on hand-written run folders."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from workbench.errors import RunError
from workbench.cli import main
from workbench.runs_table import COLUMNS, collect_runs


def write_run(runs: Path, run_id: str, data: Path, best: dict | None, **info) -> Path:
    """Write runs/<run_id>/run.json following the trainer's contract."""
    folder = runs / run_id
    folder.mkdir(parents=True)
    record = {"run_id": run_id, "kind": "joint", "parents": [], "backbone": "resnet10t", "data": str(data),
              "status": "complete", "best": best, "wall_time_s": 12.5, "created": "2025-01-01T00:00:00+00:00",
              **info}
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def joint_best(cls: float, det: float, seg: float) -> dict:
    return {"epoch": 3, "cls_top1": cls, "det_map50": det, "seg_miou": seg, "score": (cls + det + seg) / 3}


@pytest.fixture
def runs(tmp_path) -> Path:
    """3 runs on data A (joint a, single-task b, avg c), an empty folder, a run on data B."""
    data_a = tmp_path / "a" / "dataset.yaml"
    data_b = tmp_path / "b" / "dataset.yaml"
    runs = tmp_path / "runs"
    write_run(runs, "a", data_a, joint_best(0.9, 0.3, 0.6))
    write_run(runs, "b", tmp_path / "a" / ".." / "a" / "dataset.yaml", {"epoch": 2, "det_map50": 0.5, "score": 0.5},
              kind="single", tasks=["det"], status="interrupted")
    write_run(runs, "c", data_a, joint_best(0.8, 0.4, 0.9), kind="avg", parents=["a", "b"], backbone="convnext_atto")
    (runs / "no-json").mkdir()
    write_run(runs, "other", data_b, joint_best(1.0, 1.0, 1.0))
    return runs


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(main, ["runs", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_rows_and_values(runs):
    table = collect_runs(runs)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["run"]) == ["a", "b", "c", "other"]  # no-json skipped, folder-name order
    b = table.set_index("run").loc["b"]
    assert (b["kind"], b["status"], b["det_map50"], b["score"]) == ("single", "interrupted", 0.5, 0.5)
    assert math.isnan(b["cls_top1"]) and math.isnan(b["seg_miou"])
    c = table.set_index("run").loc["c"]
    assert c["parents"] == "a,b" and c["backbone"] == "convnext_atto"
    assert c["score"] == pytest.approx((0.8 + 0.4 + 0.9) / 3)


def test_data_filter_resolves_paths(runs, tmp_path):
    assert list(collect_runs(runs, str(tmp_path / "a" / "dataset.yaml"))["run"]) == ["a", "b", "c"]
    assert list(collect_runs(runs, str(tmp_path / "b" / "dataset.yaml"))["run"]) == ["other"]


def test_corrupt_run_json_names_the_file(runs):
    (runs / "a" / "run.json").write_text('{"run_id": "a", ')
    with pytest.raises(RunError, match=r"runs/a/run\.json"):
        collect_runs(runs)


def test_command_sorts_metrics_descending_and_text_ascending(runs, tmp_path):
    data = tmp_path / "a" / "dataset.yaml"
    data.parent.mkdir(exist_ok=True)
    data.touch()
    out = invoke(["--runs-dir", str(runs), "--data", str(data)])
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "kind", "parents"]
    # score: c (0.7) > a (0.6) > b (0.5)
    assert [line.split()[0] for line in lines[1:]] == ["c", "a", "b"]
    assert f"{(0.8 + 0.4 + 0.9) / 3:.4f}" in lines[1] and "-" in lines[3].split()
    out = invoke(["--runs-dir", str(runs), "--data", data, "--sort", "cls_top1"])
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["a", "c", "b"]  # 0.9, 0.8, NaN last
    out = invoke(["--runs-dir", str(runs), "--data", data, "--sort", "kind"])
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["c", "a", "b"]  # avg, joint, single


def test_command_json_and_errors(runs, tmp_path):
    records = json.loads(invoke(["--runs-dir", str(runs), "--json", "--sort", "run"]))
    assert [r["run"] for r in records] == ["a", "b", "c", "other"]
    assert records[1]["cls_top1"] is None and records[1]["det_map50"] == 0.5
    assert set(records[0]) == set(COLUMNS)
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs), "--sort", "nope"])
    assert result.exit_code == 2 and "seg_miou" in result.output
    assert "no runs" in invoke(["--runs-dir", str(tmp_path / "missing")])
    # a mistyped --data is an error, not "no runs" (exit 0)
    result = CliRunner().invoke(main, ["runs", "--runs-dir", str(runs), "--data", str(tmp_path / "typo.yaml")])
    assert result.exit_code == 2 and "does not exist" in result.output
