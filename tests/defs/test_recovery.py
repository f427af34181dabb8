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
    (tmp_path / f".analytics.duckdb.{_dead_pid()}-0123456789ab.tmp.spill").mkdir()  # what it spilled
    publish(wh, copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.duckdb.0123456789ab.tmp", "analytics.duckdb",
                                                          "warehouse.duckdb"]


# the peak resident memory of this process image: VmHWM starts anew at exec (ru_maxrss would keep
# the high-water mark of the process it was forked from, a test worker's)
_PEAK = """
import sys
from anomaly_assets.analyst_copy import publish
publish(sys.argv[1], sys.argv[2], memory_limit=sys.argv[3] if len(sys.argv) > 3 else None)
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) // 1024)
"""


def test_the_copy_keeps_to_the_warehouses_memory_limit(tmp_path):
    """Unbounded, DuckDB's copy holds up to 80 % of the machine's memory (21 GB for a 12 GB
    warehouse, benchmarks/RESULTS.md); the run's memory limit bounds it, and the copy is whole."""
    wh = tmp_path / "warehouse.duckdb"
    con = duckdb.connect(str(wh))
    con.execute("CREATE TABLE t AS SELECT range AS k, random() AS x, random() AS y FROM range(30000000)")
    con.close()
    peak = {}
    for limit in (None, "64MB"):
        copy = tmp_path / f"copy-{limit}.duckdb"
        out = subprocess.run([sys.executable, "-c", _PEAK, str(wh), str(copy), *([limit] if limit else [])],
                             capture_output=True, text=True, check=True)
        peak[limit] = int(out.stdout.split()[-1])
        with duckdb.connect(str(copy), read_only=True) as c:
            assert c.execute("SELECT count(*), sum(k) FROM t").fetchone() == (30_000_000, 30_000_000 * 29_999_999 // 2)
    # MB of resident memory, each copy in its own process (here 549 against 903: a one-table copy
    # holds more than the limit, the 100k warehouse's held 1.3 GB at 1 GB against 20 GB unbounded)
    assert peak["64MB"] < 0.85 * peak[None], peak
    assert not [p for p in tmp_path.iterdir() if ".spill" in p.name]  # nothing left of what spilled
