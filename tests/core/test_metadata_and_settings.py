"""Per-day counts and previews of what an asset wrote; where settings look by default; the
contract's new columns on an old warehouse and its comments."""

import json

import duckdb
import numpy as np
import pandas as pd
import pytest

from anomaly_assets import warehouse as wh
from anomaly_assets.analyst_copy import document
from anomaly_assets.defs.metadata import ChunkedWrite, day_counts, day_metadata, flagged_rows, latest_rows
from anomaly_assets.settings import load_settings, record_first_day, recorded_first_day


def _scores(day: str, n: int, flagged: int, critical: int, cold: int = 0, entity="e") -> pd.DataFrame:
    ts = pd.date_range(day, periods=n, freq="h", tz="UTC")
    severity = ["cold_start"] * cold + ["critical"] * critical + ["warning"] * (flagged - critical)
    severity += ["normal"] * (n - len(severity))
    return pd.DataFrame({"entity_id": entity, "ts": ts, "severity": severity,
                         "is_anomaly": [s in ("warning", "critical") for s in severity],
                         "anomaly_score": np.where([s == "cold_start" for s in severity], np.nan, np.linspace(0, 1, n))})


def test_day_counts_split_a_range_into_its_days():
    rows = pd.concat([_scores("2026-09-01", 24, 3, 1, cold=4), _scores("2026-09-02", 24, 0, 0)], ignore_index=True)
    c = day_counts(rows)
    assert list(c.index) == ["2026-09-01", "2026-09-02"]
    assert c.loc["2026-09-01"].to_dict() == {"rows": 24, "scored": 20, "flagged": 3, "critical": 1, "cold_start_points": 4}
    md = day_metadata(c)
    assert md["2026-09-01"]["flagged_share"] == pytest.approx(3 / 20) and md["2026-09-02"]["flagged_share"] == 0.0
    assert md["2026-09-02"]["dagster/row_count"] == 24


def test_chunked_write_adds_days_over_chunks_and_previews_the_latest_and_flagged_rows():
    w = ChunkedWrite()
    a = _scores("2026-09-01", 48, 2, 1, cold=24, entity="a")  # the oldest rows are cold start
    b = _scores("2026-09-01", 48, 5, 0, entity="b")
    w.add(a)
    w.add(b)
    assert w.rows == 96 and w.days.loc["2026-09-02", "rows"] == 48
    assert w.days.loc["2026-09-01", "cold_start_points"] == 24
    # latest first: no cold-start rows, the newest timestamp at the top
    assert (w.preview["severity"] != "cold_start").all() and w.preview["ts"].iloc[0] == a["ts"].max()
    assert w.preview["ts"].is_monotonic_decreasing
    # the strongest flagged rows of both chunks
    assert w.flagged["is_anomaly"].all() and len(w.flagged) == 7
    assert w.flagged["anomaly_score"].is_monotonic_decreasing


def test_latest_and_flagged_rows_of_frames_without_the_columns():
    df = pd.DataFrame({"x": range(20)})
    assert len(latest_rows(df, None)) == 10 and flagged_rows(df).empty


def test_defaults_come_from_the_data_folder(tmp_path):
    data = tmp_path / "data"
    s = load_settings({"ANOMALY_DATA_DIR": str(data)})
    assert s.landing_dir == data / "landing" and s.warehouse == data / "warehouse.duckdb"
    assert s.analyst_copy == data / "analytics.duckdb" and s.labels is None and s.entities is None
    assert s.partition_start == "2013-01-01" and not s.partition_start_from_env
    data.mkdir()
    (data / "labels.csv").write_text("entity_id,start,end,metrics\n")
    (data / "entities.csv").write_text("entity_id,site,tags\n")
    record_first_day(data / "warehouse.duckdb", "2011-07-01")
    s = load_settings({"ANOMALY_DATA_DIR": str(data)})
    assert s.labels == data / "labels.csv" and s.entities == data / "entities.csv"
    assert s.partition_start == "2011-07-01" == recorded_first_day(s.warehouse)
    # explicit settings win over the data folder and the record
    s = load_settings({"ANOMALY_DATA_DIR": str(data), "ANOMALY_PARTITION_START": "2020-01-01",
                       "ANOMALY_LABELS": str(tmp_path / "l.csv")})
    assert s.partition_start == "2020-01-01" and s.partition_start_from_env and s.labels == tmp_path / "l.csv"


def test_a_broken_first_day_record_names_the_file(tmp_path):
    wh_path = tmp_path / "warehouse.duckdb"
    (tmp_path / "warehouse.partitions.json").write_text(json.dumps({"first_day": "July 2011"}))
    with pytest.raises(ValueError, match=r"warehouse\.partitions\.json: first_day 'July 2011' is not a date"):
        load_settings({"ANOMALY_WAREHOUSE": str(wh_path)})


def test_an_old_warehouse_gets_the_band_columns_and_keeps_its_rows(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    try:
        con.execute("CREATE SCHEMA features")
        old = [c for c in wh.DECOMPOSITION.columns if c.name not in ("lower", "upper", "excluded")]
        con.execute("CREATE TABLE features.decomposition (" + ", ".join(f'"{c.name}" {c.type}' for c in old) + ")")
        con.execute("INSERT INTO features.decomposition VALUES ('e', 'm', '2026-01-01', 1, 1, 1, 0, 0, 0)")
        wh.ensure_tables(con)
        cols = [r[0] for r in con.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'decomposition' "
                                          "ORDER BY column_index").fetchall()]
        assert cols == wh.DECOMPOSITION.column_names
        assert con.execute("SELECT entity_id, lower, upper, excluded FROM features.decomposition").fetchall() \
            == [("e", None, None, None)]
        wh.ensure_tables(con)  # again: nothing to add
    finally:
        con.close()


def test_comments_come_from_the_contract_and_skip_what_is_missing():
    con = duckdb.connect()
    try:
        wh.ensure_tables(con, (wh.OBSERVATIONS,))
        con.execute("CREATE VIEW raw.latest AS SELECT * FROM raw.observations")
        n = document(con, [(t.schema, t.name, t.doc, {c.name: c.doc for c in t.columns}) for t in wh.TABLES]
                     + [("raw", "latest", "it's the latest", {"value": "the value", "nope": "no such column"})])
        assert n == 1 + len(wh.OBSERVATIONS.columns) + 2
        assert con.execute("SELECT comment FROM duckdb_tables() WHERE table_name = 'observations'").fetchone()[0] \
            == wh.OBSERVATIONS.doc
        docs = dict(con.execute("SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'observations'"
                                ).fetchall())
        assert docs == {c.name: c.doc for c in wh.OBSERVATIONS.columns}
        assert con.execute("SELECT comment FROM duckdb_views() WHERE view_name = 'latest'").fetchone()[0] == "it's the latest"
    finally:
        con.close()
