"""Tests of workbench/predict: the prediction cache is reused only when everything matches."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import workbench.predict.cache as predict_stage
from workbench.data.spec import DatasetSpec
from workbench.errors import DataError
from workbench.metrics.scoring import score_predictions
from workbench.predict import PredictConfig, compare_tta, predict_run
from workbench.records.cache_meta import CACHE_VERSION, CacheMeta


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny run (tests here change its weights and cache)."""
    dst = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, dst, ignore=shutil.ignore_patterns("preds"))
    return dst


def forbid_model(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("the model was loaded although the cache entry was valid")
    monkeypatch.setattr(predict_stage, "load_model", fail)


def test_second_predict_reuses_the_cache(run_copy, tiny_data, monkeypatch):
    preds, folder, reused = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert not reused and folder == run_copy / "preds" / "val" / "none"
    meta = json.loads((folder / "meta.json").read_text())
    spec = DatasetSpec(tiny_data)
    assert meta["split"] == "val" and meta["tta"] == "none"
    assert meta["images"]["cls"] == [s.name for s in spec.cls_samples("val")]
    forbid_model(monkeypatch)
    again, _, reused = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert reused
    assert again.cls.keys() == preds.cls.keys()
    for name in preds.seg:
        np.testing.assert_array_equal(again.seg[name], preds.seg[name])


def test_cached_val_scores_equal_the_runs_validation(run_copy, tiny_data):
    """Training's validation and `mtwb predict` share one code path: the same numbers."""
    preds, _, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    spec = DatasetSpec(tiny_data)
    metrics = score_predictions(preds, spec.ground_truth("val"))
    best = json.loads((run_copy / "run.json").read_text())["best"]
    for key in ("cls_top1", "det_map50", "seg_miou", "score"):
        assert metrics[key] == pytest.approx(best[key], abs=1e-4), key


def test_new_checkpoint_invalidates_the_entry(run_copy, tiny_data):
    predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    weights = run_copy / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.startswith("heads.cls.fc.weight"))
    state[key] = state[key] + 1.0
    save_file(state, str(weights))
    _, _, reused = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert not reused


def test_changed_data_invalidates_the_entry(run_copy, tiny_data, tmp_path):
    data_copy = tmp_path / "data"
    shutil.copytree(tiny_data.parent, data_copy)
    yaml_copy = data_copy / "dataset.yaml"
    predict_run(PredictConfig(str(run_copy), str(yaml_copy), "val", "cpu"), progress=False)
    victim = sorted((data_copy / "cls" / "val").rglob("*.jpg"))[0]
    victim.unlink()
    preds, _, reused = predict_run(PredictConfig(str(run_copy), str(yaml_copy), "val", "cpu"), progress=False)
    assert not reused and victim.name not in preds.cls


def test_interrupted_predict_leaves_no_entry(run_copy, tiny_data, monkeypatch):
    def crash(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(predict_stage, "predict_all", crash)
    with pytest.raises(KeyboardInterrupt):
        predict_run(PredictConfig(str(run_copy), str(tiny_data), "test", "cpu"), progress=False)
    assert not (run_copy / "preds" / "test" / "none").exists()
    assert not [p for p in (run_copy / "preds").rglob("*") if p.name.endswith(".tmp")] if (run_copy / "preds").exists() else True


def test_tta_spec_names_its_own_entry(run_copy, tiny_data, monkeypatch):
    config = PredictConfig(str(run_copy), str(tiny_data), "val", "cpu", tta="hflip@det+seg,scales=1:1.25")
    preds, folder, reused = predict_run(config, progress=False)
    assert not reused and folder.name == "cls-s1-1.25__det-hflip_s1-1.25__seg-hflip_s1-1.25"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["views"]["det"] == ["id", "hflip", "s1.25", "s1.25+hflip"]
    assert meta["views"]["cls"] == ["id", "s1.25"]
    plain, plain_folder, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert plain_folder.name == "none" and plain_folder != folder
    forbid_model(monkeypatch)
    _, _, reused = predict_run(config, progress=False)
    assert reused


def test_identity_views_reproduce_plain_prediction(run_copy, tiny_data):
    """Fusing two identical views must give back the single view (mean of equal inputs)."""
    plain, _, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    doubled, _, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu", tta="scales=1:1"),
                                progress=False)
    for name in plain.cls:
        np.testing.assert_allclose(doubled.cls[name], plain.cls[name], atol=1e-6)
    from workbench.fuse.seg import softmax
    for name in plain.seg:
        # the fused entry holds log(mean of softmax) in float16: the same probabilities up to float16
        # rounding (which can tie two nearly equal classes, hence no exact argmax comparison)
        np.testing.assert_allclose(softmax(doubled.seg[name]), softmax(plain.seg[name]), atol=2e-3)


def test_compare_tta_rows(run_copy, tiny_data):
    rows = dict(compare_tta(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu", tta="hflip@det+seg"),
                                          progress=False))
    assert set(rows) == {"id", "hflip", "fused (cls-none__det-hflip__seg-hflip)"}
    assert set(rows["hflip"]) >= {"det_map50", "seg_miou"} and "cls_top1" not in rows["hflip"]
    assert set(rows["id"]) >= {"cls_top1", "det_map50", "seg_miou"}


def test_entry_of_another_cache_version_is_rebuilt(run_copy, tiny_data):
    _, folder, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    meta = json.loads((folder / "meta.json").read_text())
    meta["cache_version"] = CACHE_VERSION - 1
    (folder / "meta.json").write_text(json.dumps(meta))
    _, _, reused = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert not reused


def test_entry_with_a_truncated_meta_is_rebuilt(run_copy, tiny_data):
    _, folder, _ = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    text = (folder / "meta.json").read_text()
    (folder / "meta.json").write_text(text[: len(text) // 2])
    with pytest.raises(DataError, match="meta.json: not valid JSON"):
        CacheMeta.read(folder)
    _, _, reused = predict_run(PredictConfig(str(run_copy), str(tiny_data), "val", "cpu"), progress=False)
    assert not reused
    assert CacheMeta.read(folder).cache_version == CACHE_VERSION
