"""Tests of the Manifest and EnsembleSpec records: round trip, older files read, newer refused."""
from __future__ import annotations

import json

import pytest
import yaml

from workbench.errors import DataError
from workbench.records.ensemble import EnsembleSpec, FusionConfig, Member, TaskBlend
from workbench.records.manifest import Manifest


def spec() -> EnsembleSpec:
    a, b = Member("runs/a"), Member("b", "hflip@det+seg")
    return EnsembleSpec({"cls": TaskBlend((a,), (1.0,)), "det": TaskBlend((a, b), (1.0, 3.0), FusionConfig("nms", 0.5)),
                         "seg": TaskBlend((b,), (2.0,))}, {"val": {"blend": {"score": 0.5}}})


def test_ensemble_spec_round_trip_and_versions(tmp_path):
    path = tmp_path / "e.yaml"
    spec().save(path)
    raw = yaml.safe_load(path.read_text())
    assert raw["version"] == 1 and raw["val"] == {"blend": {"score": 0.5}}
    assert EnsembleSpec.load(path) == spec()
    del raw["version"]  # a spec written before the field existed
    path.write_text(yaml.safe_dump(raw))
    assert EnsembleSpec.load(path) == spec()
    raw["version"] = 2
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"e.yaml: ensemble spec version 2 is newer"):
        EnsembleSpec.load(path)


def test_manifest_round_trip_rebuilds_the_blend(tmp_path):
    s = spec()
    manifest = Manifest(name="x", format="coco",
                        blend={t: {"members": [m.ref for m in s.tasks[t].members], "weights": list(s.tasks[t].weights)}
                               for t in s.tasks},
                        fusion={"det": {"det_method": "nms", "iou_thr": 0.5, "skip_box_thr": 0.0}})
    manifest.write(tmp_path)
    assert Manifest.read(tmp_path) == manifest
    assert manifest.ensemble_spec().tasks == s.tasks
    with pytest.raises(DataError, match="no blend to rebuild"):
        Manifest(name="x", format="coco").ensemble_spec()


@pytest.mark.parametrize("content, message", [
    ({"name": "x", "format": "coco", "version": 5}, "version 5 is newer"),
    ({"name": "x"}, "lacks format"),
    ([1], "not an object"),
])
def test_bad_manifest_is_refused_naming_the_file(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(json.dumps(content))
    with pytest.raises(DataError, match=message) as e:
        Manifest.read(tmp_path)
    assert str(tmp_path / "manifest.json") in str(e.value)
