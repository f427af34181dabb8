"""Records -> tidy observations (entity, metric, ts, value, line) and the rejected ones with a reason."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from anomaly_assets.landing.columns import _arrow_strings, _as_numpy, _decimal_values, _dictionary, _fmt, _Numbers, _texts
from anomaly_assets.landing.shapes import (
    FileRead,
    _Layout,
    _observations_frame,
    _quote,
    _rejected_frame,
    _str_array,
    _unprinted,
)
from anomaly_assets.landing.timestamps import _parse_timestamps

_NOT_FINITE_SPELLINGS = {
    sign + word for sign in ("", "+", "-") for word in ("nan", "inf", "infinity")
}


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


def _names(col, field: str) -> tuple[np.ndarray, pd.api.extensions.ExtensionArray, np.ndarray, np.ndarray]:
    """Codes, stripped distinct names (str), the mask of missing (null or empty) names, and per
    cell why its name cannot be stored (None, or it holds a character that does not print)."""
    distinct, indices = _dictionary(col)
    # names equal after stripping share one code
    stripped = np.asarray(["" if u is None else str(u).strip() for u in distinct], dtype=object)
    codes_of_distinct, names = pd.factorize(stripped)
    codes = codes_of_distinct[indices].astype(np.int64)
    name_list = np.asarray(names, dtype=object)
    empty = np.flatnonzero(name_list == "")
    missing = codes == empty[0] if len(empty) else np.zeros(len(codes), dtype=bool)
    unprinted = np.full(len(name_list), None, dtype=object)
    for i, name in enumerate(name_list.tolist()):  # once per distinct name
        if (what := _unprinted(name)) is not None:
            unprinted[i] = f"{field} {_quote(name)} contains {what}, which does not print; names must be printable text"
    return codes, _str_array(names), missing, unprinted[codes]


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
        e_codes, e_names, e_missing, e_unprinted = _names(columns[layout.entity_col], "entity_id")
        reject_lines(e_missing, "missing entity_id")
        reject_lines(np.not_equal(e_unprinted, None), e_unprinted)
    else:
        e_codes, e_names = np.zeros(n, dtype=np.int64), _str_array([entity])
    if layout.metric_col is not None:
        m_codes, m_names, m_missing, m_unprinted = _names(columns[layout.metric_col], "metric")
        reject_lines(m_missing, "missing metric")
        reject_lines(np.not_equal(m_unprinted, None), m_unprinted)
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
                "ns": ts.ns_rest[obs // k],
            }
        )
        later = frame.duplicated(["f", "e", "m", "t"], keep="first").to_numpy()
        if later.any():
            first = frame.groupby(["f", "e", "m", "t"], sort=False)["line"].transform("first")
            reason[obs[later]] = _fmt("duplicate of line ", first.to_numpy()[later].astype(str))
            # equal only once cut to the microseconds stored: not the same time, say so
            first_ns = frame.groupby(["f", "e", "m", "t"], sort=False)["ns"].transform("first").to_numpy()
            finer = later & (frame["ns"].to_numpy() != first_ns)
            if finer.any():
                reason[obs[finer]] = _fmt(
                    "same entity, metric and microsecond as line ", first.to_numpy()[finer].astype(str),
                    " (timestamps are stored to the microsecond; they differ in finer digits)",
                )
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

