"""CSV bytes -> records: the data lines split into fields, and the lines refused before parsing.

Lines are classified with numpy over the raw bytes; the regular ones (no quotes, the header's
number of fields, UTF-8) go to Arrow's multi-threaded CSV reader and only the others go through
the csv module.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from anomaly_assets.landing.shapes import _header_fields, _line_text, _quote, _Unusable

_BAD_BYTE_RE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, after surrogateescape
_GZIP_MAGIC = b"\x1f\x8b"


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


UNCLOSED_QUOTE = "unclosed quote: a field opened with '\"' on this line does not close on it (reading resumed at the next line)"


def _blank(fields) -> bool:
    return isinstance(fields, list) and (not fields or (len(fields) == 1 and not fields[0].strip()))


def _opens_quote(text: str) -> bool:
    """Whether a quoted field opened on the line is still open at its end."""
    try:
        next(csv.reader([text.rstrip("\r")], strict=True), [])
    except csv.Error as exc:
        return "unexpected end of data" in str(exc)
    return False


def _is_record(text: str, n_fields: int) -> bool:
    """Whether one line is, on its own, a complete record of ``n_fields`` fields."""
    try:
        return len(next(csv.reader([text.rstrip("\r")], strict=True), [])) == n_fields
    except csv.Error:
        return False


def _resynced_records(text: str) -> list[tuple[int, int, list[str] | str]]:
    """``(first line, last line + 1, fields or reason)`` of each record, read by the csv module.

    A quoted field may hold line breaks, so a record may span lines. After the header, a record
    that spans lines is kept only when it has the header's number of fields and no line inside
    it is a complete record by itself. Otherwise its first line held a stray quote: that line
    alone is rejected and reading resumes at the next one, so one stray quote costs one line,
    not the rest of the file.
    """
    buffer = io.StringIO(text, newline="")
    # where each line starts, as the csv reader counts lines (universal line ends)
    offsets = np.cumsum([0] + [len(line) for line in buffer]).tolist()
    n_lines = len(offsets) - 1
    records: list[tuple[int, int, list[str] | str]] = []
    n_fields = None
    pos = 0
    while pos < n_lines:
        buffer.seek(offsets[pos])
        reader = csv.reader(buffer)
        start, resume = pos, None
        for row in reader:
            end = pos + reader.line_num
            if n_fields is None:
                if not _blank(row):
                    n_fields = len(row)
            elif end - start > 1 and (
                len(row) != n_fields
                or any(_is_record(text[offsets[i]:offsets[i + 1]], n_fields) for i in range(start + 1, end - 1))
            ):
                records.append((start, start + 1, UNCLOSED_QUOTE))
                resume = start + 1
                break
            elif end - start == 1 and '"' in (line := text[offsets[start]:offsets[end]]) and _opens_quote(line):
                row = UNCLOSED_QUOTE  # the last line, its quote open at the end of the file
            records.append((start, end, row))
            start = end
        if resume is None:
            break
        pos = resume
    return records


def _general_records(data: bytes, check_header: Callable | None = None) -> _Records:
    """Records of any CSV, with the csv module reading the whole text.

    For the files :func:`_split_records` declines: quoted fields spanning lines (the reader
    counts physical lines; a stray quote is resynchronised, :func:`_resynced_records`) and bare
    carriage-return line ends. Lines with bytes that are not
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

    try:
        records = _resynced_records(text)
    except csv.Error:
        records = [(i, i + 1, _irregular_fields(t)) for i, t in enumerate(lines)]

    def line_text(a: int, b: int) -> str:
        joined = "\n".join(s.rstrip("\r") for s in lines[a:b])
        return joined.encode("utf-8", errors="surrogateescape").decode(
            "utf-8", errors="backslashreplace"
        )

    non_blank = [r for r in records if not _blank(r[2])]
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
            reason = UNCLOSED_QUOTE if _opens_quote(lines[a]) else f"expected {n_fields} fields, found {len(fields)}"
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

