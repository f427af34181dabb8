"""Pieces of the asset checks on their own: SQL on DuckDB alone, frames without GX."""

import duckdb
import numpy as np
import pandas as pd
import pytest

from anomaly_assets import warehouse as wh
from anomaly_assets.defs.checks import STATES, UTC_DAY, entity_slices, score_states


@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_utc_day_is_the_date_of_ts_at_utc(tz):
    """UTC_DAY (arithmetic on epoch microseconds) gives CAST(ts AT TIME ZONE 'UTC' AS DATE) for
    every timestamp, whatever the session's time zone: around midnight, before 1970, NULL."""
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{tz}'")
    edges = ["1969-12-31 23:59:59.999999", "1970-01-01 00:00:00", "1970-01-01 00:00:00.000001", "1900-03-01 00:00:00",
             "1899-12-31 23:59:59.999999", "2026-10-11 23:59:59.999999", "2026-10-12 00:00:00", "2400-02-29 12:00:00"]
    con.execute("CREATE TABLE t AS SELECT TIMESTAMPTZ '1950-01-01 00:00:00+00' + to_microseconds(i * 3599999999 + i % 7) "
                "AS ts FROM range(0, 300000) r(i)")
    con.execute("INSERT INTO t SELECT unnest(?::VARCHAR[])::TIMESTAMP AT TIME ZONE 'UTC' UNION ALL SELECT NULL",
                [edges])
    rows, wrong, min_ts, max_ts = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE {UTC_DAY} IS DISTINCT FROM CAST(ts AT TIME ZONE 'UTC' AS DATE)), "
        "min(ts AT TIME ZONE 'UTC'), max(ts AT TIME ZONE 'UTC') FROM t").fetchone()
    assert rows == 300000 + len(edges) + 1 and wrong == 0
    assert str(min_ts) == "1899-12-31 23:59:59.999999" and str(max_ts) == "2400-02-29 12:00:00"
    assert con.execute(f"SELECT typeof({UTC_DAY}) FROM t LIMIT 1").fetchone() == ("DATE",)


@pytest.mark.parametrize("storage", ["pyarrow", "python"])
def test_score_states_of_text_as_read_are_those_of_its_python_strings(storage):
    """score_states factorizes NaN-missing text (pandas' str, as read through Arrow) as it is: the
    same categorical as from the Python strings of the same values, missing severities included."""
    rng = np.random.default_rng(5)
    pool = ["normal", "warning", "critical", "cold_start", None, ""]
    seen = set()
    for n in [0, 1, 7, 200]:
        for _ in range(20):
            severity = [pool[i] for i in rng.integers(0, len(pool), size=n)]
            s = pd.DataFrame({"anomaly_score": np.where(rng.random(n) < 0.3, np.nan, rng.random(n)),
                              "is_anomaly": rng.random(n) < 0.2,
                              "severity": pd.array(severity, dtype=pd.StringDtype(storage, na_value=np.nan))})
            got = score_states(s)
            want = score_states(s.assign(severity=s["severity"].astype(object)))
            pd.testing.assert_series_equal(got, want, check_exact=True)
            assert list(got.cat.categories) == list(want.cat.categories)
            seen.update(got.astype(object))
    assert set(STATES) <= seen and "nan, score set, flagged" in seen


@pytest.mark.parametrize("nulls", [1, 5])
def test_entity_slices_cover_every_row_null_entities_included(nulls):
    # a table that breaks the contract: the checks must still read its NULL entity's rows, whether
    # they fit in the last slice (1 row) or not (5 rows, slices of 4)
    con = duckdb.connect()
    con.execute("CREATE SCHEMA raw")
    con.execute("CREATE TABLE raw.observations (entity_id VARCHAR, metric VARCHAR, ts TIMESTAMPTZ, value DOUBLE)")
    con.execute("INSERT INTO raw.observations SELECT 'e' || (i % 3), 'm', TIMESTAMPTZ '2026-10-01 00:00:00+00' "
                "+ i * INTERVAL 1 MINUTE, i FROM range(9) t(i)")
    con.execute("INSERT INTO raw.observations SELECT NULL, 'm', TIMESTAMPTZ '2026-10-01 00:00:00+00', i "
                "FROM range(?) t(i)", [nulls])
    window = ["2026-10-01 00:00:00+00", "2026-10-02 00:00:00+00"]
    slices = entity_slices(con, wh.OBSERVATIONS, *window, 4)
    counts = [con.execute(f"SELECT count(*) FROM raw.observations WHERE ts >= ? AND ts < ? AND ({where})",
                          [*window, *extra]).fetchone()[0] for where, extra in slices]
    assert sum(counts) == 9 + nulls and len(slices) > 1
