"""Task datasets: letterboxed images, boxes and masks stay aligned, also under flip augmentation."""
import numpy as np
import pytest
import torch
from PIL import Image

from workbench.data.augment import DEFAULT_AUGMENT
from workbench.data.loaders import ClsDataset, DetDataset, SegDataset, collate_det
from workbench.data.spec import ClsSample, DetSample, SegSample
from workbench.errors import DataError

SIZE = 64
RECT = (20, 10, 60, 30)  # x1, y1, x2, y2 in the 80 x 40 original image


def write_rect_image(path, h=40, w=80, rect=RECT):
    a = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = rect
    a[y1:y2, x1:x2] = 255
    Image.fromarray(a).save(path)
    return path


@pytest.fixture
def det_sample(tmp_path):
    x1, y1, x2, y2 = RECT
    return DetSample(write_rect_image(tmp_path / "a.png"), width=80, height=40,
                     boxes=np.array([[x1, y1, x2 - x1, y2 - y1]], np.float32), labels=np.array([7], np.int64))


def inside_is_bright(image: torch.Tensor, box) -> bool:
    x1, y1, x2, y2 = [int(round(v)) for v in box.tolist()]
    return bool(image[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1].float().mean(0).min() > 128)


def test_det_item_by_hand(det_sample):
    ds = DetDataset([det_sample], SIZE, category_ids=[3, 7])
    image, boxes, labels = ds[0]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.uint8
    s = SIZE / 80  # Letterbox scale: longer side 80 -> 64
    torch.testing.assert_close(boxes, torch.tensor([[20 * s, 10 * s, 60 * s, 30 * s]]))
    assert labels.tolist() == [1]  # category 7 is the second id
    assert inside_is_bright(image, boxes[0])
    assert image[:, 40 * 64 // 80:].max() == 0  # letterbox padding


def test_det_flip_moves_boxes_with_the_image(det_sample):
    ds = DetDataset([det_sample], SIZE, category_ids=[3, 7], augment=DEFAULT_AUGMENT["det"])
    s = SIZE / 80
    seen = set()
    for _ in range(12):
        image, boxes, _ = ds[0]
        assert inside_is_bright(image, boxes[0])
        seen.add(round(boxes[0, 0].item(), 3))
    # unflipped x1 = 20 s; flipped x1 = 64 - 60 s
    assert seen == {round(20 * s, 3), round(SIZE - 60 * s, 3)}
    assert ds.item(0)[1][0, 0].item() == pytest.approx(20 * s)  # the cache is not flipped in place


def test_det_image_without_boxes(tmp_path):
    ds = DetDataset([DetSample(write_rect_image(tmp_path / "b.png"), 80, 40)], SIZE, category_ids=[3], augment=DEFAULT_AUGMENT["det"])
    images, boxes, labels = collate_det([ds[0], ds[0]])
    assert images.shape == (2, 3, SIZE, SIZE)
    assert [b.shape for b in boxes] == [(0, 4), (0, 4)] and [len(l) for l in labels] == [0, 0]


@pytest.fixture
def seg_sample(tmp_path):
    mask = np.zeros((40, 80), np.uint8)
    x1, y1, x2, y2 = RECT
    mask[y1:y2, x1:x2] = 1
    Image.fromarray(mask).save(tmp_path / "a_mask.png")
    return SegSample(write_rect_image(tmp_path / "a.png"), tmp_path / "a_mask.png")


def test_seg_mask_aligned_and_padded(seg_sample):
    for train in (False, True):
        ds = SegDataset([seg_sample], SIZE, ignore_index=255, augment=DEFAULT_AUGMENT["seg"] if train else None)
        for _ in range(6 if train else 1):
            image, mask = ds[0]
            assert mask.dtype == torch.int64 and mask.shape == (SIZE, SIZE)
            assert set(mask.unique().tolist()) == {0, 1, 255}
            grey = image.float().mean(0)
            assert grey[mask == 1].min() > 128 and grey[mask == 0].max() < 128
            pad_rows = mask[32:]  # inner height 40 * 64 / 80 = 32
            assert (pad_rows == 255).all()
    assert ds.image_size(0) == (40, 80)


def test_seg_flip_is_applied(tmp_path):
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :10] = 1  # a left stripe: flipped it is on the right
    Image.fromarray(mask).save(tmp_path / "m.png")
    ds = SegDataset([SegSample(write_rect_image(tmp_path / "a.png"), tmp_path / "m.png")], SIZE, augment=DEFAULT_AUGMENT["seg"])
    sides = {int((ds[0][1][:32, :8] == 1).all()) for _ in range(12)}
    assert sides == {0, 1}


def test_seg_unlabelled_is_all_ignore(tmp_path):
    ds = SegDataset([SegSample(write_rect_image(tmp_path / "a.png"))], SIZE, ignore_index=255)
    assert (ds[0][1] == 255).all()


def test_seg_mask_size_mismatch_raises(tmp_path):
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(tmp_path / "m.png")
    ds = SegDataset([SegSample(write_rect_image(tmp_path / "a.png"), tmp_path / "m.png")], SIZE)
    with pytest.raises(DataError, match="differs"):
        ds[0]


def test_cls_dataset_resizes_and_augments_reproducibly(tmp_path):
    sample = ClsSample(write_rect_image(tmp_path / "c.png"), label=3)
    image, label = ClsDataset([sample], 32)[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8 and label == 3
    ds = ClsDataset([sample], 32, augment=DEFAULT_AUGMENT["cls"])
    a = []
    for _ in range(2):
        torch.manual_seed(5)  # the trainer reseeds torch's generator each step
        a.append(ds[0][0])
    assert torch.equal(a[0], a[1])  # same seed, same augmentation
    assert not all(torch.equal(ds[0][0], image) for _ in range(4))
