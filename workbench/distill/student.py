"""The whole distillation stage: guard, teacher predictions, pseudo data set, student run."""
from __future__ import annotations

from pathlib import Path

from workbench.data.spec import DatasetSpec
from workbench.dist import Dist
from workbench.distill.config import DistillConfig, DistillError, PSEUDO_DIR
from workbench.distill.guard import guard_against_test
from workbench.distill.pseudo_labels import f1_threshold, teacher_predictions, write_pseudo_dataset
from workbench.ensemble.members import member_tasks
from workbench.records import to_submission
from workbench.records.tasks import TASKS


def distill(config: DistillConfig, progress: bool = True) -> tuple[Path, Path]:
    """Label the unlabelled images with the teacher, write the pseudo data set, train the student.

    Returns:
        (the pseudo data set's dataset.yaml, the student run folder).
    """
    from workbench.models.model import check_backbone, resolve_device
    from workbench.train.trainer import TrainConfig, train

    spec = DatasetSpec(config.data)
    resolve_device(config.device)  # refused before the teacher labels anything: a missing device,
    check_backbone(config.train.get("backbone", ""))  # a student backbone timm does not know
    unlabeled = DatasetSpec(config.data, config.route, config.unlabeled)
    routed = sorted({p for t in TASKS for p in unlabeled.unlabeled_images(t)})
    if not routed:
        raise DistillError(f"{spec.path}: no unlabelled image is routed to any task (route {config.route})")
    warnings = guard_against_test(spec, routed, config.allow_test)

    threshold, f1 = config.det_threshold, None
    if threshold is None:
        val = teacher_predictions(config, "val")
        truth = spec.ground_truth("val")
        sub = to_submission(val, spec.cls_classes, len(spec.seg_classes))
        ids = {im["file_name"]: im["id"] for im in truth.det["images"]}
        dets = [{"image_id": ids[d["image"]], "category_id": d["category_id"], "bbox": d["bbox"], "score": d["score"]}
                for d in sub.det if d["image"] in ids]
        threshold, f1 = f1_threshold(truth.det, dets)
    preds = teacher_predictions(config, "unlabeled", config.route)
    members = config.ensemble.members()
    meta = {"teacher": config.ensemble.to_dict(), "data": str(spec.path), "route": config.route,
            "det_threshold": threshold, "det_threshold_f1_on_val": f1, "seg_confidence": config.seg_confidence,
            "warnings": warnings, "allow_test": config.allow_test,
            "teacher_runs": sorted({Path(m.run).name for m in members}),
            "teacher_tasks": {m.ref: list(member_tasks(m)) for m in members}}
    folder = Path(config.runs_dir) / PSEUDO_DIR / config.name
    dist = Dist.from_env(config.device)  # under torchrun: rank 0 writes the pseudo data set, the others wait
    pseudo = (write_pseudo_dataset(folder, spec, preds, unlabeled, threshold, config.seg_confidence, meta)
              if dist.main else folder / "dataset.yaml")
    dist.barrier()
    train_config = TrainConfig(**{"data": config.data, "name": config.name, "runs_dir": config.runs_dir,
                                  "device": config.device, **config.train, "recipe": "joint", "pseudo": str(pseudo)})
    run = train(train_config, overwrite=config.overwrite, progress=progress, kind="student", parents=meta["teacher_runs"], notes={"distill": {**meta, "pseudo": str(pseudo)}})
    return pseudo, run
