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

Speed: lines are classified with numpy over the raw bytes; the regular ones (no quotes, the
header's number of fields, UTF-8) go to Arrow's multi-threaded CSV reader and only the others
go through the csv module. Numbers and timestamps are parsed vectorised (Arrow casts, pandas'
ISO 8601 parser over the distinct timestamp strings), and Python runs per line only for lines
that are irregular or rejected.

Many files (a backfill) are read a batch at a time (:func:`read_batch`, :func:`iter_batches`):
the plain CSV files of a batch that share a header are parsed as one (one Arrow read, each
distinct timestamp and name parsed once for the batch, duplicates still looked for per file),
and the batch comes back as flat arrays (:class:`BatchRead`) rather than a frame per file. The
result is the same as :func:`read_file` of each file (a test keeps them equal); about 0.6 ms a
file of 480 lines instead of 4 ms, plus 2 ms a file no longer spent pickling frames between
processes.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "SUFFIXES",
    "FileRead",
    "FileDays",
    "LandingError",
    "discover_files",
    "entity_from_path",
    "observation_days",
    "read_file",
    "read_batch",
    "iter_batches",
    "BatchRead",
    "read_labels",
]

SUFFIXES = (".csv", ".csv.gz", ".parquet")

LONG_COLUMNS = ("entity_id", "timestamp", "metric", "value")
SINGLE_COLUMNS = ("timestamp", "value")
LABEL_COLUMNS = ("entity_id", "start", "end", "metrics")
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
_NAT = np.iinfo(np.int64).min

_DECIMAL_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"  # after trimming whitespace
_NOT_FINITE_SPELLINGS = {
    sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")
}
_BAD_BYTE_RE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, after surrogateescape
_DELIMITERS = {";": "semicolons (';')", "\t": "tabs", "|": "pipes ('|')"}
_GZIP_MAGIC = b"\x1f\x8b"
_QUOTE_LIMIT = 200  # characters of a header quoted in a message


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
        (float64), ``line_number`` (int64: 1-based physical line, header = 1; for Parquet
        the row index + 2). In file order: by line, then by metric column.
    rejected_rows : pandas.DataFrame
        ``source_file`` (str), ``line_number`` (int64), ``raw`` (str: the line's text, bytes
        that are not UTF-8 as backslash escapes; for Parquet the row rendered as CSV),
        ``reason`` (str). One row per rejected observation, in file order.
    rows_read : int
        Observations read: always ``len(observations) + len(rejected_rows)``.
    file_error : str or None
        Set when the whole file is unusable; observations and rejected_rows are then empty.
    """

    source_file: str
    shape: str | None
    observations: pd.DataFrame
    rejected_rows: pd.DataFrame
    rows_read: int
    file_error: str | None = None

    def messages(self, limit: int | None = None) -> list[str]:
        """Problems as sentences: ``'<file> line <n>: <reason>'``, or the file error."""
        if self.file_error is not None:
            return [self.file_error]
        rej = self.rejected_rows if limit is None else self.rejected_rows.head(limit)
        return [
            f"{self.source_file} line {n}: {reason}"
            for n, reason in zip(rej["line_number"].tolist(), rej["reason"].tolist())
        ]


class _Unusable(Exception):
    """Internal: the whole file is unusable; the message completes '<file>: ...'."""


# --------------------------------------------------------------------------------------------
# Folder and file names
# --------------------------------------------------------------------------------------------


def _matching_suffix(name: str) -> str | None:
    lower = name.lower()
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
    nothing = np.array([], dtype=object)
    return FileRead(
        source_file=source_file,
        shape=None,
        observations=_observations_frame(
            _str_array(nothing), _str_array(nothing), np.array([], np.int64), [], []
        ),
        rejected_rows=_rejected_frame(source_file, [], nothing, nothing),
        rows_read=0,
        file_error=f"{source_file}: {message}",
    )


# --------------------------------------------------------------------------------------------
# Bytes and header
# --------------------------------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when needed, without a UTF-8 BOM."""
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


def _line_text(line: bytes) -> str:
    """A line's text; bytes that are not UTF-8 shown as backslash escapes (\\xe9)."""
    return line.decode("utf-8", errors="backslashreplace").rstrip("\r")


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    text = text.rstrip("\r")
    return f"'{text[:limit]}...'" if len(text) > limit else f"'{text}'"


