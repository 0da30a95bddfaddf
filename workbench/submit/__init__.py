"""Submit stage: blend members' cached predictions and write a checked leaderboard submission.

`submissions/<name>/` receives the format's files, `manifest.json` (members, fusion settings, val
scores of each member and of the blend, hashes of every input and output) and `<name>.zip` with the
leaderboard files. Everything is built in a temporary folder and renamed into place only after the
submission passed its checks, so a refused or interrupted submit leaves nothing behind.
"""
from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from workbench.data.spec import TASKS, DatasetSpec
from workbench.errors import WorkbenchError
from workbench.formats import get_format, polygon_roundtrip_miou, validate_submission
from workbench.fuse import FusionConfig, blend
from workbench.io import atomic_dir, hash_file, read_json, write_json
from workbench.metrics.scoring import score, split_ground_truth
from workbench.predict import PredictConfig, predict_run
from workbench.predictions import Predictions, to_submission

SUBMISSIONS_DIR = Path("submissions")


@dataclass(frozen=True)
class SubmitConfig:
    """Members (run ids or folders), the data set, the output format and name, the fusion."""

    members: tuple[str, ...]
    data: str
    name: str
    format: str = "allinone-json"
    weights: tuple[float, ...] | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    device: str = "auto"
    out_dir: str = str(SUBMISSIONS_DIR)


def predict_members(config: SubmitConfig, split: str, progress: bool) -> tuple[list[Predictions], list[dict]]:
    """Each member's predictions on a split (from the cache when it is valid) and a record of each."""
    preds, records = [], []
    for ref in config.members:
        p, folder, _ = predict_run(PredictConfig(ref, config.data, split, config.device), progress=progress)
        preds.append(p)
        meta = read_json(folder / "meta.json")
        records.append({"run": Path(ref).name, "cache": str(folder), "checkpoint_sha256": meta["checkpoint"],
                        "data_sha256": meta["data"]})
    return preds, records


def submit(config: SubmitConfig, progress: bool = True) -> dict:
    """Blend the members, check the test submission, and write `submissions/<name>/`.

    Returns:
        The manifest (also written to manifest.json); its "val" holds the val scores of every
        member and of the blend.
    Raises:
        SubmissionError: the blend failed a check (missing image, unknown class, bad box ...);
            nothing is written.
    """
    if not config.members:
        raise WorkbenchError("submit needs at least one member run")
    if config.weights is not None and len(config.weights) != len(config.members):
        raise WorkbenchError(f"{len(config.weights)} weights given for {len(config.members)} members")
    fmt = get_format(config.format)
    spec = DatasetSpec(config.data)
    classes, k_seg = spec.cls_classes, len(spec.seg_classes)

    val_preds, val_records = predict_members(config, "val", progress)
    val_truth = split_ground_truth(spec, "val")
    val_scores = {}
    for ref, p in zip(config.members, val_preds):
        val_scores[Path(ref).name] = score(to_submission(p, classes, k_seg), val_truth)
    if len(config.members) > 1:
        val_scores["blend"] = score(to_submission(blend(val_preds, config.weights, config.fusion), classes, k_seg),
                                    val_truth)

    test_preds, test_records = predict_members(config, "test", progress)
    fused = blend(test_preds, config.weights, config.fusion)
    sub = to_submission(fused, classes, k_seg)
    validate_submission(sub, expected={t: spec.test_names(t) for t in TASKS}, cls_num_classes=len(classes),
                        det_category_ids=set(spec.det_category_ids), seg_num_classes=k_seg,
                        image_sizes={"det": fused.sizes["det"], "seg": fused.sizes["seg"]})

    out = Path(config.out_dir) / config.name
    with atomic_dir(out) as tmp:
        files = fmt.write(sub, tmp)
        zip_path = tmp / f"{config.name}.zip"
        with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, f.name)
        manifest = {
            "name": config.name,
            "format": config.format,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": str(spec.path),
            "members": [{**r, "weight": (config.weights[i] if config.weights else 1.0), "tta": "none"}
                        for i, r in enumerate(test_records)],
            "val_caches": val_records,
            "fusion": {"cls": "mean of probabilities", "seg": "mean of softmax probabilities",
                       "det": asdict(config.fusion)},
            "val": val_scores,
            "files": {f.name: hash_file(f) for f in [*files, zip_path]},
            "counts": {"cls": len(sub.cls), "det_boxes": len(sub.det), "seg": len(sub.seg)},
        }
        if config.format == "allinone-json":
            # polygons lose pixels: how much mIoU the writer's mask -> polygon -> mask round trip costs
            manifest["polygon_roundtrip_miou"] = round(polygon_roundtrip_miou(sub.seg, k_seg), 5)
        write_json(tmp / "manifest.json", manifest)
    return manifest

