"""A write that breaks the warehouse contract fails with DuckDB's own reason, not a follow-on error."""

import duckdb
import pandas as pd
import pytest

from anomaly_assets import warehouse as wh


def test_a_null_key_inside_a_transaction_names_the_constraint(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    wh.ensure_tables(con)
    start, end = pd.Timestamp("2026-10-01", tz="UTC"), pd.Timestamp("2026-10-02", tz="UTC")
    rows = pd.DataFrame({"entity_id": [None], "metric": ["m"], "ts": [start], "value": [1.0],
                         "source_file": ["f.csv"], "line_number": [2], "ingested_at": [start]})
    with pytest.raises(duckdb.ConstraintException, match="NOT NULL"):
        with wh.transaction(con):
            wh.replace_time_slice(con, wh.OBSERVATIONS, rows[wh.OBSERVATIONS.column_names], start, end)
    assert con.execute("SELECT count(*) FROM raw.observations").fetchone()[0] == 0
    con.close()
