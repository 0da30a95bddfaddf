"""What a distillation is asked to do, and how it refuses."""
from __future__ import annotations

from dataclasses import dataclass, field

from workbench.errors import WorkbenchError, check_name
from workbench.records.ensemble import EnsembleSpec
from workbench.runs import RUNS_DIR


PSEUDO_DIR = "pseudo"


class DistillError(WorkbenchError):
    """Distillation refused (test images among the unlabelled ones, nothing to label ...)."""


@dataclass(frozen=True)
class DistillConfig:
    """A distillation: the teacher, the data, where the pseudo-labels go, and the student's TrainConfig
    fields (`train`, passed on to workbench.train.trainer.TrainConfig)."""

    ensemble: EnsembleSpec
    data: str
    name: str
    route: dict[str, str] | None = None  # task -> file-name globs of the unlabelled images it gets
    unlabeled: str | None = None  # a folder of unlabelled images (default: the data set's)
    seg_confidence: float = 0.5  # seg pixels whose teacher probability is below this are ignored
    det_threshold: float | None = None  # None: the F1-maximising threshold on val
    allow_test: bool = False
    overwrite: bool = False
    device: str = "auto"
    runs_dir: str = str(RUNS_DIR)
    train: dict = field(default_factory=dict)

    def __post_init__(self):
        check_name(self.name)
