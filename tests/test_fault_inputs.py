"""Faults of what a team feeds the workbench (issue 19): submissions read back by `mtwb score`, images
as cameras and tools write them (EXIF-rotated, 16-bit, huge, corrupt), a full disk, a spec that gives a
task to a member that does not serve it. Each ends in a clear error naming the file or a correct result."""
from __future__ import annotations

import csv
import errno
import json
import math
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

import workbench.data.spec as spec_module
from workbench.cli import run as cli_run
from workbench.data.check import check_dataset
from workbench.data.spec import DatasetSpec, image_size, read_image
from workbench.ensemble.spec import equal_spec
from workbench.errors import DataError, StorageError, SubmissionError, WorkbenchError
from workbench.io import atomic_dir, atomic_path
from workbench.metrics.seg import SegEvaluator
from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend
from workbench.score import score_submission
from workbench.submit import SubmitConfig, submit


# -- mtwb score checks what it reads -------------------------------------------------------------
@pytest.fixture(scope="module")
def written(tiny_run, tiny_data, tmp_path_factory):
    """A coco-format submission of the tiny run (cls.csv, det.json, seg.json: easy to damage by hand)."""
    out = tmp_path_factory.mktemp("subs")
    submit(SubmitConfig(equal_spec([Member(str(tiny_run))]), str(tiny_data), "s", "coco", device="cpu",
                        out_dir=str(out)), progress=False)
    return out / "s"


def damaged(written, tmp_path, file, change):
    """A copy of the submission with `change` applied to the content of one of its files."""
    sub = tmp_path / "sub"
    shutil.copytree(written, sub)
    (sub / "manifest.json").unlink()  # read by its files, as an outside submission
    path = sub / file
    path.write_text(change(path.read_text()))
    return sub


def edit_first_box(**values):
    def change(text):
        boxes = json.loads(text)
        boxes[0].update(values)
        return json.dumps(boxes)  # NaN is written as the bare token NaN, which json (and Python) read back
    return change


@pytest.mark.parametrize("values, problem", [
    ({"score": math.nan}, "score nan is not a finite number in [0, 1]"),
    ({"score": 1.5}, "score 1.5 is not a finite number in [0, 1]"),
    ({"bbox": [10.0, 10.0, -4.0, 5.0]}, "bbox [10.0, 10.0, -4.0, 5.0] has no positive width and height"),
    ({"category_id": 99}, "category_id 99 is not one of [1, 2, 3]"),
])
def test_score_refuses_a_bad_box_naming_it(written, tiny_data, tmp_path, values, problem):
    first = json.loads((written / "det.json").read_text())[0]["image_id"]
    sub = damaged(written, tmp_path, "det.json", edit_first_box(**values))
    with pytest.raises(SubmissionError) as e:
        score_submission(sub, tiny_data)
    assert str(e.value).splitlines() == [f"{sub}: submission has 1 problem(s):", f"det[0] (image {first}): {problem}"]


def test_score_refuses_a_missing_image_and_lenient_scores_it_as_wrong(written, tiny_data, tmp_path):
    rows = list(csv.reader((written / "cls.csv").read_text().splitlines()))
    header, first, rest = rows[0], rows[1], rows[2:]
    sub = damaged(written, tmp_path, "cls.csv", lambda text: "\n".join(",".join(r) for r in [header, *rest]) + "\n")
    with pytest.raises(SubmissionError) as e:
        score_submission(sub, tiny_data)
    assert str(e.value).splitlines()[1:] == [f"cls: image {first[0]}: missing"]

    # --lenient: the left-out image counts as wrong, the other images as before; by hand from the truth
    spec = DatasetSpec(tiny_data)
    truth = spec.truth_cls()
    right = sum(spec.cls_classes.index(label) == truth[name] for name, label in rest)
    full, lenient = score_submission(written, tiny_data), score_submission(sub, tiny_data, lenient=True)
    assert lenient["cls_top1"] == pytest.approx(right / len(truth))
    assert lenient["cls_top1"] <= full["cls_top1"]
    assert (lenient["missing_cls"], lenient["missing_seg"]) == (1, 0)
    assert (lenient["det_map50"], lenient["seg_miou"]) == (full["det_map50"], full["seg_miou"])


def test_a_missing_mask_counts_its_pixels_as_missed():
    # K = 2. Image 1 predicted exactly: [0, 1]. Image 2, pixels [1, 1, 255], has no prediction:
    # its two labelled pixels are misses of class 1, no other class's false positives.
    # IoU_0 = 1 / 1; IoU_1 = 1 / (1 + 2) -> mIoU 2/3; pixel accuracy 2 right of 4 labelled
    ev = SegEvaluator(2)
    ev.process(np.array([[0, 1]]), np.array([[0, 1]]))
    ev.process_missing(np.array([[1, 1, 255]]))
    assert ev.iou_per_class().tolist() == pytest.approx([1.0, 1 / 3])
    assert ev.evaluate() == pytest.approx({"miou": 2 / 3, "pixel_acc": 0.5})


