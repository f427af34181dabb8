"""Columns as the parsers take them: typed Parquet columns, and vectorised helpers over text."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from anomaly_assets.landing.shapes import _printable

_DECIMAL_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # after trimming whitespace


@dataclass
class _Numbers:
    """A typed numeric column (from Parquet): values with NaN where null, and the null mask."""

    values: np.ndarray
    null: np.ndarray


@dataclass
class _Instants:
    """A typed timestamp column (from Parquet): UTC microseconds, the null mask, and the
    nanoseconds beyond the microseconds (0..999) when the column has them."""

    us: np.ndarray
    null: np.ndarray
    ns_rest: np.ndarray | None = None


def _arrow_strings(col) -> pa.Array | pa.ChunkedArray:
    """A text column as an Arrow string array (None -> null)."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return col
    return pa.array(np.asarray(col, dtype=object), type=pa.string(), from_pandas=True)


def _as_numpy(array, dtype) -> np.ndarray:
    return np.asarray(array.to_numpy(zero_copy_only=False), dtype=dtype)


def _texts(col, idx: np.ndarray) -> np.ndarray:
    """Stripped text of the chosen cells (object array)."""
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        chosen = col.take(pa.array(idx, type=pa.int64())).to_pylist()
    else:
        chosen = np.asarray(col, dtype=object)[idx]
    return np.asarray([_printable(("" if t is None else str(t)).strip()) for t in chosen], dtype=object)


def _fmt(*parts) -> np.ndarray:
    """Concatenate strings and object arrays elementwise (numpy loops in C)."""
    out = np.asarray(parts[0], dtype=object)
    for part in parts[1:]:
        out = out + (np.asarray(part, dtype=object) if isinstance(part, np.ndarray) else part)
    return np.asarray(out, dtype=object)


def _decimal_values(strings) -> np.ndarray:
    """float64 of each text that is a decimal number (whitespace allowed around), else NaN."""
    trimmed = pc.utf8_trim_whitespace(strings)
    ok = pc.match_substring_regex(trimmed, _DECIMAL_RE)
    values = pc.cast(pc.if_else(ok, trimmed, pa.scalar(None, pa.string())), pa.float64())
    return _as_numpy(pc.fill_null(values, np.nan), np.float64)


def _dictionary(col) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a text column (object array, with None last standing for null) and
    each cell's index into them. Long files repeat each timestamp and name many times, so
    parsing the distinct values once is what keeps them fast."""
    strings = _arrow_strings(col)
    if isinstance(strings, pa.ChunkedArray):
        strings = (
            strings.combine_chunks() if strings.num_chunks else pa.array([], type=pa.string())
        )
    encoded = pc.dictionary_encode(strings)
    distinct = np.append(_as_numpy(encoded.dictionary, object), None)
    indices = pc.fill_null(encoded.indices.cast(pa.int64()), len(distinct) - 1)
    return distinct, _as_numpy(indices, np.int64)


