"""Tests of workbench/data/check.py on tiny data sets built in tmp_path (and the real one if present)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from workbench.data.check import CountRow, check_dataset

TRAFFIC = Path(__file__).resolve().parents[2].parent / "shared/data/traffic"

_seed = iter(range(10_000))


def write_image(path: Path, w: int = 32, h: int = 24) -> Path:
    """Write a noise image (different bytes every call, so no accidental 'leakage')."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(next(_seed))
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, values: list[int], w: int = 32, h: int = 24) -> Path:
    """Write an L-mode mask whose rows cycle through `values`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = np.array([values[i % len(values)] for i in range(h)], np.uint8)
    Image.fromarray(np.repeat(rows[:, None], w, axis=1), mode="L").save(path)
    return path


def coco(images: list[tuple[int, str]], boxes: list[tuple[int, int, list[float], int]]) -> dict:
    """COCO dict of 32x24 images [(id, file_name)] and boxes [(ann id, image id, bbox, category)]."""
    return {
        "images": [{"id": i, "file_name": n, "width": 32, "height": 24} for i, n in images],
        "annotations": [{"id": a, "image_id": i, "bbox": b, "category_id": c, "area": b[2] * b[3], "iscrowd": 0}
                        for a, i, b, c in boxes],
        "categories": [{"id": 1, "name": "stop"}, {"id": 2, "name": "light"}],
    }


def make_dataset(root: Path) -> Path:
    """A complete tiny data set: cls 4/2/2 images of 2 classes, det 2/1/1 images, seg 2/1/1, 2 unlabeled."""
    (root / "cls").mkdir(parents=True)
    (root / "cls/classes.txt").write_text("a\nb\n")
    for split, n in (("train", 2), ("val", 1)):
        for c in "ab":
            for k in range(n):
                write_image(root / f"cls/{split}/{c}/{c}{split}{k}.jpg", 16, 16)
    for k in range(2):
        write_image(root / f"test/cls/t{k}.jpg", 16, 16)

    write_image(root / "det/images/d0.jpg")
    write_image(root / "det/images/d1.jpg")
    write_image(root / "det/images/d2.jpg")
    # d1 has no box: counted as an image without boxes, not a problem
    (root / "det/train.json").write_text(json.dumps(coco(
        [(1, "d0.jpg"), (2, "d1.jpg")], [(1, 1, [2, 2, 10, 8], 1), (2, 1, [20, 10, 12, 14], 2)])))
    (root / "det/val.json").write_text(json.dumps(coco([(3, "d2.jpg")], [(1, 3, [0, 0, 5, 5], 1)])))
    write_image(root / "test/det/e0.jpg")

    (root / "seg").mkdir()
    (root / "seg/classes.txt").write_text("road\ncar\nsky\n")
    for split, stems in (("train", ["s0", "s1"]), ("val", ["v0"])):
        for s in stems:
            write_image(root / f"seg/images/{split}/{s}.jpg")
            write_mask(root / f"seg/masks/{split}/{s}.png", [0, 1, 255] if s != "s1" else [2])
    write_image(root / "test/seg/u0.jpg")

    write_image(root / "unlabeled/x0.jpg")
    write_image(root / "unlabeled/x1.jpg")

    (root / "truth").mkdir()
    (root / "truth/cls.csv").write_text("image,label\nt0.jpg,a\nt1.jpg,b\n")
    (root / "truth/det.json").write_text(json.dumps(coco([(7, "e0.jpg")], [(1, 7, [1, 1, 4, 4], 2)])))
    image_list = coco([(7, "e0.jpg")], [])
    del image_list["annotations"]  # the organisers' test image list: images and categories only
    (root / "test/det_info.json").write_text(json.dumps(image_list))
    write_mask(root / "truth/seg/u0.png", [1, 2])

    spec = {
        "name": "tiny",
        "cls": {"classes": "cls/classes.txt", "train": "cls/train", "val": "cls/val", "test": "test/cls"},
        "det": {"train": {"images": "det/images", "annotations": "det/train.json"},
                "val": {"images": "det/images", "annotations": "det/val.json"}, "test": "test/det",
                "test_info": "test/det_info.json"},
        "seg": {"classes": "seg/classes.txt", "ignore_index": 255,
                "train": {"images": "seg/images/train", "masks": "seg/masks/train"},
                "val": {"images": "seg/images/val", "masks": "seg/masks/val"}, "test": "test/seg"},
        "unlabeled": "unlabeled",
        "truth": {"cls": "truth/cls.csv", "det": "truth/det.json", "seg": "truth/seg"},
    }
    (root / "dataset.yaml").write_text(yaml.safe_dump(spec))
    return root / "dataset.yaml"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "tiny")


def problems_about(report, name: str) -> list[str]:
    return [p for p in report.problems if name in p]


def test_valid_dataset_has_no_problems_and_right_counts(tiny):
    report = check_dataset(tiny)
    assert report.problems == []
    assert report.ok
    assert report.counts == [
        CountRow("cls", "train", 2 * 2, 2, labelled=2 * 2),
        CountRow("cls", "val", 2 * 1, 2, labelled=2 * 1),
        CountRow("cls", "test", 2),
        # train: 2 images, 2 boxes of categories 1 and 2, only d0 has boxes
        CountRow("det", "train", 2, 2, 2, 1),
        CountRow("det", "val", 1, 1, 1, 1),
        CountRow("det", "test", 1),
        # seg train masks hold {0, 1, 255} and {2}: 3 classes; val {0, 1}
        CountRow("seg", "train", 2, 3, labelled=2),
        CountRow("seg", "val", 1, 2, labelled=1),
        CountRow("seg", "test", 1),
        CountRow("unlabeled", "-", 2),
    ]


def test_format_table_is_aligned_and_ends_with_problems(tiny):
    table = check_dataset(tiny).format_table().splitlines()
    header = next(i for i, line in enumerate(table) if line.startswith("task"))
    assert table[header].split() == ["task", "split", "images", "classes", "boxes", "labelled"]
    rows = table[header + 1: header + 11]
    assert rows[3].split() == ["det", "train", "2", "2", "2", "1"]
    # numbers right-aligned under their header: every row ends at the same column
    assert len({len(line) for line in [table[header], *rows]}) == 1
    assert table[-1] == "no problems"


def test_every_problem_of_a_broken_copy_is_reported_at_once(tiny):
    root = tiny.parent
    (root / "det/images/d0.jpg").unlink()                                     # (a) missing image
    ann = json.loads((root / "det/val.json").read_text())
    ann["annotations"][0]["bbox"] = [20, 10, 20, 10]                          # (b) x + w = 40 > 32 + 1
    (root / "det/val.json").write_text(json.dumps(ann))
    write_mask(root / "seg/masks/train/s1.png", [2, 99])                      # (c) value 99 of 3 classes
    jpeg = root / "cls/train/a/atrain0.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])         # (d) truncated JPEG
    write_image(root / "cls/train/zebra/z0.jpg", 16, 16)                     # (e) class not in classes.txt
    write_mask(root / "seg/masks/val/v0.png", [0], 16, 16)                   # (f) mask of the wrong size

    report = check_dataset(tiny)

    expected = {
        "d0.jpg": "image not found",
        "val.json": "outside the 32x24 image",
        "s1.png": "mask value 99 not a class (3 classes, ignore 255)",
        "atrain0.jpg": "cannot read image",
        "zebra": "class folder not in cls/classes.txt",
        "v0.png": "mask size 16x16 differs from its image's 32x24",
    }
    for name, text in expected.items():
        lines = problems_about(report, name)
        assert any(text in line for line in lines), (name, report.problems)
    assert len(report.problems) == len(expected), report.problems
    # each line starts with the offending file's path, relative to the data set
    assert any(p.startswith("det/images/d0.jpg: image not found (listed in det/train.json)") for p in report.problems)
    assert any(p.startswith("det/val.json: annotation 1 of d2.jpg") for p in report.problems)
    assert report.format_table().endswith("\n".join(report.problems))


def test_identical_files_in_two_splits_are_leakage(tiny):
    root = tiny.parent
    shutil.copy(root / "cls/train/a/atrain0.jpg", root / "test/cls/t0.jpg")
    shutil.copy(root / "seg/images/val/v0.jpg", root / "unlabeled/x1.jpg")
    report = check_dataset(tiny)
    # duplicated content is a warning: the data set stays usable, the user learns which images leak
    assert report.problems == []
    about = {w.split(":")[0]: w for w in report.warnings}
    assert about["test/cls/t0.jpg"].endswith(
        "cls test image has the same content as cls train image cls/train/a/atrain0.jpg (leakage)")
    assert "seg val" in about["unlabeled/x1.jpg"]
    assert len(report.warnings) == 2
    assert report.ok


def test_det_problems(tiny):
    root = tiny.parent
    ann = json.loads((root / "det/train.json").read_text())
    ann["images"].append({"id": 1, "file_name": "d2.jpg", "width": 32, "height": 24})   # duplicate image id
    ann["images"][1]["width"] = 40                                                    # d1 is 32 wide
    ann["annotations"] += [
        {"id": 2, "image_id": 1, "bbox": [1, 1, 2, 2], "category_id": 9},            # duplicate id, unknown category
        {"id": 3, "image_id": 1, "bbox": [1, 1, 0, 2], "category_id": 1},            # zero width
        {"id": 4, "image_id": 1, "bbox": [1, float("nan"), 2, 2], "category_id": 1}, # not finite
        {"id": 5, "image_id": 1, "bbox": [1, 2, 3], "category_id": 1},               # 3 numbers
        {"id": 6, "image_id": 42, "bbox": [1, 1, 2, 2], "category_id": 1},           # unknown image
    ]
    (root / "det/train.json").write_text(json.dumps(ann))
    report = check_dataset(tiny)
    texts = "\n".join(report.problems)
    for text in ("image id 1 used by 2 images", "d1.jpg: real size 32x24 differs from 40x24",
                 "annotation id 2 used 2 times", "unknown category_id 9", "has no positive width",
                 "is not finite", "must be 4 numbers", "annotation 6: unknown image_id 42",
                 "det/images/d2.jpg: listed in both det train and det val (leakage)"):
        assert text in texts, (text, report.problems)


def test_yaml_and_classes_problems(tiny):
    root = tiny.parent
    spec = yaml.safe_load(tiny.read_text())
    del spec["det"]
    spec["seg"]["val"]["images"] = "seg/images/nowhere"
    tiny.write_text(yaml.safe_dump(spec))
    (root / "cls/classes.txt").write_text("a\nb\na\nc\n")
    report = check_dataset(tiny)
    texts = "\n".join(report.problems)
    assert "dataset.yaml: missing task section 'det'" in texts
    assert "seg/images/nowhere: folder not found" in texts
    assert "cls/classes.txt: class 'a' listed 2 times" in texts
    assert "cls/train: no folder for class 'c'" in texts
    # the checks go on past those: the other tasks are still counted
    assert [r.task for r in report.counts].count("cls") == 3


def test_truth_problems(tiny):
    root = tiny.parent
    (root / "truth/cls.csv").write_text("image,label\nt0.jpg,a\nt9.jpg,zz\n")
    write_image(root / "test/det/e1.jpg")
    (root / "truth/seg/u0.png").unlink()
    report = check_dataset(tiny)
    texts = "\n".join(report.problems)
    assert "truth/cls.csv: line 3: unknown class 'zz' for image t9.jpg" in texts
    assert "truth/cls.csv: 1 image(s) not in the cls test folder: t9.jpg" in texts
    assert "truth/cls.csv: 1 cls test image(s) without truth: t1.jpg" in texts
    assert "truth/det.json: 1 det test image(s) without truth: e1.jpg" in texts
    assert "truth/seg/u0.png: mask missing for image test/seg/u0.jpg" in texts


def test_test_image_list_problems(tiny):
    root = tiny.parent
    write_image(root / "test/det/e1.jpg")  # a test image the list (and the truth) leaves out
    info = coco([(8, "e0.jpg"), (9, "gone.jpg")], [])  # e0's id differs from the truth's 7; gone.jpg is no image
    info["images"][0]["width"] = 40
    del info["annotations"]
    (root / "test/det_info.json").write_text(json.dumps(info))
    texts = "\n".join(check_dataset(tiny).problems)
    assert "test/det_info.json: 1 det test image(s) not listed: e1.jpg" in texts
    assert "test/det_info.json: 1 image(s) not in the det test folder: gone.jpg" in texts
    assert "test/det/gone.jpg: image not found (listed in test/det_info.json)" in texts
    assert "test/det/e0.jpg: real size 32x24 differs from 40x24 in test/det_info.json" in texts
    assert "truth/det.json: 1 image id(s) differ from test/det_info.json: e0.jpg" in texts
    (root / "test/det_info.json").write_text("{}")
    assert "test/det_info.json: COCO file has no 'images' list" in "\n".join(check_dataset(tiny).problems)


@pytest.mark.skipif(not TRAFFIC.is_dir(), reason=f"the real-data check needs the traffic data set at {TRAFFIC}")
def test_real_traffic_dataset_matches_readme():
    report = check_dataset(TRAFFIC / "dataset.yaml")
    images = {(r.task, r.split): r.images for r in report.counts}
    assert images == {
        ("cls", "train"): 2751, ("cls", "val"): 585, ("cls", "test"): 585,
        ("det", "train"): 527, ("det", "val"): 175, ("det", "test"): 175,
        ("seg", "train"): 367, ("seg", "val"): 101, ("seg", "test"): 117,
        ("unlabeled", "-"): 1950,
    }
    for task, classes in (("cls", 43), ("det", 4), ("seg", 11)):
        assert report.row(task, "train").classes == classes
    # No problems; one warning inherited from the source (Road Sign Detection holds byte-identical
    # copies under two names): a test image whose twin is in det train.
    assert report.problems == []
    assert report.warnings == [
        "test/det/road145.jpg: det test image has the same content as det train image "
        "det/images/road147.jpg (leakage)"
    ]


def test_csv_split_and_mask_mode(tiny):
    root = tiny.parent
    spec = yaml.safe_load(tiny.read_text())
    spec["cls"]["val"] = "cls/val.csv"
    tiny.write_text(yaml.safe_dump(spec))
    (root / "cls/val.csv").write_text("image,label\nval/a/aval0.jpg,a\nval/b/bval0.jpg,b\nval/b/gone.jpg,q\n")
    write_image(root / "seg/masks/train/s0.png")  # RGB, not class indices
    report = check_dataset(tiny)
    assert report.row("cls", "val") == CountRow("cls", "val", 3, 2, labelled=3)
    texts = "\n".join(report.problems)
    assert "cls/val.csv: line 4: unknown class 'q' for image val/b/gone.jpg" in texts
    assert "cls/val/b/gone.jpg: image not found" in texts
    assert "seg/masks/train/s0.png: mask must be single-channel" in texts
    assert len(report.problems) == 3, report.problems
