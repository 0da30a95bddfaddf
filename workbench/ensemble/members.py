"""Ensemble members (`RUN` or `RUN@TTA`, records.ensemble.Member) in use: their predictions and tasks."""
from __future__ import annotations

from workbench.errors import WorkbenchError
from workbench.predict import PredictConfig, predict_run
from workbench.records.predictions import Predictions
from workbench.records.ensemble import Member
from workbench.runs import open_run


def member_predictions(members: list[Member], data: str, split: str, device: str = "auto",
                       progress: bool = False, route: dict[str, str] | None = None,
                       unlabeled: str | None = None) -> list[Predictions]:
    """Each member's predictions on a split, from its cache entry (predicting where none is valid).

    Args:
        route, unlabeled: for the "unlabeled" split, which images each task gets and another folder
            of unlabelled images (see PredictConfig).
    """
    routing = tuple(sorted(route.items())) if route else None
    return [predict_run(PredictConfig(m.run, data, split, device, tta=m.tta, route=routing, unlabeled=unlabeled),
                        progress=progress)[0] for m in members]


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
