"""`build_report`: the whole report of one target, written as one self-contained HTML file."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from workbench.data.spec import DatasetSpec
from workbench.io import write_text
from workbench.records import to_submission
from workbench.report.analysis import build_member_predictions, build_primary, build_score_rows, check_request, list_tasks, score_test_row
from workbench.report.page import render_blend, render_cls, render_curves, render_det, render_page, render_samples, render_scores, render_seg
from workbench.report.targets import ReportConfig, resolve_target
from workbench.runs import open_run


# -- the stage -------------------------------------------------------------------------------
def build_report(config: ReportConfig, progress: bool = False) -> Path:
    """Predict (or reuse the caches of) the target's members, score them, draw, and write the page.

    Args:
        config: the target, data set, split, output and sample count.
        progress: show prediction progress bars (only when a cache entry must be built).
    Returns:
        The path of the HTML file written (atomically).
    Raises:
        RunError / DataError: a missing or unreadable target (named in the message).
        WorkbenchError: a test score asked for something that is not a submission folder.
    """
    target = resolve_target(config.target)
    check_request(target, config)
    spec = DatasetSpec(config.data)
    preds = build_member_predictions(target, config, progress)
    primary = build_primary(target, preds)
    classes, k_seg = spec.cls_classes, len(spec.seg_classes)
    sub = to_submission(primary, classes, k_seg)
    truth = spec.ground_truth(config.split)
    rows = build_score_rows(target, preds, sub, truth, spec)
    if config.score_test:
        rows.append(score_test_row(target, config.data))

    tasks = tuple(t for t in list_tasks(target) if getattr(primary, t))
    run_dirs = list(dict.fromkeys(open_run(m.run).path for m in target.members))
    sections = [render_scores(rows, config.split)]
    if target.ensemble is not None:
        sections.append(render_blend(target.ensemble))
    sections.append(render_curves(run_dirs))
    if "cls" in tasks:
        sections.append(render_cls(sub, truth, classes))
    if "det" in tasks:
        sections.append(render_det(sub, truth, spec.det_categories))
    if "seg" in tasks:
        sections.append(render_seg(sub, truth, spec.seg_classes))
    if config.samples > 0:
        sections.append(render_samples(spec, config.split, primary, tasks, config.samples))

    meta = [("target", f"{config.target} ({target.kind})"), ("data set", f"{spec.name} ({spec.path})"),
            ("split", config.split), ("tasks", ", ".join(tasks)),
            ("members", ", ".join(m.label for m in target.members)),
            ("date", datetime.now(timezone.utc).isoformat(timespec="seconds"))]
    page = render_page(f"Report: {target.path.name}", meta, sections)
    out = Path(config.out) if config.out else target.default_out
    write_text(out, page)
    return out
