"""Members that serve only some tasks (single-task runs): predicted, compared, searched and blended
for their own tasks only."""
from __future__ import annotations

import json
import math

import pytest

from workbench.ensemble.compare import compare_members
from workbench.ensemble.members import member_tasks, serving
from workbench.records.ensemble import Member
from workbench.ensemble.search import SearchConfig, search_ensemble
from workbench.ensemble.spec import equal_spec
from workbench.errors import WorkbenchError
from workbench.predict import PredictConfig, predict_run
from workbench.train.trainer import train

from tests.conftest import tiny_train_config


@pytest.fixture(scope="module")
def det_run(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("partial")
    return train(tiny_train_config(tiny_data, runs, "det-only", recipe="single", tasks=("det",)), progress=False)


def test_a_single_task_run_predicts_and_caches_only_its_task(det_run, tiny_data):
    preds, folder, _ = predict_run(PredictConfig(str(det_run), str(tiny_data), "val", "cpu"), progress=False)
    assert preds.det and not preds.cls and not preds.seg
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["tasks"] == ["det"] and set(meta["ms_per_image"]) == {"det"}


def test_serving_and_equal_blend_leave_partial_members_out_of_other_tasks(det_run, tiny_run):
    members = [Member(str(tiny_run)), Member(str(det_run))]
    assert member_tasks(members[1]) == ("det",)
    assert serving(members, "det") == [0, 1] and serving(members, "seg") == [0]
    spec = equal_spec(members)
    assert [len(spec.tasks[t].members) for t in ("cls", "det", "seg")] == [1, 2, 1]
    with pytest.raises(WorkbenchError, match="no member serves cls"):
        serving([Member(str(det_run))], "cls")


def test_compare_gives_a_partial_member_its_own_column_only(det_run, tiny_run, tiny_data):
    result = compare_members([Member(str(tiny_run)), Member(str(det_run))], str(tiny_data), n_boot=5, device="cpu")
    partial = result.row("det-only")
    assert math.isnan(partial.metrics["cls_top1"]) and math.isnan(partial.metrics["score"])
    assert 0 <= partial.metrics["det_map50"] <= 1
    assert result.best == tiny_run.name
    assert "(serves det)" in result.to_table()
    blend = result.row("blend")
    assert blend.metrics["cls_top1"] == result.row(tiny_run.name).metrics["cls_top1"]  # cls: the full member alone


def test_search_uses_a_partial_member_for_its_task_only(det_run, tiny_run, tiny_data):
    spec = search_ensemble(SearchConfig((Member(str(tiny_run)), Member(str(det_run))), str(tiny_data), rounds=2, device="cpu"))
    for task in ("cls", "seg"):
        assert [m.run for m in spec.tasks[task].members] == [str(tiny_run)]
    assert set(spec.info["val"][Member(str(det_run)).ref]) == {"det_map50", "score"}
