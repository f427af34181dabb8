"""The SQL pieces of the asset checks, on DuckDB alone."""

import duckdb
import pytest

from anomaly_assets.defs.checks import UTC_DAY


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
