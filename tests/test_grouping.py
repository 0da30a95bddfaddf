"""Task affinity (lookahead) and grouping: the planted structure of a toy problem, the partition and
budget arithmetic by hand, a joint run's measurement changing nothing of its training, `mtwb grouping`."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import tiny_train_config
from workbench.cli import run as cli_run
from workbench.errors import RunError
from workbench.grouping import (FULL, HALF, GroupingConfig, affinity_intervals, fit_sizes, partitions, predicted_score,
                                rank_candidates, spearman, train_groups)
from workbench.train.affinity import affinity_matrix, lookahead_affinity
from workbench.train.trainer import TrainConfig, train

TASKS3 = ("cls", "det", "seg")


class Toy(torch.nn.Module):
    """A shared point theta (starting at 0) and a buffer that every forward changes, as BatchNorm's do."""

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(2))
        self.register_buffer("seen", torch.zeros(()))

    def loss(self, target):
        self.seen += 1
        return ((self.theta - torch.tensor(target)) ** 2).sum()


def test_lookahead_finds_the_planted_structure_by_hand():
    # a and b pull theta towards (1, 0), c towards (-1, 0). From theta = 0 a step of lr 0.1 on a's loss
    # moves theta to 2 * 0.1 * (1, 0) = (0.2, 0): b's loss goes 1 -> 0.64 (affinity 1 - 0.64 = +0.36),
    # c's loss 1 -> 1.44 (affinity -0.44); c's step moves theta to (-0.2, 0): a and b lose 0.44 too
    toy = Toy()
    targets = {"a": [1.0, 0.0], "b": [1.0, 0.0], "c": [-1.0, 0.0]}
    z = lookahead_affinity(toy, [toy.theta], {t: (lambda v=v: toy.loss(v)) for t, v in targets.items()}, lr=0.1)
    for i, j in [("a", "b"), ("b", "a"), ("a", "a")]:
        assert z[(i, j)] == pytest.approx(0.36)
    for i, j in [("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]:
        assert z[(i, j)] == pytest.approx(-0.44)
    assert torch.equal(toy.theta.detach(), torch.zeros(2)) and toy.seen.item() == 0  # left as it was found

    rows = [{"step": 0, "source": i, "target": j, "affinity": v} for (i, j), v in z.items()]
    rows += [{"step": 1, "source": "a", "target": "b", "affinity": 0.16}]  # a second measurement of one pair
    m = affinity_matrix(rows, ("a", "b", "c"))
    assert m[0, 1] == pytest.approx((0.36 + 0.16) / 2) and m[2, 0] == pytest.approx(-0.44)
    best = rank_candidates(m, ("a", "b", "c"), 3)[0]
    assert best.groups == (("a", "b"), ("c",))  # the aligned pair shares, the conflicting task goes alone


def test_the_five_partitions_of_three_tasks():
    assert partitions(TASKS3) == [
        (("cls", "det", "seg"),),
        (("cls",), ("det", "seg")), (("cls", "det"), ("seg",)), (("cls", "seg"), ("det",)),
        (("cls",), ("det",), ("seg",)),
    ]
    assert len(partitions(("a", "b", "c", "d"))) == 15  # Bell(4)


@pytest.mark.parametrize("budget, one, two, three", [
    (1.0, (FULL,), (HALF, HALF), None),  # three groups need 1.5 even at half size
    (1.5, (FULL,), (FULL, HALF), (HALF, HALF, HALF)),
    (2.0, (FULL,), (FULL, FULL), (FULL, HALF, HALF)),
    (3.0, (FULL,), (FULL, FULL), (FULL, FULL, FULL)),
    (0.5, (HALF,), None, None),
])
def test_backbone_budget_arithmetic_by_hand(budget, one, two, three):
    assert fit_sizes((TASKS3,), budget) == one
    assert fit_sizes((("cls",), ("det", "seg")), budget) == (tuple(reversed(two)) if two else None)  # larger group first
    assert fit_sizes((("cls",), ("det",), ("seg",)), budget) == three


def test_predicted_scores_by_hand():
    # rows: the step's task; columns: the task whose loss moved
    z = np.array([[0.5, 0.2, -0.1],
                  [0.4, 0.5, 0.0],
                  [-0.3, 0.1, 0.5]])
    # all together: cls gets mean(0.4, -0.3) = 0.05, det mean(0.2, 0.1) = 0.15, seg mean(-0.1, 0.0) = -0.05
    assert predicted_score((TASKS3,), z, TASKS3) == pytest.approx(0.05)
    # cls+det | seg: cls 0.4, det 0.2, seg alone 0 -> 0.2
    assert predicted_score((("cls", "det"), ("seg",)), z, TASKS3) == pytest.approx(0.2)
    # cls (half) | det+seg: cls alone 0, det gets 0.1 from seg, seg 0.0 from det -> 0.0333
    # cls+seg | det (half): cls -0.3, seg -0.1, det 0 -> -0.1333; three alone: 0
    ranked = rank_candidates(z, TASKS3, 1.5)
    assert [c.label for c in ranked] == ["cls+det | seg (half)", "cls+det+seg", "cls (half) | det+seg",
                                         "cls (half) | det (half) | seg (half)", "cls+seg | det (half)"]
    assert [round(c.predicted, 4) for c in ranked] == [0.2, 0.05, 0.0333, 0.0, -0.1333]
    assert [c.backbones for c in ranked] == [1.5, 1.0, 1.5, 1.5, 1.5]


def test_affinity_intervals_by_hand(tmp_path):
    # cls -> det measured 1, 2, 3: mean 2, standard deviation 1, standard error 1/sqrt(3): 2 +- 1.96/sqrt(3)
    # det -> cls measured -1, 1: mean 0, its interval holds 0; the diagonal is left out
    lines = ["step,source,target,affinity"] + [f"{k},cls,det,{v}" for k, v in enumerate([1, 2, 3])] + \
        [f"{k},det,cls,{v}" for k, v in enumerate([-1, 1])] + ["0,cls,cls,5"]
    (tmp_path / "affinity_steps.csv").write_text("\n".join(lines) + "\n")
    got = affinity_intervals(tmp_path, ("cls", "det"))
    assert set(got) == {("cls", "det"), ("det", "cls")}
    mean, low, high, n = got[("cls", "det")]
    assert (mean, n) == (2.0, 3) and (low, high) == pytest.approx((2 - 1.96 / 3 ** 0.5, 2 + 1.96 / 3 ** 0.5))
    mean, low, high, n = got[("det", "cls")]
    assert mean == 0.0 and low < 0 < high and n == 2


def test_spearman_by_hand():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [2, 1, 3]) == pytest.approx(0.5)  # 1 - 6 * (1 + 1 + 0) / (3 * 8)


@pytest.fixture(scope="module")
def affinity_run(tiny_data, tmp_path_factory):
    runs = tmp_path_factory.mktemp("grouping")
    plain = train(tiny_train_config(tiny_data, runs, "plain", steps_per_epoch=3), progress=False)
    measured = train(tiny_train_config(tiny_data, runs, "measured", steps_per_epoch=3, affinity_every=2),
                     progress=False)
    return plain, measured


def test_a_joint_run_measures_affinity_without_changing_its_training(affinity_run):
    plain, measured = affinity_run
    a, b = load_file(str(plain / "model.safetensors")), load_file(str(measured / "model.safetensors"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    steps = list(csv.DictReader(open(measured / "affinity_steps.csv")))
    assert sorted({int(r["step"]) for r in steps}) == [0, 2]  # 3 steps, every 2nd
    assert len(steps) == 2 * 9  # every (source, target) pair of three tasks
    lines = (measured / "affinity.csv").read_text().splitlines()
    assert lines[0] == "source,cls,det,seg" and [line.split(",")[0] for line in lines[1:]] == list(TASKS3)
    first = float(lines[1].split(",")[2])  # cls -> det: the mean of its two measurements
    assert first == pytest.approx(np.mean([float(r["affinity"]) for r in steps
                                           if (r["source"], r["target"]) == ("cls", "det")]), abs=1e-6)
    assert (measured / "affinity.png").read_bytes()[:4] == b"\x89PNG"
    info = json.loads((measured / "run.json").read_text())["affinity"]
    assert info["every"] == 2 and info["measurements"] == 2 and info["seconds"] > 0


def test_affinity_needs_a_joint_run_of_several_tasks(tiny_data, tmp_path):
    with pytest.raises(RunError, match="needs a joint run of two or more tasks"):
        TrainConfig(data=str(tiny_data), backbone="resnet10t", recipe="single", tasks=("cls",), affinity_every=5)
    with pytest.raises(RunError, match="round-robin"):
        TrainConfig(data=str(tiny_data), backbone="resnet10t", sampling="proportional", affinity_every=5)


def test_grouping_command_ranks_from_the_affinity(affinity_run, tmp_path, monkeypatch, capsys):
    _, measured = affinity_run
    monkeypatch.setattr("sys.argv", ["mtwb", "grouping", "--from", str(measured), "--max-backbones", "2",
                                     "--out", str(tmp_path / "g.csv")])
    cli_run()
    out = capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "g.csv")))
    assert len(rows) == 5 and [int(r["rank"]) for r in rows] == [1, 2, 3, 4, 5]
    assert f"recommended: {rows[0]['grouping']}" in out
    assert "between tasks, affinities whose 95% interval over the 2 measurements excludes 0: " in out
    assert rows[-1]["grouping"] in out and float(rows[0]["predicted"]) >= float(rows[-1]["predicted"])


