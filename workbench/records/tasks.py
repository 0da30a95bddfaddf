"""The shared vocabulary: the three tasks, their metric, its column title, the heads' output stride.

Everything that names a task or a metric reads it from here; nothing else defines them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    """One task of an AllInOne competition.

    Attributes:
        name: "cls", "det" or "seg".
        metric: its leaderboard metric's key in every score dict ("cls_top1" ...).
        title: that metric's column title ("Top-1" ...).
        stride: output stride of the task's head relative to the input (None: one output per image).
    """

    name: str
    metric: str
    title: str
    stride: int | None


TASK_TABLE = {
    "cls": Task("cls", "cls_top1", "Top-1", None),
    "det": Task("det", "det_map50", "mAP50", 4),  # CenterNet heatmap at 1/4
    "seg": Task("seg", "seg_miou", "mIoU", 4),  # logits at 1/4, the stride they are cached at too
}
TASKS = tuple(TASK_TABLE)  # ("cls", "det", "seg"), in leaderboard order
METRICS = {t.name: t.metric for t in TASK_TABLE.values()}  # task -> metric key
SCORE = "score"  # the mean of the task metrics
METRIC_COLUMNS = [(t.metric, t.title) for t in TASK_TABLE.values()] + [(SCORE, "score")]  # (key, title) of a table
DET_STRIDE = TASK_TABLE["det"].stride
SEG_STRIDE = TASK_TABLE["seg"].stride
