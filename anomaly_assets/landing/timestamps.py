"""Timestamps of a column: ISO 8601 text (naive = UTC) or epoch seconds, or typed Parquet values."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from anomaly_assets.landing.columns import (
    _arrow_strings,
    _as_numpy,
    _decimal_values,
    _dictionary,
    _fmt,
    _Instants,
    _Numbers,
    _texts,
)

TIMESTAMP_EXPECTED = "(expected ISO 8601 or epoch seconds)"

# Timestamps must fit datetime64[ns] so that any pandas code downstream can hold them.
_TS_MIN = np.datetime64("1677-09-22T00:00:00", "us")
_TS_MAX = np.datetime64("2262-04-11T00:00:00", "us")
_TS_MIN_US = int(_TS_MIN.astype(np.int64))
_TS_MAX_US = int(_TS_MAX.astype(np.int64))
_NAT = np.iinfo(np.int64).min


@dataclass
class _Timestamps:
    us: np.ndarray  # UTC microseconds (_NAT where rejected)
    code: np.ndarray  # the same instant has the same code
    rejected: np.ndarray
    reasons: np.ndarray  # object, None where accepted
    ns_rest: np.ndarray  # nanoseconds beyond the microseconds stored (0..999; ISO text only)


def _parse_timestamps(col) -> _Timestamps:
    """Timestamps of a column: text (ISO 8601 or epoch seconds), or typed Parquet values.

    Text that is a decimal number is epoch seconds; other text is ISO 8601 (naive = UTC,
    offsets converted). Text is parsed once per distinct string.
    """
    if isinstance(col, (_Instants, _Numbers)):
        us, rejected, reasons, ns_rest = _parse_timestamp_values(col)
        code = pd.factorize(us)[0].astype(np.int64)
        return _Timestamps(us, code, rejected, reasons, ns_rest)
    distinct, indices = _dictionary(col)
    us, rejected, reasons, ns_rest = _parse_timestamp_values(distinct)
    code = pd.factorize(us)[0].astype(np.int64)
    return _Timestamps(us[indices], code[indices], rejected[indices], reasons[indices], ns_rest[indices])


def _compact_dates(seconds: np.ndarray, epoch: np.ndarray) -> np.ndarray:
    """Mask of epoch values that read as a date written YYYYMMDD (``20260910``): as seconds they
    fall in August 1970, which no telemetry feed means."""
    with np.errstate(invalid="ignore"):
        candidate = epoch & (seconds >= 19000101) & (seconds <= 21001231) & (seconds == np.floor(seconds))
    idx = np.flatnonzero(candidate)
    if len(idx):
        digits = pd.Series(seconds[idx].astype(np.int64).astype(str))
        valid = pd.to_datetime(digits, format="%Y%m%d", errors="coerce").notna().to_numpy()
        candidate[idx[~valid]] = False
    return candidate


def _parse_timestamp_values(col) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    texts = seconds = None
    n = len(col.us if isinstance(col, _Instants) else col.values if isinstance(col, _Numbers) else col)
    ns_rest = np.zeros(n, dtype=np.int16)
    compact = np.zeros(n, dtype=bool)
    if isinstance(col, _Instants):
        null = col.null
        us = np.where(null, _NAT, col.us).astype(np.int64)
        epoch_out = np.zeros(len(us), dtype=bool)
        if col.ns_rest is not None:
            ns_rest = col.ns_rest
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
        compact = _compact_dates(seconds, epoch)
        us[compact] = _NAT
        if texts is not None:
            is_iso = ~epoch & ~null
            if is_iso.any():
                parsed = pd.to_datetime(
                    pd.Series(texts[is_iso], dtype=object),
                    utc=True, format="ISO8601", errors="coerce",
                )
                instants = pd.DatetimeIndex(parsed).tz_convert(None)
                us[is_iso] = instants.as_unit("us").asi8
                if instants.unit == "ns":  # finer than stored: the same microsecond may repeat
                    ns = instants.asi8
                    ns_rest[is_iso] = np.where(ns == np.iinfo(np.int64).min, 0, ns % 1000)

    reasons = np.full(len(us), None, dtype=object)
    reasons[null] = "missing timestamp"
    failed = (us == _NAT) & ~null & ~epoch_out & ~compact
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
    if compact.any():
        idx = np.flatnonzero(compact)
        as_seconds = pd.Series((seconds[idx] * 1e6).astype(np.int64).view("datetime64[us]")).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        as_date = pd.to_datetime(pd.Series(seconds[idx].astype(np.int64).astype(str)), format="%Y%m%d").dt.strftime("%Y-%m-%d")
        reasons[idx] = _fmt("timestamp '", shown(idx), "' looks like a date written YYYYMMDD, not epoch seconds (as seconds "
                            "it would be ", as_seconds.to_numpy(object), "); write it in ISO 8601, e.g. ",
                            as_date.to_numpy(object))
    return us, null | failed | out_of_range | compact, reasons, ns_rest