def _clean_name(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip()


def _header_fields(raw_header: bytes) -> tuple[list[str], str]:
    """Fields and text of the header line, or _Unusable."""
    try:
        text = raw_header.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise _Unusable(
            f"header line is not valid UTF-8 ({_quote(_line_text(raw_header))}); "
            "save the file as UTF-8"
        ) from None
    try:
        fields = next(csv.reader([text]), [])
    except csv.Error as exc:
        raise _Unusable(f"header line is not valid CSV ({exc}; found {_quote(text)})") from None
    return fields, text


@dataclass
class _Layout:
    """Where the columns of a recognised shape are."""

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
    # entity_id, timestamp, metric and value are matched case-insensitively, metric names exactly
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
    long_spec = "entity_id,timestamp,metric,value"
    wide_spec = "entity_id,timestamp,<metric>,<metric>,..."

    def missing(needed: tuple[str, ...], shape: str, spec: str) -> _Unusable:
        absent = ", ".join(c for c in needed if c not in has)
        return _Unusable(f"missing column(s) {absent} for a {shape} file ({found}); expected {spec}")

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
            raise _Unusable(f"no metric columns ({found}); expected a wide file {wide_spec}")
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
# CSV bytes -> records
# --------------------------------------------------------------------------------------------


@dataclass
class _Records:
    """The data lines of a CSV file, split into fields.

    ``columns`` hold the records that have the header's number of fields, in line order; the
    lines rejected before parsing (wrong field count, not UTF-8, not CSV) are in ``pre_*``.
    """

    header: list[str]
    raw_header: str
    columns: dict[int, object]  # column position -> Arrow string array or object ndarray
    line_numbers: np.ndarray  # physical line (1-based) of each record, ascending
    raw: Callable[[np.ndarray], np.ndarray]  # record positions -> their line texts
    pre_lines: np.ndarray
    pre_reasons: np.ndarray
    pre_raws: np.ndarray


def _irregular_fields(text: str) -> list[str] | str:
    """Fields of one line, or why the csv module refuses it."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error as exc:
        return f"line is not valid CSV ({exc})"


def _arrow_columns(body: bytes, n_fields: int, n_rows: int) -> dict[int, pa.ChunkedArray] | None:
    """String columns of ``n_rows`` regular CSV lines, or None when Arrow disagrees on the count."""
    if not n_rows:
        return {c: pa.chunked_array([], type=pa.string()) for c in range(n_fields)}
    table = _arrow_csv(body, n_fields)
    if table is None or table.num_rows != n_rows:
        return None
    return {c: table.column(c) for c in range(n_fields)}


def _arrow_csv(body: bytes, n_fields: int) -> pa.Table | None:
    import pyarrow.csv as pa_csv

    names = [f"f{i}" for i in range(n_fields)]
    try:
        return pa_csv.read_csv(
            pa.py_buffer(body),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(quote_char=False, ignore_empty_lines=False),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.string() for name in names}, strings_can_be_null=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None


def _plain_parts(data: bytes, has_cr: bool):
    """``(header fields, header text, body, first data line, data lines)`` of a file whose data
    lines can go to Arrow as they are (no quotes, blank lines or stray carriage returns, a
    header that is UTF-8 CSV), else None."""
    pos, line_no = 0, 1
    while True:  # the header is the first line that is not blank
        end = data.find(b"\n", pos)
        line = data[pos:] if end < 0 else data[pos:end]
        if line.strip(b" \t\r"):
            break
        if end < 0:
            return None
        pos, line_no = end + 1, line_no + 1
    body = b"" if end < 0 else data[end + 1 :]
    if b'"' in body or (has_cr and body.count(b"\r") != body.count(b"\r\n")):
        return None
    if body.startswith((b"\n", b"\r\n")) or b"\n\n" in body or b"\n\r\n" in body:
        return None
    try:
        header, raw_header = _header_fields(line)
    except _Unusable:
        return None  # the general path says what is wrong
    n_lines = body.count(b"\n") + (0 if body.endswith(b"\n") or not body else 1)
    return header, raw_header, body, line_no + 1, n_lines


def _body_lines(body: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """Record positions -> text of those data lines of ``body`` (computed only when asked)."""

    def raw(rec: np.ndarray) -> np.ndarray:
        newlines = np.flatnonzero(np.frombuffer(body, dtype=np.uint8) == 10)
        starts = np.concatenate([[0], newlines + 1])
        ends = np.concatenate([newlines, [len(body)]])
        return np.asarray(
            [_line_text(body[starts[r] : ends[r]]) for r in rec.tolist()], dtype=object
        )

    return raw


def _plain_records(data: bytes, check_header: Callable | None, has_cr: bool) -> _Records | None:
    """Records of a file where every data line is regular, in one Arrow read; else None.

    Arrow refuses a line with the wrong number of fields and bytes that are not UTF-8; blank
    lines (which Arrow would take as rows), quotes and stray carriage returns are ruled out
    beforehand, so rows and lines correspond one to one.
    """
    plain = _plain_parts(data, has_cr)
    if plain is None:
        return None
    header, raw_header, body, first_line, n_lines = plain
    if check_header is not None:
        check_header(header, raw_header)
    n_fields = len(header)
    columns = _arrow_columns(body, n_fields, n_lines)
    if columns is None:
        return None

    nothing = np.array([], dtype=object)
    return _Records(
        header=header,
        raw_header=raw_header,
        columns=columns,
        line_numbers=first_line + np.arange(n_lines, dtype=np.int64),
        raw=_body_lines(body),
        pre_lines=np.array([], dtype=np.int64),
        pre_reasons=nothing,
        pre_raws=nothing,
    )


def _split_records(data: bytes, check_header: Callable | None = None) -> _Records | None:
    """Records of a CSV whose records are single lines (the usual case), or None.

    Lines are classified with numpy over the bytes. Regular lines (no quotes, no stray carriage
    return, the header's number of commas, valid UTF-8) are parsed by Arrow in one go; the
    others (quoted fields, blank or short lines, bad bytes) one by one with the csv module.
    Returns None when a quoted field may span lines (a line with an odd number of quotes) or
    the file uses bare carriage returns as line ends; those go to :func:`_general_records`.
    """
    has_cr = b"\r" in data
    if has_cr and data.count(b"\r\n") == 0:
        return None
    clean = _plain_records(data, check_header, has_cr)
    if clean is not None:
        return clean
    arr = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(arr == 10)
    starts = np.concatenate([[0], newlines + 1])
    ends = np.concatenate([newlines, [len(arr)]])
    if starts[-1] == len(arr):  # the file ends with a newline
        starts, ends = starts[:-1], ends[:-1]

    def per_line(byte: int) -> np.ndarray:
        positions = np.flatnonzero(arr == byte)
        if len(positions) == 0:
            return np.zeros(len(starts), dtype=np.int64)
        return np.searchsorted(positions, ends) - np.searchsorted(positions, starts)

    quotes = per_line(ord('"'))
    if (quotes % 2).any():
        return None
    crlf_end = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == 13)
    text_ends = ends - crlf_end
    stray_cr = (per_line(13) - crlf_end) > 0 if has_cr else np.zeros(len(starts), dtype=bool)

    header_index = None
    for i in range(len(starts)):  # the header is the first line that is not blank
        if data[starts[i] : text_ends[i]].strip(b" \t"):
            header_index = i
            break
    if header_index is None:
        raise _Unusable(
            "has no header line (only blank lines); expected a CSV header line such as "
            "'entity_id,timestamp,metric,value'"
        )
    header, raw_header = _header_fields(data[starts[header_index] : text_ends[header_index]])
    if check_header is not None:  # fail early, before the work on the data lines
        check_header(header, raw_header)
    n_fields = len(header)

    first = header_index + 1
    lines = np.arange(first, len(starts))
    not_utf8 = np.zeros(len(lines), dtype=bool)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        positions = np.flatnonzero(arr >= 0x80)
        high = (np.searchsorted(positions, ends) - np.searchsorted(positions, starts)) > 0
        for j in np.flatnonzero(high[first:]):
            try:
                data[starts[first + j] : ends[first + j]].decode("utf-8")
            except UnicodeDecodeError:
                not_utf8[j] = True
    commas = per_line(ord(","))[first:]
    regular = (
        (quotes[first:] == 0) & (commas == n_fields - 1) & ~stray_cr[first:] & ~not_utf8
    )

    # Regular lines: Arrow, on the data lines' bytes (all of them when every line is regular).
    n_regular = int(regular.sum())
    if n_regular == len(lines):
        body = data[starts[first] :] if len(lines) else b""
    else:
        keep = np.zeros(len(starts), dtype=bool)
        keep[first:] = regular
        span = np.diff(np.append(starts, len(arr)))  # each line with its newline
        body = arr[np.repeat(keep, span)].tobytes()
    columns = _arrow_columns(body, n_fields, n_regular)
    if columns is None:
        return None
    record_lines = lines[regular]

    # Irregular lines: the csv module, one line at a time.
    pre_lines, pre_reasons = [], []
    extra_lines, extra_rows = [], []
    for j in np.flatnonzero(~regular):
        i = int(lines[j])
        if not_utf8[j]:
            bad = data[starts[i] : text_ends[i]]
            first_bad = bad.decode("utf-8", errors="surrogateescape")
            byte = next(ord(ch) - 0xDC00 for ch in first_bad if "\udc80" <= ch <= "\udcff")
            pre_lines.append(i)
            pre_reasons.append(f"line is not valid UTF-8 (byte 0x{byte:02x}); expected UTF-8 text")
            continue
        text = data[starts[i] : text_ends[i]].decode("utf-8")
        fields = _irregular_fields(text)
        if isinstance(fields, str):
            pre_lines.append(i)
            pre_reasons.append(fields)
        elif not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line: not an observation
        elif len(fields) != n_fields:
            pre_lines.append(i)
            pre_reasons.append(f"expected {n_fields} fields, found {len(fields)}")
        else:
            extra_lines.append(i)
            extra_rows.append(fields)
    if extra_rows:
        order = np.argsort(np.concatenate([record_lines, extra_lines]), kind="stable")
        by_column = list(zip(*extra_rows))
        columns = {
            c: pa.chunked_array(columns[c].chunks + [pa.array(by_column[c], type=pa.string())])
            .take(pa.array(order))
            for c in range(n_fields)
        }
        record_lines = np.concatenate([record_lines, extra_lines])[order]

    def raw(rec: np.ndarray) -> np.ndarray:
        idx = record_lines[rec]
        return np.asarray(
            [_line_text(data[starts[i] : ends[i]]) for i in idx.tolist()], dtype=object
        )

    pre = np.asarray(pre_lines, dtype=np.int64)
    return _Records(
        header=header,
        raw_header=raw_header,
        columns=columns,
        line_numbers=record_lines.astype(np.int64) + 1,
        raw=raw,
        pre_lines=pre + 1,
        pre_reasons=np.asarray(pre_reasons, dtype=object),
        pre_raws=np.asarray(
            [_line_text(data[starts[i] : ends[i]]) for i in pre.tolist()], dtype=object
        ),
    )


def _general_records(data: bytes, check_header: Callable | None = None) -> _Records:
    """Records of any CSV, with the csv module reading the whole text.

    For the files :func:`_split_records` declines: quoted fields spanning lines (the reader
    counts physical lines) and bare carriage-return line ends. Lines with bytes that are not
    UTF-8 are rejected by position; a line the csv module refuses is rejected on its own.
    """
    text = data.decode("utf-8", errors="surrogateescape")
    separator = "\n" if "\n" in text else "\r"
    bad_lines: dict[int, int] = {}
    line, last = 0, 0
    for match in _BAD_BYTE_RE.finditer(text):  # one pass over the bad bytes only
        line += text.count(separator, last, match.start())
        last = match.start()
        bad_lines.setdefault(line, ord(match.group()) - 0xDC00)
    lines = text.split(separator)
    if lines and lines[-1] == "":
        lines.pop()

    records: list[tuple[int, int, list[str] | str]] = []  # (first line, last line + 1, fields)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 0
        for row in reader:
            records.append((start, reader.line_num, row))
            start = reader.line_num
    except csv.Error:
        records = [(i, i + 1, _irregular_fields(t)) for i, t in enumerate(lines)]

    def line_text(a: int, b: int) -> str:
        joined = "\n".join(s.rstrip("\r") for s in lines[a:b])
        return joined.encode("utf-8", errors="surrogateescape").decode(
            "utf-8", errors="backslashreplace"
        )

    def blank(fields) -> bool:
        return isinstance(fields, list) and (
            not fields or (len(fields) == 1 and not fields[0].strip())
        )

    non_blank = [r for r in records if not blank(r[2])]
    if not non_blank:
        raise _Unusable(
            "has no header line (only blank lines); expected a CSV header line such as "
            "'entity_id,timestamp,metric,value'"
        )
    (h_start, h_end, header) = non_blank[0]
    raw_header = line_text(h_start, h_end)
    if any(i in bad_lines for i in range(h_start, h_end)):
        raise _Unusable(
            f"header line is not valid UTF-8 ({_quote(raw_header)}); save the file as UTF-8"
        )
    if isinstance(header, str):
        raise _Unusable(f"header {header} (found {_quote(raw_header)})")
    if check_header is not None:
        check_header(header, raw_header)
    n_fields = len(header)

    good_lines, good_rows, good_spans = [], [], []
    pre_lines, pre_reasons, pre_raws = [], [], []
    for a, b, fields in non_blank[1:]:
        bad_byte = next((bad_lines[i] for i in range(a, b) if i in bad_lines), None)
        if bad_byte is not None:
            reason = f"line is not valid UTF-8 (byte 0x{bad_byte:02x}); expected UTF-8 text"
        elif isinstance(fields, str):
            reason = fields
        elif len(fields) != n_fields:
            reason = f"expected {n_fields} fields, found {len(fields)}"
        else:
            good_lines.append(a + 1)
            good_rows.append(fields)
            good_spans.append((a, b))
            continue
        pre_lines.append(a + 1)
        pre_reasons.append(reason)
        pre_raws.append(line_text(a, b))
    cells = (
        np.array(good_rows, dtype=object).reshape(len(good_rows), n_fields)
        if good_rows
        else np.empty((0, n_fields), dtype=object)
    )

    def raw(rec: np.ndarray) -> np.ndarray:
        return np.asarray([line_text(*good_spans[r]) for r in rec.tolist()], dtype=object)

    return _Records(
        header=header,
        raw_header=raw_header,
        columns={c: cells[:, c] for c in range(n_fields)},
        line_numbers=np.asarray(good_lines, dtype=np.int64),
        raw=raw,
        pre_lines=np.asarray(pre_lines, dtype=np.int64),
        pre_reasons=np.asarray(pre_reasons, dtype=object),
        pre_raws=np.asarray(pre_raws, dtype=object),
    )


def _csv_records(data: bytes, check_header: Callable | None = None) -> _Records:
    """Records of a CSV file; ``check_header(fields, text)`` may raise _Unusable early."""
    records = _split_records(data, check_header)
    return records if records is not None else _general_records(data, check_header)


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
    return np.asarray([("" if t is None else str(t)).strip() for t in chosen], dtype=object)


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


@dataclass
class _Timestamps:
    us: np.ndarray  # UTC microseconds (_NAT where rejected)
    code: np.ndarray  # the same instant has the same code
    rejected: np.ndarray
    reasons: np.ndarray  # object, None where accepted


def _parse_timestamps(col) -> _Timestamps:
    """Timestamps of a column: text (ISO 8601 or epoch seconds), or typed Parquet values.

    Text that is a decimal number is epoch seconds; other text is ISO 8601 (naive = UTC,
    offsets converted). Text is parsed once per distinct string.
    """
    if isinstance(col, (_Instants, _Numbers)):
        us, rejected, reasons = _parse_timestamp_values(col)
        code = pd.factorize(us)[0].astype(np.int64)
        return _Timestamps(us, code, rejected, reasons)
    distinct, indices = _dictionary(col)
    us, rejected, reasons = _parse_timestamp_values(distinct)
    code = pd.factorize(us)[0].astype(np.int64)
    return _Timestamps(us[indices], code[indices], rejected[indices], reasons[indices])


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
            texts = np.asarray(col, dtype=object)
            strings = _arrow_strings(texts)
            null = _as_numpy(
                pc.fill_null(pc.equal(pc.utf8_trim_whitespace(strings), ""), True), bool
            )
            seconds = _decimal_values(strings)
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
    out_of_range = epoch_out | ((us != _NAT) & ~null & ((us < _TS_MIN_US) | (us > _TS_MAX_US)))

    def shown(idx: np.ndarray) -> np.ndarray:
        if texts is not None:
            return _texts(texts, idx)
        if seconds is not None:
            return np.asarray([repr(float(v)) for v in seconds[idx]], dtype=object)
        return np.asarray(pd.Series(us[idx].view("datetime64[us]")).astype(str), dtype=object)

    if failed.any():
        idx = np.flatnonzero(failed)
        reasons[idx] = _fmt("timestamp '", shown(idx), f"' is not a date {TIMESTAMP_EXPECTED}")
    if out_of_range.any():
        idx = np.flatnonzero(out_of_range)
        span = f"{_TS_MIN.astype('datetime64[D]')} and {_TS_MAX.astype('datetime64[D]')}"
        reason = _fmt(
            "timestamp '", shown(idx), f"' is out of range (expected a date between {span})"
        )
        if seconds is not None:
            looks_ms = np.abs(np.nan_to_num(seconds[idx], nan=0.0)) > 1e11
            hint = "; epoch values must be in seconds, this looks like milliseconds"
            reason = np.where(looks_ms, reason + hint, reason).astype(object)
        reasons[idx] = reason
    return us, null | failed | out_of_range, reasons


def _parse_values(col, name: str, max_abs_value: float):
    """float64 values, and the index and reason of each cell that is not a storable number."""
    if isinstance(col, _Numbers):
        values, null = col.values.astype(np.float64, copy=False), col.null
        texts = None
    else:
        texts = col
        strings = _arrow_strings(col)
        null = (
            _as_numpy(strings.is_null(), bool)
            if strings.null_count
            else np.zeros(len(strings), dtype=bool)
        )
        try:  # fast path: every cell is a plain number
            values = _as_numpy(pc.cast(strings, pa.float64()), np.float64)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            values = _decimal_values(strings)
        values = np.where(null, np.nan, values)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (np.abs(values) > max_abs_value)
    idx = np.flatnonzero(bad)
    if len(idx) == 0:
        return values, idx, np.array([], dtype=object)
    if texts is not None:
        shown = _texts(texts, idx)
    else:
        shown = np.asarray([repr(float(v)) for v in values[idx]], dtype=object)
    v = values[idx]
    empty = null[idx] | (shown == "")
    spelled = np.asarray([t.lower() in _NOT_FINITE_SPELLINGS for t in shown], dtype=bool)
    not_finite = np.isinf(v) | spelled | (np.isnan(v) & (texts is None))
    where = f"' in column '{name}'"
    reasons = np.where(
        empty,
        f"empty value in column '{name}'",
        np.where(
            not_finite,
            _fmt("value '", shown, f"{where} is not finite"),
            np.where(
                np.isnan(v),
                _fmt("value '", shown, f"{where} is not a number"),
                _fmt("value '", shown, f"{where} is beyond the limit of ±{max_abs_value:g}"),
            ),
        ),
    ).astype(object)
    return values, idx, reasons


def _names(col) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray, np.ndarray]:
    """Codes, stripped distinct names (str) and the mask of missing (null or empty) names."""
    distinct, indices = _dictionary(col)
    # names equal after stripping share one code
    stripped = np.asarray(["" if u is None else str(u).strip() for u in distinct], dtype=object)
    codes_of_distinct, names = pd.factorize(stripped)
    codes = codes_of_distinct[indices].astype(np.int64)
    empty = np.flatnonzero(np.asarray(names, dtype=object) == "")
    missing = codes == empty[0] if len(empty) else np.zeros(len(codes), dtype=bool)
    return codes, _str_array(names), missing


def _repeated(keys: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """Mask of the rows whose combination of integer codes occurs more than once.

    ``keys[i]`` are codes in ``range(sizes[i])``. The codes are combined exactly into one
    int64 when the product of sizes allows, then counted with bincount (small key space) or a
    hash table; otherwise hashed, which may flag a few extra rows (callers check exactly).
    """
    n = len(keys[0])
    if n == 0:
        return np.zeros(0, dtype=bool)
    space = 1
    for size in sizes:
        space *= max(int(size), 1)
    combined = np.zeros(n, dtype=np.int64)
    if space < 2**62:
        for key, size in zip(keys, sizes):
            combined = combined * np.int64(max(int(size), 1)) + key
        if space <= 4 * n + 1024:
            return np.bincount(combined, minlength=space)[combined] > 1
    else:
        with np.errstate(over="ignore"):
            for key in keys:
                combined = combined * np.int64(1_000_003) + key
    return pd.Series(combined).duplicated(keep=False).to_numpy()


# --------------------------------------------------------------------------------------------
# Records -> tidy frame
# --------------------------------------------------------------------------------------------


@dataclass
class _Tidied:
    """The records' observations as arrays: kept ones (codes into the distinct names) and the
    index and reason of the rejected ones (observation ``r * k + j`` is record ``r``, value
    column ``j``)."""

    entity: np.ndarray  # per kept observation: code into entity_names
    entity_names: pd.api.extensions.ExtensionArray
    metric: np.ndarray  # per kept observation: code into metric_names
    metric_names: pd.api.extensions.ExtensionArray
    record: np.ndarray  # per kept observation: its record
    us: np.ndarray
    value: np.ndarray
    rejected: np.ndarray
    reasons: np.ndarray


def _tidy(layout: _Layout, columns: dict, line_number: np.ndarray, entity: str | None,
          max_abs_value: float):
    """Observations of the records, and the observation index and reason of those rejected.

    Observation ``r * k + j`` is record ``r``, value column ``j`` (``k`` value columns).
    """
    t = _tidy_arrays(layout, columns, line_number, entity, max_abs_value)
    observations = _observations_frame(
        t.entity_names.take(t.entity), t.metric_names.take(t.metric), t.us, t.value,
        line_number[t.record],
    )
    return observations, t.rejected, t.reasons


def _tidy_arrays(layout: _Layout, columns: dict, line_number: np.ndarray, entity: str | None,
                 max_abs_value: float, file_code: np.ndarray | None = None) -> _Tidied:
    """:func:`_tidy` as arrays. ``file_code`` (per record) is set when the records come from
    several files read together: duplicates are then looked for within each file only."""
    n = len(line_number)
    k = len(layout.value_cols)
    line_reason = np.full(n, None, dtype=object)
    line_bad = np.zeros(n, dtype=bool)

    def reject_lines(mask: np.ndarray, reason) -> None:
        new = mask & ~line_bad
        line_reason[new] = reason[new] if isinstance(reason, np.ndarray) else reason
        line_bad[:] |= new

    if layout.entity_col is not None:
        e_codes, e_names, e_missing = _names(columns[layout.entity_col])
        reject_lines(e_missing, "missing entity_id")
    else:
        e_codes, e_names = np.zeros(n, dtype=np.int64), _str_array([entity])
    if layout.metric_col is not None:
        m_codes, m_names, m_missing = _names(columns[layout.metric_col])
        reject_lines(m_missing, "missing metric")
        obs_metric = m_codes
    else:
        m_names = _str_array(layout.metric_names)
        obs_metric = np.tile(np.arange(k, dtype=np.int64), n)
    ts = _parse_timestamps(columns[layout.ts_col])
    reject_lines(ts.rejected, ts.reasons)

    values = np.empty((n, k), dtype=np.float64)
    reason = np.full(n * k, None, dtype=object)
    bad = np.zeros(n * k, dtype=bool)
    for j, (c, metric) in enumerate(zip(layout.value_cols, layout.metric_names)):
        vals, idx, why = _parse_values(columns[c], metric, max_abs_value)
        values[:, j] = vals
        reason[idx * k + j] = why
        bad[idx * k + j] = True
    if line_bad.any():
        rec = np.flatnonzero(line_bad)
        obs = (rec[:, None] * k + np.arange(k)).ravel()
        reason[obs] = np.repeat(line_reason[rec], k)
        bad[obs] = True

    # Duplicates of (entity, metric, ts): keep the first good observation, reject the later.
    good = np.flatnonzero(~line_bad)
    keys = [e_codes[good], ts.code[good]]
    sizes = [len(e_names), int(ts.code.max(initial=0)) + 1]
    if layout.metric_col is not None:
        keys.append(m_codes[good])
        sizes.append(len(m_names))
    if file_code is not None:
        keys.append(file_code[good])
        sizes.append(int(file_code.max(initial=0)) + 1)
    candidate = good[_repeated(keys, sizes)]
    if len(candidate):
        obs = (candidate[:, None] * k + np.arange(k)).ravel()
        obs = obs[~bad[obs]]
        frame = pd.DataFrame(
            {
                "f": 0 if file_code is None else file_code[obs // k],
                "e": e_codes[obs // k],
                "m": obs_metric[obs],
                "t": ts.us[obs // k],
                "line": line_number[obs // k],
            }
        )
        later = frame.duplicated(["f", "e", "m", "t"], keep="first").to_numpy()
        if later.any():
            first = frame.groupby(["f", "e", "m", "t"], sort=False)["line"].transform("first")
            reason[obs[later]] = _fmt("duplicate of line ", first.to_numpy()[later].astype(str))
            bad[obs[later]] = True

    keep = np.flatnonzero(~bad)
    rec_of = keep // k
    rejected = np.flatnonzero(bad)
    return _Tidied(
        entity=e_codes[rec_of], entity_names=e_names, metric=obs_metric[keep], metric_names=m_names,
        record=rec_of, us=ts.us[rec_of], value=values.ravel()[keep], rejected=rejected,
        reasons=reason[rejected],
    )


def _file_read(source_file: str, layout: _Layout, columns: dict, line_numbers: np.ndarray,
               raw: Callable[[np.ndarray], np.ndarray], entity: str, max_abs_value: float,
               pre_lines=None, pre_reasons=None, pre_raws=None) -> FileRead:
    """Tidy the records and join their rejections with those made before parsing."""
    observations, rejected_obs, rejected_reason = _tidy(
        layout, columns, line_numbers, entity, max_abs_value
    )
    k = len(layout.value_cols)
    if pre_lines is None:
        pre_lines = np.array([], dtype=np.int64)
        pre_reasons = pre_raws = np.array([], dtype=object)
    rec = rejected_obs // k
    rec_raw = raw(rec) if len(rec) else np.array([], dtype=object)
    line = np.concatenate([line_numbers[rec], np.repeat(pre_lines, k)])
    column = np.concatenate([rejected_obs % k, np.tile(np.arange(k), len(pre_lines))])
    raws = np.concatenate([np.asarray(rec_raw, dtype=object), np.repeat(pre_raws, k)])
    reasons = np.concatenate(
        [np.asarray(rejected_reason, dtype=object), np.repeat(pre_reasons, k)]
    )
    order = np.lexsort((column, line))
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
# CSV and Parquet files
# --------------------------------------------------------------------------------------------


def _read_csv(path: Path, source_file: str, entity: str, max_abs_value: float) -> FileRead:
    records = _csv_records(_read_bytes(path), check_header=_layout)
    layout = _layout(records.header, records.raw_header)
    return _file_read(
        source_file, layout, records.columns, records.line_numbers, records.raw, entity,
        max_abs_value, records.pre_lines, records.pre_reasons, records.pre_raws,
    )


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
    if role == "name":
        try:
            return col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _Unusable(f"column '{name}' has type {typ}; expected text") from exc
    if role == "timestamp":
        if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
            if pa.types.is_date(typ):
                col = col.cast(pa.timestamp("us"))
            series = col.to_pandas()
            if series.dt.tz is None:
                series = series.dt.tz_localize("UTC")
            us = pd.DatetimeIndex(series).tz_convert(None).as_unit("us").asi8.copy()
            return _Instants(us, null)
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


def _source_file(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return path.as_posix()
    return path.name


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
    source_file = _source_file(path, root)
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


# Below this many files, reading in this process beats starting worker processes (~1-2 s each).
_PARALLEL_MIN_FILES = 200
_FILES_PER_TASK = 64


# --------------------------------------------------------------------------------------------
# Batches of files as flat arrays (what the ingest streams)
# --------------------------------------------------------------------------------------------


@dataclass
class _Segment:
    """Observations and rejections of some files of a batch (one file, a group read together, or
    the whole batch), as flat arrays; see :class:`BatchRead` for the fields."""

    file: np.ndarray
    entity: np.ndarray
    entity_names: np.ndarray
    metric: np.ndarray
    metric_names: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    line: np.ndarray
    rej_file: np.ndarray
    rej_line: np.ndarray
    rej_raw: np.ndarray
    rej_reason: np.ndarray


@dataclass
class BatchRead(_Segment):
    """What a batch of landing files yielded: each file's :class:`FileRead`, as flat arrays.

    No frame per file: cheap to send back from a worker process and to combine, and the
    batch's rows are handled at once.

    Attributes
    ----------
    source_files, shapes, file_errors : list
        Per file, as in :class:`FileRead`.
    rows_read : numpy.ndarray
        Per file (int64), as in :class:`FileRead`.
    file, entity, metric, ts, value, line : numpy.ndarray
        Per stored observation, by file and then in the order of
        :attr:`FileRead.observations`: the file's index in ``source_files`` (int32), codes into
        ``entity_names`` and ``metric_names`` (int32), UTC microseconds (int64), value
        (float64) and line number (int64).
    entity_names, metric_names : numpy.ndarray
        Distinct names (object arrays of str).
    rej_file, rej_line, rej_raw, rej_reason : numpy.ndarray
        Per rejected row, by file and then in the order of :attr:`FileRead.rejected_rows`: the
        file's index (int32), line number (int64), the line's text and the reason (object).
    """

    source_files: list[str]
    shapes: list[str | None]
    file_errors: list[str | None]
    rows_read: np.ndarray

    def file_read(self, i: int) -> FileRead:
        """File ``i`` as :func:`read_file` returns it."""
        rows = self.file == i
        rej = self.rej_file == i
        return FileRead(
            source_file=self.source_files[i],
            shape=self.shapes[i],
            observations=_observations_frame(
                _str_array(self.entity_names[self.entity[rows]]),
                _str_array(self.metric_names[self.metric[rows]]),
                self.ts[rows], self.value[rows], self.line[rows],
            ),
            rejected_rows=_rejected_frame(
                self.source_files[i], self.rej_line[rej], self.rej_raw[rej], self.rej_reason[rej],
            ),
            rows_read=int(self.rows_read[i]),
            file_error=self.file_errors[i],
        )


def _segment_of_read(i: int, fr: FileRead) -> _Segment:
    o, r = fr.observations, fr.rejected_rows
    e_codes, e_names = pd.factorize(o["entity_id"])
    m_codes, m_names = pd.factorize(o["metric"])
    return _Segment(
        file=np.full(len(o), i, dtype=np.int32),
        entity=e_codes.astype(np.int32), entity_names=np.asarray(e_names, dtype=object),
        metric=m_codes.astype(np.int32), metric_names=np.asarray(m_names, dtype=object),
        ts=o["ts"].dt.tz_convert(None).to_numpy("datetime64[us]").view(np.int64),
        value=o["value"].to_numpy(np.float64), line=o["line_number"].to_numpy(np.int64),
        rej_file=np.full(len(r), i, dtype=np.int32), rej_line=r["line_number"].to_numpy(np.int64),
        rej_raw=r["raw"].to_numpy(object), rej_reason=r["reason"].to_numpy(object),
    )


def _read_group(members: list, layout: _Layout, n_fields: int, max_abs_value: float) -> tuple[_Segment, dict] | None:
    """Plain CSV files of one header, parsed as one: one Arrow read, each distinct timestamp
    and name parsed once for the group. ``members`` are ``(file index, body, first line,
    data lines)``. Returns the segment and rows read per file index, or None when Arrow
    refuses the lines (then each file is read on its own, which says why)."""
    bodies = [b if not b or b.endswith(b"\n") else b + b"\n" for _, b, _, _ in members]
    counts = np.array([n for _, _, _, n in members], dtype=np.int64)
    index = np.array([i for i, _, _, _ in members], dtype=np.int32)
    columns = _arrow_columns(b"".join(bodies), n_fields, int(counts.sum()))
    if columns is None:
        return None
    file_code = np.repeat(np.arange(len(members), dtype=np.int64), counts)
    offset = np.concatenate([[0], np.cumsum(counts)])
    line_numbers = np.concatenate(
        [first + np.arange(n, dtype=np.int64) for _, _, first, n in members]
    ) if len(members) else np.array([], dtype=np.int64)
    t = _tidy_arrays(layout, columns, line_numbers, None, max_abs_value, file_code=file_code)
    k = len(layout.value_cols)
    rec = t.rejected // k
    rej_member = file_code[rec]
    raws = np.empty(len(rec), dtype=object)
    for m in np.unique(rej_member):
        sel = rej_member == m
        raws[sel] = _body_lines(members[m][1])(rec[sel] - offset[m])
    line = line_numbers[rec]
    order = np.lexsort((t.rejected % k, line, rej_member))
    kept_member = file_code[t.record]
    rows_read = np.bincount(kept_member, minlength=len(members)) + np.bincount(
        rej_member, minlength=len(members))
    segment = _Segment(
        file=index[kept_member], entity=t.entity.astype(np.int32),
        entity_names=np.asarray(t.entity_names, dtype=object), metric=t.metric.astype(np.int32),
        metric_names=np.asarray(t.metric_names, dtype=object), ts=t.us, value=t.value,
        line=line_numbers[t.record], rej_file=index[rej_member[order]], rej_line=line[order],
        rej_raw=raws[order], rej_reason=np.asarray(t.reasons, dtype=object)[order],
    )
    return segment, dict(zip(index.tolist(), rows_read.tolist()))


def read_batch(paths, *, root: Path | None = None, max_abs_value: float = 1e15) -> BatchRead:
    """:func:`read_file` of each file, as one :class:`BatchRead` (``batch.file_read(i)`` equals
    ``read_file(paths[i])``).

    Plain CSV files (the usual nightly feed: no quotes, blank lines or stray carriage returns)
    that share a header are parsed together: one Arrow read, each distinct timestamp and name
    parsed once, duplicates looked for per file. Every other file is read on its own.
    """
    paths = [Path(p) for p in paths]
    names = [_source_file(p, root) for p in paths]
    shapes: list[str | None] = [None] * len(paths)
    errors: list[str | None] = [None] * len(paths)
    rows_read = np.zeros(len(paths), dtype=np.int64)
    groups: dict[tuple, tuple[_Layout, list]] = {}
    alone: list[int] = []
    for i, path in enumerate(paths):
        if path.name.lower().endswith(".parquet"):
            alone.append(i)
            continue
        try:
            data = _read_bytes(path)
            has_cr = b"\r" in data
            plain = None if has_cr and data.count(b"\r\n") == 0 else _plain_parts(data, has_cr)
            if plain is None:
                raise _Unusable("not plain")
            header, raw_header, body, first, n = plain
            layout = _layout(header, raw_header)
        except _Unusable:
            alone.append(i)  # read_file says what is wrong, or reads it the general way
            continue
        if layout.shape == "single":
            alone.append(i)  # the entity is the file's name
            continue
        groups.setdefault(tuple(header), (layout, []))[1].append((i, body, first, n))
    segments = []
    todo = [(len(header), layout, members) for header, (layout, members) in groups.items()]
    while todo:
        n_fields, layout, members = todo.pop()
        got = _read_group(members, layout, n_fields, max_abs_value)
        if got is None:  # a line Arrow refuses (field count, bytes): halve, down to the file alone
            if len(members) == 1:
                alone.append(members[0][0])
            else:
                half = len(members) // 2
                todo += [(n_fields, layout, members[:half]), (n_fields, layout, members[half:])]
            continue
        segment, counts = got
        segments.append(segment)
        for i, n in counts.items():
            shapes[i], rows_read[i] = layout.shape, n
    for i in alone:
        fr = read_file(paths[i], root=root, max_abs_value=max_abs_value)
        shapes[i], errors[i], rows_read[i] = fr.shape, fr.file_error, fr.rows_read
        segments.append(_segment_of_read(i, fr))
    return _combine(names, shapes, errors, rows_read, segments)


def _combine(names, shapes, errors, rows_read, segments: list[_Segment]) -> BatchRead:
    def cat(attr, dtype):
        parts = [getattr(s, attr) for s in segments]
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.array([], dtype=dtype)

    def recode(codes: str, distinct: str) -> tuple[np.ndarray, np.ndarray]:
        if not segments:
            return np.array([], dtype=np.int32), np.array([], dtype=object)
        offsets = np.cumsum([0] + [len(getattr(s, distinct)) for s in segments[:-1]])
        allnames = np.concatenate([np.asarray(getattr(s, distinct), dtype=object) for s in segments])
        new_of_old, uniques = pd.factorize(allnames)
        shifted = np.concatenate(
            [getattr(s, codes).astype(np.int64) + o for s, o in zip(segments, offsets)])
        return new_of_old[shifted].astype(np.int32), np.asarray(uniques, dtype=object)

    file = cat("file", np.int32)
    order = np.argsort(file, kind="stable")
    entity, entity_names = recode("entity", "entity_names")
    metric, metric_names = recode("metric", "metric_names")
    rej_file = cat("rej_file", np.int32)
    rej_order = np.argsort(rej_file, kind="stable")
    return BatchRead(
        source_files=names, shapes=shapes, file_errors=errors, rows_read=rows_read,
        file=file[order], entity=entity[order], entity_names=entity_names,
        metric=metric[order], metric_names=metric_names, ts=cat("ts", np.int64)[order],
        value=cat("value", np.float64)[order], line=cat("line", np.int64)[order],
        rej_file=rej_file[rej_order], rej_line=cat("rej_line", np.int64)[rej_order],
        rej_raw=cat("rej_raw", object)[rej_order], rej_reason=cat("rej_reason", object)[rej_order],
    )


def _read_batch_arrays(task) -> BatchRead:
    paths, root, max_abs_value = task
    return read_batch(paths, root=root, max_abs_value=max_abs_value)


def iter_batches(paths, *, root: Path | None = None, max_abs_value: float = 1e15,
                 batch_files: int | None = None, map_chunks: Callable | None = None):
    """:func:`read_batch` of consecutive batches of ``paths``, yielded in order.

    With ``map_chunks(fn, args, n)`` (``defs.workers.map_chunks``: the run's worker processes, in
    order, a few batches ahead of the consumer and no more) many files are read in parallel, so
    memory holds a few batches, not the folder; without it, or for few files, here one after another.
    """
    paths = [Path(p) for p in paths]
    size = batch_files or _FILES_PER_TASK
    tasks = [(paths[i:i + size], root, max_abs_value) for i in range(0, len(paths), size)]
    if map_chunks is None or len(paths) < _PARALLEL_MIN_FILES:
        for task in tasks:
            yield _read_batch_arrays(task)
        return
    yield from map_chunks(_read_batch_arrays, [(t,) for t in tasks], len(tasks))


@dataclass
class FileDays:
    """The UTC days a landing file holds timestamps for (see :func:`observation_days`).

    Attributes
    ----------
    source_file : str
        As in :class:`FileRead`.
    days : list of str
        Sorted ``YYYY-MM-DD`` UTC days of the file's parseable timestamps.
    file_error : str or None
        Set, as in :class:`FileRead`, when the whole file is unusable; ``days`` is then empty.
    """

    source_file: str
    days: list[str]
    file_error: str | None = None


def observation_days(path: Path, *, root: Path | None = None) -> FileDays:
    """Which UTC days a landing file covers, reading only what that takes.

    A CSV file is split into fields once (no value is parsed), a Parquet file reads its schema
    and its timestamp column only; the timestamps are parsed as :func:`read_file` parses them.
    Days of rows that :func:`read_file` would reject for another reason (a bad value) are
    included: the answer is where the file's rows would go, not which rows are valid. Never
    raises for a problem in the file: an unusable file has ``file_error`` set (the same message
    :func:`read_file` gives for the header or the encoding).
    """
    path = Path(path)
    source_file = path.name
    if root is not None:
        try:
            source_file = path.relative_to(root).as_posix()
        except ValueError:
            source_file = path.as_posix()
    try:
        if path.name.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            try:
                if path.stat().st_size == 0:
                    raise _Unusable("is empty (0 bytes); expected a Parquet file")
                header = list(pq.read_schema(path).names)
                layout = _layout(header, ",".join(header))
                name = header[layout.ts_col]
                table = pq.read_table(path, columns=[name])
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise _Unusable(f"is not a readable Parquet file ({exc})") from exc
            column = _parquet_column(table, 0, "timestamp", name)
        else:
            records = _csv_records(_read_bytes(path), check_header=_layout)
            column = records.columns[_layout(records.header, records.raw_header).ts_col]
        parsed = _parse_timestamps(column)
    except _Unusable as problem:
        return FileDays(source_file, [], f"{source_file}: {problem}")
    us = parsed.us[~parsed.rejected]
    days = np.unique(us // 86_400_000_000).astype("datetime64[D]")
    return FileDays(source_file, [str(d) for d in days])


# --------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------


def read_labels(path: Path) -> pd.DataFrame:
    """Read a labels file: known anomaly windows.

    The file is CSV with the header ``entity_id,start,end,metrics`` (any order, other columns
    ignored); ``start`` and ``end`` are timestamps like those of the landing files (naive =
    UTC) and ``metrics`` is a ``;``-separated list of metric names (empty: no particular one).

    Returns
    -------
    pandas.DataFrame
        ``entity_id`` (str), ``start`` and ``end`` (datetime64[us, UTC]), ``metrics``
        (object: list[str]), one row per window, in file order.

    Raises
    ------
    LandingError
        Naming the file, line, field and value of the first bad row (and how many more
        problems there are).
    """
    path = Path(path)
    where = str(path)
    try:
        records = _general_records(_read_bytes(path))
    except _Unusable as problem:
        raise LandingError(f"{where}: {problem}") from None
    names = [_clean_name(h).lower() for h in records.header]
    missing = [c for c in LABEL_COLUMNS if c not in names]
    if missing:
        raise LandingError(
            f"{where}: missing column(s) {', '.join(missing)} (found header "
            f"{_quote(records.raw_header)}); expected {','.join(LABEL_COLUMNS)}"
        )
    col = {c: names.index(c) for c in LABEL_COLUMNS}
    lines = records.line_numbers
    problems = list(zip(records.pre_lines.tolist(), records.pre_reasons.tolist()))
    cell = {c: np.asarray(records.columns[col[c]], dtype=object) for c in LABEL_COLUMNS}
    entity = np.asarray([v.strip() for v in cell["entity_id"]], dtype=object)
    for i in np.flatnonzero(entity == ""):
        problems.append((int(lines[i]), "field 'entity_id' is empty"))
    bounds = {}
    bad_bound = np.zeros(len(lines), dtype=bool)
    for field in ("start", "end"):
        parsed = _parse_timestamps(cell[field])
        bounds[field] = parsed.us
        bad_bound |= parsed.rejected
        for i in np.flatnonzero(parsed.rejected):
            reason = parsed.reasons[i]
            if reason == "missing timestamp":
                message = f"field '{field}' is empty"
            else:
                message = reason.replace("timestamp", f"field '{field}' value", 1)
            problems.append((int(lines[i]), message))
    for i in np.flatnonzero((bounds["end"] < bounds["start"]) & ~bad_bound):
        problems.append(
            (
                int(lines[i]),
                f"field 'end' value '{cell['end'][i].strip()}' is before start "
                f"'{cell['start'][i].strip()}'",
            )
        )
    if problems:
        problems.sort()
        line, message = problems[0]
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise LandingError(f"{where} line {line}: {message}{more}")
    metrics = [[m.strip() for m in v.split(";") if m.strip()] for v in cell["metrics"]]
    return pd.DataFrame(
        {
            "entity_id": _str_array(entity),
            "start": _ts_series(bounds["start"]),
            "end": _ts_series(bounds["end"]),
            "metrics": pd.Series(metrics, dtype=object),
        }
    )
