"""Tests of workbench/ensemble/bootstrap.py: resampled metrics against hand-derived values and, for
mAP50, against pycocotools on data where the resampled images really are duplicated."""
from __future__ import annotations

import numpy as np
import pytest

from workbench.ensemble.bootstrap import (
    bootstrap_means,
    bootstrap_miou,
    map50_resamples,
    paired_differences,
    percentile_interval,
    resample_counts,
    resample_indices,
)
from workbench.metrics.det import map50

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def gt_of(images: list[list[tuple[int, list[float]]]]) -> dict:
    """COCO ground truth; image i (id i + 1) holds the (category, [x, y, w, h]) boxes images[i]."""
    anns, ims = [], []
    for i, boxes in enumerate(images, start=1):
        ims.append({"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100})
        for cat, box in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
    return {"images": ims, "annotations": anns, "categories": CATS}


def dets_of(per_image: list[list[tuple[int, list[float], float]]]) -> list[dict]:
    """COCO results; per_image[i] lists (category, [x, y, w, h], score) on image id i + 1."""
    return [{"image_id": i, "category_id": c, "bbox": b, "score": s}
            for i, dets in enumerate(per_image, start=1) for c, b, s in dets]


# Two categories, three images; every score distinct so that no tie can reorder matches.
IMAGES = [[(1, [10, 10, 20, 20])], [(1, [50, 50, 20, 20]), (2, [0, 0, 30, 30])], [(2, [60, 10, 20, 20])]]
DETS = [[(1, [10, 10, 20, 20], 0.9)],                                         # hit
        [(1, [0, 60, 20, 20], 0.95), (1, [50, 50, 20, 20], 0.5), (2, [5, 5, 30, 30], 0.4)],  # miss, hit, hit
        [(2, [60, 10, 20, 20], 0.8), (1, [70, 70, 10, 10], 0.3)]]             # hit, miss


def resampled_data(sample: list[int]) -> tuple[dict, list[dict]]:
    """The data set that really holds the images `sample` (0-based, repeats under new ids)."""
    return gt_of([IMAGES[i] for i in sample]), dets_of([DETS[i] for i in sample])


def test_resample_indices_are_seeded_and_in_range():
    a = resample_indices(7, 20, np.random.default_rng(3))
    b = resample_indices(7, 20, np.random.default_rng(3))
    assert a.shape == (20, 7) and np.array_equal(a, b) and a.min() >= 0 and a.max() <= 6


def test_resample_counts_by_hand():
    idx = np.array([[0, 0, 2], [1, 2, 2]])
    assert resample_counts(idx, 4).tolist() == [[2, 0, 1, 0], [0, 1, 2, 0]]


def test_bootstrap_means_and_paired_differences_by_hand():
    correct = np.array([[1, 1, 0, 0], [1, 0, 1, 1]])  # row 0: images 0, 1 right; row 1: 0, 2, 3
    idx = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [2, 3, 2, 3]])
    means = bootstrap_means(correct, idx)
    assert means.tolist() == [[2 / 4, 4 / 4, 0 / 4], [3 / 4, 4 / 4, 4 / 4]]
    diff = paired_differences(means, ref=0)
    assert diff[0].tolist() == [0, 0, 0]
    assert diff[1] == pytest.approx([3 / 4 - 2 / 4, 0, 1])


def test_bootstrap_miou_by_hand():
    cm0 = np.array([[2, 1], [0, 1]])  # IoU = 2 / (2 + 1 + 0), 1 / (1 + 1 + 0)
    cm1 = np.array([[1, 0], [1, 2]])  # IoU = 1 / (1 + 0 + 1), 2 / (2 + 1 + 0)
    idx = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    got = bootstrap_miou(np.stack([cm0, cm1])[None], idx)  # one row
    assert got.shape == (1, 4)
    assert got[0] == pytest.approx([(2 / 3 + 1 / 2) / 2,   # 2 x cm0: IoU does not change with scale
                                    (3 / 5 + 3 / 5) / 2,   # cm0 + cm1 = [[3, 1], [1, 3]]
                                    (3 / 5 + 3 / 5) / 2,
                                    (1 / 2 + 2 / 3) / 2])
    # an image drawn twice counts twice: cm0 + 2 cm1 = [[4, 1], [2, 5]] -> 4 / 7, 5 / 8
    three = bootstrap_miou(np.stack([cm0, cm1, cm1])[None], np.array([[0, 1, 1]]))
    assert three[0, 0] == pytest.approx((4 / 7 + 5 / 8) / 2)


