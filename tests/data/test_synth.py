"""Tests of workbench/data/synth.py: layout, schema, labels and determinism of the synthetic set."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from workbench.data import synth
from workbench.io import hash_file

REAL_YAML = Path("/work/shared/data/traffic/dataset.yaml")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hash_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _files(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == suffix)


def _paths(node) -> list[str]:
    """Every relative path in a dataset.yaml mapping (all string leaves except the name)."""
    if isinstance(node, dict):
        return [p for key, value in node.items() if key != "name" for p in _paths(value)]
    return [node] if isinstance(node, str) else []


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """The tiny synthetic set, seed 0; returns its root folder."""
    return synth.make_synth_dataset(tmp_path_factory.mktemp("synth") / "traffic", seed=0, size="tiny").parent


@pytest.fixture(scope="module")
def spec(tiny) -> dict:
    return yaml.safe_load((tiny / "dataset.yaml").read_text())


def test_same_seed_same_bytes_other_seed_differs(tiny, tmp_path):
    again = synth.make_synth_dataset(tmp_path / "again", seed=0, size="tiny").parent
    other = synth.make_synth_dataset(tmp_path / "other", seed=1, size="tiny").parent
    assert _hashes(again) == _hashes(tiny)
    first, second = _hashes(tiny), _hashes(other)
    images = [name for name in first if name.endswith((".jpg", ".png")) and name in second]
    assert images and all(first[name] != second[name] for name in images if name.endswith(".jpg"))


def test_every_path_in_dataset_yaml_exists(tiny, spec):
    assert spec["name"] == "synth"
    for rel in _paths(spec):
        assert (tiny / rel).exists(), rel


@pytest.mark.skipif(not REAL_YAML.is_file(), reason="real benchmark not available")
def test_dataset_yaml_has_the_real_keys_and_paths(spec):
    real = yaml.safe_load(REAL_YAML.read_text())
    assert {**spec, "name": real["name"]} == real


def test_split_counts(tiny):
    classes = (tiny / "cls" / "classes.txt").read_text().splitlines()
    assert len(classes) == 8
    for split, per_class in (("train", 3), ("val", 2)):
        folders = sorted(p.name for p in (tiny / "cls" / split).iterdir())
        assert folders == classes
        assert all(len(_files(tiny / "cls" / split / c, ".jpg")) == per_class for c in classes)
    assert len(_files(tiny / "test" / "cls", ".jpg")) == 8 * 2
    for split, count in (("train", 6), ("val", 4)):
        coco = json.loads((tiny / "det" / f"{split}.json").read_text())
        assert len(coco["images"]) == count
        assert len(_files(tiny / "seg" / "images" / split, ".jpg")) == count
        assert len(_files(tiny / "seg" / "masks" / split, ".png")) == count
    assert len(_files(tiny / "det" / "images", ".jpg")) == 6 + 4
    assert len(_files(tiny / "test" / "det", ".jpg")) == 4
    assert len(_files(tiny / "test" / "seg", ".jpg")) == len(_files(tiny / "truth" / "seg", ".png")) == 4
    unlabeled = [p.name for p in _files(tiny / "unlabeled", ".jpg")]
    assert sum(n.startswith("crop_") for n in unlabeled) == 4
    assert sum(n.startswith("scene_") for n in unlabeled) == 2


def test_coco_files_are_consistent(tiny):
    sources = {"det/train.json": tiny / "det" / "images", "det/val.json": tiny / "det" / "images",
               "truth/det.json": tiny / "test" / "det"}
    all_ids = []
    for rel, folder in sources.items():
        coco = json.loads((tiny / rel).read_text())
        assert list(coco) == ["info", "categories", "images", "annotations"]
        assert [c["id"] for c in coco["categories"]] == [1, 2, 3]
        images = {im["id"]: im for im in coco["images"]}
        all_ids += list(images)
        for im in images.values():
            with Image.open(folder / im["file_name"]) as pil:
                assert pil.format == "JPEG" and pil.mode == "RGB"
                assert pil.size == (im["width"], im["height"])
        assert len(coco["annotations"]) >= len(images)  # 1-4 objects a scene
        for ann in coco["annotations"]:
            im = images[ann["image_id"]]
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= im["width"] and y + h <= im["height"]
            assert ann["area"] == w * h and ann["iscrowd"] == 0
            assert ann["category_id"] in {1, 2, 3}
    assert len(all_ids) == len(set(all_ids))
    test_names = sorted(im["file_name"] for im in json.loads((tiny / "truth/det.json").read_text())["images"])
    assert test_names == [p.name for p in _files(tiny / "test" / "det", ".jpg")]
    # the organisers' test image list: the truth's images (same ids, names, sizes) and categories, no annotations
    info = json.loads((tiny / "test/det_info.json").read_text())
    truth = json.loads((tiny / "truth/det.json").read_text())
    assert info["images"] == truth["images"] and info["categories"] == truth["categories"]
    assert "annotations" not in info


def test_masks_match_images_and_cover_the_classes(tiny):
    n_classes = len((tiny / "seg" / "classes.txt").read_text().splitlines())
    assert n_classes >= 6
    pairs = [(tiny / "seg" / "images" / s, tiny / "seg" / "masks" / s) for s in ("train", "val")]
    pairs.append((tiny / "test" / "seg", tiny / "truth" / "seg"))
    seen = set()
    for image_dir, mask_dir in pairs:
        assert [p.stem for p in _files(image_dir, ".jpg")] == [p.stem for p in _files(mask_dir, ".png")]
        for image_path in _files(image_dir, ".jpg"):
            with Image.open(image_path) as image, Image.open(mask_dir / f"{image_path.stem}.png") as mask:
                assert mask.mode == "L" and mask.size == image.size
                values = set(np.unique(np.asarray(mask)).tolist())
            assert values <= set(range(n_classes)) | {255}
            if image_dir.name == "train":
                seen |= values - {255}
    assert len(seen) >= 5


def test_truth_cls_covers_exactly_the_test_images(tiny):
    with open(tiny / "truth" / "cls.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["image", "label"]
    images = [row[0] for row in rows[1:]]
    assert sorted(images) == [p.name for p in _files(tiny / "test" / "cls", ".jpg")]
    assert images[0] == "sign_00000.jpg"
    classes = (tiny / "cls" / "classes.txt").read_text().splitlines()
    labels = [row[1] for row in rows[1:]]
    assert set(labels) <= set(classes) and all(labels.count(c) == 2 for c in classes)


def test_det_boxes_are_tight_around_the_drawn_object():
    # Each object drawn in its real colours alone on a black canvas (no colour is pure black):
    # its lit pixels must span exactly the COCO box the generator writes for it.
    rng = np.random.default_rng(7)
    checked = 0
    for width, height in synth.DET_SIZES * 10:
        for obj, (x, y, w, h) in synth.sample_det_objects(rng, width, height):
            canvas = Image.new("RGB", (width, height), (0, 0, 0))
            synth.DET_DRAWERS[obj.category](ImageDraw.Draw(canvas), obj.box, synth.object_palette(rng))
            ys, xs = np.nonzero(np.asarray(canvas).any(axis=2))
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
            checked += 1
    assert checked >= 20


def test_unknown_size_raises(tmp_path):
    with pytest.raises(ValueError, match="size"):
        synth.make_synth_dataset(tmp_path / "x", size="huge")
    assert not (tmp_path / "x").exists()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(synth, "_write_seg", fail)
    with pytest.raises(KeyboardInterrupt):
        synth.make_synth_dataset(tmp_path / "out", size="tiny")
    assert list(tmp_path.iterdir()) == []
