"""Landing-folder files -> one tidy frame of observations, and the reasons rows are rejected.

A landing folder holds CSV (optionally gzip-compressed, ``.csv.gz``) or Parquet files in one of
three shapes, recognised from the header (names compared case-insensitively after stripping
whitespace and a UTF-8 BOM):

``long``
    exactly the columns ``entity_id,timestamp,metric,value`` (any order).
``wide``
    ``entity_id,timestamp,<metric>,<metric>,...``: every other column is a metric, named as
    written in the header (stripped).
``single``
    ``timestamp,value``: one series; the entity is the file name without its suffix and the
    metric is ``value``.

Every file becomes a :class:`FileRead`: the observations that can be stored (one row per entity,
metric, timestamp and value) and one rejected row per observation that cannot, with the physical
line it came from, the line's text and the reason. The accounting unit is the observation (a
long or single line is one, a wide line is one per metric column), so for every file
``rows_read == len(observations) + len(rejected_rows)``. A file that cannot be used at all
(unreadable, empty, unknown shape, missing or duplicate columns) gets ``file_error`` instead.

Timestamps are ISO 8601 strings, with or without an offset (naive means UTC, offsets may differ
from line to line), or epoch seconds (integer or decimal). They are stored as
``datetime64[us, UTC]``.

Everything is vectorised: the csv module's C reader splits the fields, pandas/pyarrow parse the
numbers and timestamps, and Python only runs per line for the lines that are rejected.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "SUFFIXES",
    "FileRead",
    "LandingError",
    "discover_files",
    "entity_from_path",
    "read_file",
    "read_labels",
]

SUFFIXES = (".csv", ".csv.gz", ".parquet")

LONG_COLUMNS = ("entity_id", "timestamp", "metric", "value")
SINGLE_COLUMNS = ("timestamp", "value")
ACCEPTED_SHAPES = (
    "long (entity_id,timestamp,metric,value in any order), "
    "wide (entity_id,timestamp,<metric>,<metric>,...) or "
    "single series (timestamp,value; the entity is the file name)"
)
TIMESTAMP_EXPECTED = "(expected ISO 8601 or epoch seconds)"

# Timestamps must fit datetime64[ns] so that any pandas code downstream can hold them.
_TS_MIN = np.datetime64("1677-09-22T00:00:00", "us")
_TS_MAX = np.datetime64("2262-04-11T00:00:00", "us")
_TS_MIN_US = int(_TS_MIN.astype(np.int64))
_TS_MAX_US = int(_TS_MAX.astype(np.int64))

_NUMBER_RE = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_BAD_BYTE_RE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, after surrogateescape
_DELIMITERS = {";": "semicolons (';')", "\t": "tabs", "|": "pipes ('|')"}
_NAN_SPELLINGS = {"nan", "+nan", "-nan"}
_GZIP_MAGIC = b"\x1f\x8b"
_RAW_LIMIT = 200  # characters of a header quoted in a message


class LandingError(ValueError):
    """A landing input (folder or labels file) cannot be used; the message says where and why."""


@dataclass
class FileRead:
    """What one landing file yielded.

    Attributes
    ----------
    source_file : str
        Path relative to the landing root (posix), or the file name when no root was given.
    shape : {'long', 'wide', 'single'} or None
        The detected shape; None when the file is unusable.
    observations : pandas.DataFrame
        ``entity_id`` (str), ``metric`` (str), ``ts`` (datetime64[us, UTC]), ``value``
        (float64), ``line_number`` (int64, 1-based physical line, header = 1; for Parquet
        the row index + 2). In file order (line, then metric column).
    rejected_rows : pandas.DataFrame
        ``source_file`` (str), ``line_number`` (int64), ``raw`` (str: the line's text; for
        Parquet the row rendered as CSV), ``reason`` (str). One row per rejected observation.
    rows_read : int
        Observations read: always ``len(observations) + len(rejected_rows)``.
    file_error : str or None
        Set when the whole file is unusable (observations and rejected_rows are then empty).
    """

    source_file: str
    shape: str | None
    observations: pd.DataFrame
    rejected_rows: pd.DataFrame
    rows_read: int
    file_error: str | None = None

    def messages(self, limit: int | None = None) -> list[str]:
        """Problems as sentences: ``'<file> line <n>: <reason>'`` (or the file error)."""
        if self.file_error is not None:
            return [self.file_error]
        rej = self.rejected_rows if limit is None else self.rejected_rows.head(limit)
        return [
            f"{self.source_file} line {n}: {r}"
            for n, r in zip(rej["line_number"].tolist(), rej["reason"].tolist())
        ]


class _Unusable(Exception):
    """Internal: the whole file is unusable; the message completes '<file>: ...'."""


# --------------------------------------------------------------------------------------------
# Folder and file names
# --------------------------------------------------------------------------------------------


def _matching_suffix(name: str) -> str | None:
    lower = name.lower()
    # longest first so that 'x.csv.gz' is not taken for a '.gz' of something else
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix) and len(name) > len(suffix):
            return suffix
    return None


def discover_files(landing_dir: Path) -> list[Path]:
    """Landing files under ``landing_dir``, searched recursively, sorted by relative path.

    Hidden files and directories (name starting with '.') are skipped, and so is every file
    whose name does not end with one of :data:`SUFFIXES` (compared case-insensitively).

    Raises
    ------
    LandingError
        If ``landing_dir`` does not exist or is not a directory.
    """
    root = Path(landing_dir)
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise LandingError(f"landing folder {root} {what}")
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or _matching_suffix(name) is None:
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    return [path for _, path in sorted(found)]


def entity_from_path(path: Path) -> str:
    """The file name without its landing suffix: ``site-3.csv.gz`` -> ``site-3``."""
    name = Path(path).name
    suffix = _matching_suffix(name)
    return name[: len(name) - len(suffix)] if suffix else name


# --------------------------------------------------------------------------------------------
# Result frames
# --------------------------------------------------------------------------------------------


def _str_array(values) -> pd.api.extensions.ExtensionArray:
    return pd.array(np.asarray(values, dtype=object), dtype="str")


def _ts_series(us: np.ndarray) -> pd.Series:
    naive = pd.Series(np.asarray(us, dtype=np.int64).view("datetime64[us]"))
    return naive.dt.tz_localize("UTC")


def _observations_frame(entity, metric, us, value, line) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity_id": entity,
            "metric": metric,
            "ts": _ts_series(us),
            "value": np.asarray(value, dtype=np.float64),
            "line_number": np.asarray(line, dtype=np.int64),
        }
    )


def _empty_observations() -> pd.DataFrame:
    empty = np.array([], dtype=object)
    return _observations_frame(
        _str_array(empty), _str_array(empty), np.array([], np.int64), [], []
    )


def _rejected_frame(source_file: str, line, raw, reason) -> pd.DataFrame:
    line = np.asarray(line, dtype=np.int64)
    return pd.DataFrame(
        {
            "source_file": _str_array(np.full(len(line), source_file, dtype=object)),
            "line_number": line,
            "raw": _str_array(raw),
            "reason": _str_array(reason),
        }
    )


def _unusable(source_file: str, message: str) -> FileRead:
    return FileRead(
        source_file=source_file,
        shape=None,
        observations=_empty_observations(),
        rejected_rows=_rejected_frame(source_file, [], [], []),
        rows_read=0,
        file_error=f"{source_file}: {message}",
    )


# --------------------------------------------------------------------------------------------
# Bytes -> physical lines -> CSV records
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _Unusable(f"cannot be read ({exc.strerror or exc})") from exc
    if path.name.lower().endswith(".gz") or data[:2] == _GZIP_MAGIC:
        if not data:
            raise _Unusable("is empty (0 bytes); expected a gzip-compressed CSV file")
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise _Unusable(
                f"is not a readable gzip file ({exc}); expected a complete gzip-compressed CSV"
            ) from exc
    return data


def _without_bom(data: bytes) -> bytes:
    """The bytes after a UTF-8 BOM; _Unusable for an empty file or a UTF-16/32 one."""
    if not data:
        raise _Unusable(
            "is empty (0 bytes); expected a CSV header line such as "
            "'entity_id,timestamp,metric,value' followed by data lines"
        )
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            raise _Unusable(f"is encoded as {name}; expected UTF-8 text (save it as UTF-8 CSV)")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    return data


def _decode(data: bytes) -> tuple[str, dict[int, int]]:
    """UTF-8 text, and {0-based physical line: first byte that is not UTF-8}."""
    try:
        return data.decode("utf-8"), {}
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="surrogateescape")
    bad: dict[int, int] = {}
    line, last = 0, 0
    for match in _BAD_BYTE_RE.finditer(text):  # one pass, only over the bad bytes
        line += text.count("\n", last, match.start())
        last = match.start()
        bad.setdefault(line, ord(match.group()) - 0xDC00)
    return text, bad


def _escaped(text: str) -> str:
    """Line text with bytes that were not UTF-8 shown as backslash escapes (\\xe9)."""
    return text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")


@dataclass
class _CsvRecords:
    rows: list[list[str]]
    first_line: np.ndarray  # 0-based physical line where each record starts
    raw: list[str]  # text of each record (the physical lines it spans)
    parse_error: dict[int, str]  # record index -> why the csv module refused it


def _split_lines(text: str) -> list[str]:
    if "\n" not in text and "\r" in text:  # classic Mac line endings
        lines = text.split("\r")
    else:
        lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _csv_records(text: str) -> _CsvRecords:
    lines = _split_lines(text)
    # Fast path: one record per physical line (no quoted field spans a line break).
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        rows = None
    if rows is not None and len(rows) == len(lines):
        return _CsvRecords(rows, np.arange(len(lines), dtype=np.int64), lines, {})
    # Quoted fields with line breaks: let the reader count physical lines.
    if rows is not None:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows, first, raw = [], [], []
        try:
            start = 0
            for row in reader:
                rows.append(row)
                first.append(start)
                raw.append("\n".join(lines[start : reader.line_num]))
                start = reader.line_num
            return _CsvRecords(rows, np.asarray(first, dtype=np.int64), raw, {})
        except csv.Error:
            pass
    # A line the csv module refuses (e.g. a stray carriage return): parse line by line so
    # that only the offending lines are rejected.
    rows, errors = [], {}
    for i, line in enumerate(lines):
        try:
            rows.append(next(csv.reader([line]), []))
        except csv.Error as exc:
            rows.append([])
            errors[i] = f"line is not valid CSV ({exc})"
    return _CsvRecords(rows, np.arange(len(lines), dtype=np.int64), lines, errors)


def _blank_records(rows: list[list[str]]) -> np.ndarray:
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    blank = lengths == 0
    for i in np.flatnonzero(lengths == 1):
        blank[i] = rows[i][0].strip() == ""
    return blank


def _clean_name(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip()


def _quote(text: str, limit: int = _RAW_LIMIT) -> str:
    text = text.rstrip("\r")
    if len(text) > limit:
        text = text[:limit] + "..."
    return f"'{text}'"


# --------------------------------------------------------------------------------------------
# Header -> shape
# --------------------------------------------------------------------------------------------


@dataclass
class _Layout:
    shape: str
    ts_col: int
    value_cols: list[int]
    metric_names: list[str]  # per value column: the metric (wide, single) or 'value' (long)
    entity_col: int | None = None  # None for single: the entity comes from the file name
    metric_col: int | None = None  # long only


def _layout(header: list[str], raw_header: str) -> _Layout:
    """Recognise the shape from the header, or raise _Unusable saying what was expected."""
    names = [_clean_name(h) for h in header]
    keys = [n.lower() for n in names]
    found = f"found header {_quote(raw_header)}"
    if "\x00" in raw_header:
        raise _Unusable(
            f"header contains NUL bytes ({found}); the file looks UTF-16 encoded, expected UTF-8"
        )
    if _BAD_BYTE_RE.search(raw_header):
        raise _Unusable(
            f"header line is not valid UTF-8 ({_quote(_escaped(raw_header))}); "
            "save the file as UTF-8"
        )
    reserved = set(LONG_COLUMNS)
    has = set(keys)
    if not has & reserved:
        hint = ""
        counts = {d: raw_header.count(d) for d in _DELIMITERS if d in raw_header}
        if counts:
            delimiter = max(counts, key=counts.get)
            hint = (
                f"; the header looks delimited by {_DELIMITERS[delimiter]}, "
                "but landing files must be comma-separated"
            )
        raise _Unusable(f"unknown file shape ({found}); expected {ACCEPTED_SHAPES}{hint}")
    for position, name in enumerate(names, start=1):
        if name == "":
            raise _Unusable(
                f"column {position} of the header has no name ({found}); every column needs one"
            )
    identity = [k if k in reserved else n for n, k in zip(names, keys)]
    seen: dict[str, int] = {}
    for position, name in enumerate(identity, start=1):
        if name in seen:
            raise _Unusable(
                f"duplicate column name '{names[position - 1]}' (columns {seen[name]} and "
                f"{position}; {found}); every column name must be unique"
            )
        seen[name] = position
    col = {k: i for i, k in enumerate(keys) if k in reserved}
    others = [i for i, k in enumerate(keys) if k not in reserved]

    def missing(needed: tuple[str, ...], shape: str, spec: str) -> _Unusable:
        absent = ", ".join(c for c in needed if c not in has)
        return _Unusable(f"missing column(s) {absent} for a {shape} file ({found}); expected {spec}")

    long_spec = "entity_id,timestamp,metric,value"
    wide_spec = "entity_id,timestamp,<metric>,<metric>,..."
    if has == set(LONG_COLUMNS):
        return _Layout(
            "long", col["timestamp"], [col["value"]], ["value"],
            entity_col=col["entity_id"], metric_col=col["metric"],
        )
    if has == set(SINGLE_COLUMNS):
        return _Layout("single", col["timestamp"], [col["value"]], ["value"])
    if "metric" in has:
        if has >= set(LONG_COLUMNS):
            extra = ", ".join(names[i] for i in others)
            raise _Unusable(
                f"unexpected column(s) {extra} in a long file ({found}); "
                f"a long file has exactly {long_spec}"
            )
        raise missing(LONG_COLUMNS, "long", long_spec)
    if "entity_id" in has and "timestamp" in has:
        if "value" in has:
            others = sorted(others + [col["value"]])  # 'value' is an ordinary metric here
        if not others:
            raise _Unusable(
                f"no metric columns ({found}); expected a wide file {wide_spec}"
            )
        return _Layout(
            "wide", col["timestamp"], others, [names[i] for i in others],
            entity_col=col["entity_id"],
        )
    if "entity_id" in has:
        raise missing(("entity_id", "timestamp"), "wide", wide_spec)
    if "timestamp" in has and "value" in has:
        extra = ", ".join(names[i] for i in others)
        raise _Unusable(
            f"unexpected column(s) {extra} in a single-series file ({found}); a single series "
            f"has exactly timestamp,value (for several metrics use a wide file {wide_spec})"
        )
    if "timestamp" in has:
        raise missing(("entity_id", "timestamp"), "wide", wide_spec)
    raise missing(SINGLE_COLUMNS, "single-series", "timestamp,value")


# --------------------------------------------------------------------------------------------
# Column parsing (vectorised)
# --------------------------------------------------------------------------------------------


@dataclass
class _Numbers:
    """A typed numeric column (from Parquet): values with NaN where null, and the null mask."""

    values: np.ndarray
    null: np.ndarray


@dataclass
class _Instants:
    """A typed timestamp column (from Parquet): UTC microseconds and the null mask."""

    us: np.ndarray
    null: np.ndarray


def _null_mask(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.zeros(len(array), dtype=bool)
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), dtype=bool)


def _is_arrow(col) -> bool:
    return isinstance(col, (pa.Array, pa.ChunkedArray))


def _arrow_strings(col):
    """A text column as an Arrow string array (None -> null)."""
    return col if _is_arrow(col) else pa.array(col, type=pa.string(), from_pandas=True)


def _objects(col) -> np.ndarray:
    """A text column as a numpy object array of str (None where null)."""
    if _is_arrow(col):
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    return np.asarray(col, dtype=object)


def _texts(col, idx: np.ndarray) -> np.ndarray:
    """Stripped text of the chosen cells (object array)."""
    chosen = col.take(pa.array(idx)).to_pylist() if _is_arrow(col) else col[idx]
    return np.asarray(pd.Series(chosen, dtype=object).astype(str).str.strip(), dtype=object)


def _fmt(parts: list) -> np.ndarray:
    """Concatenate strings and object arrays elementwise (numpy loops in C)."""
    out = np.asarray(parts[0], dtype=object)
    for part in parts[1:]:
        out = out + (np.asarray(part, dtype=object) if isinstance(part, np.ndarray) else part)
    return np.asarray(out, dtype=object)


_NAT = np.iinfo(np.int64).min


def _dictionary(col) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a text column (object array, None last for nulls) and each cell's
    index into them. Long files repeat each timestamp and name many times; parsing the
    distinct values once is what keeps them fast."""
    strings = _arrow_strings(col)
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    encoded = pc.dictionary_encode(strings)
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    indices = pc.fill_null(encoded.indices.cast(pa.int64()), len(distinct))
    distinct = np.append(np.asarray(distinct, dtype=object), None)
    return distinct, np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int64)


