"""One landing file -> a :class:`FileRead`; the days a file covers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from anomaly_assets.landing.csv_records import _csv_records, _read_bytes
from anomaly_assets.landing.discovery import OUTSIDE, _inside, entity_from_path
from anomaly_assets.landing.parquet import _parquet_column, _read_parquet
from anomaly_assets.landing.shapes import FileRead, _layout, _unprinted, _unusable, _Unusable
from anomaly_assets.landing.tidy import _file_read
from anomaly_assets.landing.timestamps import _parse_timestamps


def _read_csv(path: Path, source_file: str, entity: str, max_abs_value: float) -> FileRead:
    records = _csv_records(_read_bytes(path), check_header=_layout)
    layout = _layout(records.header, records.raw_header)
    return _file_read(
        source_file, layout, records.columns, records.line_numbers, records.raw, entity,
        max_abs_value, records.pre_lines, records.pre_reasons, records.pre_raws,
    )


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
        The landing folder; ``source_file`` is then the path relative to it, and a path whose
        target is outside it (a symbolic link) is not read.
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
    if root is not None and not _inside(path.resolve(), Path(root).resolve()):
        return _unusable(source_file, OUTSIDE)
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
    if result.shape == "single" and (what := _unprinted(entity)) is not None:
        return _unusable(
            source_file, f"single-series file name (the entity_id) contains {what}, which does not print; rename the file"
        )
    return result



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

