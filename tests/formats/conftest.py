import cv2
import numpy as np
import pytest

from workbench.records import Submission


def make_scene(height: int = 96, width: int = 128, seed: int = 0) -> np.ndarray:
    """A street-like (H, W) uint8 mask with 6 classes, the way a segmentation model draws it.

    0 road, 1 sky, 2 building (with windows of sky = holes), 3 car, 4 person, 5 vegetation / pole.
    The label map is drawn at 1/4 size, turned into smooth per-class scores, upsampled bilinearly
    and arg-maxed, as a prediction at the head's stride would be.
    """
    rng = np.random.default_rng(seed)
    h, w = height // 4, width // 4
    small = np.zeros((h, w), np.uint8)
    small[: h // 3] = 1
    small[h // 6: h // 2 + 2, w // 8: w // 2] = 2
    for yy in range(h // 6 + 2, h // 2 - 1, 4):
        for xx in range(w // 8 + 2, w // 2 - 2, 4):
            small[yy:yy + 2, xx:xx + 2] = 1  # windows: holes of the building
    veg = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (5, 5), 0)
    small[(veg > np.quantile(veg, 0.8)) & (small == 1)] = 5
    cv2.rectangle(small, (w // 2 + 2, h // 2), (w // 2 + 9, h // 2 + 5), 3, -1)
    cv2.ellipse(small, (w // 4, int(h * 0.7)), (2, 4), 0, 0, 360, 4, -1)
    small[h // 4:, w - 4] = 5  # a pole, one pixel wide at 1/4 size
    scores = np.eye(6, dtype=np.float32)[small]  # (h, w, 6)
    scores = cv2.GaussianBlur(scores, (3, 3), 0)
    scores = cv2.resize(scores, (width, height), interpolation=cv2.INTER_LINEAR)
    scores += rng.normal(0, 0.05, scores.shape).astype(np.float32)  # ragged edges
    return scores.argmax(axis=2).astype(np.uint8)


def make_simple_masks() -> dict[str, np.ndarray]:
    """Masks the polygon round trip must reproduce exactly."""
    convex = np.zeros((40, 50), np.uint8)
    cv2.rectangle(convex, (5, 6), (20, 30), 2, -1)
    cv2.circle(convex, (35, 20), 8, 1, -1)
    cv2.fillConvexPoly(convex, np.array([[10, 33], [25, 36], [12, 38]]), 3)
    hole = np.zeros((30, 30), np.uint8)
    hole[5:25, 5:25] = 1  # class 1 square ...
    hole[10:20, 10:20] = 2  # ... with a hole filled by class 2
    island = hole.copy()
    island[13:17, 13:17] = 1  # ... and an island of class 1 inside the class-2 hole
    border = np.zeros((20, 24), np.uint8)
    border[:, :7] = 1  # touches three borders
    border[15:, 18:] = 2  # a corner
    thin = np.zeros((16, 16), np.uint8)
    thin[3, 2:14] = 1  # a one-pixel line
    thin[8, 8] = 2  # a lone pixel
    return {"convex.png": convex, "hole.png": hole, "island.png": island, "border.png": border, "thin.png": thin}


@pytest.fixture
def scene_factory():
    """make_scene(height=96, width=128, seed=0) -> a realistic 6-class mask."""
    return make_scene


@pytest.fixture
def simple_masks() -> dict[str, np.ndarray]:
    return make_simple_masks()


@pytest.fixture
def submission() -> Submission:
    seg = make_simple_masks()
    seg["scene.png"] = make_scene()
    return Submission(
        cls={"c1.jpg": 0, "c2.jpg": 2, "c,3.jpg": 1},
        det=[
            {"image": "d1.jpg", "category_id": 3, "bbox": [10.5, 20.25, 30.0, 40.125], "score": 0.9},
            {"image": "d1.jpg", "category_id": 7, "bbox": [0.0, 0.0, 5.0, 5.0], "score": 0.123456789012},
            {"image": "d2.jpg", "category_id": 3, "bbox": [100.0, 50.0, 1.0, 2.0], "score": 1.0},
        ],
        seg=seg,
        cls_classes=["cat", "dog, large", "bird"],
        seg_num_classes=6,
        det_image_ids={"d1.jpg": 11, "d2.jpg": 4, "d3.jpg": 7},  # d3: a test image without boxes
    )


@pytest.fixture
def seg_sizes(submission) -> dict[str, tuple[int, int]]:
    return {name: mask.shape for name, mask in submission.seg.items()}
