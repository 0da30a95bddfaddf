"""The ground floor: typed records that cross stages, and the shared vocabulary of tasks and metrics.

Every stage imports these downward; a record module imports nothing of the workbench but `errors`
and `io`. Each record has one reader and one writer, here.
"""
from workbench.records.ground_truth import GroundTruth
from workbench.records.predictions import DetBoxes, Predictions, reduced_size, seg_logits_to_mask, to_submission
from workbench.records.submission import Submission
from workbench.records.tasks import DET_STRIDE, METRIC_COLUMNS, METRICS, SCORE, SEG_STRIDE, TASK_TABLE, TASKS, Task

__all__ = ["GroundTruth", "DetBoxes", "Predictions", "reduced_size", "seg_logits_to_mask", "to_submission",
           "Submission", "DET_STRIDE", "METRIC_COLUMNS", "METRICS", "SCORE", "SEG_STRIDE", "TASK_TABLE", "TASKS", "Task"]