def _parse_timestamps(col) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """UTC microseconds, the rejected mask and the reasons (object, None where accepted).

    Text that looks like a number is epoch seconds; other text is parsed as ISO 8601 (naive =
    UTC, offsets converted). Typed Parquet timestamps are taken as they are (naive = UTC).
    """
    if not isinstance(col, (_Instants, _Numbers)):
        distinct, indices = _dictionary(col)
        us, rejected, reasons = _parse_timestamp_values(distinct)
        return us[indices], rejected[indices], reasons[indices]
    return _parse_timestamp_values(col)


def _parse_timestamp_values(col) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    texts = seconds = None
    if isinstance(col, _Instants):
        null = col.null
        us = np.where(null, _NAT, col.us).astype(np.int64)
        epoch_out = np.zeros(len(us), dtype=bool)
    else:
        if isinstance(col, _Numbers):
            seconds, null = col.values, col.null
        else:
            strings = _arrow_strings(col)
            texts = _objects(col)
            null = np.asarray(
                pc.fill_null(pc.equal(pc.utf8_trim_whitespace(strings), ""), True), dtype=bool
            )
            looks_numeric = np.asarray(
                pc.fill_null(pc.match_substring_regex(strings, _NUMBER_RE), False), dtype=bool
            )
            seconds = np.full(len(texts), np.nan)
            if looks_numeric.any():
                seconds[looks_numeric] = np.asarray(
                    pd.to_numeric(texts[looks_numeric], errors="coerce"), dtype=np.float64
                )
        us = np.full(len(seconds), _NAT, dtype=np.int64)
        epoch = ~np.isnan(seconds)
        with np.errstate(invalid="ignore", over="ignore"):
            micro = seconds * 1e6
            fits = epoch & np.isfinite(micro) & (micro >= _TS_MIN_US) & (micro <= _TS_MAX_US)
        us[fits] = np.round(micro[fits]).astype(np.int64)
        epoch_out = epoch & ~fits & np.isfinite(seconds)
        if texts is not None:
            is_iso = ~epoch & ~null
            if is_iso.any():
                parsed = pd.to_datetime(
                    pd.Series(texts[is_iso], dtype=object),
                    utc=True, format="ISO8601", errors="coerce",
                )
                us[is_iso] = pd.DatetimeIndex(parsed).tz_convert(None).as_unit("us").asi8

    reasons = np.full(len(us), None, dtype=object)
    reasons[null] = "missing timestamp"
    failed = (us == _NAT) & ~null & ~epoch_out
    out_of_range = epoch_out | (
        (us != _NAT) & ~null & ((us < _TS_MIN_US) | (us > _TS_MAX_US))
    )

    def shown(idx: np.ndarray) -> np.ndarray:
        if texts is not None:
            return _texts(texts, idx)
        if seconds is not None:
            return np.asarray([repr(float(v)) for v in seconds[idx]], dtype=object)
        return np.asarray(pd.Series(us[idx].view("datetime64[us]")).astype(str), dtype=object)

    if failed.any():
        idx = np.flatnonzero(failed)
        reasons[idx] = _fmt(["timestamp '", shown(idx), f"' is not a date {TIMESTAMP_EXPECTED}"])
    if out_of_range.any():
        idx = np.flatnonzero(out_of_range)
        span = f"{_TS_MIN.astype('datetime64[D]')} and {_TS_MAX.astype('datetime64[D]')}"
        reason = _fmt(["timestamp '", shown(idx), f"' is out of range (expected a date between {span})"])
        if seconds is not None:
            looks_ms = np.abs(np.nan_to_num(seconds[idx], nan=0.0)) > 1e11
            reason = np.where(
                looks_ms,
                reason + "; epoch values must be in seconds, this looks like milliseconds",
                reason,
            ).astype(object)
        reasons[idx] = reason
    return us, null | failed | out_of_range, reasons


