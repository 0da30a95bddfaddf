"""Blend members' cached predictions, check the test submission, and write `submissions/<name>/`.

The blend is an EnsembleSpec (records.ensemble): per task its members (RUN or RUN@TTA), weights and
box fusion. `submissions/<name>/` receives the format's files, `manifest.json` (members, weights,
TTA, fusion, val scores of each member and of the blend, hashes of every input and output) and
`<name>.zip` with the leaderboard files. Everything is built in a temporary folder and renamed into
place only after the submission passed its checks, so a refused or interrupted submit leaves nothing."""
from __future__ import annotations

import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from workbench.data.spec import DatasetSpec
from workbench.ensemble.members import member_predictions, member_tasks
from workbench.ensemble.spec import blend_spec, check_serving
from workbench.errors import SubmissionError, check_name
from workbench.formats import get_format, polygon_roundtrip_miou, validate_submission
from workbench.formats.allinone import IDS_HELP
from workbench.io import atomic_dir, hash_file
from workbench.metrics.scoring import score_predictions
from workbench.predict import PredictConfig, cache_entry
from workbench.records import Predictions, to_submission
from workbench.records.cache_meta import CacheMeta
from workbench.records.manifest import Manifest
from workbench.records.ensemble import EnsembleSpec, Member
from workbench.records.tasks import TASKS


SUBMISSIONS_DIR = Path("submissions")


@dataclass(frozen=True)
class SubmitConfig:
    """The blend, the data set, the output name and format."""

    ensemble: EnsembleSpec
    data: str
    name: str
    format: str = "allinone-json"
    device: str = "auto"
    out_dir: str = str(SUBMISSIONS_DIR)
    image_ids: str | None = None  # a COCO image list overriding the data set's det.test_info

    def __post_init__(self):
        check_name(self.name)


def predict_members(members: list[Member], data: str, split: str, device: str, progress: bool
                    ) -> tuple[dict[Member, Predictions], list[dict]]:
    """Each member's predictions on a split (from the cache when it is valid) and a record of each cache entry."""
    preds = dict(zip(members, member_predictions(members, data, split, device, progress)))
    records = []
    for m in members:
        folder = cache_entry(PredictConfig(m.run, data, split, device, tta=m.tta))
        meta = CacheMeta.read(folder)
        records.append({"member": m.ref, "run": Path(m.run).name, "tta": m.tta, "cache": str(folder),
                        "checkpoint_sha256": meta.checkpoint, "data_sha256": meta.data})
    return preds, records


def submit(config: SubmitConfig, progress: bool = True) -> Manifest:
    """Blend the members, check the test submission, and write `submissions/<name>/`.

    Returns:
        The manifest (also written to manifest.json); its "val" holds the val scores of every
        member and of the blend.
    Raises:
        SubmissionError: the blend failed a check (missing image, unknown class, bad box ...), or
            the format needs the organisers' test image ids and none were named; nothing is written.
    """
    fmt = get_format(config.format)
    spec = DatasetSpec(config.data)
    ids = spec.det_test_ids(config.image_ids)
    ids_file = Path(config.image_ids).resolve() if config.image_ids else spec.det_test_info
    if fmt.needs_det_image_ids and ids is None:
        raise SubmissionError(f"{fmt.name} names detection test images by the organisers' integer ids, and "
                              f"{spec.path} gives none: {IDS_HELP}")
    classes, k_seg = spec.cls_classes, len(spec.seg_classes)
    check_serving(config.ensemble)  # before anything is predicted
    members = config.ensemble.members()

    val_preds, val_records = predict_members(members, config.data, "val", config.device, progress)
    val_truth = spec.ground_truth("val")
    val_scores = {m.label: score_predictions(p, val_truth, tasks=member_tasks(m))
                  for m, p in val_preds.items()}
    if len(members) > 1:
        val_scores["blend"] = score_predictions(blend_spec(config.ensemble, val_preds), val_truth)

    test_preds, test_records = predict_members(members, config.data, "test", config.device, progress)
    fused = blend_spec(config.ensemble, test_preds)
    sub = to_submission(fused, classes, k_seg)
    sub.det_image_ids = ids or {}
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
        tasks = config.ensemble.tasks
        manifest = Manifest(
            name=config.name, format=config.format,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"), data=str(spec.path),
            members=test_records, val_caches=val_records,
            blend={t: {"members": [m.ref for m in tasks[t].members], "weights": list(tasks[t].weights)}
                   for t in TASKS},
            fusion={"cls": "weighted mean of probabilities", "seg": "weighted mean of softmax probabilities",
                    "det": asdict(tasks["det"].fusion)},
            val={k: {m: round(v, 6) for m, v in s.items()} for k, s in val_scores.items()},
            files={f.name: hash_file(f) for f in [*files, zip_path]},
            counts={"cls": len(sub.cls), "det_boxes": len(sub.det), "seg": len(sub.seg)},
            det_image_ids=str(ids_file) if ids_file else None,
            # what the organisers' fill of the written polygons keeps of the masks (1.0: lossless)
            polygon_roundtrip_miou=(round(polygon_roundtrip_miou(sub.seg, k_seg), 5)
                                    if config.format == "allinone-json" else None))
        manifest.write(tmp)
    return manifest
