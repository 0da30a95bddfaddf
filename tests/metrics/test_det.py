import math

import numpy as np
import pytest

from workbench.metrics import DetEvaluator, ap50_per_category, map50

CATS = [{"id": 3, "name": "car"}, {"id": 7, "name": "person"}]
R = 101  # COCO's recall thresholds 0, 0.01, ..., 1


def make_gt(boxes):
    """boxes: list of (image_id, category_id, [x, y, w, h])."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 300} for i in (1, 2)]
    anns = [{"id": k + 1, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for k, (im, c, b) in enumerate(boxes)]
    return {"images": images, "annotations": anns, "categories": CATS}


def det(image_id, category_id, bbox, score):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_perfect_detection_is_one():
    gt = make_gt([(1, 3, [10, 10, 50, 40])])
    assert map50(gt, [det(1, 3, [10, 10, 50, 40], 0.9)]) == pytest.approx(1.0)


def test_false_positive_ranked_first_halves_ap():
    gt = make_gt([(1, 3, [10, 10, 50, 40])])
    dets = [det(1, 3, [200, 200, 30, 30], 0.9),  # FP, higher score
            det(1, 3, [10, 10, 50, 40], 0.8)]    # TP
    # ranked: FP, TP -> precision [0, 1/2], recall [0, 1]; COCO makes precision non-increasing
    # from the right -> [1/2, 1/2]; every recall threshold (0 .. 1) reads 1/2.
    assert map50(gt, dets) == pytest.approx(R * (1 / 2) / R)


def test_false_positive_between_two_hits():
    gt = make_gt([(1, 3, [10, 10, 50, 40]), (2, 3, [100, 100, 20, 20])])
    dets = [det(1, 3, [10, 10, 50, 40], 0.9),      # TP
            det(2, 3, [300, 200, 20, 20], 0.8),    # FP
            det(2, 3, [100, 100, 20, 20], 0.7)]    # TP
    # recall [1/2, 1/2, 1], precision [1, 1/2, 2/3] -> interpolated [1, 2/3, 2/3]
    # thresholds 0.00..0.50 (51 of them) read 1, thresholds 0.51..1.00 (50) read 2/3
    assert map50(gt, dets) == pytest.approx((51 * 1 + 50 * (2 / 3)) / R)


@pytest.mark.parametrize("h, expected", [(49, 0.0), (51, 1.0)])
def test_iou_threshold_is_one_half(h, expected):
    gt = make_gt([(1, 3, [0, 0, 100, 100])])
    # same x-extent, height h inside the gt: IoU = (100 * h) / (100 * 100) = h / 100
    assert map50(gt, [det(1, 3, [0, 0, 100, h], 0.9)]) == pytest.approx(expected)


def test_mean_over_categories_with_gt_only():
    gt = make_gt([(1, 3, [10, 10, 50, 40]), (1, 7, [100, 50, 20, 60])])
    dets = [det(1, 3, [10, 10, 50, 40], 0.9),
            det(1, 7, [300, 200, 20, 20], 0.9), det(1, 7, [100, 50, 20, 60], 0.5)]
    # car AP = 1, person AP = 1/2 (FP ranked first, see above)
    assert map50(gt, dets) == pytest.approx((1 + 1 / 2) / 2)
    per_cat = ap50_per_category(gt, dets)
    assert per_cat == {3: pytest.approx(1.0), 7: pytest.approx(0.5)}
    # a category with no ground truth is left out, however many detections it has
    gt_car = make_gt([(1, 3, [10, 10, 50, 40])])
    dets_car = [det(1, 3, [10, 10, 50, 40], 0.9), det(1, 7, [0, 0, 5, 5], 0.99)]
    assert map50(gt_car, dets_car) == pytest.approx(1.0)
    assert math.isnan(ap50_per_category(gt_car, dets_car)[7])


def test_edge_cases_and_inputs_untouched():
    gt = make_gt([(1, 3, [10, 10, 50, 40])])
    assert map50(gt, []) == 0.0
    assert math.isnan(map50(make_gt([]), [det(1, 3, [0, 0, 5, 5], 0.5)]))
    dets = [det(1, 3, [10, 10, 50, 40], 0.9)]
    map50(gt, dets)
    assert dets == [det(1, 3, [10, 10, 50, 40], 0.9)]  # loadRes adds keys; we pass copies
    assert set(gt["annotations"][0]) == {"id", "image_id", "category_id", "bbox", "area", "iscrowd"}


def test_unknown_ids_raise():
    gt = make_gt([(1, 3, [10, 10, 50, 40])])
    with pytest.raises(ValueError, match="image_id 9"):
        map50(gt, [det(9, 3, [0, 0, 5, 5], 0.5)])
    with pytest.raises(ValueError, match="category_id 4"):
        map50(gt, [det(1, 4, [0, 0, 5, 5], 0.5)])


def test_prints_nothing(capsys):
    gt = make_gt([(1, 3, [10, 10, 50, 40])])
    map50(gt, [det(1, 3, [10, 10, 50, 40], 0.9)])
    assert capsys.readouterr().out == ""


def test_evaluator_matches_hand_value():
    ev = DetEvaluator(CATS)
    # image a: one car, detected perfectly (prediction given as x1, y1, x2, y2)
    ev.process("a.jpg", 400, 300, [[10, 10, 50, 40]], [3], [[10, 10, 60, 50]], [0.9], [3])
    # image b: one person; a false positive ranked above the hit
    ev.process("b.jpg", 400, 300, [[100, 50, 20, 60]], [7],
               [[300, 200, 320, 220], [100, 50, 120, 110]], [0.9, 0.5], [7, 7])
    # image c: no boxes at all
    ev.process("c.jpg", 400, 300, np.zeros((0, 4)), [], np.zeros((0, 4)), [], [])
    assert ev.evaluate() == {"map50": pytest.approx((1 + 1 / 2) / 2)}
    assert ev.ap50_per_category == {3: pytest.approx(1.0), 7: pytest.approx(0.5)}
    with pytest.raises(ValueError, match="twice"):
        ev.process("a.jpg", 400, 300, [], [], [], [], [])
    with pytest.raises(ValueError, match="not known"):
        ev.process("d.jpg", 400, 300, [[0, 0, 5, 5]], [1], [], [], [])
    ev.reset()
    assert math.isnan(ev.evaluate()["map50"])


def random_case(seed: int, n_images: int = 60, n_cats: int = 4) -> tuple[dict, list[dict]]:
    """Ground truth with crowd boxes, images without boxes and a category without any ground truth;
    detections near the truth and at random."""
    rng = np.random.default_rng(seed)
    images = [{"id": 10 * i + 3, "file_name": f"{i}.jpg", "width": 400, "height": 300} for i in range(n_images)]
    annotations, detections = [], []
    for im in images:
        for _ in range(int(rng.integers(0, 5))):
            x, y, w, h = rng.uniform(0, 300), rng.uniform(0, 200), rng.uniform(4, 90), rng.uniform(4, 90)
            cat = int(rng.integers(1, n_cats))  # category n_cats never has ground truth
            annotations.append({"id": len(annotations) + 1, "image_id": im["id"], "category_id": cat,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.1)})
            if rng.random() < 0.8:
                detections.append({"image_id": im["id"], "category_id": cat, "score": float(rng.random()),
                                   "bbox": [x + rng.normal(0, 4), y + rng.normal(0, 4), w * rng.uniform(0.8, 1.2), h]})
        for _ in range(int(rng.integers(0, 20))):
            detections.append({"image_id": im["id"], "category_id": int(rng.integers(1, n_cats + 1)),
                               "score": float(rng.random()), "bbox": [rng.uniform(0, 300), rng.uniform(0, 200),
                                                                      rng.uniform(4, 90), rng.uniform(4, 90)]})
    categories = [{"id": c, "name": f"c{c}"} for c in range(1, n_cats + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


@pytest.mark.parametrize("seed", range(5))
def test_faster_coco_eval_gives_pycocotools_map50(seed):
    gt, detections = random_case(seed)
    reference = map50(gt, detections)
    assert 0 < reference < 1
    assert map50(gt, detections, backend="faster-coco-eval") == reference  # to the last digit
    subset = detections[: len(detections) // 3]
    assert map50(gt, subset, backend="faster-coco-eval") == map50(gt, subset)


def test_faster_backend_keeps_the_edge_cases():
    gt, _ = random_case(0)
    assert map50(gt, [], backend="faster-coco-eval") == 0.0
    empty = {**gt, "annotations": []}
    assert math.isnan(map50(empty, [], backend="faster-coco-eval"))
    with pytest.raises(ValueError, match="backend"):
        map50(gt, [], backend="detectron2")
