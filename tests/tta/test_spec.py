"""Tests of workbench/tta/spec.py: specs read the view registry, and old specs keep their cache keys."""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import pytest
import torch

from tests.tta.test_views import bounding_box, box_image
from workbench.errors import WorkbenchError
from workbench.tta.spec import TaskTTA, flip_tta, multiscale_tta, parse_tta, ten_crop_tta
from workbench.tta.views import HFlip, View, list_views, register_view

H, W = 64, 96  # non-square inputs


@register_view("vflip")
@dataclass(frozen=True)
class VFlip(View):
    """Mirror top-bottom: a view registered outside the tta package, with its own undo."""

    key = "vflip"

    def augment(self, images):
        return images.flip(-2)

    def undo_boxes(self, boxes, size):
        h = size[0]
        out = boxes.clone()
        out[:, 1], out[:, 3] = h - boxes[:, 3], h - boxes[:, 1]
        return out

    def undo_seg(self, logits, size):
        return super().undo_seg(logits.flip(-2), size)  # View's: resized to `size`


@register_view("gain")
@dataclass(frozen=True)
class Gain(View):
    """Multiply the pixels by `factor`: photometric, nothing to undo; a view that takes an argument."""

    factor: float = 1.0

    @property
    def key(self) -> str:
        return f"gain{self.factor:g}"

    def augment(self, images):
        return images * self.factor


# Keys derived by hand from the spec grammar: parts "hflip", "s" + scales joined by "-",
# "crop{5|10}-{fraction}", in that order whatever the item order; "none" for no part; one key
# for all tasks when they agree, else "cls-K__det-K__seg-K".
OLD_KEYS = {
    None: "none",
    "": "none",
    "none": "none",
    "hflip": "hflip",
    "flip": "hflip",
    "ms": "s0.75-1-1.25",
    "scales=0.75:1:1.25": "s0.75-1-1.25",
    "flip-ms": "hflip_s0.75-1-1.25",
    "scales=2:1,hflip": "hflip_s2-1",
    "hflip@det+seg": "cls-none__det-hflip__seg-hflip",
    "tencrop": "cls-crop10-0.875__det-none__seg-none",
    "fivecrop=0.8": "cls-crop5-0.8__det-none__seg-none",
    "flip,tencrop": "cls-hflip_crop10-0.875__det-hflip__seg-hflip",
    "tencrop=0.9,fivecrop": "cls-crop5-0.875__det-none__seg-none",  # the last crop item wins
    "scales=0.5,scales=2": "s2",
    "hflip@det+seg,ms,tencrop@cls":
        "cls-s0.75-1-1.25_crop10-0.875__det-hflip_s0.75-1-1.25__seg-hflip_s0.75-1-1.25",
    "ms@seg,flip@det": "cls-none__det-hflip__seg-s0.75-1-1.25",
}


@pytest.mark.parametrize("text", list(OLD_KEYS), ids=repr)
def test_existing_specs_keep_their_cache_keys(text):
    assert parse_tta(text).key == OLD_KEYS[text]


def test_presets_keep_their_keys():
    assert flip_tta().key == "hflip"
    assert multiscale_tta().key == "s0.75-1-1.25"
    assert multiscale_tta((0.5, 1.0)).key == "s0.5-1"
    assert ten_crop_tta().key == "cls-crop10-0.875__det-none__seg-none"
    assert ten_crop_tta() == parse_tta("tencrop@cls")


def test_existing_specs_keep_their_views_in_order():
    # scale outer, flip inner; each view is Scale, then crop, then flip (scale 1 is the identity)
    assert [v.key for v in parse_tta("scales=1:2,hflip").views("det")] == ["id", "hflip", "s2", "s2+hflip"]
    # tencrop's mirrors and hflip's are one and the same flip
    assert [v.key for v in parse_tta("flip,tencrop").views("cls")] == ["crop5-0.875", "crop5-0.875+hflip"]
    assert parse_tta("flip,tencrop").cls == TaskTTA(hflip=True, crops=10)


def test_a_registered_view_is_usable_in_a_spec():
    spec = parse_tta("vflip@det")
    assert spec.det == TaskTTA(added=(("vflip", ()),)) and spec.cls == spec.seg == TaskTTA()
    assert [v.key for v in spec.views("det")] == ["id", "vflip"]
    assert [v.key for v in spec.views("cls")] == [v.key for v in spec.views("seg")] == ["id"]
    assert spec.key == "cls-none__det-vflip__seg-none"
    assert parse_tta("vflip").key == "vflip"  # valid for every task, as View says
    assert "vflip" in list_views() and "gain" in list_views()


