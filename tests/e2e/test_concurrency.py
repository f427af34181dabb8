"""Concurrent runs and a reading analyst: two `anomaly-assets backfill` processes and a third
writer that goes straight to Dagster, at once, on one warehouse and one Dagster instance (sqlite
storage), while an analyst process queries the published copy in a loop. DuckDB has one writer per
file: the `duckdb_writer` pool (limit 1 in dagster_home/dagster.yaml) must serialize every step that
opens the warehouse, across processes; the shell additionally queues its backfills whole.
"""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets.demo.fleet import generate_fleet

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FIRST, LAST = "2026-09-07", "2026-09-16"  # 10 of the 15 generated days
DAYS = ["2026-09-15", "2026-09-16"]  # scored days (past the 7-day cold start)
WALL_CLOCK = {"ingested_at", "read_at", "trained_at", "evaluated_at"}

ANALYST = r"""
import json, sys, time, duckdb
path, stop, out = sys.argv[1:4]
reads, errors = 0, []
while True:
    try:
        con = duckdb.connect(path, read_only=True)
        try:
            con.execute("SELECT count(*) FROM marts.fleet_health").fetchone()
            con.execute("SELECT entity_id, max(anomaly_score) FROM scoring.anomaly_scores GROUP BY ALL").fetchall()
        finally:
            con.close()
        reads += 1
    except Exception as e:
        errors.append(f"{type(e).__name__}: {e}")
    try:
        open(stop).close()
        break
    except FileNotFoundError:
        time.sleep(0.05)
json.dump({"reads": reads, "errors": errors}, open(out, "w"))
"""


def _env(root: Path) -> dict:
    env = {**os.environ, "DAGSTER_HOME": str(root / "dagster_home"), "ANOMALY_LANDING_DIR": str(root / "landing"),
           "ANOMALY_WAREHOUSE": str(root / "warehouse.duckdb"), "ANOMALY_ANALYST_COPY": str(root / "analytics.duckdb"),
           "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1"}
    for k in ("ANOMALY_LABELS", "ANOMALY_SPLITS"):
        env.pop(k, None)
    return env


