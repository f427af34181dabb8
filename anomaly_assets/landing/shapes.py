"""What a landing file yields (:class:`FileRead`), and its shape, recognised from the header.

Also the small text helpers every message uses: a line's text, a quoted excerpt.
"""

from __future__ import annotations

import csv
import unicodedata
from dataclasses import dataclass

import numpy as np
import pandas as pd

LONG_COLUMNS = ("entity_id", "timestamp", "metric", "value")
SINGLE_COLUMNS = ("timestamp", "value")
ACCEPTED_SHAPES = (
    "long (entity_id,timestamp,metric,value in any order), "
    "wide (entity_id,timestamp,<metric>,<metric>,...) or "
    "single series (timestamp,value; the entity is the file name)"
)
_DELIMITERS = {";": "semicolons (';')", "\t": "tabs", "|": "pipes ('|')"}
_QUOTE_LIMIT = 200  # characters of a header quoted in a message


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


def _line_text(line: bytes) -> str:
    """A line's text; bytes that are not UTF-8 shown as backslash escapes (\\xe9)."""
    return line.decode("utf-8", errors="backslashreplace").rstrip("\r")


# Characters that do not print: controls (NUL, line breaks, ESC), format characters (bidi
# overrides, zero-width spaces and joiners, BOM) and line/paragraph separators. In a name they
# hide or reorder what a person reads in a table, a log line or an alert.
_NOT_PRINTED = frozenset({"Cc", "Cf", "Zl", "Zp"})
_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LINE FEED", "\r": "CARRIAGE RETURN", "\x1b": "ESCAPE"}
_ESCAPES = {"\n": "\\n", "\r": "\\r"}


def _unprinted(text: str) -> str | None:
    """The first character of ``text`` that does not print, described (``U+202E
    RIGHT-TO-LEFT OVERRIDE``), or None."""
    if text.isascii() and text.isprintable():
        return None
    for ch in text:
        if unicodedata.category(ch) in _NOT_PRINTED:
            return f"U+{ord(ch):04X} {_CONTROL_NAMES.get(ch) or unicodedata.name(ch, 'CONTROL CHARACTER')}"
    return None


def _printable(text: str) -> str:
    """``text`` with every character that does not print, but tabs, as a backslash escape
    (``\\x00``, ``\\u202e``): a message never carries NUL bytes or a bidi override to a
    terminal or log."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(
        ch if ch == "\t" or unicodedata.category(ch) not in _NOT_PRINTED
        else _ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
        for ch in text
    )


def _quote(text: str, limit: int = _QUOTE_LIMIT) -> str:
    text = _printable(text.rstrip("\r"))
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
    for position, name in enumerate(names, start=1):
        if (what := _unprinted(name)) is not None:
            raise _Unusable(
                f"column {position} of the header ({_quote(name)}) contains {what}, which does not print "
                f"({found}); column names must be printable text"
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
    if has == {"entity_id", "timestamp", "value"}:  # a long file without its metric, most likely
        raise _Unusable(
            f"missing column metric for a long file ({found}); expected {long_spec} (a wide file "
            f"names its metric columns: {wide_spec})"
        )
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

