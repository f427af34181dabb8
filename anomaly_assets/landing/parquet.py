"""Parquet files: columns checked by type, then tidied like CSV records."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from anomaly_assets.landing.columns import _as_numpy, _Instants, _Numbers
from anomaly_assets.landing.shapes import FileRead, _layout, _Unusable
from anomaly_assets.landing.tidy import _file_read


def _parquet_column(table: pa.Table, i: int, role: str, name: str):
    """A Parquet column in the form the parsers take, or _Unusable for a type that cannot fit."""
    col = table.column(i)
    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.cast(typ.value_type)
        typ = col.type
    null = _as_numpy(col.is_null(), bool)
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
    numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    if is_text:
        return col.cast(pa.string())
    if role == "name":  # numbers as names would be reformatted on the way ('007' -> 7, 7.0 -> '7.0')
        raise _Unusable(f"column '{name}' has type {typ}; expected text (write names as strings, e.g. '7' or 'pump-007')")
    if role == "timestamp":
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            if pa.types.is_date(typ):
                col = col.cast(pa.timestamp("us"))
            series = col.to_pandas()
            if series.dt.tz is None:
                series = series.dt.tz_localize("UTC")
            instants = pd.DatetimeIndex(series).tz_convert(None)
            us = instants.as_unit("us").asi8.copy()
            rest = None
            if instants.unit == "ns":
                rest = np.where(null, 0, instants.asi8 % 1000).astype(np.int16)
            return _Instants(us, null, rest)
        if numeric:
            values = _as_numpy(col.cast(pa.float64()), np.float64)
            return _Numbers(np.where(null, np.nan, values), null)
        raise _Unusable(
            f"column '{name}' has type {typ}; expected timestamps, ISO 8601 text or epoch seconds"
        )
    if numeric:
        values = _as_numpy(col.cast(pa.float64()), np.float64)
        return _Numbers(np.where(null, np.nan, values), null)
    raise _Unusable(f"column '{name}' has type {typ}; expected numbers")


def _read_parquet(path: Path, source_file: str, entity: str, max_abs_value: float) -> FileRead:
    import pyarrow.parquet as pq

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _Unusable(f"cannot be read ({exc.strerror or exc})") from exc
    if size == 0:
        raise _Unusable("is empty (0 bytes); expected a Parquet file")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _Unusable(f"is not a readable Parquet file ({exc})") from exc
    header = list(table.column_names)
    layout = _layout(header, ",".join(header))
    roles = {layout.ts_col: "timestamp"}
    for c in (layout.entity_col, layout.metric_col):
        if c is not None:
            roles[c] = "name"
    for c in layout.value_cols:
        roles[c] = "value"
    columns = {c: _parquet_column(table, c, role, header[c]) for c, role in roles.items()}

    def raw(rec: np.ndarray) -> np.ndarray:
        """Rejected rows rendered as CSV."""
        unique, inverse = np.unique(rec, return_inverse=True)
        rendered = []
        for row in table.take(pa.array(unique)).to_pylist():
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(
                "" if v is None else v for v in row.values()
            )
            rendered.append(buffer.getvalue())
        return np.asarray(rendered, dtype=object)[inverse]

    line_numbers = np.arange(table.num_rows, dtype=np.int64) + 2
    return _file_read(source_file, layout, columns, line_numbers, raw, entity, max_abs_value)