def _backfill(root: Path, first: str, last: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([str(REPO / ".venv" / "bin" / "anomaly-assets"), "backfill", "--from", first, "--to", last],
                            env=_env(root), stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _tables(path: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL").fetchall():
            df = con.execute(f'SELECT * FROM "{schema}"."{table}"').df()
            df = df.drop(columns=[c for c in df.columns if c in WALL_CLOCK])
            out[f"{schema}.{table}"] = df.sort_values(list(df.columns), ignore_index=True)
        return out
    finally:
        con.close()


def _pool_steps(instance, run_id: str) -> list[tuple[float, float, str]]:
    """(start, end, step) of every step of the run that ran (all of them are in the writer pool).

    A step ends with its last materialization: Dagster frees the pool slot when it handles the
    step's success, before it writes that event, so another run's STEP_START can precede a
    STEP_SUCCESS by a few milliseconds after the step's work is done."""
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.ASSET_MATERIALIZATION}
    records = instance.get_records_for_run(run_id, of_type=kinds).records
    start, done, materialized = {}, {}, {}
    for r in records:
        e = r.event_log_entry
        kind = e.dagster_event.event_type
        if kind == dg.DagsterEventType.STEP_START:
            start[e.step_key] = e.timestamp
        elif kind == dg.DagsterEventType.STEP_SUCCESS:
            done[e.step_key] = e.timestamp
        else:
            materialized[e.step_key] = max(materialized.get(e.step_key, 0.0), e.timestamp)
    return [(start[k], materialized.get(k, done[k]), k) for k in start if k in done]


BYPASS = r"""
import sys, dagster as dg
from anomaly_assets.definitions import analyst_copy, resources, sql_assets
# straight to Dagster, not through the shell's lock: only the duckdb_writer pool protects these steps
r = dg.materialize([*sql_assets, analyst_copy], resources=resources(), instance=dg.DagsterInstance.get(),
                   tags={"test/writer": "bypass"}, raise_on_error=False)
sys.exit(0 if r.success else 1)
"""


def test_concurrent_runs_take_turns_on_the_warehouse_while_an_analyst_reads(tmp_path):
    (tmp_path / "dagster_home").mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", tmp_path / "dagster_home" / "dagster.yaml")
    generate_fleet(tmp_path / "landing", entities=4, days=15, labels_path=tmp_path / "labels.csv",
                   entities_path=tmp_path / "entities.csv")

    # the sequential reference: the whole history in one run, which also publishes the first copy
    t0 = time.monotonic()
    seq = _backfill(tmp_path, FIRST, LAST, tmp_path / "sequential.log")
    assert seq.wait(timeout=90) == 0, (tmp_path / "sequential.log").read_text()[-3000:]
    t_seq = time.monotonic() - t0
    reference = _tables(tmp_path / "warehouse.duckdb")
    assert len(reference["scoring.anomaly_scores"]) == 4 * 24 * 10
    instance = dg.DagsterInstance.from_config(str(tmp_path / "dagster_home"))
    before = {r.run_id for r in instance.get_runs()}

    # two shell backfills of scored days at once, plus a writer that bypasses the shell,
    # while an analyst process queries the published copy in a loop
    stop, report = tmp_path / "stop", tmp_path / "analyst.json"
    analyst = subprocess.Popen([sys.executable, "-c", ANALYST, str(tmp_path / "analytics.duckdb"), str(stop), str(report)])
    t0 = time.monotonic()
    logs = [tmp_path / f"backfill-{d}.log" for d in DAYS] + [tmp_path / "bypass.log"]
    procs = [_backfill(tmp_path, d, d, log) for d, log in zip(DAYS, logs)]
    procs.append(subprocess.Popen([sys.executable, "-c", BYPASS], env=_env(tmp_path),
                                  stdout=open(logs[-1], "wb"), stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=150) for p in procs]
    t_conc = time.monotonic() - t0
    time.sleep(0.3)
    stop.touch()
    analyst.wait(timeout=20)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0, 0], "\n\n".join(t[-2000:] for t in texts)
    assert not any("could not set lock" in t.lower() or "conflicting lock" in t.lower() for t in texts)
    # the shell queued its backfills whole instead of interleaving them step by step
    assert sum("waiting for another backfill" in t for t in texts[:2]) == 1

    reads = json.loads(report.read_text())
    assert reads["errors"] == [] and reads["reads"] > 10, reads

    # every warehouse step of the three runs had the warehouse to itself: no two overlap in time
    try:
        runs = [r for r in instance.get_runs() if r.run_id not in before]
        assert len(runs) == 3 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        steps = sorted((s, e, f"{r.run_id[:8]}/{k}") for r in runs for s, e, k in _pool_steps(instance, r.run_id))
        assert len(steps) >= 2 * 8 + 3
        overlaps = [(a[2], b[2]) for a, b in zip(steps, steps[1:]) if b[0] < a[1]]
        assert overlaps == []
        blocked = sum(1 for r in runs for rec in instance.get_records_for_run(
            r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
            if "blocked by limit for pool duckdb_writer" in (rec.event_log_entry.dagster_event.message or ""))
    finally:
        instance.dispose()

    # re-running days concurrently leaves the warehouse exactly as the sequential run made it,
    # and the analysts' copy is the warehouse
    after = _tables(tmp_path / "warehouse.duckdb")
    assert after.keys() == reference.keys()
    for name in set(reference) - {"meta.slice_changes"}:  # the log of writes: the re-runs added theirs
        pd.testing.assert_frame_equal(after[name], reference[name], obj=name)
    copy = _tables(tmp_path / "analytics.duckdb")
    assert copy.keys() == after.keys()
    for name in after:
        pd.testing.assert_frame_equal(copy[name], after[name], obj=name)
    print(f"sequential 10-day backfill {t_seq:.1f} s; two 1-day backfills + a bypassing writer at once {t_conc:.1f} s; "
          f"steps blocked by the pool {blocked}; analyst reads {reads['reads']}")
