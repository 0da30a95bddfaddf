"""`allinone-json` against a port of the organisers' own scorer (tests/formats/organisers_eval.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TRAFFIC
from tests.formats import organisers_eval
from tests.score.test_score import truth_submission
from workbench.data.spec import DatasetSpec, read_coco
from workbench.io import read_mask
from workbench.records.ensemble import Member
from workbench.ensemble.spec import equal_spec
from workbench.formats import get_format
from workbench.records import Submission
from workbench.metrics.scoring import score
from workbench.score import score_submission
from workbench.submit import SubmitConfig, submit


def test_port_scores_a_written_submission_as_wb_score(tiny_run, tiny_data, tmp_path):
    spec = equal_spec([Member(str(tiny_run)), Member(str(tiny_run), "hflip@det+seg")])
    submit(SubmitConfig(spec, str(tiny_data), "blend", device="cpu", out_dir=str(tmp_path)), progress=False)
    ours = score_submission(tmp_path / "blend", tiny_data, miou="organisers")
    theirs = organisers_eval.score_like_organisers(tmp_path / "blend", tiny_data, tmp_path / "port")
    assert theirs["cls_top1"] == ours["cls_top1"]
    assert theirs["det_map50"] == ours["det_map50"]
    assert theirs["seg_miou"] == pytest.approx(ours["seg_miou"], abs=1e-3)


def test_port_agrees_on_an_imperfect_submission(tiny_data, tmp_path):
    # the synthetic truth with every other class wrong, the boxes of every other image dropped, masks shifted
    spec = DatasetSpec(tiny_data)
    sub = truth_submission(spec)
    for name in sorted(sub.cls)[::2]:
        sub.cls[name] = (sub.cls[name] + 1) % len(spec.cls_classes)
    dropped = sorted({box["image"] for box in sub.det})[::2]
    sub.det = [box for box in sub.det if box["image"] not in dropped]
    sub.seg = {n: np.roll(m, 3, axis=1) for n, m in sub.seg.items()}
    get_format("allinone-json").write(sub, tmp_path)
    ours = score_submission(tmp_path, tiny_data, miou="organisers")
    theirs = organisers_eval.score_like_organisers(tmp_path, tiny_data, tmp_path / "port")
    assert theirs["cls_top1"] == ours["cls_top1"] == pytest.approx(1 - len(sorted(sub.cls)[::2]) / len(sub.cls))
    assert theirs["det_map50"] == ours["det_map50"]
    assert 0.2 < ours["det_map50"] < 1  # boxes matched to their images by id: kept images score
    assert theirs["seg_miou"] == pytest.approx(ours["seg_miou"], abs=1e-3)
    assert ours["seg_miou"] < 1


def test_port_fails_on_the_earlier_layout(tiny_data, tmp_path):
    earlier = {"cls": {"sign_00000.jpg": 1}, "dec": [], "seg": {}}
    (tmp_path / "submission.json").write_text(json.dumps(earlier))
    with pytest.raises(AttributeError, match="'str' object has no attribute 'keys'"):
        organisers_eval.score_like_organisers(tmp_path, tiny_data, tmp_path / "port")


@pytest.mark.skipif(not TRAFFIC.is_file(), reason=f"the real-data agreement check needs {TRAFFIC}")
def test_port_agrees_on_real_labels(tmp_path):
    """Imperfect predictions made from the real VAL labels (never truth/), written, scored both ways."""
    spec = DatasetSpec(TRAFFIC)
    rng = np.random.default_rng(0)
    k_cls = len(spec.cls_classes)
    cls = {s.name: (s.label + (i % 3 == 0)) % k_cls for i, s in enumerate(spec.cls_samples("val"))}
    samples = spec.det_samples("val")
    det = [{"image": s.name, "category_id": int(lab), "bbox": (box + rng.normal(0, 3, 4) * [1, 1, 0, 0]).tolist(),
            "score": float(rng.random())}
           for s in samples for box, lab in zip(s.boxes, s.labels) if rng.random() < 0.8]
    seg = {}
    for s in spec.seg_samples("val"):
        mask = read_mask(s.mask)
        shifted = np.roll(mask, (2, -3), axis=(0, 1))  # real structures (poles, signs) moved off their truth
        seg[s.name] = np.where(shifted == 255, 0, shifted).astype(np.uint8)
    sub = Submission(cls=cls, det=det, seg=seg, cls_classes=spec.cls_classes, seg_num_classes=len(spec.seg_classes),
                     det_image_ids={s.name: s.image_id for s in samples})
    fmt = get_format("allinone-json")
    fmt.write(sub, tmp_path)

    seg_sizes = {n: m.shape for n, m in seg.items()}
    back = fmt.read(tmp_path, seg_sizes=seg_sizes, det_image_ids=sub.det_image_ids)
    assert back == Submission(cls=cls, det=back.det, seg=seg, det_image_ids=sub.det_image_ids,
                              seg_num_classes=back.seg_num_classes)  # masks back pixel for pixel
    ours = score(back, spec.ground_truth("val"), miou="organisers")

    cls_gt = organisers_eval.write_cls_truth({s.name: s.label for s in spec.cls_samples("val")}, tmp_path / "cls.txt")
    det_gt = spec.split_paths("det", "val")["annotations"]
    assert read_coco(det_gt)["images"]  # the organisers' annotation file of these images: ids as written
    masks = spec.seg_samples("val")[0].mask.parent
    acc, ap, miou, _ = organisers_eval.main(tmp_path / "submission.json", cls_gt, str(det_gt), str(masks),
                                            len(spec.seg_classes), tmp_path / "port")
    assert acc == ours["cls_top1"] and acc == pytest.approx(1 - len(range(0, len(cls), 3)) / len(cls))
    assert ap == ours["det_map50"]
    assert miou == pytest.approx(ours["seg_miou"], abs=1e-3)
