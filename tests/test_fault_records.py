"""Faults of the records a long competition damages (issue 19): a cut or foreign run.json, a damaged
prediction cache entry, weights that are another run's or hold NaN, a run used on a data set with other
classes, a moved data set. Each ends in one clear error naming the file (a WorkbenchError, printed by the
CLI as one `error: ...` line with exit code 1) or in a correct result, and nothing is left half written."""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from workbench import cli
from workbench.data.spec import DatasetSpec
from workbench.errors import RunError, WorkbenchWarning
from workbench.models.model import check_pretrained, read_state_dict
from workbench.predict import PredictConfig, predict_run
from workbench.records.cache_meta import CACHE_VERSION, CacheMeta
from workbench.records.predictions import Predictions
from workbench.runs import check_classes, load_model, open_run, save_weights, weights_owner
from workbench.runs_table import collect_runs

CPU = torch.device("cpu")
# what a run folder needs to be opened, loaded and predicted with (no checkpoints, no optimizer state)
SKIP = shutil.ignore_patterns("preds", "checkpoints", "state.pt", "curves.png")


def copy_run(src: Path, runs: Path, name: str, **changes) -> Path:
    """A private copy of a run folder as runs/<name>, its run.json updated with `changes`."""
    dst = runs / name
    shutil.copytree(src, dst, ignore=SKIP)
    if changes:
        info = json.loads((dst / "run.json").read_text())
        (dst / "run.json").write_text(json.dumps({**info, **changes}))
    return dst