def test_grouping_trains_every_candidate_at_an_equal_budget(affinity_run, tiny_data):
    _, measured = affinity_run
    fields = {"img_size": {"cls": 32, "det": 64, "seg": 64}, "batch_size": {"cls": 8, "det": 4, "seg": 4},
              "neck_channels": 16, "epochs": 1}
    config = GroupingConfig(str(measured), str(tiny_data), "4s", "resnet10t", "resnet10t", max_backbones=1.0,
                            train=fields, runs_dir=str(measured.parent), device="cpu", n_boot=20)
    rows, rho = train_groups(config, progress=False)
    # within one backbone: all three on one full-size backbone, or a pair and a task alone on two halves
    # (three groups would need 1.5); each grouping trains for 4 s in all: 2 s a group when there are two
    assert [r.candidate.backbones for r in rows] == [1.0] * 4
    assert sorted(r.candidate.label for r in rows) == ["cls (half) | det+seg (half)", "cls+det (half) | seg (half)",
                                                       "cls+det+seg", "cls+seg (half) | det (half)"]
    assert [r.predicted_rank for r in rows] == [1, 2, 3, 4]
    by_label = {r.candidate.label: r for r in rows}
    assert by_label["cls+det+seg"].runs == ("grp-cls+det+seg-resnet10t-4s-s0",)
    assert by_label["cls+det (half) | seg (half)"].runs == ("grp-cls+det-resnet10t-2s-s0", "grp-seg-resnet10t-2s-s0")
    for r in rows:
        for run_id in r.runs:
            info = json.loads((measured.parent / run_id / "run.json").read_text())
            assert info["budget"]["budget_s"] == (4 if run_id.endswith("-4s-s0") else 2)
            assert tuple(info["tasks"]) == tuple(run_id.split("-")[1].split("+"))
    one = by_label["cls+det+seg"]
    assert one.diff == 0.0 and one.ci == (0.0, 0.0)  # the reference: one backbone for all three
    scores = [r.metrics["score"] for r in rows]
    assert sorted(r.trained_rank for r in rows) == [1, 2, 3, 4]
    assert [r.trained_rank for r in sorted(rows, key=lambda r: -r.metrics["score"])] == [1, 2, 3, 4]
    assert rho == pytest.approx(spearman([r.candidate.predicted for r in rows], scores))
    # asked again, every group's run is reused, not trained again
    stamps = {p: p.stat().st_mtime_ns for p in measured.parent.glob("grp-*/model.safetensors")}
    assert len(stamps) == 7  # all three (4 s); the three pairs and the three tasks alone (2 s each)
    again, _ = train_groups(config, progress=False)
    assert [r.metrics for r in again] == [r.metrics for r in rows]
    assert {p: p.stat().st_mtime_ns for p in measured.parent.glob("grp-*/model.safetensors")} == stamps
