"""Exceptions raised by library code; only the CLI turns them into messages and exit codes."""
from __future__ import annotations

import difflib
from collections.abc import Iterable
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


class StorageError(WorkbenchError):
    """A file or folder could not be written: no space, no permission, a read-only file system.
    Nothing partial is left (the writes go to a temporary name first)."""


class RunError(WorkbenchError):
    """A run folder is missing, incomplete or does not fit the request."""


class DeviceError(WorkbenchError):
    """The requested device does not exist on this machine (or the name is not a device)."""


class WorkbenchWarning(UserWarning):
    """Something works but is probably not what the user wants; the CLI prints it as one line."""


def check_name(name: str, what: str = "--name") -> str:
    """A run, submission or pseudo data set name is one folder name: no path separators, no '..', not
    empty, not hidden, so that `runs/<name>` and `submissions/<name>` stay inside their folders."""
    text = str(name)
    if (not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text
            or "\0" in text or text != text.strip()):
        raise WorkbenchError(f"{what} {text!r}: a name is one folder name (letters, digits, '-', '_', '@', '.'; "
                             "no '/', no leading '.', no surrounding spaces)")
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' (up to three close choices), or '' when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
