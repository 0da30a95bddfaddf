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
    for bad in ((30, 64), (64, 64, 64), "64x96"):  # (H, W) sides are multiples of 32 too; text is the CLI's to parse
        with pytest.raises(RunError, match="multiple of 32"):
            TrainConfig(data=str(tiny_data), backbone="resnet10t", img_size={"cls": 32, "det": bad, "seg": 64})
    TrainConfig(data=str(tiny_data), backbone="resnet10t", img_size={"cls": 32, "det": (64, 96), "seg": [96, 64]})
    with pytest.raises(RunError, match="frozen norm statistics need --pretrained"):
        TrainConfig(data=str(tiny_data), backbone="resnet10t", norm_stats="frozen")
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
    fast = train_joint(tiny_train_config(tiny_data, tmp_path, "fast", prefetch=True, **kw), progress=False)
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


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("15m", 900), ("2h", 7200), ("1h30m", 5400), ("45", 45),
                                           ("0.5h", 1800)])
def test_budget_text(text, seconds):
    from workbench.train.trainer import parse_budget
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["15 minutes", "m", "0m", "-5s", ""])
def test_budget_text_refused(text):
    from workbench.train.trainer import parse_budget
    with pytest.raises(RunError, match="budget"):
        parse_budget(text)


def test_budget_and_steps_per_epoch_are_exclusive(tiny_data, tmp_path):
    with pytest.raises(RunError, match="--budget or --steps-per-epoch"):
        tiny_train_config(tiny_data, tmp_path, "both", budget="10m", steps_per_epoch=5)


def fake_clock(monkeypatch, step_s, validation_s: float) -> None:
    """Replace the budget clock with a fake one that advances step_s(step index) per training step and
    validation_s per validation (nothing else costs time)."""
    from workbench.train import trainer as trainer_module
    now = [0.0]
    monkeypatch.setattr(trainer_module, "_clock", lambda: now[0])
    step, validate = trainer_module.Trainer.train_step, trainer_module.validate

    def timed_step(self, **kw):
        now[0] += step_s(self.step)
        return step(self, **kw)

    def timed_validate(*args):
        now[0] += validation_s
        return validate(*args)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", timed_step)
    monkeypatch.setattr(trainer_module, "validate", timed_validate)


def test_budget_sets_the_step_count_from_measured_speed(tiny_data, tmp_path, monkeypatch):
    """A fake clock: every step costs 2 s, every validation 5 s, budget 100 s over 2 epochs.
    Calibration: 6 steps (the last 5 timed: 2 s a step), one validation (5 s): 17 s spent; left for
    steps: 100 - 17 - 2 x 5 = 73 s = 36 steps; total 6 + 36 = 42 = 2 epochs of 21.
    Refits every 5 steps and after epoch 1 (52 s spent, 2 s a step, 5 s an epoch end): 100 - 52 - 5
    = 43 s = 21 steps in epoch 2, 42 in all; the run ends at 52 + 21 x 2 + 5 = 99 s. Last all-in
    rate, at step 41: (52 + 20 x 2) / 41 = 2.2439 s."""
    import torch
    fake_clock(monkeypatch, lambda step: 2.0, 5.0)
    run = train_joint(tiny_train_config(tiny_data, tmp_path, "budget", epochs=2, steps_per_epoch=None, budget="100s"),
                      progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["budget"] == {"budget": "100s", "budget_s": 100.0, "step_s": 2.0, "val_s": 5.0,
                              "steps_per_epoch": 21, "steps": 42, "spent_s": 99.0, "end_s": 5.0,
                              "s_per_step_all_in": 2.2439}
    assert info["steps"] == 42
    steps = list(csv.DictReader(open(run / "steps.csv")))
    assert [int(r["epoch"]) for r in steps] == [1] * 21 + [2] * 21
    assert float(steps[-1]["lr"]) < 0.01 * float(steps[20]["lr"])  # the cosine reaches ~0 at step 42, not before
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["progress"]["budget"]["steps"] == 42  # a resume keeps the fitted count


def test_budget_refits_within_an_epoch_when_steps_slow_down(tiny_data, tmp_path, monkeypatch):
    """The first 25 steps cost 2 s, later ones 4 s; validation 5 s; budget 100 s over 2 epochs.
    Up to the end of epoch 1 as above (21 + 21 steps planned, 52 s spent). Epoch 2: 4 steps of 2 s,
    then 4 s steps. Refit at its step 5 (64 s; last 10 steps 2 s x 9 + 4 s: 2.2 s): 31 s free -> 14
    steps -> 19 in the epoch. At step 10 (84 s; last 10: 2 s x 4 + 4 s x 6 = 3.2 s): 11 s free -> 3
    -> 13 in the epoch, which ends at 84 + 3 x 4 + 5 = 101 s. Refitting only at epoch ends would have
    taken all 21 steps: 52 + 4 x 2 + 17 x 4 + 5 = 133 s."""
    fake_clock(monkeypatch, lambda step: 2.0 if step < 25 else 4.0, 5.0)
    run = train_joint(tiny_train_config(tiny_data, tmp_path, "slowing", epochs=2, steps_per_epoch=None, budget="100s"),
                      progress=False)
    info = json.loads((run / "run.json").read_text())
    assert info["budget"]["spent_s"] == 101.0 and info["steps"] == 21 + 13
    steps = list(csv.DictReader(open(run / "steps.csv")))
    assert [int(r["epoch"]) for r in steps] == [1] * 21 + [2] * 13
