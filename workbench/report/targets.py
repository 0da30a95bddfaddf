"""What a report is about: a run, an ensemble spec or a submission folder, and its settings."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from workbench.errors import RunError
from workbench.records.ensemble import EnsembleSpec, Member
from workbench.records.manifest import FILE as MANIFEST_FILE, Manifest
from workbench.runs import RUNS_DIR, open_run


REPORT_NAME = "report.html"


@dataclass(frozen=True)
class ReportConfig:
    """What to report on and where.

    target: a run (folder or id under runs/), an ensemble spec (.yaml) or a submission folder.
    out: the HTML file; None: beside the target (see `Target.default_out`).
    samples: images of each task in the sample grid (the worst of the split first).
    score_test: add the submission's test score (`workbench.score`, the sealed truth) to the table.
    """

    target: str
    data: str
    out: str | None = None
    split: str = "val"
    samples: int = 6
    score_test: bool = False
    device: str = "auto"


@dataclass(frozen=True)
class Target:
    """A resolved report target.

    kind: "run", "ensemble" or "submission". members: the runs (with TTA) whose predictions are
    needed. ensemble: the blend (None for a run). default_out: where the page goes by default.
    """

    kind: str
    path: Path
    members: tuple[Member, ...]
    ensemble: EnsembleSpec | None
    default_out: Path


# -- target ----------------------------------------------------------------------------------
def resolve_target(target: str | Path) -> Target:
    """Tell a submission folder, an ensemble spec and a run apart, and load what each needs.

    Raises:
        RunError: the target is none of the three (the message names it).
        DataError: an ensemble spec or manifest that cannot be read.
    """
    path = Path(target)
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        spec = Manifest.read(path).ensemble_spec(path / MANIFEST_FILE)
        return Target("submission", path, tuple(spec.members()), spec, path / REPORT_NAME)
    if path.suffix in (".yaml", ".yml"):
        spec = EnsembleSpec.load(path)
        return Target("ensemble", path, tuple(spec.members()), spec, path.with_suffix(".html"))
    if not path.exists() and not (RUNS_DIR / str(target)).exists():
        raise RunError(f"{target}: no such run, ensemble spec (.yaml) or submission folder")
    run = open_run(target)
    return Target("run", run.path, (Member(str(run.path)),), None, run.path / REPORT_NAME)