def one_line(e: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be one line (what the CLI prints after `error: `)."""
    text = str(e.value)
    assert "\n" not in text, text
    return text


def leftovers(folder: Path) -> list[str]:
    """Temporary names an interrupted or replaced write leaves behind (`.<name>.*.tmp`, `.<name>.old-*`)."""
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith(".tmp") or ".old-" in p.name)


# -- run.json ---------------------------------------------------------------------------------
@pytest.mark.parametrize("damage, problem", [
    ("half", "not valid JSON ("),  # the JSON decoder's own words follow; see the exact case below
    ("empty", "not valid JSON (Expecting value: line 1 column 1 (char 0)))"),
], ids=["half", "empty"])
def test_a_cut_run_json_is_refused_naming_it(tiny_run, tmp_path, damage, problem):
    """Fault: run.json cut short (a disk full, a copy interrupted) -> RunError naming run.json."""
    run = copy_run(tiny_run, tmp_path, "r")
    text = (run / "run.json").read_text()
    (run / "run.json").write_text(text[: len(text) // 2] if damage == "half" else "")
    with pytest.raises(RunError) as e:
        open_run(run)
    assert one_line(e).startswith(f"{run / 'run.json'}: cannot read run.json ({problem}")


def test_a_run_json_holding_a_list_is_refused_naming_it(tiny_run, tmp_path):
    """Fault: run.json is valid JSON but a list (an edit gone wrong) -> RunError naming run.json."""
    run = copy_run(tiny_run, tmp_path, "r")
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps([info]))
    with pytest.raises(RunError) as e:
        open_run(run)
    assert one_line(e) == f"{run / 'run.json'}: run.json holds a list, expected an object"


# -- prediction cache entries -------------------------------------------------------------------
@pytest.fixture(scope="module")
def predicted(tiny_run, tiny_data, tmp_path_factory) -> tuple[Path, Predictions]:
    """A copy of the tiny run with its val predictions cached (preds/val/none), and those predictions."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("predicted"), tiny_run.name)
    preds, folder, reused = predict_run(PredictConfig(str(run), str(tiny_data), "val", "cpu"), progress=False)
    assert not reused and folder == run / "preds" / "val" / "none"
    return run, preds


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def assert_same_predictions(a: Predictions, b: Predictions) -> None:
    assert list(a.cls) == list(b.cls) and list(a.det) == list(b.det) and list(a.seg) == list(b.seg)
    for name in a.cls:
        np.testing.assert_array_equal(a.cls[name], b.cls[name])
    for name in a.det:
        for field in ("boxes", "scores", "labels"):
            np.testing.assert_array_equal(getattr(a.det[name], field), getattr(b.det[name], field))
    for name in a.seg:
        np.testing.assert_array_equal(a.seg[name], b.seg[name])


# (file damaged, how, the problem the warning names). A zip cut in half has lost its central directory,
# which zipfile looks for at the end of the file; meta.json's decoder words follow "not valid JSON (".
# The warning names the file of the entry at fault.
DAMAGES = [
    ("meta.json", cut_in_half, "meta.json: not valid JSON ("),
    ("cls.npz", cut_in_half, "cls.npz: BadZipFile: File is not a zip file)"),
    ("seg.npz", cut_in_half, "seg.npz: BadZipFile: File is not a zip file)"),
    ("det.npz", Path.unlink, "det: {n} of {n} images missing, e.g. {first})"),
]


@pytest.mark.parametrize("file, damage, problem", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_cache_entry_is_predicted_again(predicted, tiny_data, tmp_path, file, damage, problem):
    """Faults: a cache entry with a truncated meta.json, a truncated cls.npz or seg.npz, or its det.npz
    deleted -> one warning naming the entry, then the entry is predicted again and written whole."""
    src, first = predicted
    run = copy_run(src, tmp_path / "runs", src.name)
    shutil.copytree(src / "preds", run / "preds")  # copy_run leaves the cache out: bring the entry along
    entry = run / "preds" / "val" / "none"
    damage(entry / file)
    det_names = list(first.det)  # the val detection images, in the order the entry lists them
    problem = problem.format(n=len(det_names), first=det_names[0] if det_names else "")
    with pytest.warns(WorkbenchWarning) as caught:
        again, folder, reused = predict_run(PredictConfig(str(run), str(tiny_data), "val", "cpu"), progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, WorkbenchWarning)]
    assert len(messages) == 1, messages
    assert messages[0].startswith(f"{entry}: damaged prediction cache entry ({problem}"), messages[0]
    assert messages[0].endswith("; predicting again") and "\n" not in messages[0]
    assert folder == entry and not reused
    assert_same_predictions(first, again)
    # the rebuilt entry is whole: its meta reads back, its arrays hold every image, no temporary names remain
    meta = CacheMeta.read(entry)
    assert meta.cache_version == CACHE_VERSION
    assert_same_predictions(first, Predictions.load(entry, meta.sizes))
    assert leftovers(run) == []


# -- weights ------------------------------------------------------------------------------------
def test_weights_copied_from_another_run_are_refused(tiny_run, tmp_path):
    """Fault: model.safetensors of run 'other' copied over run 'tiny-r10''s -> RunError naming both runs."""
    assert weights_owner(tiny_run / "model.safetensors") == "tiny-r10"  # the trainer marks its weights
    ours = copy_run(tiny_run, tmp_path, "tiny-r10")
    other = copy_run(tiny_run, tmp_path, "other", run_id="other")
    save_weights(load_file(str(other / "model.safetensors")), other / "model.safetensors", "other")
    assert weights_owner(other / "model.safetensors") == "other"
    load_model(open_run(ours), CPU)  # its own weights load
    load_model(open_run(other), CPU)
    shutil.copyfile(other / "model.safetensors", ours / "model.safetensors")
    with pytest.raises(RunError) as e:
        load_model(open_run(ours), CPU)
    assert one_line(e) == (f"{ours / 'model.safetensors'}: these are the weights of run 'other', not of run "
                           "'tiny-r10' (copied over?); put the run's own model.safetensors back or retrain it")


def test_a_run_whose_weights_hold_nan_is_refused_naming_the_tensor(tiny_run, tmp_path):
    """Fault: one NaN in a run's weights (a diverged step saved) -> RunError naming the file and the tensor."""
    run = copy_run(tiny_run, tmp_path, "tiny-r10")
    state = load_file(str(run / "model.safetensors"))
    state["heads.cls.fc.weight"].view(-1)[3] = float("nan")
    save_weights(state, run / "model.safetensors", "tiny-r10")  # marked as its own: only the NaN is wrong
    with pytest.raises(RunError) as e:
        load_model(open_run(run), CPU)
    assert one_line(e) == (f"{run / 'model.safetensors'}: tensor 'heads.cls.fc.weight' holds 1 non-finite value(s) "
                           "(NaN or inf): the weights are broken, not the settings used to load them")


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_pretrained_weights_holding_inf_are_refused_naming_the_tensor(tmp_path, suffix):
    """Fault: a --pretrained file with +inf and -inf in one tensor -> RunError naming the file and the tensor
    (before the fit to the backbone is checked: the file is broken whatever it is for)."""
    state = {"conv1.weight": torch.tensor([[1.0, float("inf")], [float("-inf"), 0.5]]),
             "bn1.running_mean": torch.zeros(2), "bn1.num_batches_tracked": torch.tensor(3)}
    path = tmp_path / f"pretrained{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)  # the wrapper a training script writes
    expected = (f"{path}: tensor 'conv1.weight' holds 2 non-finite value(s) (NaN or inf): the weights are broken, "
                "not the settings used to load them")
    for read in (read_state_dict, lambda p: check_pretrained("resnet10t", p)):
        with pytest.raises(RunError) as e:
            read(path)
        assert one_line(e) == expected


# -- a run on a data set with other classes -------------------------------------------------------
def swap_first_two_cls_classes(root: Path) -> None:
    # the class folders are named by class: the same folders now stand for swapped indices 0 and 1
    path = root / "cls" / "classes.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[1], lines[0], *lines[2:]]) + "\n")


def rename_det_category_1(root: Path) -> None:
    path = root / "det" / "train.json"  # the categories are read from the train annotations
    coco = json.loads(path.read_text())
    coco["categories"] = [{**c, "name": "halt"} if c["id"] == 1 else c for c in coco["categories"]]
    path.write_text(json.dumps(coco))


def rename_seg_class_5(root: Path) -> None:
    path = root / "seg" / "classes.txt"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines[:5], "truck", *lines[6:]]) + "\n")