def _parse_values(col, name: str, max_abs_value: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 values, and the (index, reason) of each cell that is not a storable number."""
    if isinstance(col, _Numbers):
        values, null, texts = col.values.astype(np.float64, copy=False), col.null, None
    else:
        texts = col
        strings = _arrow_strings(col)
        null = _null_mask(strings)
        values = None
        try:  # fast path: every cell is a plain number
            values = pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
        if values is None:
            values = np.asarray(pd.to_numeric(_objects(col), errors="coerce"), dtype=np.float64)
        values = np.where(null, np.nan, values)
    with np.errstate(invalid="ignore"):
        huge = np.abs(values) > max_abs_value
    bad = ~np.isfinite(values) | huge
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        return values, idx, np.array([], dtype=object)
    if texts is not None:
        shown = _texts(texts, idx)
    else:
        shown = np.asarray([repr(float(v)) for v in values[idx]], dtype=object)
    v = values[idx]
    empty = null[idx] | (shown == "")
    nan_text = np.isin(pd.Series(shown, dtype=object).str.lower().to_numpy(dtype=object),
                       list(_NAN_SPELLINGS))
    column = f" in column '{name}'"
    not_number = _fmt(["value '", shown, f"'{column} is not a number"])
    not_finite = _fmt(["value '", shown, f"'{column} is not finite"])
    too_big = _fmt(
        ["value '", shown, f"'{column} is beyond the limit of ±{max_abs_value:g}"]
    )
    reasons = np.where(
        empty,
        f"empty value{column}",
        np.where(
            np.isinf(v) | (np.isnan(v) & (nan_text | (texts is None))),
            not_finite,
            np.where(np.isnan(v), not_number, too_big),
        ),
    ).astype(object)
    return values, idx, reasons


def _names(col, what: str) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray, np.ndarray]:
    """Codes, stripped distinct names (str) and the mask of missing names."""
    distinct, indices = _dictionary(col)
    # names equal after stripping share one code; null and empty names are missing
    stripped = np.asarray(["" if u is None else str(u).strip() for u in distinct], dtype=object)
    codes_of_distinct, names = pd.factorize(stripped)
    codes = codes_of_distinct[indices].astype(np.int64)
    empty = np.flatnonzero(np.asarray(names, dtype=object) == "")
    missing = codes == empty[0] if len(empty) else np.zeros(len(codes), dtype=bool)
    return codes, _str_array(names), missing


# --------------------------------------------------------------------------------------------
# Records -> tidy frame
# --------------------------------------------------------------------------------------------


def _tidy(
    layout: _Layout,
    columns: dict[int, object],
    n: int,
    line_number: np.ndarray,
    entity: str | None,
    max_abs_value: float,
):
    """Observations of the parsed records, and (observation index, reason) of those rejected.

    Observation ``r * k + j`` is record ``r``, value column ``j`` (k value columns).
    """
    k = len(layout.value_cols)
    line_reason = np.full(n, None, dtype=object)
    line_bad = np.zeros(n, dtype=bool)

    def reject_lines(mask: np.ndarray, reason) -> None:
        new = mask & ~line_bad
        if isinstance(reason, np.ndarray):
            line_reason[new] = reason[new]
        else:
            line_reason[new] = reason
        line_bad[:] |= new

    if layout.entity_col is not None:
        e_codes, e_names, e_missing = _names(columns[layout.entity_col], "entity_id")
        reject_lines(e_missing, "missing entity_id")
    else:
        e_codes, e_names = np.zeros(n, dtype=np.int64), _str_array([entity])
    if layout.metric_col is not None:
        m_codes, m_names, m_missing = _names(columns[layout.metric_col], "metric")
        reject_lines(m_missing, "missing metric")
        obs_metric = m_codes
    else:
        m_names = _str_array(layout.metric_names)
        obs_metric = np.tile(np.arange(k, dtype=np.int64), n)
    us, ts_bad, ts_reason = _parse_timestamps(columns[layout.ts_col])
    reject_lines(ts_bad, ts_reason)

    values = np.empty((n, k), dtype=np.float64)
    reason = np.full(n * k, None, dtype=object)
    bad = np.zeros(n * k, dtype=bool)
    for j, (c, name) in enumerate(zip(layout.value_cols, layout.metric_names)):
        if layout.shape == "long":
            name = "value"
        vals, idx, why = _parse_values(columns[c], name, max_abs_value)
        values[:, j] = vals
        reason[idx * k + j] = why
        bad[idx * k + j] = True
    if line_bad.any():
        rec = np.flatnonzero(line_bad)
        obs = (rec[:, None] * k + np.arange(k)).ravel()
        reason[obs] = np.repeat(line_reason[rec], k)
        bad[obs] = True

    # Duplicates of (entity, metric, ts): keep the first good observation, reject the later.
    good_rec = ~line_bad
    # One int64 hash per record finds the candidates fast; the exact check below removes
    # any hash collision.
    with np.errstate(over="ignore"):
        rec_hash = us * np.int64(1_000_003) + e_codes * np.int64(7_919)
        if layout.metric_col is not None:
            rec_hash = rec_hash + m_codes * np.int64(104_729)
    candidate = np.zeros(n, dtype=bool)
    candidate[good_rec] = pd.Series(rec_hash[good_rec]).duplicated(keep=False).to_numpy()
    if candidate.any():
        rec = np.flatnonzero(candidate)
        obs = (rec[:, None] * k + np.arange(k)).ravel()
        obs = obs[~bad[obs]]
        keys = pd.DataFrame(
            {
                "e": e_codes[obs // k],
                "m": obs_metric[obs],
                "t": us[obs // k],
                "line": line_number[obs // k],
            }
        )
        later = keys.duplicated(["e", "m", "t"], keep="first").to_numpy()
        if later.any():
            first = keys.groupby(["e", "m", "t"], sort=False)["line"].transform("first")
            dup_obs = obs[later]
            reason[dup_obs] = _fmt(["duplicate of line ", first.to_numpy()[later].astype(str)])
            bad[dup_obs] = True

    keep = np.flatnonzero(~bad)
    rec_of = keep // k
    observations = _observations_frame(
        e_names.take(e_codes[rec_of]),
        m_names.take(obs_metric[keep]),
        us[rec_of],
        values.ravel()[keep],
        line_number[rec_of],
    )
    rejected = np.flatnonzero(bad)
    return observations, rejected, reason[rejected]


def _assemble(
    source_file: str,
    layout: _Layout,
    observations: pd.DataFrame,
    rejected_obs: np.ndarray,
    rejected_reason: np.ndarray,
    record_lines: np.ndarray,
    record_raw,
    pre_lines: np.ndarray,
    pre_reason: np.ndarray,
    pre_raw: np.ndarray,
) -> FileRead:
    """Join the parse rejections with those made before parsing, in file order."""
    k = len(layout.value_cols)
    rec = rejected_obs // k
    raw = record_raw(rec) if len(rec) else np.array([], dtype=object)
    line = np.concatenate([record_lines[rec], np.repeat(pre_lines, k)])
    col = np.concatenate([rejected_obs % k, np.tile(np.arange(k), len(pre_lines))])
    raws = np.concatenate([np.asarray(raw, dtype=object), np.repeat(pre_raw, k)])
    reasons = np.concatenate(
        [np.asarray(rejected_reason, dtype=object), np.repeat(pre_reason, k)]
    )
    order = np.lexsort((col, line))
    rejected_rows = _rejected_frame(source_file, line[order], raws[order], reasons[order])
    return FileRead(
        source_file=source_file,
        shape=layout.shape,
        observations=observations,
        rejected_rows=rejected_rows,
        rows_read=len(observations) + len(rejected_rows),
        file_error=None,
    )


# --------------------------------------------------------------------------------------------
# CSV and Parquet readers
# --------------------------------------------------------------------------------------------


@dataclass
class _CsvTable:
    header: list[str]
    raw_header: str
    header_line: int  # 1-based
    records: _CsvRecords
    data: np.ndarray  # indices of the data records (after the header, not blank)
    bad_bytes: dict[int, int]  # 0-based physical line -> first byte that is not UTF-8


def _csv_table(data: bytes) -> _CsvTable:
    text, bad_bytes = _decode(data)
    records = _csv_records(text)
    blank = _blank_records(records.rows)
    non_blank = np.flatnonzero(~blank)
    if len(non_blank) == 0:
        raise _Unusable(
            "has no header line (only blank lines); expected a CSV header line such as "
            "'entity_id,timestamp,metric,value'"
        )
    h = int(non_blank[0])
    return _CsvTable(
        header=records.rows[h],
        raw_header=records.raw[h].rstrip("\r"),
        header_line=int(records.first_line[h]) + 1,
        records=records,
        data=non_blank[1:],
        bad_bytes=bad_bytes,
    )


def _record_bad_bytes(records: _CsvRecords, idx: np.ndarray, bad_bytes: dict[int, int]):
    """For the chosen records: the first non-UTF-8 byte (or -1)."""
    out = np.full(len(idx), -1, dtype=np.int64)
    if not bad_bytes:
        return out
    bad_lines = np.fromiter(bad_bytes, dtype=np.int64)
    first = records.first_line[idx]
    # a record spans the physical lines [first, next record's first line)
    ends = np.append(records.first_line[1:], np.iinfo(np.int64).max)[idx]
    pos = np.searchsorted(np.sort(bad_lines), first)
    sorted_bad = np.sort(bad_lines)
    hit = (pos < len(sorted_bad)) & (sorted_bad[np.minimum(pos, len(sorted_bad) - 1)] < ends)
    for i in np.flatnonzero(hit):
        out[i] = bad_bytes[int(sorted_bad[pos[i]])]
    return out


@dataclass
class _FastCsv:
    header: list[str]
    raw_header: str
    columns: dict[int, pa.ChunkedArray]
    line_numbers: np.ndarray
    raw: object  # record indices -> object array of line texts


def _fast_csv(data: bytes) -> _FastCsv | None:
    """Read a plain CSV with Arrow's multi-threaded reader, or None to take the general path.

    Taken only when lines and records correspond one to one and no line needs a rejection
    before parsing: no quotes after the header, '\r' only in '\r\n', every data line with
    the header's number of fields (Arrow refuses the file otherwise, blank lines included),
    all UTF-8 (likewise). Anything else goes to the csv module, which works line by line.
    """
    import pyarrow.csv as pa_csv

    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        return None
    pos, line_no = 0, 1
    while True:  # the header is the first line that is not blank
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        if line.strip(b" \t\r"):
            break
        if end < 0:
            return None
        pos, line_no = end + 1, line_no + 1
    try:
        raw_header = line.decode("utf-8").rstrip("\r")
        header = next(csv.reader([raw_header]), [])
    except (UnicodeDecodeError, csv.Error):
        return None
    if raw_header.count('"') % 2:
        return None
    body = b"" if end < 0 else data[end + 1 :]
    if b'"' in body:
        return None
    n_lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    names = [f"f{i}" for i in range(len(header))]
    if n_lines:
        try:
            table = pa_csv.read_csv(
                pa.py_buffer(body),
                read_options=pa_csv.ReadOptions(column_names=names),
                parse_options=pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
                convert_options=pa_csv.ConvertOptions(
                    column_types={name: pa.string() for name in names},
                    strings_can_be_null=False,
                ),
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if table.num_rows != n_lines:
            return None
        columns = {i: table.column(i) for i in range(len(names))}
    else:
        columns = {i: pa.chunked_array([], type=pa.string()) for i in range(len(names))}

    def raw(rec: np.ndarray) -> np.ndarray:
        """Text of the chosen data lines (only computed when some are rejected)."""
        newlines = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10)
        starts = np.concatenate([[0], newlines + 1])
        ends = np.concatenate([newlines, [len(body)]])
        return np.asarray(
            [body[starts[r] : ends[r]].decode("utf-8").rstrip("\r") for r in rec], dtype=object
        )

    line_numbers = line_no + 1 + np.arange(n_lines, dtype=np.int64)
    return _FastCsv(header, raw_header, columns, line_numbers, raw)


def _read_csv(path: Path, source_file: str, entity: str, max_abs_value: float) -> FileRead:
    data = _without_bom(_read_bytes(path))
    fast = _fast_csv(data)
    if fast is not None:
        layout = _layout(fast.header, fast.raw_header)
        observations, rej_obs, rej_reason = _tidy(
            layout, fast.columns, len(fast.line_numbers), fast.line_numbers, entity,
            max_abs_value,
        )
        nothing = np.array([], dtype=object)
        return _assemble(
            source_file, layout, observations, rej_obs, rej_reason, fast.line_numbers,
            fast.raw, np.array([], dtype=np.int64), nothing, nothing,
        )

    table = _csv_table(data)
    layout = _layout(table.header, table.raw_header)
    records = table.records
    n_fields = len(table.header)
    idx = table.data
    line_numbers = records.first_line + 1

    lengths = np.fromiter(map(len, records.rows), dtype=np.int64, count=len(records.rows))[idx]
    bad_byte = _record_bad_bytes(records, idx, table.bad_bytes)
    pre_reason = np.full(len(idx), None, dtype=object)
    not_utf8 = bad_byte >= 0
    for i in np.flatnonzero(not_utf8):
        pre_reason[i] = f"line is not valid UTF-8 (byte 0x{bad_byte[i]:02x}); expected UTF-8 text"
    csv_error = np.zeros(len(idx), dtype=bool)
    for i in np.flatnonzero(np.isin(idx, list(records.parse_error))):
        if pre_reason[i] is None:
            pre_reason[i] = records.parse_error[int(idx[i])]
        csv_error[i] = True
    wrong_count = (lengths != n_fields) & ~not_utf8 & ~csv_error
    if wrong_count.any():
        pre_reason[wrong_count] = _fmt(
            [f"expected {n_fields} fields, found ", lengths[wrong_count].astype(str)]
        )
    pre = not_utf8 | csv_error | wrong_count
    good = idx[~pre]
    if len(good) and good[-1] - good[0] + 1 == len(good):  # contiguous: no copy per row
        cells_rows = records.rows[good[0] : good[-1] + 1]
    else:
        rows = records.rows
        cells_rows = [rows[i] for i in good]
    cells = (
        np.array(cells_rows, dtype=object).reshape(len(good), n_fields)
        if len(good)
        else np.empty((0, n_fields), dtype=object)
    )
    columns = {c: cells[:, c] for c in range(n_fields)}
    good_lines = line_numbers[good]
    observations, rej_obs, rej_reason = _tidy(
        layout, columns, len(good), good_lines, entity, max_abs_value
    )
    raw_all = records.raw

    def record_raw(rec: np.ndarray) -> np.ndarray:
        chosen = np.asarray(raw_all, dtype=object)[good[rec]]
        return np.asarray(pd.Series(chosen, dtype=object).str.rstrip("\r"), dtype=object)

    pre_idx = idx[pre]
    pre_raw = np.asarray([_escaped(raw_all[i].rstrip("\r")) for i in pre_idx], dtype=object)
    return _assemble(
        source_file, layout, observations, rej_obs, rej_reason, good_lines, record_raw,
        line_numbers[pre_idx], pre_reason[pre], pre_raw,
    )


def _parquet_column(table: pa.Table, i: int, role: str, name: str):
    """A Parquet column in the form the parsers take, or _Unusable for a type that cannot fit."""
    col = table.column(i)
    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.cast(typ.value_type)
        typ = col.type
    null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    is_text = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)
    numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)
    if role == "name":
        if not is_text:
            try:
                col = col.cast(pa.string())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise _Unusable(f"column '{name}' has type {typ}; expected text") from exc
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
    if role == "timestamp":
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            if pa.types.is_date(typ):
                col = col.cast(pa.timestamp("us"))
            series = col.to_pandas()
            if getattr(series.dt, "tz", None) is None:
                series = series.dt.tz_localize("UTC")
            us = pd.DatetimeIndex(series).tz_convert(None).as_unit("us").asi8.copy()
            return _Instants(us, null)
        if numeric:
            values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
            return _Numbers(np.where(null, np.nan, values).astype(np.float64), null)
        if is_text:
            return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
        raise _Unusable(
            f"column '{name}' has type {typ}; expected timestamps, ISO 8601 text or epoch seconds"
        )
    if numeric:
        values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
        return _Numbers(np.where(null, np.nan, values).astype(np.float64), null)
    if is_text:
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=object)
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
    n = table.num_rows
    line_numbers = np.arange(n, dtype=np.int64) + 2
    observations, rej_obs, rej_reason = _tidy(
        layout, columns, n, line_numbers, entity, max_abs_value
    )

    def record_raw(rec: np.ndarray) -> np.ndarray:
        unique, inverse = np.unique(rec, return_inverse=True)
        rows = table.take(pa.array(unique)).to_pylist()
        rendered = []
        for row in rows:
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(
                "" if v is None else v for v in row.values()
            )
            rendered.append(buffer.getvalue())
        return np.asarray(rendered, dtype=object)[inverse]

    empty = np.array([], dtype=np.int64)
    return _assemble(
        source_file, layout, observations, rej_obs, rej_reason, line_numbers, record_raw,
        empty, np.array([], dtype=object), np.array([], dtype=object),
    )


def read_file(path: Path, *, root: Path | None = None, max_abs_value: float = 1e15) -> FileRead:
    """Read one landing file into observations and rejected rows.

    Parameters
    ----------
    path : Path
        A ``.csv``, ``.csv.gz`` or ``.parquet`` file.
    root : Path, optional
        The landing folder; ``source_file`` is then the path relative to it.
    max_abs_value : float
        Values whose absolute value exceeds this are rejected.

    Returns
    -------
    FileRead
        Never raises for a problem in the file: whole-file problems are in ``file_error``,
        line problems in ``rejected_rows``.
    """
    path = Path(path)
    if root is not None:
        try:
            source_file = path.relative_to(root).as_posix()
        except ValueError:
            source_file = path.as_posix()
    else:
        source_file = path.name
    entity = entity_from_path(path).strip()
    try:
        if path.name.lower().endswith(".parquet"):
            result = _read_parquet(path, source_file, entity, max_abs_value)
        else:
            result = _read_csv(path, source_file, entity, max_abs_value)
    except _Unusable as problem:
        return _unusable(source_file, str(problem))
    if result.shape == "single" and entity == "":
        return _unusable(
            source_file, "single-series file has no name to use as entity_id; rename the file"
        )
    return result


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------

LABEL_COLUMNS = ("entity_id", "start", "end", "metrics")


def read_labels(path: Path) -> pd.DataFrame:
    """Read a labels file: known anomaly windows.

    The file is CSV with the header ``entity_id,start,end,metrics`` (any order); ``start`` and
    ``end`` are timestamps like those of the landing files (naive = UTC) and ``metrics`` is a
    ``;``-separated list of metric names (empty: no particular metric).

    Returns
    -------
    pandas.DataFrame
        ``entity_id`` (str), ``start`` and ``end`` (datetime64[us, UTC]), ``metrics``
        (object: list[str]), one row per window, in file order.

    Raises
    ------
    LandingError
        Naming the file, line, field and value of the first bad row (and how many more there are).
    """
    path = Path(path)
    where = str(path)
    try:
        table = _csv_table(_without_bom(_read_bytes(path)))
    except _Unusable as problem:
        raise LandingError(f"{where}: {problem}") from None
    names = [_clean_name(h).lower() for h in table.header]
    missing = [c for c in LABEL_COLUMNS if c not in names]
    if missing:
        raise LandingError(
            f"{where}: missing column(s) {', '.join(missing)} (found header "
            f"{_quote(table.raw_header)}); expected {','.join(LABEL_COLUMNS)}"
        )
    col = {c: names.index(c) for c in LABEL_COLUMNS}
    records = table.records
    idx = table.data
    lines = records.first_line[idx] + 1
    problems: list[tuple[int, str]] = []
    bad_byte = _record_bad_bytes(records, idx, table.bad_bytes)
    for i in np.flatnonzero(bad_byte >= 0):
        problems.append((int(lines[i]), f"line is not valid UTF-8 (byte 0x{bad_byte[i]:02x})"))
    for i, r in enumerate(idx):
        if bad_byte[i] < 0 and len(records.rows[r]) != len(names):
            problems.append(
                (int(lines[i]), f"expected {len(names)} fields, found {len(records.rows[r])}")
            )
    bad_lines = {line for line, _ in problems}
    keep = np.asarray([int(line) not in bad_lines for line in lines], dtype=bool)
    rows = [records.rows[r] for r in idx[keep]]
    kept_lines = lines[keep]
    cells = (
        np.array(rows, dtype=object).reshape(len(rows), len(names))
        if rows
        else np.empty((0, len(names)), dtype=object)
    )
    entity = np.asarray([str(v).strip() for v in cells[:, col["entity_id"]]], dtype=object)
    for i in np.flatnonzero(entity == ""):
        problems.append((int(kept_lines[i]), "field 'entity_id' is empty"))
    bounds = {}
    bad_bound = np.zeros(len(cells), dtype=bool)
    for field in ("start", "end"):
        us, rejected, reasons = _parse_timestamps(cells[:, col[field]])
        bounds[field] = us
        bad_bound |= rejected
        for i in np.flatnonzero(rejected):
            if reasons[i] == "missing timestamp":
                message = f"field '{field}' is empty"
            else:
                message = reasons[i].replace("timestamp", f"field '{field}' value", 1)
            problems.append((int(kept_lines[i]), message))
    inverted = (bounds["end"] < bounds["start"]) & ~bad_bound
    for i in np.flatnonzero(inverted):
        problems.append(
            (
                int(kept_lines[i]),
                f"field 'end' value '{cells[i, col['end']].strip()}' is before start "
                f"'{cells[i, col['start']].strip()}'",
            )
        )
    if problems:
        problems.sort()
        line, message = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LandingError(f"{where} line {line}: {message}{more}")
    metrics = [
        [m.strip() for m in str(v).split(";") if m.strip()] for v in cells[:, col["metrics"]]
    ]
    return pd.DataFrame(
        {
            "entity_id": _str_array(entity),
            "start": _ts_series(bounds["start"]),
            "end": _ts_series(bounds["end"]),
            "metrics": pd.Series(metrics, dtype=object),
        }
    )
