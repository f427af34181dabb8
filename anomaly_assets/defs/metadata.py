"""What every asset shows in the UI: row counts, date range, a preview, the column docs."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from anomaly_assets.warehouse import Table


def time_window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The run's partition range as UTC timestamps [start, end) (one day or a backfill range)."""
    w = context.partition_time_window
    return pd.Timestamp(w.start).tz_convert("UTC"), pd.Timestamp(w.end).tz_convert("UTC")


def column_schema(table: Table) -> dg.TableSchema:
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, c.type.replace(" NOT NULL", ""), description=c.doc) for c in table.columns
    ])


def markdown_preview(df: pd.DataFrame, n: int = 10) -> dg.MetadataValue:
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
        "preview": markdown_preview(rows),
    }
    if start is not None:
        md["partition_range"] = f"{start.date()} .. {(end - pd.Timedelta(days=1)).date()}"
    if table.time_column and len(rows):
        ts = pd.to_datetime(rows[table.time_column], utc=True)
        md["first_ts"] = str(ts.min())
        md["last_ts"] = str(ts.max())
    return md


class ChunkedWrite:
    """Row count, preview and time range of a table slice written a chunk at a time."""

    def __init__(self):
        self.rows, self.preview, self.first, self.last = 0, None, None, None
        self.counts: dict[str, int] = {}

    def add(self, rows: pd.DataFrame, time_column: str = "ts", **counts: int) -> None:
        self.rows += len(rows)
        for k, v in counts.items():
            self.counts[k] = self.counts.get(k, 0) + int(v)
        if len(rows):
            if self.preview is None:
                self.preview = rows.head(10)
            ts = pd.to_datetime(rows[time_column], utc=True)
            self.first = ts.min() if self.first is None else min(self.first, ts.min())
            self.last = ts.max() if self.last is None else max(self.last, ts.max())

    def metadata(self, table: Table, start=None, end=None) -> dict:
        md = table_metadata(table, self.preview if self.preview is not None else pd.DataFrame(), start, end)
        md["dagster/row_count"] = self.rows
        if self.first is not None:
            md["first_ts"], md["last_ts"] = str(self.first), str(self.last)
        return md
