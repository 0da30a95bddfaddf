"""Tests of workbench/train/joint.py on the tiny synthetic data set."""
from __future__ import annotations

import csv
import json
from pathlib import Path

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


def test_image_cache_and_background_batches_change_nothing_but_time(tiny_data, tmp_path):
    """Decoded-image cache + prefetch thread vs lazy decoding in the step: the same steps, losses, weights."""
    import torch
    kw = dict(epochs=2, steps_per_epoch=3, augment="cls=shift:0.1+colour:0.2,det=hflip+scale:0.75:1.25,seg=hflip+scale:0.75:1.5")
    fast = train_joint(tiny_train_config(tiny_data, tmp_path, "fast", **kw), progress=False)
    slow = train_joint(tiny_train_config(tiny_data, tmp_path, "slow", cache_images=False, prefetch=False, **kw),
                       progress=False)
    rows = lambda run, name: [{k: v for k, v in r.items() if k != "time_s"} for r in csv.DictReader(open(run / name))]  # noqa: E731
    assert rows(fast, "steps.csv") == rows(slow, "steps.csv") and len(rows(fast, "steps.csv")) == 6
    assert rows(fast, "metrics.csv") == rows(slow, "metrics.csv")
    a, b = load_file(str(fast / "model.safetensors")), load_file(str(slow / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    caches = json.loads((fast / "run.json").read_text())["image_cache"]
    assert set(caches) == {f"{s}/{t}" for s in ("train", "val") for t in ("cls", "det", "seg")}
    assert all(Path(c["folder"]).parent == tmp_path / ".cache" / "images" for c in caches.values())
    assert "image_cache" not in json.loads((slow / "run.json").read_text())
