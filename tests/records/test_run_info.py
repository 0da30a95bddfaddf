"""Tests of workbench/records/run_info.py: run.json's one reader and writer."""
from __future__ import annotations

import json

import pytest

from workbench.errors import RunError
from workbench.records.run_info import RUN_INFO_VERSION, RunInfo


def test_round_trip_keeps_every_field_and_extra_entries_flat(tmp_path):
    info = RunInfo(run_id="r", kind="student", tasks=("cls", "seg"), data="/d/dataset.yaml", model={"backbone": "x"},
                   img_size={"cls": 32}, parents=("t1", "t2"), best={"epoch": 2, "score": 0.5}, wall_time_s=1.5,
                   steps=10, checkpoints=[{"epoch": 2, "score": 0.5, "file": "c.safetensors"}],
                   extra={"distill": {"threshold": 0.3}})
    info.write(tmp_path)
    raw = json.loads((tmp_path / "run.json").read_text())
    assert raw["distill"] == {"threshold": 0.3} and "extra" not in raw  # extra entries at the top level
    assert raw["tasks"] == ["cls", "seg"] and raw["version"] == RUN_INFO_VERSION
    assert "best_ema_score" not in raw and "averaged" not in raw  # unset optional entries are left out
    assert RunInfo.read(tmp_path) == info
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # written atomically, no temp left


def test_an_older_run_json_is_read(tmp_path):
    # before `version` and single-task recipes: no version, no tasks (= all three)
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "old", "kind": "joint", "data": "d.yaml", "model": {},
                                                   "status": "complete", "best": None}))
    info = RunInfo.read(tmp_path)
    assert info.tasks == ("cls", "det", "seg") and info.version == 1 and info.parents == ()


@pytest.mark.parametrize("text, message", [
    ("{\"run_id\": \"x\", \"kind\": \"joint\", \"data\": \"d\", \"version\": 99}", "version 99 is newer"),
    ("{\"run_id\": \"x\", \"kind\": \"joint\"", "cannot read run.json"),
    ("[1, 2]", "holds a list"),
    ("{\"run_id\": \"x\"}", "lacks kind, data"),
])
def test_bad_run_json_is_refused_naming_the_file(tmp_path, text, message):
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(RunError, match=message) as e:
        RunInfo.read(tmp_path)
    assert str(tmp_path / "run.json") in str(e.value)
    with pytest.raises(RunError, match="not a run folder"):
        RunInfo.read(tmp_path / "nowhere")
