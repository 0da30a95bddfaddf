"""Faults of two writers (issue 19): a run trained, overwritten or resumed by a second process, a
prediction computed twice at once, the locks and temporary folders of processes that died."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.conftest import tiny_train_config
from workbench.errors import RunError
from workbench.locks import LOCK, acquire, clean_leftovers
from workbench.predict import PredictConfig, predict_run
from workbench.train.average import average_run
from workbench.train.trainer import make_run_dir, resume, train


@pytest.fixture
def live_pid():
    """The pid of a process that runs for the test's length."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture(scope="module")
def dead_pid():
    """The pid of a process that has ended."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def hold(folder, pid, what="training", host=None):
    """Write the lock file another process would hold on `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "what": what,
                                           "since": "2026-12-03T10:00:00+00:00"}))


def files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_finished_run_holds_no_lock(tiny_run):
    assert not (tiny_run / LOCK).exists()
    assert [p.name for p in tiny_run.parent.iterdir() if p.name.startswith(".") and p.name != ".cache"] == []


def test_overwriting_a_run_that_another_process_trains_is_refused(tiny_run, tiny_data, tmp_path, live_pid):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "r")
    hold(runs / "r", live_pid)
    before = files(runs / "r")
    with pytest.raises(RunError) as e:
        train(tiny_train_config(tiny_data, runs, "r"), overwrite=True, progress=False)
    assert str(e.value) == (f"{runs / 'r'}: in use by training (pid {live_pid} on this host, since "
                            "2026-12-03T10:00:00+00:00); wait for it to end or stop it")
    assert files(runs / "r") == before  # its folder untouched, nothing moved aside
    assert sorted(p.name for p in runs.iterdir()) == ["r"]


def test_resuming_a_run_that_another_process_trains_is_refused(tiny_run, tmp_path, live_pid):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "r")
    info = json.loads((runs / "r" / "run.json").read_text())
    (runs / "r" / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    hold(runs / "r", live_pid)
    with pytest.raises(RunError, match=f"in use by training \\(pid {live_pid} on this host"):
        resume("r", runs, progress=False)


def test_averaging_over_a_run_that_another_process_trains_is_refused(tiny_run, tmp_path, live_pid):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "src")
    shutil.copytree(tiny_run, runs / "r")
    hold(runs / "r", live_pid)
    before = files(runs / "r")
    with pytest.raises(RunError) as e:
        average_run("src", top=1, name="r", runs_dir=runs, device="cpu", overwrite=True)
    assert str(e.value) == (f"{runs / 'r'}: in use by training (pid {live_pid} on this host, since "
                            "2026-12-03T10:00:00+00:00); wait for it to end or stop it")
    assert files(runs / "r") == before
    assert sorted(p.name for p in runs.iterdir()) == ["r", "src"]


def test_a_refused_average_releases_the_lock_it_took(tiny_run, tmp_path):
    """Averaging more checkpoints than kept fails after taking r's lock, which must not stay."""
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "src")
    shutil.copytree(tiny_run, runs / "r")
    with pytest.raises(RunError, match="checkpoints"):
        average_run("src", top=99, name="r", runs_dir=runs, device="cpu", overwrite=True)
    assert not (runs / "r" / LOCK).exists()


def test_a_lock_of_another_host_is_refused_with_the_file_to_delete(tmp_path):
    hold(tmp_path / "r", 4242, host="node-7")
    with pytest.raises(RunError) as e:
        acquire(tmp_path / "r" / LOCK, "training")
    assert str(e.value) == (f"{tmp_path / 'r'}: in use by training (pid 4242 on host node-7, since "
                            f"2026-12-03T10:00:00+00:00); if that process is gone, delete {tmp_path / 'r' / LOCK}")


def test_the_lock_of_a_dead_process_is_taken_over_and_its_leftovers_cleaned(tiny_data, tmp_path, dead_pid, live_pid):
    runs = tmp_path / "runs"
    hold(runs / "r", dead_pid)
    (runs / "r" / "run.json").write_text("{}")
    # what killed writers of "r" left beside it, and what a live one is still writing
    (runs / f".r.replaced-{dead_pid}").mkdir()
    (runs / ".r.k2j4h6g1.tmp").mkdir()
    (runs / f".r.replaced-{live_pid}").mkdir()
    (runs / ".r2.k2j4h6g1.tmp").mkdir()  # another run's
    path, aside, lock = make_run_dir(tiny_train_config(tiny_data, runs, "r"), overwrite=True)
    try:
        assert path == runs / "r" and aside == runs / f".r.replaced-{os.getpid()}"
        assert json.loads((path / LOCK).read_text())["pid"] == os.getpid()
        assert sorted(p.name for p in runs.iterdir()) == sorted(
            [".r2.k2j4h6g1.tmp", f".r.replaced-{live_pid}", f".r.replaced-{os.getpid()}", "r"])
    finally:
        lock.release()
    assert not (path / LOCK).exists()


def test_clean_leftovers_removes_only_dead_writers_of_that_name(tmp_path, dead_pid, live_pid):
    for name in [".a.abcd1234.tmp", f".a.old-{dead_pid}", f".a.old-{live_pid}", ".a.b.abcd1234.tmp", ".ab.x",
                 ".a.json.abcd1234.tmp.x"]:
        (tmp_path / name).mkdir()
    (tmp_path / ".a.qwer5678.tmp").write_text("")  # a temporary file (atomic_path) is removed as well
    removed = sorted(p.name for p in clean_leftovers(tmp_path, "a"))
    assert removed == [".a.abcd1234.tmp", f".a.old-{dead_pid}", ".a.qwer5678.tmp"]


def test_a_prediction_being_computed_by_another_process_is_refused(tiny_run, tiny_data, tmp_path, live_pid,
                                                                   dead_pid):
    run = tmp_path / "runs" / "r"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("preds"))
    entry = run / "preds" / "val" / "none"
    entry.parent.mkdir(parents=True)
    lock = entry.with_name(".none.lock")
    lock.write_text(json.dumps({"pid": live_pid, "host": socket.gethostname(), "what": "prediction of r (val, none)",
                                "since": "2026-12-03T10:00:00+00:00"}))
    config = PredictConfig(str(run), str(tiny_data), "val", "cpu")
    with pytest.raises(RunError, match=f"in use by prediction of r \\(val, none\\) \\(pid {live_pid} on this host"):
        predict_run(config, progress=False)
    assert not entry.exists()
    # the predicting process died, leaving its lock and its half-written folder: taken over, cleaned
    lock.write_text(lock.read_text().replace(str(live_pid), str(dead_pid)))
    (entry.parent / ".none.abcd1234.tmp").mkdir()
    _, folder, reused = predict_run(config, progress=False)
    assert folder == entry and not reused and (entry / "meta.json").is_file()
    assert sorted(p.name for p in entry.parent.iterdir()) == ["none"]  # lock released, leftovers gone
