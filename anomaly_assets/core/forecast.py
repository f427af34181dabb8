"""Causal expectations: forecast a day from the seasonal-trend decomposition of the days before it.

STL (Cleveland et al., 1990) is a two-sided smoother: its trend at time t uses points after t. To
score a day without peeking, each day ``D`` is *forecast* from a decomposition of the history
window ending at the start of ``D``:

    expected(t) = trend(last history point) + seasonal(t - k * p)

where ``k`` is the smallest whole number of periods that lands the phase of ``t`` inside the last
cycle of the history (the seasonal-naive forecast of each STL seasonal component, as in
Hyndman & Athanasopoulos, *Forecasting: Principles and Practice*, 3rd ed., section 3.6 and 5.2).
The trend is carried flat: over a one-day horizon a damped or flat trend beats a linear
extrapolation that turns every recent wiggle into a runaway forecast.

``residual = value - expected`` is standardized by a robust scale (1.4826 × median absolute
residual of the in-sample fit), so ``residual_z`` reads as σ for every series.

The decomposition is STL on the shortest cycle the history supports (daily for sub-daily data,
weekly for daily data), batched over series by ``decompose.stl``.

**Weekly cycle on sub-daily data.** When the history also holds two full weeks, a day-of-week
effect (weekend load, closed stores) is added to the daily-STL forecast: for each day of the week,
the median one-day-ahead error of the in-sample fit on that weekday,

    e(t) = value(t) - seasonal(t) - level(day before t),
    level(day) = median over the day of (value - seasonal),
    seasonal = the daily STL seasonal's median over the history's days, phase by phase,

i.e. the change of the deseasonalized level from the day before, which a flat-trend forecast
misses on that weekday. (The in-sample STL trend cannot stand in for the level: it is two-sided,
so at the end of a Friday it has already bent half-way toward the weekend; for the same reason
the forecast then starts from the level of the last day rather than the trend's last value.) This is the
day-of-week adjustment of a seasonal-naive forecast (Hyndman & Athanasopoulos, section 5.2); it
costs one median per series and weekday, where a second STL pass for the weekly period (MSTL,
Bandara et al. 2021) measured ~10x the cost of the whole decomposition (see below).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly_assets.core.decompose import stl
from anomaly_assets.core.quantiles import row_quantiles

_MAD_TO_SD = 1.4826


def seasonal_periods(interval_seconds: float, history_points: int, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Daily and weekly periods (in samples) that the history can support.

    A period is used when it is a whole number of samples >= 2 and the history holds at least
    two full cycles of it (STL's minimum). ``override`` replaces the inferred periods but is
    filtered by the same two rules.
    """
    if override:
        candidates = tuple(int(p) for p in override)
    else:
        day = 86_400 / interval_seconds
        candidates = tuple(int(round(day * k)) for k in (1, 7)) if abs(day - round(day)) < 1e-6 else ()
    return tuple(sorted({p for p in candidates if p >= 2 and history_points >= 2 * p}))


@dataclass(frozen=True)
class Forecast:
    """Shapes: (n_series, horizon) except ``scale`` (n_series,) and ``profile``.

    ``profile`` (n_series, period): the seasonal shape of one cycle, phase 0 at a cycle boundary of
    the history's end, that a level is measured against (``value - profile`` is the deseasonalized
    value); None when no cycle was fitted.
    """

    expected: np.ndarray
    trend: np.ndarray
    seasonal: np.ndarray
    scale: np.ndarray
    profile: np.ndarray | None = None
    resid: np.ndarray | None = None  # (n_series, n_history): the in-sample residual ``scale`` is measured on


