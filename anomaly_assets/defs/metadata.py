"""What every asset shows in the UI: row counts, date range, a preview, the column docs.

A run over a range of days (a backfill) writes one materialization per day. Dagster gives every
day the metadata the asset returns, i.e. the range's totals; :class:`ChunkedWrite` also gives each
day its own rows, scored, flagged and critical points and flagged share
(``context.add_asset_metadata(..., partition_key=day)``), so the UI's plots over partitions show
the days, not the same total 35 times. Previews show the latest rows and the flagged ones, not the
oldest (cold-start) rows.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from anomaly_assets.warehouse import Table

PREVIEW_ROWS = 10
_DAY_NS = 86_400 * 10**9


def _epoch_ns(ts: pd.Series) -> np.ndarray:
    """Timestamps as int64 nanoseconds since the epoch (UTC), whatever their unit and zone."""
    return pd.DatetimeIndex(pd.to_datetime(ts, utc=True)).as_unit("ns").asi8


def time_window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The run's partition range as UTC timestamps [start, end) (one day or a backfill range)."""
    w = context.partition_time_window
    return pd.Timestamp(w.start).tz_convert("UTC"), pd.Timestamp(w.end).tz_convert("UTC")


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.type.replace(" NOT NULL", ""), description=c.doc) for c in table.columns
    ])


