"""Tests of workbench/data/spec.py: its public reading methods on the tiny synthetic set, strict and collecting."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from workbench.data.spec import (DatasetSpec, Problems, coco_annotations, coco_images, coco_to_samples, read_coco,
                                 read_image_ids)
from workbench.errors import DataError


def test_split_paths_and_classes(tiny_data):
    spec = DatasetSpec(tiny_data)
    root = tiny_data.parent.resolve()
    assert spec.split_paths("cls", "train") == root / "cls" / "train"
    assert spec.split_paths("det", "val") == {"images": root / "det" / "images", "annotations": root / "det" / "val.json"}
    assert spec.split_paths("seg", "test") == root / "test" / "seg"
    assert spec.classes_file("seg") == root / "seg" / "classes.txt"
    assert spec.has_split("det", "test") and not spec.has_split("det", "unlabeled")
    with pytest.raises(DataError, match="det has no 'nope' split"):
        spec.split_paths("det", "nope")


def test_another_unlabeled_folder(tiny_data, tmp_path):
    spec = DatasetSpec(tiny_data)
    other = tmp_path / "more"
    other.mkdir()
    first = spec.unlabeled_images()[0]
    shutil.copy(first, other / "extra.jpg")
    assert [p.name for p in DatasetSpec(tiny_data, unlabeled=other).unlabeled_images()] == ["extra.jpg"]
    assert DatasetSpec(tiny_data, unlabeled=other).cls_samples("unlabeled")[0].path == (other / "extra.jpg").resolve()


def broken_coco(path: Path) -> Path:
    """A COCO file with a repeated image id (a note), an entry that is no object, an annotation of an
    unknown image, and one with an unknown category and a 3-number box (failures)."""
    path.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 32, "height": 24},
                   {"id": 1, "file_name": "b.jpg", "width": 32, "height": 24}, 7],
        "annotations": [{"id": 1, "image_id": 9, "bbox": [0, 0, 4, 4], "category_id": 1},
                        {"id": 2, "image_id": 1, "bbox": [0, 0, 4], "category_id": 5}],
        "categories": [{"id": 1, "name": "stop"}],
    }))
    return path


def test_coco_readers_collect_every_problem_or_raise_the_first(tmp_path):
    path = broken_coco(tmp_path / "train.json")
    problems = Problems()
    coco = read_coco(path, problems=problems)
    images = {}
    for im in coco_images(coco, path, problems):
        images.setdefault(im.id, im)
    boxes = list(coco_annotations(coco, path, images, {1}, problems))
    assert list(dict.fromkeys(e.problem for e in problems.errors)) == [
        "image id 1 used by 2 images",
        "images[2] is not an object",
        "annotation 1: unknown image_id 9",
        "annotation 2 of a.jpg: unknown category_id 5",
        "annotation 2 of a.jpg: bbox must be 4 numbers [x, y, w, h], got [0, 0, 4]",
    ]
    assert all(e.path == str(path) for e in problems.errors)
    # read on past each problem: both named images, the annotation whose image is known (box None)
    assert [im.file_name for im in images.values()] == ["a.jpg"] and len(boxes) == 1 and boxes[0].bbox is None
    # strict: the repeated id is only a note (the samples never needed unique ids); the first failure raises
    with pytest.raises(DataError, match=r"train.json: images\[2\] is not an object"):
        coco_to_samples(read_coco(path), tmp_path, path, {1})


def test_image_list_ids_must_be_unique_integers(tmp_path):
    path = tmp_path / "info.json"
    path.write_text(json.dumps({"images": [{"id": 7, "file_name": "a.jpg"}, {"id": 7, "file_name": "b.jpg"}]}))
    with pytest.raises(DataError, match="image id 7 used by 2 images"):
        read_image_ids(path)
    path.write_text(json.dumps({"images": [{"id": "7", "file_name": "a.jpg"}]}))
    with pytest.raises(DataError, match="image a.jpg: id 7 is not an integer"):
        read_image_ids(path)


def test_spec_with_a_collector_reads_on_where_the_strict_one_raises(tiny_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data.parent, root)
    first_class = sorted((root / "cls/train").iterdir())[0]
    shutil.copytree(first_class, root / "cls/train/zebra")               # a class folder not in classes.txt
    (root / "cls/classes.txt").write_text((root / "cls/classes.txt").read_text() + "extra\n")  # no folder: a note
    mask = sorted((root / "seg/masks/train").iterdir())[0]
    mask.unlink()                                                          # an image without its mask

    strict = DatasetSpec(root / "dataset.yaml")
    with pytest.raises(DataError, match="zebra: class folder not in cls/classes.txt"):
        strict.cls_samples("train")
    with pytest.raises(DataError, match=f"{mask.name}: mask missing for image seg/images/train/{mask.stem}.jpg"):
        strict.seg_samples("train")

    problems = Problems()
    spec = DatasetSpec(root / "dataset.yaml", problems=problems)
    labels = list(spec.cls_labels("train"))
    pairs = list(spec.seg_pairs("train"))
    assert len(labels) == len(DatasetSpec(tiny_data).cls_samples("train")) + len(list(first_class.iterdir()))
    assert sum(m is None for _, m in pairs) == 1 and len(pairs) == len(list((root / "seg/images/train").iterdir()))
    assert [e.problem for e in problems.errors] == [
        "class folder not in cls/classes.txt",
        "no folder for class 'extra'",
        f"mask missing for image seg/images/train/{mask.stem}.jpg",
    ]
