"""Tests of workbench/data/spec.py's public reading methods on the tiny synthetic set."""
from __future__ import annotations

import shutil

import pytest

from workbench.data.spec import DatasetSpec
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
