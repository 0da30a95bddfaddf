"""The import rule of the package (README, Architecture): a module imports only downward.

Layers, lowest first; a package may import its own modules and those of LOWER layers only, never
a package of its own layer or above. `workbench/cli.py` is the top.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"
LAYERS = [
    ["errors", "allocator"],
    ["io", "dist", "progress", "locks"],  # files written atomically; torchrun processes; progress lines; locks
    ["records"],  # the ground floor: typed records and the task vocabulary
    ["data", "metrics", "tta", "fuse"],  # core that knows no model
    ["models", "formats"],  # core on top of it
    ["runs", "runs_table"],  # run folders
    ["train", "predict", "score", "export"],  # stages
    ["ensemble"],
    ["submit", "distill", "report", "grouping"],
    ["cli"],
    ["__main__"],  # python -m workbench (torchrun's entry)
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def unit(module: str) -> str:
    """workbench.data.spec -> data; workbench.cli -> cli."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every workbench import in a file, function-level ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("workbench"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "workbench" else [node.module]
            out += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("workbench")]
    return out


def violations(package: Path = PACKAGE) -> list[str]:
    """Every import that goes sideways or up, as 'file:line: a -> b'."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package.parent).with_suffix("")
        here = unit(".".join(rel.parts))
        if here == "__init__":
            continue
        if here not in RANK:
            found.append(f"{rel}: {here} is in no layer")
            continue
        for line, module in imports_of(path):
            there = unit(module)
            if there != here and (there not in RANK or RANK[there] >= RANK[here]):
                found.append(f"{rel}.py:{line}: {here} -> {there}")
    return found


def test_imports_only_go_down():
    assert violations() == []


@pytest.mark.parametrize("source, target, line", [
    ("metrics/scoring.py", "formats", "from workbench.formats.base import SubmissionFormat"),  # metrics <-> formats
    ("formats/polygons.py", "score", "from workbench.score import score_submission"),
    ("models/inference.py", "formats", "import workbench.formats"),  # models reaching formats
    ("data/loaders.py", "models", "from workbench.models.model import MultiTaskModel"),  # data -> models
    ("records/tasks.py", "data", "from workbench.data.spec import DatasetSpec"),
    ("data/spec.py", "metrics", "from workbench.metrics.seg import mean_iou"),  # same layer, sideways
])
def test_the_check_catches_a_bad_import(tmp_path, source, target, line):
    import shutil
    copy = tmp_path / "workbench"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / source
    if path.exists():
        path.write_text(path.read_text() + f"\n{line}\n")
    else:
        path.write_text(f"{line}\n")
    assert any(f"-> {target}" in v for v in violations(copy)), violations(copy)
