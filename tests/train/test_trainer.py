"""Tests of workbench/train/joint.py on the tiny synthetic data set."""
from __future__ import annotations

import csv
import json

import pytest
import yaml
from safetensors.torch import load_file

from workbench.errors import RunError
from workbench.train.trainer import TrainConfig, lr_factor, train as train_joint

from tests.conftest import tiny_train_config


def test_run_folder_is_complete(tiny_run):
    info = json.loads((tiny_run / "run.json").read_text())
    assert info["kind"] == "joint" and info["status"] == "complete" and info["parents"] == []
    assert info["backbone"] == "resnet10t"
    assert set(info["best"]) >= {"epoch", "cls_top1", "det_map50", "seg_miou", "score"}
    best = info["best"]
    assert best["score"] == pytest.approx((best["cls_top1"] + best["det_map50"] + best["seg_miou"]) / 3, abs=1e-4)
    rows = list(csv.DictReader(open(tiny_run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1]
    assert float(rows[0]["score"]) == pytest.approx(best["score"], abs=1e-4)
    state = load_file(str(tiny_run / "model.safetensors"))
    assert any(k.startswith("backbone.") for k in state) and any(k.startswith("heads.det.") for k in state)
    assert not list(tiny_run.glob(".*.tmp")), "no temporary files left behind"


def test_config_yaml_rebuilds_the_config(tiny_run):
    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert TrainConfig(**cfg).backbone == "resnet10t"
    assert TrainConfig(**cfg).img_size == {"cls": 32, "det": 64, "seg": 64}


def test_loss_falls_and_best_epoch_is_kept(tiny_data, tmp_path):
    run = train_joint(tiny_train_config(tiny_data, tmp_path, "two", epochs=3, steps_per_epoch=3), progress=False)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 3
    for task in ("det", "seg"):
        assert float(rows[-1][f"loss_{task}"]) < float(rows[0][f"loss_{task}"]), task
    info = json.loads((run / "run.json").read_text())
    best_row = max(rows, key=lambda r: float(r["score"]))
    assert info["best"]["epoch"] == int(best_row["epoch"])


def test_bad_config_and_existing_run_are_refused(tiny_data, tiny_run):
    with pytest.raises(RunError, match="multiple of 32"):
        TrainConfig(data=str(tiny_data), backbone="resnet10t", img_size={"cls": 30, "det": 64, "seg": 64})
    with pytest.raises(RunError, match="already exists"):
        train_joint(tiny_train_config(tiny_data, tiny_run.parent, tiny_run.name), progress=False)


def test_lr_factor_warmup_then_cosine():
    assert lr_factor(0, 100, 10) == pytest.approx(1 / 10)
    assert lr_factor(9, 100, 10) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10) == pytest.approx(0.5)  # half way through the decay: (1 + cos(pi/2)) / 2
    assert lr_factor(100, 100, 10) == pytest.approx(0.0)
