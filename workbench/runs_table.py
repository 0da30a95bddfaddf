"""The runs table: one row per run folder under `runs/`, read from each folder's run.json.

`collect_runs` is the library function behind `mtwb runs` (workbench/cli.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from workbench.errors import RunError
from workbench.io import hash_file
from workbench.records.tasks import METRICS as METRIC_KEYS, SCORE
from workbench.records.run_info import FILE as RUN_FILE, RunInfo

if TYPE_CHECKING:
    import pandas as pd

METRICS = (*METRIC_KEYS.values(), SCORE)  # the columns of run.json's "best"
COLUMNS = ("run", "kind", "parents", "backbone", "status", *METRICS, "wall_time_s", "created")


def read_metric(best: dict, key: str, path: Path) -> float:
    """One metric of run.json's "best" as a float; NaN when the run does not report it."""
    value = best.get(key)
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise RunError(f"{path}: best.{key} is {value!r}, expected a number") from None


def build_run_row(run_dir: Path, info: RunInfo) -> dict:
    """Turn one run.json into a table row.

    Args:
        run_dir: the run folder (its name is the run id users pass to other commands).
        info: the folder's run.json.
    Returns:
        A dict with the keys of COLUMNS; metrics absent from "best" (or "best" null) are NaN.
    """
    path = run_dir / RUN_FILE
    best = info.best or {}
    if not isinstance(best, dict):
        raise RunError(f"{path}: best is {best!r}, expected an object or null")
    wall = info.wall_time_s
    return {"run": run_dir.name, "kind": info.kind, "parents": ",".join(map(str, info.parents)),
            "backbone": info.backbone, "status": info.status,
            **{key: read_metric(best, key, path) for key in METRICS},
            "wall_time_s": math.nan if wall is None else float(wall), "created": info.created or None}


def uses_data(info: RunInfo, data: Path, sha256: str | None) -> bool:
    """True when run.json's "data" names the same file as `data` (an already resolved path), or names a
    file that is gone while the run recorded the same dataset.yaml content (`sha256`): the data set's
    folder was moved or renamed since the run trained."""
    if not info.data:
        return False
    recorded = Path(info.data)
    if recorded.resolve() == data:
        return True
    return sha256 is not None and not recorded.is_file() and info.extra.get("data_sha256") == sha256


def collect_runs(runs_dir: Path, data: str | None = None) -> pd.DataFrame:
    """Tabulate every run folder under runs_dir.

    Folders without a run.json (and hidden temporary folders) are skipped; a run.json that is not
    valid JSON raises RunError naming it.

    Args:
        runs_dir: the folder holding run folders; a missing folder gives an empty table.
        data: keep only runs trained on this dataset.yaml (`uses_data`: the same path, or the same
            content where the recorded path is gone).
    Returns:
        One row per run in folder-name order, columns COLUMNS; metric columns are floats, NaN
        where the run does not report the metric (single-task runs, runs without a best epoch yet).
    """
    import pandas as pd  # here, so that `mtwb --help` does not pay for it

    runs_dir = Path(runs_dir)
    wanted = Path(data).resolve() if data is not None else None
    wanted_sha = hash_file(wanted) if wanted is not None and wanted.is_file() else None
    folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
        if runs_dir.is_dir() else []
    rows = []
    for folder in folders:
        if not (folder / RUN_FILE).is_file():
            continue
        info = RunInfo.read(folder)
        if wanted is None or uses_data(info, wanted, wanted_sha):
            rows.append(build_run_row(folder, info))
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    float_columns = [*METRICS, "wall_time_s"]
    table[float_columns] = table[float_columns].astype(float)
    return table


def sort_runs(table: pd.DataFrame, column: str) -> pd.DataFrame:
    """Sort by one column: metrics best first (descending), other columns ascending; NaN/None last.

    Args:
        table: a collect_runs table.
        column: one of COLUMNS.
    Returns:
        The sorted table (stable: ties keep folder order), index renumbered.
    """
    descending = column in METRICS
    return table.sort_values(column, ascending=not descending, kind="mergesort",
                             na_position="last").reset_index(drop=True)


def format_runs(table: pd.DataFrame) -> str:
    """The table as aligned plain text: floats with 4 decimals, missing values as '-', no index."""
    return table.to_string(index=False, float_format=lambda x: f"{x:.4f}", na_rep="-")


def table_records(table: pd.DataFrame) -> list[dict]:
    """The table as a list of JSON-ready dicts, one per run, NaN turned into None."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in table.astype(object).to_dict(orient="records")]
