"""Locks on what one process writes: a run while it trains or is replaced, a prediction cache entry
while it is computed. A second writer is refused naming the holder; the lock of a process that died
is taken over.

A lock is a small JSON file `{"pid", "host", "what", "since"}` created with O_EXCL (atomic on local
file systems and on NFSv3+). The holder is alive if it runs on this host and `os.kill(pid, 0)` finds
it; a holder on another host cannot be checked, so its lock is only ever refused, with the file to
delete if that process is gone.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from workbench.errors import RunError

LOCK = ".lock"  # a run folder's lock file


def alive(pid: int) -> bool:
    """True if a process of this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class Lock:
    """A held lock file; `release` removes it (only if it is still ours)."""

    path: Path
    owned: bool = True  # False: this process held it already (a nested acquire), the outer one releases

    def release(self) -> None:
        if self.owned and _holder(self.path).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.owned = False


def _holder(path: Path) -> dict:
    """The lock file's content ({} when it is gone or unreadable)."""
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def acquire(path: Path, what: str) -> Lock:
    """Take the lock file `path` for `what` (e.g. "training", "prediction").

    Raises:
        RunError: another live process holds it (naming its pid, host, what and since when).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
          "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if not holder:  # being written this instant, or left empty by a crash: look again
                time.sleep(0.05)
                holder = _holder(path)
            if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
                return Lock(path, owned=False)
            if holder and holder.get("host") != me["host"]:
                raise RunError(f"{path.parent}: in use by {holder.get('what', 'another process')} (pid "
                               f"{holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}); "
                               f"if that process is gone, delete {path}")
            if holder and alive(int(holder.get("pid", -1))):
                raise RunError(f"{path.parent}: in use by {holder.get('what', 'another process')} (pid "
                               f"{holder['pid']} on this host, since {holder.get('since')}); wait for it to end "
                               "or stop it")
            path.unlink(missing_ok=True)  # its process is gone (or it was never written): take it over
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return Lock(path)
    raise RunError(f"{path}: could not take the lock (other processes keep taking it)")


@contextmanager
def holding(path: Path, what: str) -> Iterator[Lock]:
    """Hold the lock file `path` for the block."""
    lock = acquire(path, what)
    try:
        yield lock
    finally:
        lock.release()


@contextmanager
def waiting(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` for the block, waiting while another process holds it.

    For work every process would do identically (decoding a data set's image cache under torchrun):
    the first builds, the others wait, then find it built. An OS lock (`fcntl.flock`), so the kernel
    releases it when its holder dies; the empty file stays. Where `fcntl` does not exist (Windows) the
    block runs unlocked.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def clean_leftovers(folder: Path, name: str) -> list[Path]:
    """Remove what dead writers of `folder`/`name` left beside it: temporary folders and files
    (`.<name>.*.tmp`, from `workbench.io.atomic_*`) and replaced copies (`.<name>.old-<pid>`,
    `.<name>.replaced-<pid>`) of processes that no longer run. Call it holding `name`'s lock: no live
    writer of it then exists. Returns what was removed."""
    removed = []
    pattern = re.compile(rf"\.{re.escape(name)}\.(?:[a-z0-9_]{{8}}\.tmp|(?:old|replaced)-(\d+))")
    for p in Path(folder).glob(f".{name}.*"):
        m = pattern.fullmatch(p.name)
        if m is None or (m.group(1) is not None and alive(int(m.group(1)))):
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed


__all__ = ["LOCK", "Lock", "acquire", "alive", "clean_leftovers", "holding", "waiting"]
