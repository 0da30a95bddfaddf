"""`mtwb export RUN --format onnx` and `mtwb predict RUN --backend onnxruntime` (issue 18): the exported
file predicts what the PyTorch model predicts, through the same prediction code."""
from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from workbench.cli import main
from workbench.data.spec import DatasetSpec
from workbench.errors import RunError
from workbench.export import export_run
from workbench.metrics.scoring import score_predictions
from workbench.models.onnx import OnnxModel
from workbench.predict import PredictConfig, predict_run
from workbench.runs import load_model, open_run, save_weights


@pytest.fixture()
def run_copy(tiny_run, tmp_path):
    """A private copy of the tiny joint run (the export is written into the run folder)."""
    target = tmp_path / "runs" / tiny_run.name
    shutil.copytree(tiny_run, target, ignore=shutil.ignore_patterns("preds"))
    return target


def test_export_writes_a_checked_model_and_its_description(run_copy, tiny_data):
    path = export_run(str(run_copy))
    assert path == run_copy / "export" / "model.onnx"
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["cls_images", "det_images", "seg_images"]
    assert [o.name for o in graph.output] == ["cls_logits", "det_heatmap", "det_size", "det_offset", "seg_logits"]
    description = json.loads((run_copy / "export" / "model.json").read_text())
    run = open_run(run_copy)
    spec = DatasetSpec(tiny_data)
    assert description["weights_sha256"] == run.checkpoint_hash()
    assert description["classes"]["cls"] == list(spec.cls_classes)
    assert description["classes"]["seg"] == list(spec.seg_classes)
    assert description["outputs"]["cls_logits"] == ["batch", len(spec.cls_classes)]
    sizes = run.info.img_size
    assert description["inputs"]["det_images"]["shape"][2:] == (
        list(sizes["det"]) if isinstance(sizes["det"], list) else [sizes["det"]] * 2)
    assert not list((run_copy / "export").glob(".*"))  # no temporary file left


def test_onnxruntime_predicts_what_torch_predicts(run_copy, tiny_data):
    export_run(str(run_copy))
    spec = DatasetSpec(tiny_data)
    truth = spec.ground_truth("val")
    for tta in ("none", "hflip@det+seg"):  # mirrored views: other shapes through the same dynamic graph
        base = PredictConfig(str(run_copy), str(tiny_data), "val", "cpu", tta=tta)
        torch_preds, torch_folder, _ = predict_run(base, progress=False)
        ort_preds, ort_folder, _ = predict_run(PredictConfig(**{**base.__dict__, "backend": "onnxruntime"}), progress=False)
        assert ort_folder != torch_folder and ort_folder.name.endswith(".onnxruntime")  # its own cache entry
        a = score_predictions(torch_preds, truth)
        b = score_predictions(ort_preds, truth)
        assert set(a) == set(b) and all(abs(a[k] - b[k]) <= 1e-3 for k in a), (a, b)
        for name, probs in torch_preds.cls.items():
            np.testing.assert_allclose(ort_preds.cls[name], probs, atol=1e-4)
        for name, logits in torch_preds.seg.items():  # float16 in the cache
            np.testing.assert_allclose(ort_preds.seg[name].astype(np.float32), logits.astype(np.float32), atol=2e-2)
        for name, det in torch_preds.det.items():
            top = det.scores >= 0.05
            np.testing.assert_allclose(ort_preds.det[name].scores[: top.sum()], det.scores[top], atol=1e-3)
        # and the entry is reused the second time
        assert predict_run(PredictConfig(**{**base.__dict__, "backend": "onnxruntime"}), progress=False)[2]


def test_a_stale_or_missing_export_is_refused(run_copy, tiny_data):
    config = PredictConfig(str(run_copy), str(tiny_data), "val", "cpu", backend="onnxruntime")
    with pytest.raises(RunError, match=r"no ONNX export \(write it with `mtwb export tiny-r10 --format onnx`\)"):
        predict_run(config, progress=False)
    export_run(str(run_copy))
    run = open_run(run_copy)
    model = load_model(run, "cpu")
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_weights(state, run.weights, run.info.run_id)  # the run's weights change after the export
    with pytest.raises(RunError, match="exported from other weights"):
        predict_run(config, progress=False)


def test_cli_export_and_a_single_task_graph(tiny_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    train = ["train", "single", "--task", "seg", "--data", str(tiny_data), "--backbone", "resnet10t", "--epochs", "1",
             "--steps-per-epoch", "1", "--img-size", "32", "--batch-size", "2", "--device", "cpu", "--name", "s"]
    assert runner.invoke(main, train).exit_code == 0
    result = runner.invoke(main, ["export", "s", "--format", "onnx"])
    assert result.exit_code == 0 and "wrote runs/s/export/model.onnx and runs/s/export/model.json" in result.output
    model = OnnxModel(tmp_path / "runs" / "s" / "export" / "model.onnx")
    assert model.tasks == ("seg",)  # a single-task run exports its own graph only
    import torch
    out = model(torch.zeros(2, 3, 64, 96, dtype=torch.uint8), ("seg",))
    assert tuple(out["seg"].shape) == (2, len(DatasetSpec(tiny_data).seg_classes), 16, 24)
    with pytest.raises(RunError, match="has no cls graph"):
        model(torch.zeros(1, 3, 32, 32), ("cls",))
    result = runner.invoke(main, ["predict", "s", "--data", str(tiny_data), "--backend", "onnxruntime", "--device", "cpu"])
    assert result.exit_code == 0 and "s.onnxruntime" not in result.output and "none.onnxruntime" in result.output
