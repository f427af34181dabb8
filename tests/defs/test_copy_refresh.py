"""The analysts' copy is refreshed with the slices the warehouse changed since the last publish,
and equals a copy made from scratch; when a refresh cannot be trusted it is made from scratch."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets import warehouse as wh
from anomaly_assets.analyst_copy import publish
from anomaly_assets.definitions import analyst_copy, python_assets, resources, sql_assets
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

DAY = pd.Timedelta(days=1)
T0 = pd.Timestamp("2026-09-07", tz="UTC")


def _tables(con, db):
    return sorted(f'"{s}"."{t}"' for s, t in con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ?", [db]).fetchall())


def _differences(a: Path, b: Path) -> dict:
    """Rows in one file's table and not the other's (as multisets), by table; and the table lists."""
    con = duckdb.connect()
    try:
        con.execute(f"ATTACH '{a}' AS a (READ_ONLY)")
        con.execute(f"ATTACH '{b}' AS b (READ_ONLY)")
        assert _tables(con, "a") == _tables(con, "b")
        out = {}
        for t in _tables(con, "a"):
            n = con.execute(f"SELECT (SELECT count(*) FROM (SELECT * FROM a.{t} EXCEPT ALL SELECT * FROM b.{t})) + "
                            f"(SELECT count(*) FROM (SELECT * FROM b.{t} EXCEPT ALL SELECT * FROM a.{t}))").fetchone()[0]
            if n:
                out[t] = n
        return out
    finally:
        con.close()


def _count(path: Path, sql: str, params=()):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchone()[0]
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------
# through the chain: nights, then a re-run of an old day whose landing file was corrected
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("refresh")
    generate_fleet(root / "landing", entities=4, days=16, labels_path=root / "labels.csv",
                   entities_path=root / "entities.csv")
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "ANOMALY_ENTITIES": str(root / "entities.csv"), "ANOMALY_DATA_DIR": str(root)}
    res = resources(load_settings(env))  # the rulebook's register from env, not os.environ
    instance = dg.DagsterInstance.ephemeral()

    def run(first: str, last: str) -> dict:
        result = dg.materialize([*python_assets, *sql_assets, analyst_copy], resources=res, instance=instance,
                                tags={"dagster/asset_partition_range_start": first,
                                      "dagster/asset_partition_range_end": last})
        assert result.success
        md = result.asset_materializations_for_node(analyst_copy.op.name)[0].metadata
        return {k: v.value for k, v in md.items()}

    return root, run


def test_nights_and_a_rerun_refresh_the_copy_to_what_a_copy_from_scratch_holds(chain, tmp_path):
    root, run = chain
    copy, warehouse = root / "analytics.duckdb", root / "wh.duckdb"
    first = run("2026-09-07", "2026-09-18")
    assert not first["refreshed"] and first["copied_from_scratch_because"] == "no copy yet"

    night = run("2026-09-19", "2026-09-19")
    assert night["refreshed"] and night["copied_from_scratch_because"] == ""
    # the day's slice of each time-keyed table and per-day mart, not the history
    assert 4 <= night["slices_refreshed"] <= 12
    assert _count(copy, "SELECT count(*) FROM scoring.anomaly_scores WHERE ts >= '2026-09-19'") > 0

    # a corrected file for an old day: the re-run replaces that day's slices, and the copy follows
    path = root / "landing" / "2026-09-12" / "site-01.csv"
    frame = pd.read_csv(path)
    frame.loc[frame["entity_id"] == "pump-0002", "voltage_v"] += 50.0
    frame.to_csv(path, index=False)
    old_copy = duckdb.connect(str(copy), read_only=True)  # an analyst's notebook open on the last copy
    try:
        sql = ("SELECT max(value) FROM raw.observations WHERE entity_id = 'pump-0002' AND metric = 'voltage_v' "
               "AND ts >= '2026-09-12' AND ts < '2026-09-13'")
        before = old_copy.execute(sql).fetchone()[0]
        rerun = run("2026-09-12", "2026-09-12")
        assert rerun["refreshed"] and rerun["slices_refreshed"] >= 4
        assert old_copy.execute(sql).fetchone()[0] == before  # the open copy keeps its snapshot
    finally:
        old_copy.close()
    assert _count(copy, sql) == pytest.approx(before + 50.0, abs=1e-6)
    assert _count(warehouse, sql) == pytest.approx(before + 50.0, abs=1e-6)

    scratch = publish(warehouse, tmp_path / "scratch.duckdb", full=True)
    assert not scratch.refreshed and scratch.reason == "asked for (full)"
    assert _differences(copy, tmp_path / "scratch.duckdb") == {}
    assert _count(copy, "SELECT count(*) FROM meta.slice_changes") == \
        _count(warehouse, "SELECT count(*) FROM meta.slice_changes")


# ---------------------------------------------------------------------------------------------
# when a refresh cannot be trusted: a copy from scratch, saying why
# ---------------------------------------------------------------------------------------------
def _observations(day: pd.Timestamp, value: float, entities=("a", "b")) -> pd.DataFrame:
    ts = pd.date_range(day, periods=24, freq="h")
    return pd.DataFrame([{"entity_id": e, "metric": "m", "ts": t, "value": value + i, "source_file": f"{day.date()}.csv",
                          "ingested_at": pd.Timestamp("2026-09-30", tz="UTC")}
                         for e in entities for i, t in enumerate(ts)])


def _warehouse(path: Path, days: int = 3, tz: str | None = None) -> Path:
    con = duckdb.connect(str(path))
    try:
        if tz:
            con.execute(f"SET TimeZone = '{tz}'")
        wh.ensure_tables(con)
        for k in range(days):
            with wh.transaction(con):
                wh.replace_time_slice(con, wh.OBSERVATIONS, _observations(T0 + k * DAY, 10.0 * k), T0 + k * DAY,
                                      T0 + (k + 1) * DAY)
    finally:
        con.close()
    return path


def test_a_slice_replaced_under_another_time_zone_refreshes_the_same_bounds(tmp_path):
    w, copy = _warehouse(tmp_path / "wh.duckdb"), tmp_path / "copy.duckdb"
    publish(w, copy)
    con = duckdb.connect(str(w))
    try:
        con.execute("SET TimeZone = 'America/New_York'")  # the bounds are UTC midnights all the same
        with wh.transaction(con):
            wh.replace_time_slice(con, wh.OBSERVATIONS, _observations(T0 + DAY, 99.0), T0 + DAY, T0 + 2 * DAY)
    finally:
        con.close()
    # published from a process in yet another time zone
    code = ("import sys; from anomaly_assets.analyst_copy import publish; p = publish(sys.argv[1], sys.argv[2]); "
            "print(p.refreshed, p.slices)")
    out = subprocess.run([sys.executable, "-c", code, str(w), str(copy)], capture_output=True, text=True,
                         env={**os.environ, "TZ": "Asia/Kolkata"}, timeout=120)
    assert out.stdout.split() == ["True", "1"], out.stdout + out.stderr
    assert _differences(copy, w) == {}


def test_a_slice_and_its_change_commit_together(tmp_path):
    w = _warehouse(tmp_path / "wh.duckdb")
    con = duckdb.connect(str(w))
    try:
        logged = lambda: con.execute("SELECT count(*) FROM meta.slice_changes").fetchone()[0]  # noqa: E731
        before = logged()
        with pytest.raises(RuntimeError):
            with wh.transaction(con):
                wh.replace_time_slice(con, wh.OBSERVATIONS, _observations(T0, 7.0), T0, T0 + DAY)
                assert logged() == before + 1  # inside the writing transaction, not after it
                raise RuntimeError("the run fails before its commit")
        assert logged() == before
        assert con.execute("SELECT min(value) FROM raw.observations WHERE ts < ?", [T0 + DAY]).fetchone()[0] == 0.0
    finally:
        con.close()


def test_a_damaged_last_copy_is_replaced_by_a_copy_from_scratch(tmp_path):
    w, copy = _warehouse(tmp_path / "wh.duckdb"), tmp_path / "copy.duckdb"
    publish(w, copy)
    copy.chmod(0o644)
    copy.write_bytes(copy.read_bytes()[:5000])  # a partial restore
    p = publish(w, copy)
    assert not p.refreshed and p.reason.startswith("the last copy could not be refreshed")
    assert _differences(copy, w) == {}
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".copy.duckdb")]


def test_the_copy_reports_its_live_rows(tmp_path):
    w, copy = _warehouse(tmp_path / "wh.duckdb"), tmp_path / "copy.duckdb"
    publish(w, copy)
    for k in (1, 2, 1):
        con = duckdb.connect(str(w))
        try:
            with wh.transaction(con):
                wh.replace_time_slice(con, wh.OBSERVATIONS, _observations(T0 + k * DAY, 50.0 + k), T0 + k * DAY,
                                      T0 + (k + 1) * DAY)
        finally:
            con.close()
        p = publish(w, copy)
        assert p.refreshed and _differences(copy, w) == {}
        # counted after the refresh's deletes (DuckDB's estimate before the checkpoint holds them too)
        assert p.rows == _count(w, "SELECT count(*) FROM raw.observations") + \
            _count(w, "SELECT count(*) FROM meta.slice_changes")


def test_a_write_the_change_log_missed_makes_a_copy_from_scratch(tmp_path):
    w, copy = _warehouse(tmp_path / "wh.duckdb"), tmp_path / "copy.duckdb"
    publish(w, copy)
    con = duckdb.connect(str(w))
    try:
        con.execute("DELETE FROM raw.observations WHERE entity_id = 'b' AND ts < ?", [T0 + DAY])  # not logged
        with wh.transaction(con):
            wh.replace_time_slice(con, wh.OBSERVATIONS, _observations(T0 + 2 * DAY, 5.0), T0 + 2 * DAY, T0 + 3 * DAY)
    finally:
        con.close()
    p = publish(w, copy)
    assert not p.refreshed and "row counts differ" in p.reason and "raw.observations" in p.reason
    assert _differences(copy, w) == {}


def test_a_changed_table_makes_a_copy_from_scratch(tmp_path):
    w, copy = _warehouse(tmp_path / "wh.duckdb"), tmp_path / "copy.duckdb"
    publish(w, copy)
    con = duckdb.connect(str(w))
    try:
        con.execute("ALTER TABLE raw.observations ADD COLUMN quality DOUBLE")
    finally:
        con.close()
    p = publish(w, copy)
    assert not p.refreshed and p.reason == "a table, column, view or macro changed: column raw.observations"
    assert _count(copy, "SELECT count(*) FROM duckdb_columns() WHERE column_name = 'quality'") == 1


def test_a_copy_of_another_warehouse_is_not_refreshed(tmp_path):
    copy = tmp_path / "copy.duckdb"
    publish(_warehouse(tmp_path / "one.duckdb"), copy)
    other = _warehouse(tmp_path / "other.duckdb", days=2)
    p = publish(other, copy)
    assert not p.refreshed and "changes the warehouse does not" in p.reason
    assert _differences(copy, other) == {}
    # and a copy made before the change log existed
    con = duckdb.connect(str(other))
    try:
        con.execute("DROP TABLE meta.slice_changes")
    finally:
        con.close()
    assert publish(other, copy).reason == "the warehouse has no change log"
