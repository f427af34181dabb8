"""Assets that work a chunk of entities at a time, in worker processes, write what one pass over the fleet writes."""

import dagster as dg
import duckdb
import pandas as pd

from anomaly_assets.defs import detection, ingest
from anomaly_assets.definitions import resources
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

TABLES = {
    "features.decomposition": ["entity_id", "metric", "ts"],
    "scoring.anomaly_scores": ["entity_id", "ts"],
    "scoring.explanations": ["entity_id", "ts", "rank"],
}


def _chain(root, landing, name):
    (root / name).mkdir()
    env = {"ANOMALY_LANDING_DIR": str(landing), "ANOMALY_WAREHOUSE": str(root / name / "wh.duckdb")}
    result = dg.materialize(
        [ingest.observations, detection.detection],
        resources=resources(load_settings(env)), instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": "2026-09-07", "dagster/asset_partition_range_end": "2026-09-21"},
    )
    assert result.success
    con = duckdb.connect(str(root / name / "wh.duckdb"), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY {', '.join(k)}").df() for t, k in TABLES.items()}
        out["versions"] = con.execute("SELECT day, entities, cold_start_entities, training_rows FROM ml.model_versions "
                                      "ORDER BY day").df()
    finally:
        con.close()
    return result, out


def test_chunks_of_entities_change_nothing(tmp_path, monkeypatch):
    generate_fleet(tmp_path / "landing", entities=7, days=15, seed=3)
    _, whole = _chain(tmp_path, tmp_path / "landing", "whole")
    # about one entity per chunk (an entity has 4 metrics x 24 h x ~15 days of rows)
    monkeypatch.setattr(detection, "CHUNK_ROWS", 1500 * 8)  # a backfill's chunks: CHUNK_ROWS // 8 of its rows
    monkeypatch.setenv("ANOMALY_WORKERS", "2")  # computed in two worker processes
    result, chunked = _chain(tmp_path, tmp_path / "landing", "chunked")
    md = next(m.metadata for m in result.asset_materializations_for_node("detection")
              if m.asset_key.path == ["features", "decomposition"])
    assert md["chunks"].value >= 5 and md["workers"].value == 2
    assert md["rows_in_run"].value == len(whole["features.decomposition"]) > 0  # (dagster/row_count: the day's)
    for name, df in whole.items():
        # the same rows, keys, flags, severities and texts; numbers to the rounding of a matrix
        # product (PCA) whose kernel BLAS may pick by batch size (tests/tolerances.py)
        floats = [c for c in df.columns if pd.api.types.is_float_dtype(df[c])]
        others = [c for c in df.columns if c not in floats]
        pd.testing.assert_frame_equal(chunked[name][others], df[others], obj=name)
        pd.testing.assert_frame_equal(chunked[name][floats], df[floats], check_exact=False, rtol=1e-9, atol=1e-9,
                                      obj=name)
    assert whole["scoring.anomaly_scores"]["is_anomaly"].any()


def test_a_backfill_stores_each_chunks_rows_in_time_order(tmp_path, monkeypatch):
    # re-running one day then deletes from that day's vectors only: spread over every vector (the
    # benchmark's stand-in history), one day of 100k entities needed ~4 GB of DuckDB memory to delete
    generate_fleet(tmp_path / "landing", entities=7, days=15, seed=3)
    monkeypatch.setattr(detection, "CHUNK_ROWS", 1500 * 8 * 3)  # about three entities a chunk
    result, _ = _chain(tmp_path, tmp_path / "landing", "chunked")
    chunks = next(m.metadata for m in result.asset_materializations_for_node("detection")
                  if m.asset_key.path == ["features", "decomposition"])["chunks"].value
    assert 1 < chunks < 7
    con = duckdb.connect(str(tmp_path / "chunked" / "wh.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")  # days of the data, not of the machine's zone
        for table in ("features.decomposition", "scoring.anomaly_scores"):
            days, runs = con.execute(
                f"""SELECT count(DISTINCT day), count(*) FILTER (WHERE day IS DISTINCT FROM prev) FROM (
                        SELECT day, lag(day) OVER (ORDER BY rowid) AS prev
                        FROM (SELECT rowid, CAST(ts AS DATE) AS day FROM {table}))""").fetchone()
            # each chunk day by day; stored entity by entity, every entity would start a run of every day
            assert days == 15 and runs <= chunks * days, (table, runs, chunks)
    finally:
        con.close()
