"""Tests of workbench/submit: blend, check, write atomically; and workbench/score reading it back."""
from __future__ import annotations

import json
import zipfile

import pytest

import workbench.submit as submit_stage
from workbench.ensemble.members import Member
from workbench.ensemble.spec import EnsembleSpec
from workbench.errors import SubmissionError
from workbench.fuse import FusionConfig
from workbench.score import score_submission
from workbench.submit import SubmitConfig, submit


@pytest.mark.parametrize("fmt, files", [("allinone-json", {"submission.json"}),
                                        ("coco", {"cls.csv", "det.json", "seg.json"})])
def test_blend_submission_is_written_and_scored(tiny_run, tiny_data, tmp_path, fmt, files):
    spec = EnsembleSpec.equal([Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")], (1.0, 3.0),
                              FusionConfig("wbf", 0.55))
    config = SubmitConfig(spec, str(tiny_data), "blend", fmt, device="cpu", out_dir=str(tmp_path))
    manifest = submit(config, progress=False)
    out = tmp_path / "blend"
    assert {p.name for p in out.iterdir()} == files | {"manifest.json", "blend.zip"}
    with zipfile.ZipFile(out / "blend.zip") as zf:
        assert set(zf.namelist()) == files
    written = json.loads((out / "manifest.json").read_text())
    assert written == manifest
    assert manifest["blend"]["det"]["weights"] == [1.0, 3.0]
    assert [m["tta"] for m in manifest["members"]] == ["none", "hflip@det+seg"]
    assert set(manifest["val"]) == {tiny_run.name, f"{tiny_run.name}@hflip@det+seg", "blend"}
    assert manifest["fusion"]["det"] == {"det_method": "wbf", "iou_thr": 0.55, "skip_box_thr": 0.0}
    run_best = json.loads((tiny_run / "run.json").read_text())["best"]
    # the second member mirrors det and seg only: cls blends the run with itself, so Top-1 is the run's
    assert manifest["val"]["blend"]["cls_top1"] == pytest.approx(run_best["cls_top1"], abs=1e-4)
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
    config = SubmitConfig(EnsembleSpec.equal([Member(str(tiny_run))]), str(tiny_data), "bad", device="cpu",
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
    config = SubmitConfig(EnsembleSpec.equal([Member(str(tiny_run))]), str(tiny_data), "bad", device="cpu",
                          out_dir=str(tmp_path))
    with pytest.raises(SubmissionError, match="99"):
        submit(config, progress=False)
    assert list(tmp_path.iterdir()) == []