def test_percentile_interval_by_hand():
    samples = np.arange(101, dtype=float)  # the p-th percentile of 0..100 (linear interpolation) is p
    assert percentile_interval(samples, 0.95).tolist() == pytest.approx([2.5, 97.5])
    assert percentile_interval(samples, 0.5).tolist() == pytest.approx([25.0, 75.0])
    with_nan = np.concatenate([samples, [np.nan] * 7])  # NaN resamples are left out
    assert percentile_interval(with_nan).tolist() == pytest.approx([2.5, 97.5])
    assert np.isnan(percentile_interval(np.full(5, np.nan))).all()


def test_identical_rows_give_a_zero_interval_and_a_seed_gives_the_same_interval():
    values = np.random.default_rng(1).random((1, 30))
    rows = np.concatenate([values, values])  # (2, 30): the same per-image values twice

    def interval(seed):
        idx = resample_indices(30, 200, np.random.default_rng(seed))
        return percentile_interval(paired_differences(bootstrap_means(rows + [[0], [0.1]], idx), 0))

    zero = percentile_interval(paired_differences(
        bootstrap_means(rows, resample_indices(30, 200, np.random.default_rng(0))), 0))
    assert zero.tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert np.array_equal(interval(5), interval(5))
    # a constant per-image gain of 0.1 is 0.1 in every resample (paired): zero width
    assert interval(5)[1] == pytest.approx([0.1, 0.1])


def test_map50_by_hand_on_one_category():
    """Image A: its box found (0.9); image B: its box missed by a 0.8 false positive.
    Precision-recall points after each detection: (0.5, 1), (0.5, 0.5); COCO's interpolated
    precision is 1 at the 101 recall thresholds 0, 0.01, ..., 0.50 and 0 above."""
    gt = {**gt_of([[(1, [10, 10, 20, 20])], [(1, [50, 50, 20, 20])]]), "categories": CATS[:1]}
    dets = dets_of([[(1, [10, 10, 20, 20], 0.9)], [(1, [0, 0, 20, 20], 0.8)]])
    idx = np.array([[0, 1], [0, 0], [1, 1], [1, 0]])
    got = map50_resamples(gt, dets, idx)
    assert got[0] == pytest.approx(51 / 101) == map50(gt, dets)
    assert got[1] == 1.0    # A twice: two hits, two boxes
    assert got[2] == 0.0    # B twice: nothing found
    assert got[3] == got[0]  # the order of the drawn images does not matter
    # A, A, B: recall 1/3 and 2/3 at precision 1, then a miss: thresholds 0 .. 0.66 -> 67 of 101
    assert map50_resamples(gt, dets, np.array([[0, 0, 1]]))[0] == pytest.approx(67 / 101)


def test_identity_resample_equals_map50():
    gt, dets = gt_of(IMAGES), dets_of(DETS)
    assert map50_resamples(gt, dets, np.arange(3)[None])[0] == map50(gt, dets)  # bit for bit


@pytest.mark.parametrize("sample", [[0, 1, 1], [1, 1, 2], [2, 0, 0], [0, 1, 2, 1]])
def test_resample_equals_map50_of_really_duplicated_images(sample):
    """Drawing an image twice doubles its hits, misses and ground-truth boxes: the same as a data set
    holding a copy of it under a new id."""
    expected = map50(*resampled_data(sample))
    got = map50_resamples(gt_of(IMAGES), dets_of(DETS), np.array([sample]))
    assert got[0] == pytest.approx(expected, abs=1e-12)