def markdown_preview(df: pd.DataFrame, n: int = PREVIEW_ROWS) -> dg.MetadataValue:
    if df is None or df.empty:
        return dg.MetadataValue.md("_no rows_")
    head = df.head(n)
    cols = list(head.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.itertuples(index=False):
        cells = []
        for v in row:
            s = f"{v:.4g}" if isinstance(v, float) else str(v)
            cells.append(s.replace("|", "\\|").replace("\n", " "))
        lines.append("| " + " | ".join(cells) + " |")
    return dg.MetadataValue.md("\n".join(lines))


def table_metadata(table: Table, rows: pd.DataFrame, start=None, end=None) -> dict:
    md = {
        "dagster/row_count": len(rows),
        "dagster/table_name": table.qualified,
        "preview": markdown_preview(latest_rows(rows, table.time_column)),
    }
    if start is not None:
        md["partition_range"] = f"{start.date()} .. {(end - pd.Timedelta(days=1)).date()}"
    if table.time_column and len(rows):
        ts = pd.to_datetime(rows[table.time_column], utc=True)
        md["first_ts"] = str(ts.min())
        md["last_ts"] = str(ts.max())
    return md


def latest_rows(rows: pd.DataFrame, time_column: str | None, n: int = PREVIEW_ROWS) -> pd.DataFrame:
    """The ``n`` rows with the latest ``time_column`` (newest first); the first ``n`` without one."""
    if rows is None or not len(rows) or not time_column or time_column not in rows.columns:
        return rows.head(n) if rows is not None else pd.DataFrame()
    # a partial selection (O(rows)), then a sort of the few selected: chunks have millions of rows
    ts = _epoch_ns(rows[time_column])
    k = min(n, len(rows))
    top = np.argpartition(-ts, k - 1)[:k]
    return rows.iloc[top[np.argsort(-ts[top], kind="stable")]]


def flagged_rows(rows: pd.DataFrame, n: int = PREVIEW_ROWS) -> pd.DataFrame:
    """The ``n`` strongest flagged rows (``is_anomaly``, by ``anomaly_score``); none without those columns."""
    if rows is None or "is_anomaly" not in rows.columns or "anomaly_score" not in rows.columns:
        return pd.DataFrame()
    flagged = rows[rows["is_anomaly"].fillna(False).astype(bool)]
    return flagged.sort_values("anomaly_score", ascending=False, kind="stable").head(n)


def day_counts(rows: pd.DataFrame, time_column: str = "ts") -> pd.DataFrame:
    """Per UTC day of ``rows``: rows, and for scores (``is_anomaly``, ``severity``) scored, flagged
    and critical points, and for the decomposition (``expected``) cold-start rows. Index: the
    days as 'YYYY-MM-DD'."""
    if rows is None or not len(rows):
        return pd.DataFrame()
    day = _epoch_ns(rows[time_column]) // _DAY_NS
    frame = {"rows": np.ones(len(rows), dtype=np.int64)}
    if "is_anomaly" in rows.columns and "severity" in rows.columns:
        cold = (rows["severity"] == "cold_start").to_numpy(dtype=bool, na_value=False)
        frame["scored"] = ~cold
        frame["flagged"] = rows["is_anomaly"].to_numpy(dtype=bool, na_value=False)
        frame["critical"] = (rows["severity"] == "critical").to_numpy(dtype=bool, na_value=False)
        frame["cold_start_points"] = cold
    if "expected" in rows.columns:
        frame["cold_start_rows"] = rows["expected"].isna().to_numpy()
    out = pd.DataFrame(frame).astype(np.int64).groupby(day).sum()
    out.index = pd.to_datetime(out.index * _DAY_NS).strftime("%Y-%m-%d")
    return out


def day_metadata(counts: pd.DataFrame) -> dict[str, dict]:
    """Materialization metadata of each day in ``counts`` (from :func:`day_counts`)."""
    out = {}
    for day, c in counts.iterrows():
        md = {"dagster/row_count": int(c["rows"])}
        for k in ("scored", "flagged", "critical", "cold_start_points", "cold_start_rows"):
            if k in c.index:
                md[k] = int(c[k])
        if "scored" in c.index:
            md["flagged_share"] = float(c["flagged"] / c["scored"]) if c["scored"] else 0.0
        out[day] = md
    return out


class ChunkedWrite:
    """Row count, previews, time range and per-day counts of a table slice written a chunk at a time."""

    def __init__(self):
        self.rows, self.preview, self.first, self.last = 0, None, None, None
        self.flagged = pd.DataFrame()
        self.counts: dict[str, int] = {}
        self.days = pd.DataFrame()
        self.time_column = "ts"

    def add(self, rows: pd.DataFrame, time_column: str = "ts", **counts: int) -> None:
        """Take one written chunk; ``counts`` are added up into :attr:`counts`."""
        self.rows += len(rows)
        self.time_column = time_column
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)
        if len(rows):
            # keep the latest rows and the strongest flagged ones seen so far, not the first chunk's
            latest = latest_rows(rows, time_column)
            self.preview = latest if self.preview is None else latest_rows(
                pd.concat([self.preview, latest], ignore_index=True), time_column)
            flagged = flagged_rows(rows)
            if len(flagged):
                self.flagged = flagged if self.flagged.empty else flagged_rows(
                    pd.concat([self.flagged, flagged], ignore_index=True))
            ts = pd.to_datetime(rows[time_column], utc=True)
            self.first = ts.min() if self.first is None else min(self.first, ts.min())
            self.last = ts.max() if self.last is None else max(self.last, ts.max())
            days = day_counts(rows, time_column)
            self.days = days if self.days.empty else self.days.add(days, fill_value=0).astype(np.int64)

    def metadata(self, table: Table, start=None, end=None, context: dg.AssetExecutionContext | None = None) -> dict:
        """The slice's metadata; with ``context``, each day of a range run also gets its own
        (:func:`day_metadata`, recorded on the day's materialization)."""
        md = table_metadata(table, self.preview if self.preview is not None else pd.DataFrame(), start, end)
        md["dagster/row_count"] = self.rows
        md["rows_in_run"] = self.rows
        if self.first is not None:
            md["first_ts"], md["last_ts"] = str(self.first), str(self.last)
        if len(self.flagged):
            md["flagged_preview"] = markdown_preview(self.flagged)
        if context is not None:
            record_days(context, _key_of(context, table), self.days, start, end)
        return md


def _key_of(context: dg.AssetExecutionContext, table: Table) -> dg.AssetKey:
    """The key this run materializes ``table`` under (a sharded chain prefixes it: shard_0/raw/...)."""
    path = [table.schema, table.name]
    return next(k for k in sorted(context.assets_def.keys, key=lambda k: len(k.path)) if k.path[-2:] == path)


def record_days(context: dg.AssetExecutionContext, asset_key: dg.AssetKey, days: pd.DataFrame, start=None,
                end=None) -> None:
    """Give each partition day of the run its own counts (a day without rows: zeros)."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return
    per_day = day_metadata(days)
    zero = day_metadata(pd.DataFrame([{k: 0 for k in days.columns} or {"rows": 0}], index=["_"]))["_"]
    for key in context.partition_keys:
        context.add_asset_metadata(per_day.get(key, zero), asset_key=asset_key, partition_key=key)
