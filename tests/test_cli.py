"""End to end through the command line: synth -> train -> predict -> submit -> score, and errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from workbench.cli import main, parse_per_task


def invoke(args):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_whole_loop_on_tiny_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke(["data", "synth", "data", "--size", "tiny", "--seed", "3"])
    out = invoke(["data", "check", "data/dataset.yaml"])
    assert "no problems" in out
    train = ["train", "joint", "--data", "data/dataset.yaml", "--epochs", "1", "--steps-per-epoch", "1",
             "--img-size", "cls=32,det=64,seg=64", "--batch-size", "4", "--device", "cpu"]
    invoke(train + ["--backbone", "resnet10t", "--name", "a"])
    # b: det and seg on 64 x 96 canvases (HxW, the scenes' shape), through predict, TTA, blend and submit below
    invoke([*train[:8], "--img-size", "cls=32,det=64x96,seg=64x96", *train[10:], "--backbone", "convnext_atto",
            "--name", "b"])
    assert json.loads((tmp_path / "runs" / "b" / "run.json").read_text())["img_size"] == {
        "cls": 32, "det": [64, 96], "seg": [64, 96]}
    assert {p.name.split("-")[1] for p in (tmp_path / "runs" / ".cache" / "images").iterdir()} >= {"64", "64x96"}
    assert "wrote runs/a/preds/val/none" in invoke(["predict", "a", "--data", "data/dataset.yaml", "--device", "cpu"])
    assert "reused runs/a/preds/val/none" in invoke(["predict", "a", "--data", "data/dataset.yaml", "--device", "cpu"])
    [record] = json.loads(invoke(["predict", "a", "--data", "data/dataset.yaml", "--device", "cpu", "--json"]))
    assert (record["run"], record["split"], record["reused"]) == ("a", "val", True) and 0 <= record["score"] <= 1
    out = invoke(["submit", "a", "b", "--data", "data/dataset.yaml", "--name", "ab", "--device", "cpu"])
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["a", "b", "blend"]
    assert (tmp_path / "submissions" / "ab" / "ab.zip").is_file()
    [scores] = json.loads(invoke(["score", "submissions/ab", "--data", "data/dataset.yaml", "--json"]))
    assert scores.pop("submission") == "ab" and scores.pop("convention") == "present"
    assert set(scores) == {"cls_top1", "det_map50", "seg_miou", "score"}
    mean = (scores["cls_top1"] + scores["det_map50"] + scores["seg_miou"]) / 3
    assert scores["score"] == pytest.approx(mean, abs=1e-5)
    out = invoke(["score", "submissions/ab", "--data", "data/dataset.yaml", "--convention", "organisers"])
    assert "mIoU: mean over all classes, a class absent from both counting 0" in out

    out = invoke(["ensemble", "compare", "a", "b@hflip@det+seg", "--data", "data/dataset.yaml", "--n-boot", "20",
                  "--out", "cmp/ab.csv", "--device", "cpu"])
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["a", "b@hflip@det+seg", "blend"]
    assert (tmp_path / "cmp" / "ab.png").is_file() and (tmp_path / "cmp" / "ab.csv").is_file()
    rows = json.loads(invoke(["ensemble", "compare", "a", "b@hflip@det+seg", "--data", "data/dataset.yaml",
                              "--n-boot", "20", "--out", "cmp/ab.csv", "--device", "cpu", "--json"]))
    assert [r["member"] for r in rows] == ["a", "b@hflip@det+seg", "blend"] and sum(r["best"] for r in rows) == 1
    out = invoke(["ensemble", "search", "a", "b", "b@hflip@det+seg", "--data", "data/dataset.yaml", "--rounds", "2",
                  "--out", "ensembles/e.yaml", "--device", "cpu"])
    assert "held-out" in out and (tmp_path / "ensembles" / "e.yaml").is_file()
    rows = json.loads(invoke(["submit", "ensembles/e.yaml", "--data", "data/dataset.yaml", "--format", "coco",
                              "--device", "cpu", "--json"]))
    assert (tmp_path / "submissions" / "e" / "det.json").is_file()
    manifest = json.loads((tmp_path / "submissions" / "e" / "manifest.json").read_text())
    assert rows and [r["member"] for r in rows] == list(manifest["val"])  # the table's rows (a blend row if 2+)
    assert {(r["submission"], r["format"], r["folder"]) for r in rows} == {("e", "coco", "submissions/e")}
    assert [r["score"] for r in rows] == pytest.approx([m["score"] for m in manifest["val"].values()], abs=1e-6)
    assert json.loads(invoke(["score", "submissions/e", "--data", "data/dataset.yaml", "--json"]))[0]["score"] >= 0


def test_errors_are_one_line_and_name_the_file(tmp_path):
    missing = tmp_path / "nope" / "dataset.yaml"
    proc = subprocess.run([sys.executable, "-m", "workbench.cli", "train", "joint", "--data", str(missing),
                           "--backbone", "resnet10t"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {missing}: dataset file not found"


def test_warnings_are_one_line(tiny_data, tmp_path):
    # a submission in the earlier allinone-json layout is read, with a one-line warning on stderr
    sub = tmp_path / "old"
    sub.mkdir()
    (sub / "submission.json").write_text(json.dumps({"cls": {}, "dec": [], "seg": {}}))
    score = [sys.executable, "-m", "workbench.cli", "score", str(sub), "--data", str(tiny_data)]
    proc = subprocess.run(score, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1  # nothing predicted: every cls and seg test image is missing
    warning, error, *entries = proc.stderr.strip().splitlines()
    assert warning.startswith("warning: ") and "earlier allinone-json layout" in warning
    n = 16 + 4  # the tiny set's 16 cls and 4 seg test images
    assert error == f"error: {sub}: submission has {n} problem(s):" and len(entries) == n
    assert all(e.startswith(("cls: image ", "seg: image ")) and e.endswith(": missing") for e in entries)
    proc = subprocess.run(score + ["--lenient"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and len(proc.stderr.strip().splitlines()) == 1  # the warning alone
    assert proc.stdout.splitlines()[1].split()[1:] == ["0.0000"] * 4  # nothing right, no box: every metric 0
    assert "--lenient: old: 16 cls image(s) without a class scored as wrong, 4 seg image(s) without a mask" in proc.stdout


def test_data_check_fails_on_a_broken_data_set(tiny_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data.parent, root)
    victim = sorted((root / "seg" / "images" / "train").iterdir())[0]
    victim.unlink()
    result = CliRunner().invoke(main, ["data", "check", str(root / "dataset.yaml")])
    assert result.exit_code == 1
    assert f"seg/masks/train/{victim.stem}.png" in result.output


def test_parse_per_task():
    default = {"cls": 1, "det": 2, "seg": 3}
    assert parse_per_task(None, default, "--x") == default
    assert parse_per_task("64", default, "--x") == {"cls": 64, "det": 64, "seg": 64}
    assert parse_per_task("det=320,seg=256", default, "--x") == {"cls": 1, "det": 320, "seg": 256}
    # input sizes may be HxW (a canvas of the scenes' shape); batch sizes may not
    assert parse_per_task("det=320,seg=256x320", default, "--x", shapes=True) == {"cls": 1, "det": 320, "seg": (256, 320)}
    assert parse_per_task("256x320", default, "--x", shapes=True)["cls"] == (256, 320)
    for bad, shapes in (("seg=256x", True), ("seg=2x3x4", True), ("seg=256x320", False)):
        with pytest.raises(click.BadParameter):
            parse_per_task(bad, default, "--x", shapes=shapes)
