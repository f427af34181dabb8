"""Batches of landing files as flat arrays (what the ingest streams)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly_assets.landing.csv_records import _arrow_columns, _body_lines, _plain_parts, _read_bytes
from anomaly_assets.landing.reading import _source_file, read_file
from anomaly_assets.landing.shapes import (
    FileRead,
    _Layout,
    _layout,
    _observations_frame,
    _rejected_frame,
    _str_array,
    _Unusable,
)
from anomaly_assets.landing.tidy import _tidy_arrays

# Below this many files, reading in this process beats starting worker processes (~1-2 s each).
_PARALLEL_MIN_FILES = 200
_FILES_PER_TASK = 64


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
