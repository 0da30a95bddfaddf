"""Tests of workbench/ensemble/compare.py: exact rows, paired intervals, CSV and chart."""
from __future__ import annotations

import csv

import pytest

from workbench.data.spec import DatasetSpec
from workbench.ensemble.compare import CompareResult, CompareRow, compare_members, unique_labels
from workbench.ensemble.members import member_predictions
from workbench.records.ensemble import Member
from workbench.errors import WorkbenchError
from workbench.fuse import blend
from workbench.metrics.scoring import score_predictions

METRICS = ("cls_top1", "det_map50", "seg_miou", "score")


def test_compare_on_tiny_data(tiny_run, tiny_data, tmp_path):
    members = [Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")]
    result = compare_members(members, str(tiny_data), n_boot=50, seed=1, device="cpu", out=tmp_path / "compare.csv")
    labels = [m.label for m in members] + ["blend"]
    assert [r.label for r in result.rows] == labels

    # every row is exactly what the scorer says of its hard predictions
    spec = DatasetSpec(tiny_data)
    truth = spec.ground_truth("val")
    preds = member_predictions(members, str(tiny_data), "val", "cpu")
    for row, p in zip(result.rows, preds + [blend(preds)]):
        assert row.metrics == score_predictions(p, truth), row.label

    best = result.row(result.best)
    assert result.best == max(result.rows[:2], key=lambda r: r.metrics["score"]).label
    assert all(best.ci[m] == (0.0, 0.0) for m in METRICS)  # the best minus itself, in every resample
    # hflip@det+seg leaves cls alone: both members classify alike, so their cls difference is 0 throughout
    assert result.row(members[1].label).ci["cls_top1"] == (0.0, 0.0)
    for r in result.rows:
        for m in METRICS:
            low, high = r.ci[m]
            assert low <= high and -1 <= low and high <= 1

    with open(tmp_path / "compare.csv") as f:
        lines = list(csv.DictReader(f))
    assert [line["member"] for line in lines] == labels
    assert [line["best"] for line in lines].count("1") == 1
    blend_line = lines[2]
    assert float(blend_line["score"]) == pytest.approx(result.rows[2].metrics["score"], abs=1e-6)
    assert float(blend_line["score_diff_low"]) == pytest.approx(result.rows[2].ci["score"][0], abs=1e-6)
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind

    table = result.to_table().splitlines()
    assert [line.split()[0] for line in table[1:4]] == labels
    assert "best member" in table[-1]

    # same seed, same intervals (the predictions now come from the cache)
    again = compare_members(members, str(tiny_data), n_boot=50, seed=1, device="cpu")
    assert [r.ci for r in again.rows] == [r.ci for r in result.rows]


def test_one_member_has_no_blend_row(tiny_run, tiny_data):
    result = compare_members([Member(str(tiny_run))], str(tiny_data), n_boot=5, device="cpu")
    assert [r.label for r in result.rows] == [tiny_run.name] and result.best == tiny_run.name


def test_table_by_hand():
    rows = [CompareRow("a", {"cls_top1": 0.5, "det_map50": 0.25, "seg_miou": 0.75, "score": 0.5},
                       {m: (0.0, 0.0) for m in METRICS}),
            CompareRow("blend", {"cls_top1": 0.75, "det_map50": 0.25, "seg_miou": 0.75, "score": 7 / 12},
                       {**{m: (0.0, 0.0) for m in METRICS}, "score": (-0.05, 0.2)})]
    table = CompareResult(rows, "a", n_boot=10, n_images={"cls": 4, "det": 2, "seg": 2}).to_table().splitlines()
    assert table[0].split()[:5] == ["val", "Top-1", "mAP50", "mIoU", "score"]
    assert table[1].split() == ["a", "*", "0.5000", "0.2500", "0.7500", "0.5000", "+0.0000", "[+0.0000,", "+0.0000]"]
    assert table[2].split()[-3:] == [f"{7 / 12 - 0.5:+.4f}", "[-0.0500,", "+0.2000]"]
    assert len(table[1]) == len(table[2])  # aligned: every column ends at the same place
    assert table[0].index("score") + len("score") == table[1].index("0.5000   +") + len("0.5000")


def test_unique_labels():
    assert unique_labels(["a", "b", "a", "a"]) == ["a", "b", "a#2", "a#3"]


def test_a_spec_row_is_scored_like_the_blend_it_describes(tiny_run, tiny_data):
    from workbench.ensemble.spec import equal_spec
    members = [Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")]
    only_first = equal_spec(members[:1])
    result = compare_members(members, str(tiny_data), n_boot=5, device="cpu", specs={"searched": only_first})
    assert [r.label for r in result.rows][-1] == "searched"
    assert result.row("searched").metrics == result.row(tiny_run.name).metrics  # one member, weight 1: itself
    with pytest.raises(WorkbenchError, match="not among the compared members"):
        compare_members(members[1:], str(tiny_data), n_boot=5, device="cpu", specs={"s": only_first})