# tiny_run's run.json "classes": cls 00_red_circle, 01_blue_circle, ...; det [1, stop], [2, warning],
# [3, light]; seg sky, building, road, sidewalk, vegetation, car, pole
CLASS_CHANGES = [
    ("cls", swap_first_two_cls_classes, "class 0 is '00_red_circle' in the run, '01_blue_circle' in the data set"),
    ("det", rename_det_category_1, "category (id, name) 0 is (1, 'stop') in the run, (1, 'halt') in the data set"),
    ("seg", rename_seg_class_5, "class 5 is 'car' in the run, 'truck' in the data set"),
]


@pytest.mark.parametrize("task, change, detail", CLASS_CHANGES, ids=[c[0] for c in CLASS_CHANGES])
def test_a_run_is_refused_on_a_data_set_with_other_classes(tiny_run, tiny_data, tmp_path, task, change, detail):
    """Fault: the same number of classes in another order (or renamed) -> predict refuses, naming the run,
    the task and the first position that differs, before writing anything."""
    run = copy_run(tiny_run, tmp_path / "runs", "tiny-r10")
    root = tmp_path / "other-data"
    shutil.copytree(tiny_data.parent, root)
    data = root / "dataset.yaml"
    check_classes(open_run(run), DatasetSpec(data).class_lists(), data)  # the unchanged copy is accepted
    change(root)
    with pytest.raises(RunError) as e:
        predict_run(PredictConfig(str(run), str(data), "val", "cpu"), progress=False)
    assert one_line(e) == (f"run 'tiny-r10' was trained on other {task} classes than {data.resolve()} has "
                           f"({detail}); its outputs would be read as the wrong classes")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny-r10"]  # no image cache
    assert not (run / "preds").exists()  # no cache entry


# -- the runs table -------------------------------------------------------------------------------
def test_runs_data_filter_follows_a_moved_data_set_only(tiny_run, tiny_data, tmp_path):
    """Fault: the data folder was moved after training -> `mtwb runs --data NEW` still lists the run (same
    dataset.yaml content, the recorded path gone), but not a run on another copy that still exists."""
    sha = hashlib.sha256(tiny_data.read_bytes()).hexdigest()
    assert json.loads((tiny_run / "run.json").read_text())["data_sha256"] == sha  # recorded at training
    old, new, twin = (tmp_path / name / "tiny" for name in ("old", "new", "twin"))
    shutil.copytree(tiny_data.parent, old)
    shutil.copytree(tiny_data.parent, twin)  # byte-identical dataset.yaml, still in its place
    runs = tmp_path / "runs"
    copy_run(tiny_run, runs, "moved", run_id="moved", data=str(old / "dataset.yaml"))
    copy_run(tiny_run, runs, "on-twin", run_id="on-twin", data=str(twin / "dataset.yaml"))
    copy_run(tiny_run, runs, "gone-other", run_id="gone-other", data=str(tmp_path / "gone" / "dataset.yaml"),
             data_sha256=hashlib.sha256(b"another data set").hexdigest())
    assert list(collect_runs(runs, str(old / "dataset.yaml"))["run"]) == ["moved"]  # before the move
    old.parent.rename(new.parent)
    assert list(collect_runs(runs, str(new / "dataset.yaml"))["run"]) == ["moved"]
    assert list(collect_runs(runs)["run"]) == ["gone-other", "moved", "on-twin"]  # no filter: all three


def test_runs_with_one_corrupt_run_json_fails_naming_it(tiny_run, tmp_path, monkeypatch, capsys):
    """Fault: one run.json among good ones is a list -> collect_runs raises RunError naming that file, and
    `mtwb runs` prints it as one `error:` line on stderr, exit code 1, no partial table."""
    runs = tmp_path / "runs"
    for name in ("a", "b", "c"):
        copy_run(tiny_run, runs, name, run_id=name)
    assert list(collect_runs(runs)["run"]) == ["a", "b", "c"]
    info = json.loads((runs / "b" / "run.json").read_text())
    (runs / "b" / "run.json").write_text(json.dumps([info]))
    expected = f"{runs / 'b' / 'run.json'}: run.json holds a list, expected an object"
    with pytest.raises(RunError) as e:
        collect_runs(runs)
    assert one_line(e) == expected
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # cli.run replaces it
    monkeypatch.setattr(sys, "argv", ["mtwb", "runs", "--runs-dir", str(runs)])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 1
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"error: {expected}\n")
