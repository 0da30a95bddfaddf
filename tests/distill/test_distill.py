"""Tests of workbench/distill: the F1 threshold by hand, soft targets reaching the losses, the
test-split guard on a renamed copy, and a whole distillation on the tiny data set."""
from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch

from workbench.train.pseudo import SoftClsDataset, letterbox_soft
from workbench.data.check import check_dataset
from workbench.data.spec import DatasetSpec
from workbench.distill import DistillConfig, DistillError, distill, f1_threshold, guard_against_test
from workbench.records.ensemble import Member
from workbench.ensemble.spec import equal_spec
from workbench.models.losses import soft_cls_loss, soft_seg_loss

from tests.conftest import TINY_BATCH, TINY_SIZES

CATS = [{"id": 1, "name": "a"}]


def test_f1_threshold_by_hand():
    """Two boxes to find. Detections by score: 0.9 hit, 0.8 miss, 0.6 hit, 0.3 miss.
    Keeping >= 0.9: TP 1, FP 0, FN 1 -> F1 2/3; >= 0.8: 1, 1, 1 -> 1/2; >= 0.6: 2, 1, 0 -> 4/5;
    >= 0.3: 2, 2, 0 -> 2/3. The F1-maximising threshold is 0.6."""
    gt = {"images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
                          {"id": 2, "image_id": 2, "category_id": 1, "bbox": [50, 50, 20, 20]}],
          "categories": CATS}
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [70, 0, 20, 20], "score": 0.8},
            {"image_id": 2, "category_id": 1, "bbox": [51, 50, 20, 20], "score": 0.6},
            {"image_id": 2, "category_id": 1, "bbox": [0, 70, 20, 20], "score": 0.3}]
    threshold, f1 = f1_threshold(gt, dets)
    assert threshold == pytest.approx(0.6) and f1 == pytest.approx(0.8)
    assert f1_threshold(gt, []) == (1.0, 0.0)


def test_soft_class_targets_reach_the_loss_not_their_argmax():
    """A uniform student against a teacher at [0.5, 0.5]: KL 0; against the argmax one-hot: log 2."""
    logits = torch.zeros(1, 2)
    assert soft_cls_loss(logits, torch.tensor([[0.5, 0.5]])).item() == pytest.approx(0.0, abs=1e-6)
    assert soft_cls_loss(logits, torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(2), abs=1e-4)
    # temperature 2 softens [0.8, 0.2] to softmax(log p / 2) = [2/3, 1/3]; T^2 * KL(that || uniform)
    t = torch.tensor([2 / 3, 1 / 3])
    expected = 4 * float((t * torch.log(t / 0.5)).sum())
    assert soft_cls_loss(logits, torch.tensor([[0.8, 0.2]]), temperature=2).item() == pytest.approx(expected, rel=1e-4)


def test_soft_seg_loss_uses_the_probabilities_over_confident_pixels():
    logits = torch.zeros(1, 2, 1, 2)  # uniform student: cross-entropy log 2 wherever counted
    probs = torch.tensor([[[[0.9, 0.5]], [[0.1, 0.5]]]])  # pixel 1 confident, pixel 2 not (at 0.6)
    assert soft_seg_loss(logits, probs, confidence=0.6).item() == pytest.approx(math.log(2), abs=1e-5)
    sharp = torch.zeros(1, 2, 1, 2)
    sharp[0, 0] = 3.0
    soft = soft_seg_loss(sharp, probs, confidence=0.6).item()
    hard = soft_seg_loss(sharp, torch.tensor([[[[1.0, 0.5]], [[0.0, 0.5]]]]), confidence=0.6).item()
    assert soft != pytest.approx(hard)  # 0.1 of the teacher's mass on class 1 costs the sharp student


def test_letterbox_soft_places_probabilities_and_pads_with_zero():
    logits = np.zeros((3, 4, 8), np.float32)  # an (H 16, W 32) image: 1/4 resolution 4 x 8
    soft = letterbox_soft(logits, 16, 32, 64)  # canvas 64: inner 32 x 64 -> 1/4: 8 x 16 of 16 x 16
    assert soft.shape == (3, 16, 16)
    assert torch.allclose(soft[:, :8].sum(0), torch.ones(8, 16)) and soft[:, 8:].abs().sum() == 0