def forecast(history: np.ndarray, horizon: int, periods: tuple[int, ...], *, robust: bool = True,
             outer_iter: int = 2, min_scale: np.ndarray | float = 1e-9, dtype="float64") -> Forecast:
    """Forecast ``horizon`` steps after ``history`` (n_series, n_history), gap-free and finite.

    ``history`` must end at a day boundary when a weekly period is given (its last point is the
    last sample before the forecast day), so that its blocks of ``periods[0]`` samples are days.
    ``robust`` uses STL's bisquare robustness weights so that past anomalies in the history do
    not bend the expectation (``outer_iter`` robustness passes; statsmodels' default is 15, two
    already remove the pull of isolated spikes at a fraction of the cost). ``dtype``: the
    precision of the STL arithmetic (see :func:`anomaly_assets.core.decompose.stl`).
    """
    history = np.atleast_2d(np.asarray(history, float))
    b, n = history.shape
    h = np.arange(1, horizon + 1)
    if not periods:
        # No cycle the history can support: the expectation is the robust level (median).
        level = np.median(history, axis=1, keepdims=True)
        resid = history - level
        trend = np.repeat(level, horizon, axis=1)
        seasonal = np.zeros((b, horizon))
        profile = None
    else:
        # One STL on the shortest supported cycle. MSTL (daily + weekly) measured 10x slower on
        # a fleet batch (800 hourly series: 3.3 s vs 0.6 s per day) for little gain on a one-day
        # horizon; the weekly cycle is left to the detector's trailing statistics.
        kw = dict(robust=robust, outer_iter=outer_iter) if robust else {}
        p = periods[0]
        res = stl(history, p, dtype=dtype, **kw)
        resid = res.resid
        trend = np.repeat(res.trend[:, -1:], horizon, axis=1)
        # phase of step h in the last cycle: index n - p + ((h - 1) mod p)
        seasonal = res.seasonal[:, n - p + ((h - 1) % p)]
        profile = res.seasonal[:, n - p:]
        if len(periods) > 1 and periods[1] % p == 0 and n >= 2 * periods[1]:
            level, profile, offset = _weekday_profile(history, res.seasonal, p, periods[1], horizon)
            trend = np.repeat(level[:, None], horizon, axis=1)
            seasonal = profile[:, (h - 1) % p] + offset
    scale = np.maximum(mad_scale(resid), min_scale)
    return Forecast(trend + seasonal, trend, seasonal, scale, profile, resid)


def _weekday_profile(history, seasonal, p, week, horizon):
    """Last day's level, the daily profile, and each step's weekday offset (see the module doc).

    The daily profile is the median over the history's days of the STL seasonal at each phase:
    the last cycle alone is bent by a level step at the start of a weekend (STL's low-pass
    filter is one-sided at the end of the series). Samples are grouped into days of ``p``
    samples counted back from the end of the history; step ``h`` (0-based) falls in weekday
    block ``(h mod week) // p`` of the week starting at the end of the history, and history day
    ``k`` (of ``days``) in block ``((k - days) * p mod week) // p``.
    """
    b, n = history.shape
    days = n // p
    start = n - days * p  # drop a partial leading day
    daily = _median(seasonal[:, start:].reshape(b, days, p), axis=1)
    deseason = history[:, start:].reshape(b, days, p) - daily[:, None, :]
    level = _median(deseason, axis=2)
    err = deseason[:, 1:] - level[:, :-1, None]  # day k against the level of day k-1
    block_of_day = ((np.arange(1, days) - days) * p % week) // p
    block_of_step = (np.arange(horizon) % week) // p
    offset = np.zeros((b, horizon))
    for blk in np.unique(block_of_step):
        same = block_of_day == blk
        if same.any():
            offset[:, block_of_step == blk] = _median(err[:, same].reshape(b, -1), axis=1)[:, None]
    return level[:, -1], daily, offset


def mad_scale(resid: np.ndarray) -> np.ndarray:
    """Robust σ of each row: 1.4826 x the median absolute deviation from the row's median."""
    return _MAD_TO_SD * _median(np.abs(resid - _median(resid, axis=1)[:, None]), axis=1)


def scale_floor(history: np.ndarray) -> np.ndarray:
    """The smallest scale a series gets: 0.1 % of its 1st-99th percentile spread (and 1e-9), so a
    nearly flat series does not turn rounding noise into huge z."""
    lo, hi = row_quantiles(history, (0.01, 0.99))
    return np.maximum(1e-3 * (hi - lo), 1e-9)


def nanmedian(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.nanmedian`` along ``axis`` from one sort (NaNs sort last); NaN where every value is NaN."""
    s = np.sort(x, axis=axis)
    n = np.expand_dims((~np.isnan(x)).sum(axis=axis), axis)
    lo = np.take_along_axis(s, np.maximum((n - 1) // 2, 0), axis=axis)
    hi = np.take_along_axis(s, n // 2, axis=axis)
    out = np.squeeze((lo + hi) / 2.0, axis=axis)
    return np.where(np.squeeze(n, axis=axis) > 0, out, np.nan)


def _median(x: np.ndarray, axis: int) -> np.ndarray:
    """``np.median(x, axis)`` for the short axes here (days, samples of a day): the same numbers
    (the middle value, or the mean of the two middle ones), from a sort, which on many short
    rows is ~4x faster than numpy's partition-based median."""
    n = x.shape[axis]
    s = np.sort(x, axis=axis)
    h = n // 2
    if n % 2:
        return np.take(s, h, axis=axis)
    return (np.take(s, h - 1, axis=axis) + np.take(s, h, axis=axis)) / 2.0
