"""Tests of workbench/ensemble/search.py and spec.py: greedy selection finds a planted blend."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend, parse_member
from workbench.ensemble.search import SearchConfig, TaskScorer, greedy_selection, search_ensemble, split_halves
from workbench.metrics.scoring import GroundTruth
from workbench.records.predictions import Predictions


def test_greedy_selection_finds_a_planted_weighting():
    target = np.array([2, 1, 0]) / 3  # the best blend: member 0 twice, member 1 once

    def evaluate(counts):
        w = np.asarray(counts, float) / sum(counts)
        return -float(np.abs(w - target).sum())

    counts, best, evaluated = greedy_selection(3, evaluate, rounds=10)
    assert counts == (2, 1, 0) and best == pytest.approx(0.0)
    # round 1: singles score -2/3 (member 0), -4/3, -4/3 -> (1,0,0)
    # round 2: (2,0,0) -> -2/3, (1,1,0) -> -(1/6 + 1/6) = -1/3, (1,0,1) -> -1 -> (1,1,0)
    # round 3: (2,1,0) -> 0 -> taken; round 4: nothing beats 0 -> stop. 4 rounds x 3 trials.
    assert evaluated == 12


def test_greedy_selection_stops_at_rounds():
    counts, _, evaluated = greedy_selection(2, lambda c: float(sum(c)), rounds=3)  # always improves
    assert sum(counts) == 3 and evaluated == 6


def make_cls_case():
    """Three members on 6 images, 2 classes: A right on images 0-3, B right on 2-5, C always wrong.
    A+B averaged: right wherever one is right with more confidence than the other is wrong."""
    labels = np.array([0, 0, 1, 1, 0, 1])
    names = [f"i{k}.jpg" for k in range(6)]

    def member(correct, conf):
        preds = Predictions()
        for n, y, ok, c in zip(names, labels, correct, conf):
            p = np.array([c, 1 - c]) if (y == 0) == ok else np.array([1 - c, c])
            preds.cls[n] = p.astype(np.float32)
        return preds

    a = member([1, 1, 1, 1, 0, 0], [0.9, 0.9, 0.9, 0.9, 0.6, 0.6])
    b = member([0, 0, 1, 1, 1, 1], [0.6, 0.6, 0.9, 0.9, 0.9, 0.9])
    c = member([0] * 6, [0.9] * 6)
    truth = GroundTruth(cls=dict(zip(names, labels.tolist())))
    return [a, b, c], truth, names


def test_task_scorer_cls_by_hand():
    preds, truth, names = make_cls_case()
    scorer = TaskScorer("cls", preds, truth, names)
    everything = np.arange(6)
    assert scorer((1, 0, 0), everything) == pytest.approx(4 / 6)
    assert scorer((0, 1, 0), everything) == pytest.approx(4 / 6)
    # A + B: images 0-1: A right at 0.9 vs B wrong at 0.6 -> right; 2-3 both right; 4-5 B right -> 6/6
    assert scorer((1, 1, 0), everything) == pytest.approx(1.0)
    assert scorer((0, 0, 1), everything) == 0.0
    counts, best, _ = greedy_selection(3, lambda c: scorer(c, everything), rounds=5)
    assert counts == (1, 1, 0) and best == 1.0


def test_split_halves_cover_everything_once():
    a, b = split_halves(7, np.random.default_rng(0))
    assert len(a) == 4 and len(b) == 3
    assert sorted(np.concatenate([a, b]).tolist()) == list(range(7))


def test_spec_yaml_round_trip(tmp_path):
    m1, m2 = parse_member("runs/a"), parse_member("b@hflip@det+seg")
    assert m2 == Member("b", "hflip@det+seg") and m2.label == "b@hflip@det+seg"
    spec = EnsembleSpec({"cls": TaskBlend((m1,), (1.0,)), "det": TaskBlend((m1, m2), (2.0, 1.0), FusionConfig("nms", 0.4)),
                         "seg": TaskBlend((m2,), (1.0,))}, {"note": "x"})
    spec.save(tmp_path / "e.yaml")
    back = EnsembleSpec.load(tmp_path / "e.yaml")
    assert back == spec and back.members() == [m1, m2]


def test_search_on_tiny_data_writes_a_usable_spec(tiny_run, tiny_data, tmp_path):
    members = (Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg"))
    spec = search_ensemble(SearchConfig(members, str(tiny_data), rounds=3, device="cpu"))
    assert set(spec.tasks) == {"cls", "det", "seg"}
    for task, halves in spec.info["halves"].items():
        assert set(halves) == {"best_member", "member_search", "member_holdout", "blend_search", "blend_holdout"}
        # the blend is chosen on the search half: it can't score below the best member there
        assert halves["blend_search"] >= halves["member_search"] - 1e-9, task
    assert set(spec.info["val"]) == {m.ref for m in members} | {"blend"}
    spec.save(tmp_path / "e.yaml")
    assert EnsembleSpec.load(tmp_path / "e.yaml").tasks == spec.tasks