def test_guard_refuses_a_renamed_copy_of_a_test_image(tiny_data, tmp_path):
    spec = DatasetSpec(tiny_data)
    test_image = sorted((tiny_data.parent / "test" / "cls").iterdir())[0]
    folder = tmp_path / "unlabeled"
    folder.mkdir()
    shutil.copy(test_image, folder / "crop_innocent.jpg")
    shutil.copy(sorted((tiny_data.parent / "unlabeled").iterdir())[0], folder / "crop_ok.jpg")
    images = sorted(folder.iterdir())
    with pytest.raises(DistillError, match="crop_innocent.jpg is the test image"):
        guard_against_test(spec, images, allow_test=False)
    warnings = guard_against_test(spec, images, allow_test=True)
    assert len(warnings) == 1 and test_image.name in warnings[0]
    assert guard_against_test(spec, images[1:], allow_test=False) == []


def test_distil_on_tiny_data(tiny_data, tiny_run, tmp_path):
    config = DistillConfig(equal_spec([Member(str(tiny_run))]), str(tiny_data), "student",
                           route={"cls": "crop_*", "det": "scene_*", "seg": "scene_*"}, device="cpu", seg_confidence=0.05,
                           runs_dir=str(tmp_path),
                           train=dict(backbone="resnet10t", epochs=1, steps_per_epoch=2, img_size=dict(TINY_SIZES),
                                      batch_size=dict(TINY_BATCH), neck_channels=16, seg_confidence=0.05,
                                      sampling="round-robin"))  # every task (and its pseudo-labels) at step 0
    pseudo, run = distill(config, progress=False)
    meta = json.loads((pseudo.parent / "meta.json").read_text())
    assert 0 < meta["det_threshold"] <= 1 and meta["det_threshold_f1_on_val"] is not None
    assert meta["counts"]["cls"] == 4 and meta["counts"]["seg"] == meta["counts"]["det_images"] == 2
    spec = DatasetSpec(pseudo)
    assert {s.name for s in spec.cls_samples("train")} == {f"crop_0000{i}.jpg" for i in range(4)}
    # 4 images of 8 classes: some class has no pseudo-label, and the set still passes its own check
    assert len({s.label for s in spec.cls_samples("train")}) < 8 and check_dataset(pseudo).problems == []
    assert len(spec.cls_samples("val")) == len(DatasetSpec(tiny_data).cls_samples("val"))  # val: the original
    soft = SoftClsDataset(spec, 32, None)
    z = np.load(pseudo.parent / "soft_cls.npz")
    probs = dict(zip(z["names"].tolist(), z["probs"]))[soft.base.samples[0].name]
    assert torch.allclose(soft[0][1], torch.from_numpy(probs))  # the teacher's probabilities, not one-hot
    assert not torch.equal(soft[0][1], torch.nn.functional.one_hot(soft[0][1].argmax(), len(probs)).float())
    info = json.loads((run / "run.json").read_text())
    assert info["kind"] == "student" and info["parents"] == ["tiny-r10"] and info["status"] == "complete"
    steps = list(csv.DictReader(open(run / "steps.csv")))
    assert float(steps[0]["pseudo_cls"]) > 0 and float(steps[0]["pseudo_seg"]) > 0
    # --pseudo-every 2: the pseudo-labelled batches beside every second step of a task (round-robin: every task a
    # step, so steps 0 and 2 carry them, 1 and 3 do not)
    from tests.conftest import tiny_train_config
    from workbench.train.trainer import train
    every2 = train(tiny_train_config(tiny_data, tmp_path, "every2", steps_per_epoch=4, pseudo=str(pseudo), pseudo_every=2),
                   progress=False)
    steps = list(csv.DictReader(open(every2 / "steps.csv")))
    assert [[t for t in ("cls", "seg") if steps[k][f"pseudo_{t}"]] for k in range(4)] == [["cls", "seg"], [], ["cls", "seg"], []]
    assert all(s["loss_cls"] and s["loss_seg"] for s in steps)  # the labelled batches every step
