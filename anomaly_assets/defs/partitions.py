"""Daily partitions (UTC), and what every daily asset that writes the warehouse shares."""

import datetime as dt

import dagster as dg
import pandas as pd

from anomaly_assets.defs.metadata import column_schema
from anomaly_assets.settings import load_settings
from anomaly_assets.warehouse import Table

# The first day is ANOMALY_PARTITION_START; the last is today, open while it fills up: the landing
# sensor scores today's files as they land (micro-batches), and the nightly run completes the day.
daily_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().partition_start, timezone="UTC",
                                                end_offset=1)


def open_day(now: dt.datetime) -> str:
    """The newest daily partition at ``now``: today (UTC), open while micro-batches fill it up."""
    return str(now.astimezone(dt.timezone.utc).date())


def open_day_start() -> pd.Timestamp:
    """The start (UTC midnight) of the partition open now."""
    return pd.Timestamp(open_day(dt.datetime.now(dt.timezone.utc)), tz="UTC")


# Assets that read a whole fleet do it a chunk of entities at a time, about this many rows each:
# memory follows the chunk (a few hundred MB), not the fleet.
CHUNK_ROWS = 2_000_000

# DuckDB has one writer: every asset that writes the warehouse joins this pool (dagster_home/dagster.yaml).
WRITER_POOL = "duckdb_writer"


def daily_table_asset(table: Table, *, group: str, deps=(), kinds=("duckdb", "python"), description=None):
    """``@asset`` for a daily-partitioned table: single-run backfills, the writer pool, documented columns."""
    return dg.asset(
        key=[table.schema, table.name],
        deps=list(deps),
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=group,
        kinds=set(kinds),
        pool=WRITER_POOL,
        description=description or table.doc,
        metadata={"dagster/column_schema": column_schema(table)},
    )