def test_duplicating_an_image_changes_the_score():
    assert map50(*resampled_data([0, 1, 1])) != pytest.approx(map50(*resampled_data([0, 1, 2])))


def test_no_detections_and_no_ground_truth():
    gt = gt_of(IMAGES[:1] + [[]])  # image 2 has no box
    got = map50_resamples(gt, [], np.array([[0, 1], [1, 1]]))
    assert got[0] == 0.0 and np.isnan(got[1])  # map50's rules: 0 with no detections, NaN with no box
    got = map50_resamples(gt, dets_of(DETS[:1]), np.array([[0, 0], [1, 1]]))
    assert got[0] == 1.0 and np.isnan(got[1])


def test_a_category_with_ground_truth_but_no_detection_scores_zero():
    """Category 2 has boxes in images 2 and 3 but no detection anywhere: its AP is 0 in every resample
    that draws one of them (pycocotools' rule), so the mean over categories halves category 1's AP."""
    dets = dets_of([[(1, [10, 10, 20, 20], 0.9)], [(1, [50, 50, 20, 20], 0.5)], []])
    got = map50_resamples(gt_of(IMAGES), dets, np.array([[0, 1, 2], [2, 2, 2], [0, 0, 0]]))
    assert got[0] == pytest.approx(0.5) == map50(gt_of(IMAGES), dets)  # cat 1: AP 1, cat 2: AP 0
    assert got[1] == 0.0  # only category 2's box drawn
    assert got[2] == 1.0  # only image 1: category 2 absent, category 1 found


def random_case(rng: np.random.Generator, n_images: int = 12):
    """Three categories, 0-4 boxes an image (some crowd), detections near and far from them with
    distinct scores: enough matches, misses and ignored regions to exercise every branch."""
    images, dets = [], []
    for _ in range(n_images):
        boxes, found = [], []
        for _ in range(int(rng.integers(0, 5))):
            cat, (x, y) = int(rng.integers(1, 4)), rng.uniform(0, 70, 2)
            crowd = int(rng.random() < 0.15)
            boxes.append((cat, [float(x), float(y), 25.0, 25.0], crowd))
            if rng.random() < 0.7:
                found.append((cat, [float(x + rng.normal(0, 4)), float(y + rng.normal(0, 4)), 25.0, 25.0]))
        found += [(int(rng.integers(1, 4)), [float(v) for v in rng.uniform(0, 70, 2)] + [20.0, 20.0])
                  for _ in range(int(rng.integers(0, 4)))]
        images.append(boxes)
        dets.append(found)
    scores = iter(rng.permutation(1000)[:sum(map(len, dets))] / 1000 + 0.0005)
    return images, [[(c, b, float(next(scores))) for c, b in found] for found in dets]


def coco_of(images, dets, sample):
    ims, anns = [], []
    for new_id, i in enumerate(sample, start=1):
        ims.append({"id": new_id, "width": 100, "height": 100})
        anns += [{"image_id": new_id, "category_id": c, "bbox": b, "iscrowd": crowd} for c, b, crowd in images[i]]
    results = [{"image_id": new_id, "category_id": c, "bbox": b, "score": s}
               for new_id, i in enumerate(sample, start=1) for c, b, s in dets[i]]
    cats = [{"id": k, "name": str(k)} for k in (1, 2, 3)]
    return {"images": ims, "annotations": anns, "categories": cats}, results


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_accumulate_equals_pycocotools_on_duplicated_data(seed):
    """Twenty random resamples of a random case, each against pycocotools' mAP50 of the data set that
    really holds the drawn images (crowd boxes, multiple categories, misses and empty images)."""
    rng = np.random.default_rng(seed)
    images, dets = random_case(rng)
    idx = resample_indices(len(images), 20, rng)
    gt, results = coco_of(images, dets, range(len(images)))
    got = map50_resamples(gt, results, idx)
    for b, sample in enumerate(idx):
        expected = map50(*coco_of(images, dets, sample))
        assert got[b] == pytest.approx(expected, abs=1e-12) or (np.isnan(got[b]) and np.isnan(expected))
