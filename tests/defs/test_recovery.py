"""What killed runs leave behind is cleaned up by the next run: runs that never started, and the
full-size temp copies of a publish killed before its rename."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb

from anomaly_assets.analyst_copy import publish, remove_leftovers
from anomaly_assets.recovery import PID_TAG, release_dead_runs


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@dg.op
def noop():
    return None


@dg.job
def a_job():
    noop()


def test_runs_killed_before_they_started_are_marked_failed(tmp_path):
    """Before, release_dead_runs looked at STARTED runs only: these stayed NOT_STARTED forever."""
    instance = dg.DagsterInstance.ephemeral()
    dead = instance.create_run_for_job(a_job, tags={PID_TAG: str(_dead_pid())})
    alive = instance.create_run_for_job(a_job, tags={PID_TAG: str(os.getpid())})
    untagged = instance.create_run_for_job(a_job)
    assert dead.status == dg.DagsterRunStatus.NOT_STARTED
    assert release_dead_runs(instance) == [dead.run_id]  # the untagged one is young: it may still start
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    assert release_dead_runs(instance, stale_after_s=0) == [untagged.run_id]
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.NOT_STARTED
    assert release_dead_runs(instance, stale_after_s=0) == []


def test_a_killed_publish_leaves_a_temp_copy_that_the_next_publish_removes(tmp_path):
    wh, copy = tmp_path / "warehouse.duckdb", tmp_path / "analytics.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE TABLE t AS SELECT range AS x FROM range(2000000)")
    con.close()
    # a real publish killed mid-copy (kill -9 once its temp file appears)
    code = f"from anomaly_assets.analyst_copy import publish; publish({str(wh)!r}, {str(copy)!r})"
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.monotonic() + 60
    while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "the publish ended before it could be killed"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".analytics.duckdb."))
    assert leftovers and all(f".analytics.duckdb.{proc.pid}-" in n for n in leftovers)
    # a copy a live process is writing, an old one without a pid, an unrelated file: only the old one goes
    mine = tmp_path / f".analytics.duckdb.{os.getpid()}-0123456789ab.tmp"
    legacy = tmp_path / ".analytics.duckdb.0123456789ab.tmp"
    other = tmp_path / ".other.duckdb.0123456789ab.tmp"
    for p in (mine, legacy, other):
        p.write_bytes(b"x")
    os.utime(legacy, (time.time() - 3600, time.time() - 3600))
    os.utime(other, (time.time() - 3600, time.time() - 3600))
    assert sorted(p.name for p in remove_leftovers(copy)) == sorted(leftovers + [legacy.name])
    assert mine.exists() and other.exists()
    mine.unlink()
    # and publish does it first thing
    (tmp_path / f".analytics.duckdb.{_dead_pid()}-0123456789ab.tmp").write_bytes(b"x" * 1000)
    publish(wh, copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.duckdb.0123456789ab.tmp", "analytics.duckdb",
                                                          "warehouse.duckdb"]
