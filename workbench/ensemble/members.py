"""Ensemble members: `RUN` or `RUN@TTA` (a run with a TTA spec), and their cached predictions."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.errors import WorkbenchError
from workbench.predict import PredictConfig, predict_run
from workbench.predictions import Predictions
from workbench.runs import open_run


@dataclass(frozen=True)
class Member:
    """A run (id or folder) and the TTA spec of its predictions."""

    run: str
    tta: str = "none"

    @property
    def ref(self) -> str:
        """The text `parse_member` reads back: RUN or RUN@TTA."""
        return self.run if self.tta == "none" else f"{self.run}@{self.tta}"

    @property
    def label(self) -> str:
        name = Path(self.run).name
        return name if self.tta == "none" else f"{name}@{self.tta}"


def parse_member(text: str) -> Member:
    """'RUN' -> Member(RUN); 'RUN@SPEC' -> Member(RUN, SPEC). The spec may itself contain '@'
    (`run@hflip@det+seg`): only the first '@' separates the run."""
    run, at, tta = text.partition("@")
    return Member(run, tta if at else "none")


def member_predictions(members: list[Member], data: str, split: str, device: str = "auto",
                       progress: bool = False) -> list[Predictions]:
    """Each member's predictions on a split, from its cache entry (predicting where none is valid)."""
    return [predict_run(PredictConfig(m.run, data, split, device, tta=m.tta), progress=progress)[0]
            for m in members]


def member_tasks(member: Member) -> tuple[str, ...]:
    """The tasks a member serves: those its run was trained for (a single-task run serves one)."""
    return open_run(member.run).tasks


def serving(members: list[Member], task: str) -> list[int]:
    """Indices of the members that serve `task`; an error when none does."""
    found = [i for i, m in enumerate(members) if task in member_tasks(m)]
    if not found:
        raise WorkbenchError(f"no member serves {task}: {', '.join(m.ref for m in members)} "
                             f"(single-task runs serve only their own task)")
    return found
