"""The shell: which days a backfill runs, and what it says when it cannot."""

from __future__ import annotations

from pathlib import Path

from anomaly_assets.cli import _range_problem, backfill_days

LONG = "entity_id,timestamp,metric,value\n"


def test_rows_no_partition_holds_do_not_widen_or_stop_a_backfill(tmp_path: Path):
    """Before, one row dated 1900 or 2100 made every backfill fail, naming no file."""
    (tmp_path / "good.csv").write_text(LONG + "a,2026-03-01T00:00:00Z,temp,1\na,2026-03-02T00:00:00Z,temp,2\n")
    (tmp_path / "odd.csv").write_text(LONG + "b,1900-01-01T00:00:00Z,temp,1\nb,2100-01-01T00:00:00Z,temp,2\n"
                                      "b,-86400,temp,3\nb,2026-03-03T00:00:00Z,temp,4\n")
    days = backfill_days(tmp_path, set(), "2013-01-01", "2026-11-30")
    assert (days.first, days.last, days.rows, days.outside) == ("2026-03-01", "2026-03-03", 6, 3)
    assert days.examples == ["odd.csv line 2: 1900-01-01T00:00:00+00:00 (before the first partition)",
                             "odd.csv line 3: 2100-01-01T00:00:00+00:00 (after the last partition (yesterday))",
                             "odd.csv line 4: 1969-12-31T00:00:00+00:00 (before the first partition)"]
    (tmp_path / "good.csv").unlink()
    (tmp_path / "odd.csv").write_text(LONG + "b,2100-01-01T00:00:00Z,temp,2\n")
    days = backfill_days(tmp_path, set(), "2013-01-01", "2026-11-30")
    assert (days.first, days.last, days.rows, days.outside) == (None, None, 1, 1)


def test_an_explicit_range_outside_the_partitions_gets_the_advice_that_fits():
    assert _range_problem("2026-01-01", "2026-01-31", "2013-01-01", "2026-11-30") is None
    assert "set ANOMALY_PARTITION_START to 2012-05-01 or earlier" in _range_problem(
        "2012-05-01", "2026-01-31", "2013-01-01", "2026-11-30")
    late = _range_problem("2026-01-01", "2100-01-01", "2013-01-01", "2026-11-30")
    assert "after the last partition 2026-11-30 (yesterday, UTC)" in late and "ANOMALY_PARTITION_START" not in late
    assert "is after --to" in _range_problem("2026-02-01", "2026-01-01", "2013-01-01", "2026-11-30")
