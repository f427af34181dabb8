"""Another process on the main warehouse: a run waits saying who holds it and for how long, and
`anomaly-assets summary` falls back to the analysts' copy instead of a traceback."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
from anomaly_assets import cli
from anomaly_assets.analyst_copy import publish
from anomaly_assets.defs.resources import Warehouse


@contextlib.contextmanager
def holder(path: Path, *, read_only: bool, seconds: float):
    """Another process holding ``path`` open for ``seconds`` (an analyst's notebook, a stuck job)."""
    code = (f"import duckdb, time; c = duckdb.connect({str(path)!r}, read_only={read_only}); "
            f"print('held', flush=True); time.sleep({seconds})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield proc
    finally:
        proc.kill()
        proc.wait()


@dg.asset
def touch(duckdb: Warehouse) -> None:
    with duckdb.get_connection() as con:
        con.execute("CREATE TABLE IF NOT EXISTS t AS SELECT 1 AS x")


def _run(db: Path, wait_s: float, instance=None):
    return dg.materialize([touch], resources={"duckdb": Warehouse(database=str(db), lock_wait_seconds=wait_s)},
                          instance=instance or dg.DagsterInstance.ephemeral(), raise_on_error=False)


def test_a_run_waits_for_a_reader_and_says_who_it_is(tmp_path):
    db = tmp_path / "wh.duckdb"
    duckdb.connect(str(db)).close()
    with holder(db, read_only=True, seconds=4) as proc:
        t0 = time.monotonic()
        instance = dg.DagsterInstance.ephemeral()
        result = _run(db, wait_s=60, instance=instance)
        waited = time.monotonic() - t0
    assert result.success and waited >= 2  # waited for the reader, then ran
    instance_logs = [r.user_message for r in instance.all_logs(result.run_id)]
    waits = [m for m in instance_logs if m.startswith("waiting for warehouse wh.duckdb: held by PID")]
    assert waits and f"PID {proc.pid} (" in waits[0] and "running for" in waits[0] and "-c import duckdb" in waits[0]


def test_a_run_gives_up_naming_the_holder(tmp_path):
    db = tmp_path / "wh.duckdb"
    duckdb.connect(str(db)).close()
    with holder(db, read_only=True, seconds=30) as proc:
        result = _run(db, wait_s=1.5)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    text = failure.event_specific_data.error.to_string()
    assert f"is held by PID {proc.pid}" in text and "gave up after waiting" in text and "analysts' copy" in text


def test_summary_reads_the_analysts_copy_while_a_run_holds_the_warehouse(tmp_path, monkeypatch, capsys):
    db, copy = tmp_path / "wh.duckdb", tmp_path / "analytics.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE SCHEMA scoring; CREATE TABLE scoring.anomaly_scores (entity_id VARCHAR, ts TIMESTAMPTZ, "
                "severity VARCHAR, anomaly_score DOUBLE, why VARCHAR, is_anomaly BOOLEAN)")
    con.execute("CREATE SCHEMA evaluation; CREATE TABLE evaluation.metrics (entity_id VARCHAR, best_f1 DOUBLE, "
                "f1 DOUBLE, precision DOUBLE, recall DOUBLE, event_recall DOUBLE, event_precision DOUBLE)")
    con.close()
    monkeypatch.setenv("ANOMALY_WAREHOUSE", str(db))
    monkeypatch.setenv("ANOMALY_ANALYST_COPY", str(copy))
    from anomaly_assets import definitions

    monkeypatch.setattr(definitions, "settings", definitions.load_settings())
    with holder(db, read_only=False, seconds=30) as proc:  # a run writing
        assert cli.main(["summary"]) == 3  # no copy yet: one clear line, no traceback
        err = capsys.readouterr().err
        assert err.startswith(f"error: the warehouse is in use by PID {proc.pid} (") and "Traceback" not in err
    publish(db, copy)
    with holder(db, read_only=False, seconds=30) as proc:
        assert cli.main(["summary"]) == 0
        out = capsys.readouterr().out
    assert f"(the warehouse is in use by PID {proc.pid} (" in out and f"this is the analysts' copy {copy}" in out
    assert "scoring.anomaly_scores" in out
