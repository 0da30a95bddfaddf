"""Report stage: one self-contained HTML page on a run, an ensemble spec or a submission folder.

The page holds the val scores of every member and of the blend, the training curves of every run
involved, a confusion matrix (cls), precision-recall curves at IoU 0.5 (det), per-class IoU bars
(seg) and a grid of val samples with their predictions beside the truth. Every figure is a PNG
embedded as a `data:` URI, so the file can be mailed or archived alone. Predictions come from the
runs' prediction caches (`predict_run`), so a second report of the same target is quick.

`build_report(ReportConfig)` (`build`) is the library function behind `mtwb report` (workbench/cli.py); what a
report is about (`targets`), its numbers (`analysis`) and its HTML (`page`, `figures`) live beside it.
"""
from workbench.report.analysis import compute_pr_curves, find_most_confused
from workbench.report.build import build_report
from workbench.report.targets import ReportConfig, Target, resolve_target

__all__ = ["ReportConfig", "Target", "build_report", "compute_pr_curves", "find_most_confused", "resolve_target"]
