"""Score a written submission against the sealed `truth/`, reading it as the leaderboard would.

This is the only place in the workbench that reads a data set's `truth/` folder."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from workbench.data.spec import DatasetSpec
from workbench.errors import DataError, SubmissionError
from workbench.formats.validate import validate_submission
from workbench.formats import get_format
from workbench.metrics.scoring import score
from workbench.records import GroundTruth, Submission
from workbench.records.manifest import FILE as MANIFEST_FILE, Manifest


# files that identify a format when a submission folder has no manifest
FORMAT_MARKERS = {"submission.json": "allinone-json", "det.json": "coco"}


def sealed_ground_truth(spec: DatasetSpec) -> GroundTruth:
    """Ground truth of the test split from the data set's sealed truth files."""
    truth_seg = spec.truth_seg()
    seg = {}
    for name in spec.test_names("seg"):
        mask = truth_seg / f"{Path(name).stem}.png"
        if not mask.is_file():
            raise DataError(mask, f"truth mask missing for test image {name}")
        seg[name] = mask
    return GroundTruth(cls=spec.truth_cls(), det=spec.truth_det(), seg=seg,
                       seg_num_classes=len(spec.seg_classes), ignore_index=spec.ignore_index)


def detect_format(sub_dir: Path) -> str:
    """The format of a submission folder: from its manifest, else from the files it holds."""
    if (sub_dir / MANIFEST_FILE).is_file():
        return Manifest.read(sub_dir).format
    for marker, name in FORMAT_MARKERS.items():
        if (sub_dir / marker).is_file():
            return name
    raise DataError(sub_dir, "not a submission folder (no manifest.json, submission.json or det.json)")


def read_submission(sub_dir: Path, spec: DatasetSpec, seg_sizes: dict[str, tuple[int, int]],
                    det_image_ids: dict[str, int] | None = None) -> Submission:
    """Read a submission folder in whatever registered format it was written."""
    return get_format(detect_format(sub_dir)).read(sub_dir, seg_sizes=seg_sizes, cls_classes=spec.cls_classes,
                                                   seg_num_classes=len(spec.seg_classes), det_image_ids=det_image_ids)


def score_submission(sub_dir: str | Path, data: str | Path, miou: str = "present",
                     lenient: bool = False) -> dict[str, float]:
    """Score a submission folder against the data set's sealed truth, after checking what was read back
    as the writer checks what it writes (`validate_submission`: every test image once, known classes
    and categories, finite boxes of positive size inside their image, scores in [0, 1], masks of the
    image's size).

    Boxes that name images by id are matched with the ids of the truth's own image list (the
    organisers' annotation file), as pycocotools' `loadRes` does.

    Args:
        miou: how mIoU averages over classes (`workbench.metrics.seg.MIOU_CONVENTIONS`).
        lenient: score a cls or seg image the submission leaves out as wrong instead of refusing it.

    Returns:
        {"cls_top1", "det_map50", "seg_miou", "score"}; with `lenient` also "missing_cls" and
        "missing_seg", the images scored as wrong for want of a prediction.

    Raises:
        SubmissionError: what was read back has problems, each entry named (a missing image too,
            unless `lenient`).
    """
    sub_dir = Path(sub_dir)
    if not sub_dir.is_dir():
        raise DataError(sub_dir, "submission folder not found")
    spec = DatasetSpec(data)
    gt = sealed_ground_truth(spec)
    seg_sizes = {}
    for name, mask in gt.seg.items():
        with Image.open(mask) as im:
            seg_sizes[name] = (im.height, im.width)
    ids = {im["file_name"]: im["id"] for im in gt.det["images"]}
    det_sizes = {im["file_name"]: (int(im["height"]), int(im["width"])) for im in gt.det["images"]
                 if "height" in im and "width" in im}
    sub = read_submission(sub_dir, spec, seg_sizes, ids)
    try:
        missing = validate_submission(
            sub, {"cls": list(gt.cls), "det": list(ids), "seg": list(gt.seg)}, len(spec.cls_classes),
            {int(c["id"]) for c in gt.det.get("categories", [])}, gt.seg_num_classes,
            {"det": det_sizes, "seg": seg_sizes}, allow_missing=lenient)
    except SubmissionError as e:
        raise SubmissionError(f"{sub_dir}: {e}") from None
    metrics = score(sub, gt, miou=miou, missing_wrong=lenient)
    if lenient:
        metrics.update({f"missing_{t}": len(names) for t, names in missing.items()})
    return metrics