def test_a_registered_view_composes_after_the_built_ins():
    spec = parse_tta("hflip,vflip@det")
    # (id, hflip) x (id, vflip), the registered view innermost
    assert [v.key for v in spec.views("det")] == ["id", "vflip", "hflip", "hflip+vflip"]
    assert spec.key == "cls-hflip__det-hflip_vflip__seg-hflip"
    # registered views are sorted by name: the item order does not change views or key
    assert parse_tta("vflip,gain=2") == parse_tta("gain=2,vflip")
    assert parse_tta("vflip,gain=2").key == "gain=2_vflip"


def test_vflip_undoes_boxes_and_masks():
    box = torch.tensor([[10.0, 8.0, 42.0, 40.0]])
    # mirrored top-bottom in a 64 px high image: y -> 64 - y, so y1, y2 = 64 - 40, 64 - 8
    assert VFlip().undo_boxes(box, (H, W)).tolist() == [[10.0, 64.0 - 40.0, 42.0, 64.0 - 8.0]]
    for view in parse_tta("hflip,vflip@det").views("det"):
        moved = view.augment(box_image(box))
        assert torch.equal(view.undo_boxes(bounding_box(moved)[None], (H, W)), box), view.key
    mask = torch.zeros(H, W, dtype=torch.long)
    mask[10:40, 20:70] = 1
    logits = torch.nn.functional.one_hot(mask, 2).permute(2, 0, 1)[None].float()
    for view in parse_tta("hflip,vflip@seg").views("seg"):
        assert torch.equal(view.undo_seg(view.augment(logits), (H, W)), logits), view.key


def test_a_registered_view_takes_numbers_and_keys_them():
    spec = parse_tta("gain=1.5@cls")
    assert [v.key for v in spec.views("cls")] == ["id", "gain1.5"]
    assert spec.views("cls")[1].augment(torch.ones(1, 3, 8, 8)).mean().item() == 1.5
    assert spec.key == "cls-gain=1.5__det-none__seg-none"
    assert parse_tta("gain=1.50").key == parse_tta("gain=1.5").key == "gain=1.5"
    assert parse_tta("gain=1.5,gain=2").key == "gain=2"  # a second item of the same name replaces the first


def test_registered_views_get_distinct_cache_keys():
    specs = ["none", "hflip", "vflip", "gain", "gain=1.5", "gain=2", "vflip,gain=1.5", "hflip,vflip",
             "vflip@det", "scales=1.5", "fivecrop", "tencrop"]
    keys = [parse_tta(s).key for s in specs]
    assert len(set(keys)) == len(keys), keys


def test_a_registered_view_runs_through_predict(tiny_run, tiny_data, tmp_path):
    """`mtwb predict RUN --tta vflip@det`: a cache entry named by the key, with the view's predictions."""
    from workbench.predict import PredictConfig, predict_run

    run = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("preds"))
    _, folder, reused = predict_run(PredictConfig(str(run), str(tiny_data), "val", "cpu", tta="vflip@det"),
                                    progress=False)
    assert not reused and folder == run / "preds" / "val" / "cls-none__det-vflip__seg-none"
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["views"] == {"cls": ["id"], "det": ["id", "vflip"], "seg": ["id"]}


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(WorkbenchError) as err:
        parse_tta("hflip,rotate@det")
    message = str(err.value)
    assert "'rotate@det'" in message
    for name in list_views() + ["flip", "ms", "flip-ms"]:
        assert name in message
    assert {"none", "hflip", "scales", "fivecrop", "tencrop", "vflip"} <= set(list_views())


@pytest.mark.parametrize("bad, words", [
    ("fivecrop@det", "cls only"),
    ("tencrop@cls+seg", "cls only"),
    ("scales=0:1", "must be positive"),
    ("gain=x", "expected numbers"),
    ("vflip=3", "does not take"),
    ("gain=1:2", "does not take"),
    ("vflip@depth", "unknown task"),
])
def test_bad_items_raise_naming_the_item(bad, words):
    with pytest.raises(WorkbenchError, match=words) as err:
        parse_tta(bad)
    assert repr(bad) in str(err.value)


def test_register_view_refuses_taken_or_unusable_names():
    with pytest.raises(ValueError, match="already registered"):
        register_view("hflip")(HFlip)
    with pytest.raises(ValueError, match="lowercase letters"):
        register_view("v_flip")(VFlip)  # "_" joins the parts of a cache key
    assert "v_flip" not in list_views()


def test_a_registered_view_needs_its_own_key():
    @dataclass(frozen=True)
    class Nameless(View):  # inherits the identity's key "id": compose() would drop it silently
        pass

    register_view("nameless")(Nameless)
    with pytest.raises(WorkbenchError, match="key"):
        parse_tta("nameless")
