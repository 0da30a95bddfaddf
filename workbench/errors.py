"""Exceptions raised by library code; only the CLI turns them into messages and exit codes."""
from __future__ import annotations

from pathlib import Path


class WorkbenchError(Exception):
    """Base class of every error the workbench reports to a user."""


class DataError(WorkbenchError):
    """A data file is missing, unreadable or inconsistent.

    Args:
        path: the file (or folder) at fault.
        problem: one line saying what is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SubmissionError(WorkbenchError):
    """A submission failed a check; nothing was written."""


class RunError(WorkbenchError):
    """A run folder is missing, incomplete or does not fit the request."""


class WorkbenchWarning(UserWarning):
    """Something works but is probably not what the user wants; the CLI prints it as one line."""
