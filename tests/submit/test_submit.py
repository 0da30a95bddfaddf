"""Tests of workbench/submit: blend, check, write atomically; and workbench/score reading it back."""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import yaml

import workbench.submit.submission as submit_stage
from workbench.records.manifest import Manifest
from workbench.records.ensemble import FusionConfig, Member
from workbench.ensemble.spec import equal_spec
from workbench.errors import DataError, SubmissionError
from workbench.score import score_submission
from workbench.submit import SubmitConfig, submit


@pytest.mark.parametrize("fmt, files", [("allinone-json", {"submission.json"}),
                                        ("coco", {"cls.csv", "det.json", "seg.json"})])
def test_blend_submission_is_written_and_scored(tiny_run, tiny_data, tmp_path, fmt, files):
    spec = equal_spec([Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")], (1.0, 3.0),
                              FusionConfig("wbf", 0.55))
    config = SubmitConfig(spec, str(tiny_data), "blend", fmt, device="cpu", out_dir=str(tmp_path))
    manifest = submit(config, progress=False)
    out = tmp_path / "blend"
    assert {p.name for p in out.iterdir()} == files | {"manifest.json", "blend.zip"}
    with zipfile.ZipFile(out / "blend.zip") as zf:
        assert set(zf.namelist()) == files
    assert Manifest.read(out) == manifest
    assert manifest.blend["det"]["weights"] == [1.0, 3.0]
    assert [m["tta"] for m in manifest.members] == ["none", "hflip@det+seg"]
    assert set(manifest.val) == {tiny_run.name, f"{tiny_run.name}@hflip@det+seg", "blend"}
    assert manifest.fusion["det"] == {"det_method": "wbf", "iou_thr": 0.55, "skip_box_thr": 0.0}
    assert manifest.ensemble_spec().tasks == spec.tasks  # the blend rebuilds from the manifest
    run_best = json.loads((tiny_run / "run.json").read_text())["best"]
    # the second member mirrors det and seg only: cls blends the run with itself, so Top-1 is the run's
    assert manifest.val["blend"]["cls_top1"] == pytest.approx(run_best["cls_top1"], abs=1e-4)
    scores = score_submission(out, tiny_data)
    assert set(scores) == {"cls_top1", "det_map50", "seg_miou", "score"}
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def is_test(sub) -> bool:
    """The synthetic test images are named sign_*.jpg; val images are not."""
    return any(n.startswith("sign_") for n in sub.cls)


def test_refuses_and_writes_nothing_when_an_image_is_missing(tiny_run, tiny_data, tmp_path, monkeypatch):
    real = submit_stage.to_submission

    def drop_one(preds, *args):
        sub = real(preds, *args)
        if is_test(sub):
            sub.cls.pop(sorted(sub.cls)[0])
        return sub

    monkeypatch.setattr(submit_stage, "to_submission", drop_one)
    config = SubmitConfig(equal_spec([Member(str(tiny_run))]), str(tiny_data), "bad", device="cpu",
                          out_dir=str(tmp_path))
    with pytest.raises(SubmissionError, match="sign_"):
        submit(config, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_refuses_unknown_class_id(tiny_run, tiny_data, tmp_path, monkeypatch):
    real = submit_stage.to_submission

    def bad_label(preds, *args):
        sub = real(preds, *args)
        if is_test(sub):
            sub.det[0]["category_id"] = 99
        return sub

    monkeypatch.setattr(submit_stage, "to_submission", bad_label)
    config = SubmitConfig(equal_spec([Member(str(tiny_run))]), str(tiny_data), "bad", device="cpu",
                          out_dir=str(tmp_path))
    with pytest.raises(SubmissionError, match="99"):
        submit(config, progress=False)
    assert list(tmp_path.iterdir()) == []


def without_test_info(tiny_data, root):
    """A copy of the tiny data set whose dataset.yaml names no det.test_info."""
    shutil.copytree(tiny_data.parent, root)
    raw = yaml.safe_load((root / "dataset.yaml").read_text())
    del raw["det"]["test_info"]
    (root / "dataset.yaml").write_text(yaml.safe_dump(raw))
    return root / "dataset.yaml"


def test_allinone_json_without_image_ids_is_refused_before_predicting(tiny_run, tiny_data, tmp_path, monkeypatch):
    data = without_test_info(tiny_data, tmp_path / "data")
    monkeypatch.setattr(submit_stage, "predict_members", lambda *a, **k: pytest.fail("predicted before refusing"))
    config = SubmitConfig(equal_spec([Member(str(tiny_run))]), str(data), "x", device="cpu",
                          out_dir=str(tmp_path / "subs"))
    with pytest.raises(SubmissionError, match=r"integer ids.*test_info.*--image-ids"):
        submit(config, progress=False)
    assert not (tmp_path / "subs").exists()


def test_image_ids_override(tiny_run, tiny_data, tmp_path):
    data = without_test_info(tiny_data, tmp_path / "data")
    listed = json.loads((tiny_data.parent / "test" / "det_info.json").read_text())["images"]
    shifted = {"images": [{**im, "id": im["id"] + 1000} for im in listed]}
    (tmp_path / "ids.json").write_text(json.dumps(shifted))
    config = SubmitConfig(equal_spec([Member(str(tiny_run))]), str(data), "x", device="cpu",
                          out_dir=str(tmp_path / "subs"), image_ids=str(tmp_path / "ids.json"))
    manifest = submit(config, progress=False)
    assert manifest.det_image_ids == str(tmp_path / "ids.json")
    written = json.loads((tmp_path / "subs" / "x" / "submission.json").read_text())
    ids = {im["file_name"]: im["id"] for im in shifted["images"]}
    assert written["dec"] and {d["image_id"] for d in written["dec"]} <= set(ids.values())
    # a list that misses a test image is refused, naming the file and the image
    (tmp_path / "short.json").write_text(json.dumps({"images": shifted["images"][1:]}))
    with pytest.raises(DataError, match=rf"short.json: 1 detection test image\(s\) not listed: {listed[0]['file_name']}"):
        submit(SubmitConfig(config.ensemble, str(data), "y", device="cpu", out_dir=str(tmp_path / "subs"),
                            image_ids=str(tmp_path / "short.json")), progress=False)
