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