# -- images decoded one way everywhere -------------------------------------------------------------
def sideways(upright: Image.Image, path, orientation=6, **save):
    """Store `upright` as a camera does: pixels turned, the EXIF orientation saying how to show them."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif, **save)  # 6: shown turned 90 deg clockwise


def test_exif_orientation_is_applied_when_reading(tmp_path):
    upright = Image.fromarray(np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10)  # 3 wide, 2 high
    sideways(upright, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as raw:
        assert raw.size == (2, 3)  # stored 2 wide, 3 high
    assert image_size(tmp_path / "a.png") == (3, 2)
    assert np.array_equal(np.asarray(read_image(tmp_path / "a.png")), np.asarray(upright))


def test_an_exif_rotated_photo_passes_data_check(tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data.parent, root)
    coco = json.loads((root / "det" / "train.json").read_text())
    image = coco["images"][0]
    path = root / "det" / "images" / image["file_name"]
    with Image.open(path) as im:
        upright = im.convert("RGB")
    sideways(upright, path, quality=95)  # the annotation keeps the upright width and height
    assert (image["width"], image["height"]) == upright.size != Image.open(path).size
    assert check_dataset(root / "dataset.yaml").problems == []


def test_a_16_bit_image_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535]], np.uint16)  # -> 0, 100, 255
    Image.fromarray(values).save(tmp_path / "g.png")
    assert Image.open(tmp_path / "g.png").mode == "I;16"
    assert np.asarray(read_image(tmp_path / "g.png"))[..., 0].tolist() == [[0, 100, 255]]


def test_an_image_over_the_pixel_limit_is_refused_naming_it(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(spec_module, "MAX_PIXELS", 100)  # a 16 x 16 image stands in for a bomb
    Image.new("RGB", (16, 16)).save(tmp_path / "big.png")
    message = (f"{tmp_path / 'big.png'}: image of 16 x 16 pixels exceeds the decoding limit of 100 pixels "
               "(a decompression bomb, or a file that needs resizing first)")
    for read in (read_image, image_size):
        with pytest.raises(DataError) as e:
            read(tmp_path / "big.png")
        assert str(e.value) == message
    # where a test image is only measured (the det test split), the same line names it
    with pytest.raises(DataError, match=r"test/det/\S+\.jpg: image of \d+ x \d+ pixels exceeds"):
        DatasetSpec(tiny_data).det_samples("test")


def test_a_corrupt_test_image_stops_submit_naming_it(tiny_run, tiny_data, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(tiny_data.parent, root)
    victim = sorted((root / "test" / "cls").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:200])  # cut off mid-stream
    config = SubmitConfig(equal_spec([Member(str(tiny_run))]), str(root / "dataset.yaml"), "s", device="cpu",
                          out_dir=str(tmp_path / "subs"))
    with pytest.raises(DataError) as e:
        submit(config, progress=False)
    assert str(e.value).startswith(f"{victim}: cannot read image (")
    assert not (tmp_path / "subs").exists() or list((tmp_path / "subs").iterdir()) == []


# -- the environment --------------------------------------------------------------------------------
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("atomic", [atomic_path, atomic_dir])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, atomic):
    target = tmp_path / "out" / "thing"
    with pytest.raises(StorageError) as e:
        with atomic(target):
            no_space()
    assert str(e.value) == f"cannot write {target}: No space left on device (nothing partial was left)"
    assert list((tmp_path / "out").iterdir()) == []


def test_a_full_disk_during_submit_is_one_line_on_the_command_line(tiny_run, tiny_data, tmp_path, monkeypatch,
                                                                     capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(zipfile.ZipFile, "write", no_space)  # the disk fills while the zip is written
    monkeypatch.setattr("sys.argv", ["mtwb", "submit", str(tiny_run), "--data", str(tiny_data), "--name", "s",
                                     "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        cli_run()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: cannot write submissions/s: No space left on device (nothing partial was left)"]
    assert list((tmp_path / "submissions").iterdir()) == []


def test_an_os_error_outside_a_write_is_one_line(tmp_path, monkeypatch, capsys):
    def too_many(*args, **kwargs):
        raise OSError(errno.EMFILE, "Too many open files", str(tmp_path / "runs"))
    monkeypatch.setattr("workbench.runs_table.collect_runs", too_many)
    monkeypatch.setattr("sys.argv", ["mtwb", "runs"])
    with pytest.raises(SystemExit) as e:
        cli_run()
    assert e.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'runs'}: Too many open files"]


# -- members that do not belong together ------------------------------------------------------------
def test_a_spec_giving_a_task_to_a_member_that_does_not_serve_it_names_the_member(tiny_run, tiny_data, tmp_path):
    single = tmp_path / "runs" / "single"
    shutil.copytree(tiny_run, single, ignore=shutil.ignore_patterns("preds"))
    info = json.loads((single / "run.json").read_text())
    (single / "run.json").write_text(json.dumps({**info, "run_id": "single", "kind": "single", "tasks": ["det"]}))
    joint, det_only = Member(str(tiny_run)), Member(str(single))
    spec = EnsembleSpec({"cls": TaskBlend((joint,), (1.0,), FusionConfig()),
                         "det": TaskBlend((joint,), (1.0,), FusionConfig()),
                         "seg": TaskBlend((joint, det_only), (1.0, 1.0), FusionConfig())})
    with pytest.raises(WorkbenchError) as e:
        submit(SubmitConfig(spec, str(tiny_data), "s", device="cpu", out_dir=str(tmp_path / "subs")), progress=False)
    assert str(e.value) == (f"tasks.seg: member '{single}' does not serve seg (its run was trained for det only); "
                            "remove it from seg's members")
    assert not (single / "preds").exists()  # refused before anything was predicted
