import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.formats import SubmissionFormat, get_format, list_formats, register_format
from workbench.records import Submission
from workbench.formats import base


def test_builtin_formats_are_registered():
    assert {"allinone-json", "coco"} <= set(list_formats())
    assert list_formats() == sorted(list_formats())
    assert get_format("coco").name == "coco"
    assert get_format("allinone-json").name == "allinone-json"


def test_unknown_format_lists_known_ones():
    with pytest.raises(WorkbenchError) as info:
        get_format("kaggle-csv")
    assert "kaggle-csv" in str(info.value)
    for name in list_formats():
        assert name in str(info.value)


def test_register_a_plugin(monkeypatch):
    monkeypatch.setattr(base, "_FORMATS", dict(base._FORMATS))

    @register_format("dummy")
    class Dummy(SubmissionFormat):
        def write(self, sub, out_dir):
            return []

        def read(self, out_dir, seg_sizes=None, cls_classes=None, seg_num_classes=None):
            return Submission()

    assert "dummy" in list_formats()
    assert isinstance(get_format("dummy"), Dummy)
    with pytest.raises(WorkbenchError, match="twice"):
        register_format("dummy")(type("Other", (SubmissionFormat,), {}))


def test_submission_equality_compares_masks_by_value():
    a = Submission(seg={"x": np.zeros((2, 2), np.uint8)}, seg_num_classes=2)
    b = Submission(seg={"x": np.zeros((2, 2), np.int64)}, seg_num_classes=2)
    c = Submission(seg={"x": np.eye(2, dtype=np.uint8)}, seg_num_classes=2)
    assert a == b and a != c
