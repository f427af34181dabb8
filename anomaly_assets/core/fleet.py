"""Fleet-level orchestration of the detection core: tidy frames in, tidy frames out.

The asset layer hands these functions the rows it read from the warehouse and writes back what
they return. Everything here is causal by construction: the output for day ``D`` is a function of
observations before the end of each point's own timestamp only (the expectation and the model
use data strictly before ``D``; the temporal smoothing uses earlier points of the same entity).

How a fleet is processed (no Python loop over entities or series): the long rows are turned into
integer codes once, laid out as arrays (series x time for the decomposition, entities x time x
metrics for the models), and every day is a slice of those arrays. Entities that share their
metrics and timeline go through one vectorized call (``forecast`` for the decomposition,
``detect.FleetDetector`` for the models and scores); an entity with a timeline of its own (gaps,
a late start, other metrics) is simply a smaller batch. Work is done ``chunk_entities`` entities
at a time, so memory is bounded by the chunk, not the fleet. The results are those of the
per-entity formulation (one ``EntityDetector`` per entity, ``tests/core/test_fleet_equivalence.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from anomaly_assets.core.detect import EntityDetector, FleetDetector, severity
from anomaly_assets.core.explain import explain, smoothed_deviation
from anomaly_assets.core.forecast import forecast, mad_scale, nanmedian, scale_floor, seasonal_periods

DAY = pd.Timedelta(days=1)
CODE_VERSION = "2026.12.1"  # bump when a change alters scores for the same data and parameters
_US = 1_000_000
_DAY_US = 86_400 * _US
_DAY_S = 86_400
_MONDAY = pd.Timestamp("1970-01-05", tz="UTC")
# Entities per batch: bounds the arrays of one pass (entities x time x metrics), not the result.
CHUNK_ENTITIES = 2_000


@dataclass(frozen=True)
class DecompositionParams:
    history_days: int = 14
    periods: tuple[int, ...] | None = None  # in samples; None = from the interval; the shortest supported is used
    robust: bool = True
    robust_passes: int = 2
    min_history_days: float = 7.0
    # Sub-daily series can refit their robust STL every this many days and, on the days between,
    # re-measure their level and take their residual scale from a plain (non-robust) STL of the
    # day's own history, ~2.5x cheaper than the robust fit. Off by default: with 7, SMD best-F1
    # 0.631 -> 0.641 (AUC-PR 0.506 -> 0.539) but ASD 0.473 -> 0.464. (A scale kept from the refit
    # day instead cost more: SMD 0.571, ASD 0.439.)
    refit_days: int = 1
    # Finer data is decomposed on block means of at most this many points a day (5-minute means of
    # 1-minute data) and the fit interpolated back: a daily STL over 14 days x 1440 points costs ~8x
    # more for the same SMD best-F1 (0.632 vs 0.631). None: every point.
    cycle_points: int | None = 288
    # Arithmetic of the STL sums: float32 runs them about twice as fast (half the bytes per GEMM
    # and per pass) for the same best-F1 on SMD, ASD and NAB; its rounding (~1e-7 of a series'
    # range) only shows where robustness weights leave a loess window nearly empty, whose fit is
    # that sensitive to the data's own last digits. "float64": statsmodels' arithmetic to ~1e-13.
    precision: str = "float32"

    def __post_init__(self):
        if self.precision not in ("float32", "float64"):
            raise ValueError(f"precision must be 'float32' or 'float64', got {self.precision!r}")


@dataclass(frozen=True)
class DetectorParams:
    training_days: int = 28
    min_training_days: float = 3.0
    smoothing_alphas: tuple[float, ...] = (0.1, 0.02)
    residual_weight: float = 0.5
    if_weight: float = 0.0
    tail_quantile: float = 0.98
    spike_quantile: float = 0.999
    warning_p: float = 1e-3
    critical_p: float = 1e-5
    warmup_points: int = 300

    def _kwargs(self) -> dict:
        return dict(if_weight=self.if_weight, smoothing_alphas=tuple(self.smoothing_alphas),
                    residual_weight=self.residual_weight, tail_quantile=self.tail_quantile,
                    spike_quantile=self.spike_quantile)

    def detector(self) -> EntityDetector:
        return EntityDetector(**self._kwargs())

    def fleet_detector(self) -> FleetDetector:
        return FleetDetector(**self._kwargs())

    def version(self, day: pd.Timestamp) -> str:
        blob = json.dumps({"params": asdict(self), "day": str(day.date()), "code": CODE_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def days_in(start: pd.Timestamp, end: pd.Timestamp) -> list[pd.Timestamp]:
    """UTC midnights in [start, end)."""
    return list(pd.date_range(start.floor("D"), end - pd.Timedelta(microseconds=1), freq="D", tz="UTC").floor("D").unique())


def sampling_interval(obs: pd.DataFrame) -> pd.Series:
    """Median spacing of each entity's distinct timestamps, in whole seconds (index entity_id)."""
    ts = obs[["entity_id", "ts"]].drop_duplicates().sort_values(["entity_id", "ts"])
    secs = pd.Series(_epoch_seconds(ts["ts"]), index=ts.index)
    d = secs.groupby(ts["entity_id"].to_numpy()).diff()
    out = d.groupby(ts["entity_id"].to_numpy()).median().round()
    return out.fillna(86_400).clip(lower=1).astype("int64")


def _epoch_seconds(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy() / 1e6


def _epoch_us(ts: pd.Series) -> np.ndarray:
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _factorize(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """int64 codes and the sorted distinct values (object array) of a column."""
    if isinstance(col.dtype, pd.CategoricalDtype) and len(col) and not col.hasnans:
        # The warehouse reads names as categoricals: recode the few categories instead of hashing
        # every row (what pd.factorize does; ~10x slower on millions of rows). Same result.
        codes = col.cat.codes.to_numpy()
        cats = np.asarray(col.cat.categories, dtype=object)
        used = np.flatnonzero(np.bincount(codes, minlength=len(cats)))
        names = cats[used]
        order = np.argsort(names, kind="stable")
        recode = np.zeros(len(cats), np.int64)
        recode[used[order]] = np.arange(len(used))
        return recode[codes], names[order]
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64, copy=False), np.asarray(uniques, dtype=object)


def _labels(names: np.ndarray, codes: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(codes, categories=pd.Index(names, dtype="str"))


def _chunks(n: int, size: int) -> Iterator[slice]:
    for a in range(0, n, max(1, size)):
        yield slice(a, min(n, a + size))


# --------------------------------------------------------------------------------------------
# decomposition
# --------------------------------------------------------------------------------------------
_DEC_COLS = ["entity_id", "metric", "ts", "value", "expected", "trend", "seasonal", "residual", "residual_z"]
_DEC_FLOATS = ["value", "expected", "trend", "seasonal", "residual", "residual_z"]


def decompose_days(obs: pd.DataFrame, days: list[pd.Timestamp], params: DecompositionParams,
                   chunk_entities: int | None = None,
                   use_past: Mapping[pd.Timestamp, bool] | None = None) -> pd.DataFrame:
    """Forecast-residual decomposition of every observation in ``days``.

    ``obs`` holds entity_id, metric, ts, value for at least
    ``[refit_day(days[0], refit_days) - history_days, days[-1] + 1)``.
    Returns entity_id, metric, ts, value, expected, trend, seasonal, residual, residual_z for the
    observations inside ``days``; rows whose series lacks history have NULL expected etc.

    Everything about day D, the sampling interval included, is learnt from ``[D - history, D)``:
    a backfill over many days and a nightly run of one day give the same answer. The interval of
    an entity is the median spacing of its distinct timestamps in that window; entities on a
    regular grid (every timestamp a whole number of steps from midnight, the step dividing a
    day) are decomposed on one array per chunk of entities, sliced per day; any other entity-day
    goes through :func:`_decompose_group` on its own window rows.

    ``use_past[D]``: whether any entity of the fleet has rows in ``[D - history, D)``, when
    ``obs`` is only a part of the fleet (a chunk of entities); by default it is read off ``obs``.
    """
    if obs.empty or not days:
        return pd.DataFrame(columns=_DEC_COLS)
    e, entities = _factorize(obs["entity_id"])
    m, metrics = _factorize(obs["metric"])
    ts = _epoch_us(obs["ts"])
    value = obs["value"].to_numpy(float)
    plan = _interval_plan(e, ts, len(entities), days, params, use_past)
    parts = []
    # regular entity-days, a chunk of entities at a time
    regular = np.flatnonzero(plan.regular_step > 0)
    by_entity = np.argsort(e, kind="stable")
    bounds = np.searchsorted(e[by_entity], np.arange(len(entities) + 1))

    def rows_of(ents, lo=None, hi=None):
        """Positions of the rows of entities ``ents`` (those with ts in [lo, hi) when given)."""
        rows = np.concatenate([by_entity[bounds[i]:bounds[i + 1]] for i in ents])
        return rows if lo is None else rows[(ts[rows] >= lo) & (ts[rows] < hi)]

    for sl in _chunks(len(regular), chunk_entities or CHUNK_ENTITIES):
        ents = regular[sl]
        for step in np.unique(plan.regular_step[ents]):
            group = ents[plan.regular_step[ents] == step]
            rows = rows_of(group)
            parts.append(_decompose_regular(e[rows], m[rows], ts[rows], value[rows], len(metrics), int(step), days,
                                            plan.fast[group], group, params))
    # everything else: the per-day, per-interval groups of the general path
    for k, day in enumerate(days):
        slow = np.flatnonzero(plan.slow[:, k])
        if len(slow) == 0:
            continue
        rows = rows_of(slow, (day - pd.Timedelta(days=params.history_days)).value // 1000, (day + DAY).value // 1000)
        window = obs.iloc[np.sort(rows)][["entity_id", "metric", "ts", "value"]]
        past = window[window["ts"] < day]
        # the window the interval is learnt from is decided for the whole frame (plan.use_past)
        interval = sampling_interval(past if plan.use_past[k] else window)
        for step, names in interval.groupby(interval).groups.items():
            frames = _decompose_group(window[window["entity_id"].isin(names)], int(step), day, params)
            for f in frames:
                parts.append(_encode_frame(f, entities, metrics))
    # an entity that starts on a day while the fleet has history: its rows kept, nothing to fit
    for k, day in enumerate(days):
        new = np.flatnonzero(plan.newcomer[:, k])
        if len(new) == 0:
            continue
        rows = rows_of(new, day.value // 1000, (day + DAY).value // 1000)
        parts.append({"e": e[rows], "m": m[rows], "ts": ts[rows], "value": value[rows],
                      **{c: np.full(len(rows), np.nan) for c in _DEC_FLOATS[1:]}})
    if not parts:
        return pd.DataFrame(columns=_DEC_COLS)
    cols = {c: np.concatenate([p[c] for p in parts]) for c in parts[0]}
    out = pd.DataFrame({
        "entity_id": _labels(entities, cols["e"]),
        "metric": _labels(metrics, cols["m"]),
        "ts": pd.to_datetime(cols["ts"], unit="us", utc=True),
        **{c: cols[c] for c in _DEC_FLOATS},
    })
    return out


@dataclass
class _IntervalPlan:
    regular_step: np.ndarray  # (n_entities,) the entity's grid step in seconds, 0 when irregular
    fast: np.ndarray  # (n_entities, n_days) the day goes through the regular path
    slow: np.ndarray  # (n_entities, n_days) the day goes through the general path
    newcomer: np.ndarray  # (n_entities, n_days) rows that day but none before it, while others have history
    use_past: np.ndarray  # (n_days,) the interval is learnt from the past (else from the whole window)


def _interval_plan(e, ts, n_entities, days, params, fleet_past=None) -> _IntervalPlan:
    """Which entity-days can use the regular path, with the same interval the general path infers.

    The general path's interval is ``sampling_interval`` of the window before D (of the whole
    window when no entity has rows before D, and then an entity without past rows is not
    decomposed that day). For an entity whose timestamps are all on one grid of step ``s``
    (whole seconds, dividing a day) every spacing is a multiple of ``s``, so the median is ``s``
    exactly when more than half the spacings in the window are ``s``; that is counted here.
    """
    n_days = len(days)
    fast = np.zeros((n_entities, n_days), bool)
    present = np.zeros((n_entities, n_days), bool)  # has rows the general path would decompose
    has_today = np.zeros((n_entities, n_days), bool)
    whole = (ts % _US) == 0
    t_s = ts // _US
    # distinct (entity, second) pairs, sorted
    t0 = int(t_s.min()) if len(t_s) else 0
    span = int(t_s.max()) - t0 + 1 if len(t_s) else 1
    key = e * span + (t_s - t0)
    if not (len(key) > 1 and np.all(key[1:] >= key[:-1])):
        key = np.sort(key)  # not np.unique: numpy 2.4's hash-based unique is ~70x slower here
    pairs = key[np.concatenate([[True], key[1:] != key[:-1]])] if len(key) else key
    pe, pt = pairs // span, pairs % span + t0
    d = np.diff(pt)
    same = pe[1:] == pe[:-1]
    # the entity's step: its smallest spacing; regular when every timestamp is on that grid
    step = np.zeros(n_entities, np.int64)
    if same.any():
        sm = pd.Series(d[same]).groupby(pe[1:][same]).min()
        step[sm.index.to_numpy()] = sm.to_numpy()
    aligned = pd.Series((step[pe] > 0) & (pt % np.maximum(step[pe], 1) == 0)).groupby(pe).all()
    ok_ent = np.zeros(n_entities, bool)
    ok_ent[aligned.index.to_numpy()] = aligned.to_numpy()
    ok_ent &= (step > 0) & (_DAY_S % np.maximum(step, 1) == 0)
    all_whole = pd.Series(whole).groupby(e).all()
    ok_ent[all_whole.index.to_numpy()[~all_whole.to_numpy()]] = False
    regular_step = np.where(ok_ent, step, 0)
    # spacings equal to the entity's step, counted along the pairs
    is_step = np.concatenate([[0], (same & (d == step[pe[1:]])).astype(np.int64)])
    cum_step = np.cumsum(is_step)
    use_past = np.zeros(n_days, bool)
    hist_s = params.history_days * _DAY_S
    ents = np.arange(n_entities)
    for k, day in enumerate(days):
        d_s = day.value // 1_000_000_000
        lo = np.searchsorted(pairs, ents * span + (d_s - hist_s - t0))
        mid = np.searchsorted(pairs, ents * span + (d_s - t0))
        hi = np.searchsorted(pairs, ents * span + (d_s + _DAY_S - t0))
        # keys below t0 or beyond the span wrap into the neighbouring entity: clamp
        lo = np.clip(lo, 0, None)
        ent_lo = np.searchsorted(pe, ents)
        ent_hi = np.searchsorted(pe, ents, side="right")
        lo, mid, hi = (np.clip(x, ent_lo, ent_hi) for x in (lo, mid, hi))
        use_past[k] = bool((mid > lo).any()) if fleet_past is None else bool(fleet_past[day])
        end = mid if use_past[k] else hi
        n = end - lo  # distinct timestamps the interval is learnt from
        has_today[:, k] = hi > mid
        present[:, k] = (n > 0) & has_today[:, k]  # decomposed that day only with rows learnt from, and rows that day
        # spacings inside [lo, end): pairs lo+1 .. end-1
        n_sp = np.maximum(n - 1, 0)
        n_step = np.where(n >= 2, cum_step[np.maximum(end - 1, 0)] - cum_step[np.minimum(lo, len(cum_step) - 1)], 0)
        median_is_step = (n >= 2) & (n_step >= n_sp // 2 + 1)
        fast[:, k] = ok_ent & median_is_step
    slow = present & ~fast
    fast &= present
    # no interval to learn and nothing to fit: the day's rows are kept as cold start (NULL expected)
    newcomer = ~present & has_today & use_past[None, :]
    return _IntervalPlan(regular_step=regular_step, fast=fast, slow=slow, newcomer=newcomer, use_past=use_past)


def refit_day(day: pd.Timestamp, refit_days: int) -> pd.Timestamp:
    """The day whose decomposition ``day`` reuses: refit days fall every ``refit_days`` days counted
    from Monday 1970-01-05 (with 7, every Monday), so a backfill and a nightly run agree."""
    return day - pd.Timedelta(days=(day - _MONDAY).days % max(1, refit_days))


def _decompose_regular(e, m, ts, value, n_metrics, step, days, fast, ents, params) -> dict:
    """Regular path: the entities ``ents`` (all of grid step ``step``) on one array, day by day.

    The same arithmetic as :func:`_decompose_group` restricted to on-grid timestamps: series x
    grid cells from ``refit_day(days[0]) - history`` to ``days[-1] + 1``; day D's history is the
    slice ``[D - history, D)`` and its rows the observed cells of D.

    Sub-daily series refit their decomposition every ``params.refit_days`` days (see
    :class:`DecompositionParams`): on a refit day A the forecast is made for the ``refit_days``
    days from A; a later day D of that period takes its seasonal part (profile and weekday offset)
    from that forecast and its level from the last day in ``[A, D)`` with observations (the
    median of ``value - profile``) and its residual scale from a plain (non-robust) fit of
    ``[D - history, D)``. Series that could not be fitted on A (too little history then) are
    fitted on D itself, as with ``refit_days = 1``.
    """
    step_us = step * _US
    per_day = _DAY_S // step
    refit = max(1, params.refit_days) if per_day > 1 else 1  # daily series cost nothing to refit
    anchors = [refit_day(d, refit) for d in days]
    origin = (min(anchors) - pd.Timedelta(days=params.history_days)).value // 1000
    end = (days[-1] + DAY).value // 1000
    keep = (ts >= origin) & (ts < end)
    e, m, ts, value = e[keep], m[keep], ts[keep], value[keep]
    n_grid = (end - origin) // step_us
    # series codes (entity * n_metrics + metric, sorted) and each row's series, without sorting the rows
    key = e * n_metrics + m
    has_rows = np.zeros(int(key.max()) + 1 if len(key) else 0, bool)
    has_rows[key] = True
    series = np.flatnonzero(has_rows)
    sid = (np.cumsum(has_rows) - 1)[key]
    dense = np.full((len(series), n_grid), np.nan)
    dense[sid, (ts - origin) // step_us] = value  # one timestamp per cell on the grid
    observed = ~np.isnan(dense)
    # observed cells before each midnight of the grid (histories start and end at midnights)
    cum = np.zeros((len(series), n_grid // per_day + 1), np.int32)
    np.cumsum(observed.reshape(len(series), -1, per_day).sum(axis=2, dtype=np.int32), axis=1, out=cum[:, 1:])
    s_ent = series // n_metrics
    row_of_ent = np.searchsorted(ents, s_ent)
    hist_n = params.history_days * per_day
    min_hist = max(int(params.min_history_days * per_day), 8)

    def column(day):
        return ((day.value // 1000) - origin) // step_us

    # minute data: the decomposition is fitted on block means of ``block`` cells (at most cycle_points a day)
    block = 1
    if params.cycle_points and not params.periods and per_day > params.cycle_points:
        block = next(d for d in range(2, per_day + 1) if per_day % d == 0 and per_day // d <= params.cycle_points)

    def fit(rows, g0, horizon, robust=params.robust):
        """Forecast of ``horizon`` cells from column g0 for series ``rows``, from [g0 - history, g0)."""
        off = g0 - hist_n
        win = observed[rows, off:g0]
        start = np.where(win.any(axis=1), win.argmax(axis=1), hist_n)  # first observed cell
        ok = (cum[rows, g0 // per_day] - cum[rows, off // per_day]) >= min_hist
        b = len(rows)
        f = {"expected": np.full((b, horizon), np.nan), "trend": np.full((b, horizon), np.nan),
             "seasonal": np.full((b, horizon), np.nan), "scale": np.full(b, np.nan),
             "profile": np.full((b, per_day), np.nan), "daily": np.zeros(b, bool)}
        for s in np.unique(start[ok]):
            idx = np.flatnonzero(ok & (start == s))
            hist = _interpolate(dense[rows[idx], off + s:g0])
            floor = scale_floor(hist)
            if block == 1:
                periods = seasonal_periods(step, hist_n - s, params.periods)
                fc = forecast(hist, horizon, periods, robust=robust, outer_iter=params.robust_passes, dtype=params.precision,
                              min_scale=floor)
                f["expected"][idx], f["trend"][idx], f["seasonal"][idx], f["scale"][idx] = (
                    fc.expected, fc.trend, fc.seasonal, fc.scale)
                if periods and periods[0] == per_day:  # a daily cycle: the level can be re-measured each day
                    f["profile"][idx], f["daily"][idx] = fc.profile, True
                continue
            fine = hist[:, hist.shape[1] % block:]  # whole blocks, ending at g0 (a midnight)
            coarse = fine.reshape(len(idx), -1, block).mean(axis=2)
            periods = seasonal_periods(step * block, coarse.shape[1])
            fc = forecast(coarse, -(-horizon // block), periods, robust=robust, outer_iter=params.robust_passes,
                          dtype=params.precision)
            fitted = coarse - fc.resid
            resid = fine - _upsample(fitted, block)
            expected = _upsample(np.concatenate([fitted[:, -1:], fc.expected], axis=1), block)[:, block:block + horizon]
            trend = np.repeat(fc.trend, block, axis=1)[:, :horizon]
            f["expected"][idx], f["trend"][idx], f["seasonal"][idx] = expected, trend, expected - trend
            f["scale"][idx] = np.maximum(mad_scale(resid), floor)
            if periods and periods[0] == per_day // block:
                f["profile"][idx], f["daily"][idx] = np.repeat(fc.profile, block, axis=1), True
        return f

    fits = {}  # refit day -> (position of each series in the fit, the fit)
    out = {k: [] for k in ("e", "m", "ts", *_DEC_FLOATS)}
    for k, day in enumerate(days):
        sel = np.flatnonzero(fast[row_of_ent, k])
        if len(sel) == 0:
            continue
        g0 = column(day)
        today = observed[sel, g0:g0 + per_day]
        sel = sel[today.any(axis=1)]
        if len(sel) == 0:
            continue
        expected = np.full((len(sel), per_day), np.nan)
        trend, seasonal, scale = expected.copy(), expected.copy(), np.full(len(sel), np.nan)
        own = np.ones(len(sel), bool)  # fitted on the day itself
        if refit > 1:
            a = anchors[k]
            if a not in fits:  # every series of this refit period, fitted once
                group = [i for i, d in enumerate(anchors) if d == a]
                rows = np.flatnonzero(fast[row_of_ent][:, group].any(axis=1))
                pos = np.full(len(series), -1)
                pos[rows] = np.arange(len(rows))
                fits[a] = (pos, fit(rows, column(a), refit * per_day))
            pos, f = fits[a]
            p = pos[sel]
            use = f["daily"][p] if day != a else ~np.isnan(f["scale"][p])
            own = ~use
            p, j = p[use], (day - a).days
            cells = slice(j * per_day, (j + 1) * per_day)
            seasonal[use], scale[use] = f["seasonal"][p, cells], f["scale"][p]
            if j == 0:
                trend[use] = f["trend"][p, cells]
            else:
                # the scale of the day's own history (a stale scale cost the most detection)
                fresh = fit(sel[use], g0, per_day, robust=False)["scale"]
                scale[use] = np.where(np.isnan(fresh), scale[use], fresh)
                # the level of the last day in [A, D) with observations, else the refit day's level
                ga = column(a)
                dev = dense[sel[use], ga:g0].reshape(len(p), j, per_day) - f["profile"][p][:, None, :]
                lv = nanmedian(dev, axis=2)
                has = ~np.isnan(lv)
                last = np.where(has.any(axis=1), j - 1 - has[:, ::-1].argmax(axis=1), -1)
                level = np.where(last >= 0, lv[np.arange(len(p)), np.maximum(last, 0)], f["trend"][p, 0])
                trend[use] = level[:, None]
            expected[use] = trend[use] + seasonal[use]
        if own.any():
            f = fit(sel[own], g0, per_day)
            expected[own], trend[own], seasonal[own], scale[own] = f["expected"], f["trend"], f["seasonal"], f["scale"]
        r, c = np.nonzero(observed[sel, g0:g0 + per_day])
        v = dense[sel[r], g0 + c]
        ex = expected[r, c]
        out["e"].append(s_ent[sel[r]])
        out["m"].append(series[sel[r]] % n_metrics)
        out["ts"].append(origin + (g0 + c) * step_us)
        out["value"].append(v)
        out["expected"].append(ex)
        out["trend"].append(trend[r, c])
        out["seasonal"].append(seasonal[r, c])
        out["residual"].append(v - ex)
        out["residual_z"].append((v - ex) / scale[r])
    if not out["e"]:
        return {k: np.zeros(0, np.int64 if k in ("e", "m", "ts") else float) for k in out}
    return {k: np.concatenate(v) for k, v in out.items()}


def _upsample(blocks: np.ndarray, size: int) -> np.ndarray:
    """Block means (n, m) back to (n, m * size) points: linear between block centres, held at the ends."""
    m = blocks.shape[1]
    x = (np.arange(m * size) - (size - 1) / 2) / size  # position in block-centre units
    lo = np.clip(np.floor(x).astype(np.int64), 0, m - 1)
    hi = np.minimum(lo + 1, m - 1)
    w = np.clip(x - lo, 0.0, 1.0)
    return blocks[:, lo] * (1 - w) + blocks[:, hi] * w


def _interpolate(hist: np.ndarray) -> np.ndarray:
    """Linear interpolation of gaps along time, ends held (what pandas' interpolate does)."""
    gaps = np.isnan(hist).any(axis=1)
    if gaps.any():
        hist = hist.copy()
        hist[gaps] = pd.DataFrame(hist[gaps].T).interpolate(limit_direction="both").to_numpy().T
    return hist


def _encode_frame(f: pd.DataFrame, entities: np.ndarray, metrics: np.ndarray) -> dict:
    return {
        "e": pd.Index(entities).get_indexer(f["entity_id"]).astype(np.int64),
        "m": pd.Index(metrics).get_indexer(f["metric"]).astype(np.int64),
        "ts": _epoch_us(f["ts"]),
        **{c: f[c].to_numpy(float) for c in _DEC_FLOATS},
    }


def _decompose_group(obs, step, day, params):
    """General path: one day, the entities of one sampling interval, from their window rows."""
    origin = day - pd.Timedelta(days=params.history_days)
    secs = _epoch_seconds(obs["ts"]) - origin.timestamp()
    g = np.rint(secs / step).astype(np.int64)
    keep = g >= 0
    obs, g = obs[keep], g[keep]
    if len(obs) == 0:
        return []
    series = pd.MultiIndex.from_arrays([obs["entity_id"].to_numpy(), obs["metric"].to_numpy()]).unique()
    code = series.get_indexer(pd.MultiIndex.from_arrays([obs["entity_id"].to_numpy(), obs["metric"].to_numpy()]))
    n_grid = int(g.max()) + 1
    dense = np.full((len(series), n_grid), np.nan)
    dense[code, g] = obs["value"].to_numpy(float)  # later duplicates on one grid cell win
    # The grid only aligns series for STL; rows keep their own timestamps (they may be off-grid).
    stamp = np.zeros((len(series), n_grid), dtype=np.int64)
    stamp[code, g] = obs["ts"].astype("datetime64[us, UTC]").astype("int64").to_numpy()
    per_day = 86_400 / step
    hist_n = int(np.ceil(params.history_days * per_day))
    min_hist = max(int(params.min_history_days * per_day), 8)
    observed = ~np.isnan(dense)
    first_obs = np.where(observed.any(axis=1), observed.argmax(axis=1), n_grid)
    frames = []
    g0 = int(np.ceil((day - origin).total_seconds() / step - 1e-9))
    g1 = n_grid  # ``obs`` ends with day D, so the grid does too
    if g1 <= g0:
        return frames
    today = observed[:, g0:g1] & (stamp[:, g0:g1] >= day.value // 1000)
    rows = np.flatnonzero(today.any(axis=1))
    if len(rows) == 0:
        return frames
    start = np.maximum(first_obs[rows], g0 - hist_n)
    expected = np.full((len(rows), g1 - g0), np.nan)
    trend, seasonal, scale = expected.copy(), expected.copy(), np.full(len(rows), np.nan)
    # observed points in [start, g0) per series, from a running count (no per-series loop)
    counted = np.concatenate([np.zeros((len(rows), 1), np.int64), observed[rows, :g0].cumsum(axis=1)], axis=1)
    n_obs_hist = counted[:, g0] - counted[np.arange(len(rows)), np.minimum(start, g0)]
    ok = n_obs_hist >= min_hist
    for s in np.unique(start[ok]):
        sel = np.flatnonzero(ok & (start == s))
        hist = _interpolate(dense[rows[sel], s:g0])
        periods = seasonal_periods(step, g0 - s, params.periods)
        fc = forecast(hist, g1 - g0, periods, robust=params.robust, outer_iter=params.robust_passes, dtype=params.precision,
                      min_scale=scale_floor(hist))
        expected[sel], trend[sel], seasonal[sel], scale[sel] = fc.expected, fc.trend, fc.seasonal, fc.scale
    r_idx, c_idx = np.nonzero(today[rows])
    value = dense[rows[r_idx], g0 + c_idx]
    exp_v = expected[r_idx, c_idx]
    ts_us = stamp[rows[r_idx], g0 + c_idx]
    frames.append(pd.DataFrame({
        "entity_id": series.get_level_values(0)[rows[r_idx]],
        "metric": series.get_level_values(1)[rows[r_idx]],
        "ts": pd.to_datetime(ts_us, unit="us", utc=True),
        "value": value,
        "expected": exp_v,
        "trend": trend[r_idx, c_idx],
        "seasonal": seasonal[r_idx, c_idx],
        "residual": value - exp_v,
        "residual_z": (value - exp_v) / scale[r_idx],
    }))
    return frames


# --------------------------------------------------------------------------------------------
# entities x time x metrics
# --------------------------------------------------------------------------------------------
class _Timelines:
    """Long feature rows laid out per entity: each entity's distinct timestamps in order (its
    timeline) and, per group of entities with the same metrics, arrays (entities, time, metrics).

    A window ``[a, b)`` of an entity is a contiguous range of its timeline: exactly the rows the
    per-entity formulation pivots (``_wide``) for that window.
    """

    def __init__(self, frame: pd.DataFrame, columns: tuple[str, ...], entities: np.ndarray | None = None):
        e, self.entities = _factorize(frame["entity_id"])
        m, self.metrics = _factorize(frame["metric"])
        ts = _epoch_us(frame["ts"])
        t_rank, self.utimes = pd.factorize(ts, sort=True)
        self.utimes = np.asarray(self.utimes, np.int64)
        nt = max(len(self.utimes), 1)
        n_ent = len(self.entities)
        key = e * nt + t_rank
        if n_ent * nt <= max(4 * len(key), 1 << 20):
            # (entity, time) cells of one table: the distinct pairs in order without sorting the rows
            occupied = np.zeros(n_ent * nt, bool)
            occupied[key] = True
            self.pairs = np.flatnonzero(occupied)
            rank = np.cumsum(occupied, dtype=np.int32 if len(self.pairs) < 2**31 else np.int64)
            pair_of_row = rank[key] - 1
        elif len(key) > 1 and not np.all(key[1:] >= key[:-1]):
            order = np.argsort(key, kind="stable")
            ks = key[order]
            first = np.concatenate([[True], ks[1:] != ks[:-1]])
            self.pairs = ks[first]
            pair_of_row = np.empty(len(key), np.int64)
            pair_of_row[order] = np.cumsum(first) - 1
        else:
            first = np.concatenate([[True], key[1:] != key[:-1]])
            self.pairs = key[first]
            pair_of_row = np.cumsum(first) - 1
        self.nt = nt
        pe = self.pairs // nt
        self.start = np.searchsorted(pe, np.arange(n_ent))
        self.count = np.searchsorted(pe, np.arange(n_ent), side="right") - self.start
        self.pair_ts = self.utimes[self.pairs % nt] if len(self.pairs) else np.zeros(0, np.int64)
        # metric sets: entities with the same set share a group and its arrays
        nm = len(self.metrics)
        has = np.zeros((n_ent, nm), bool)
        has[e, m] = True
        sets, self.group_of = np.unique(has, axis=0, return_inverse=True) if n_ent else (np.zeros((0, nm), bool), np.zeros(0, np.int64))
        self.group_of = np.asarray(self.group_of).ravel()
        self.slot = np.zeros(n_ent, np.int64)
        self.groups = []
        t_local = pair_of_row - self.start[e]
        for g, s in enumerate(sets):
            ents = np.flatnonzero(self.group_of == g)
            self.slot[ents] = np.arange(len(ents))
            cols = np.flatnonzero(s)
            T = int(self.count[ents].max())
            if len(sets) == 1:  # the usual fleet: every entity has every metric (of the frame); no row selection
                rows, slot_of_row, col_of_row = slice(None), e, m
            else:
                rows = np.flatnonzero(self.group_of[e] == g)
                col_of = np.full(nm, -1)
                col_of[cols] = np.arange(len(cols))
                slot_of_row, col_of_row = self.slot[e[rows]], col_of[m[rows]]
            flat = slot_of_row * T  # one index for every column: (slot * T + t) * metrics + column
            flat += t_local[rows]
            flat *= len(cols)
            flat += col_of_row
            arrays = {}
            for c in columns:
                a = np.full(len(ents) * T * len(cols), np.nan)
                a[flat] = frame[c].to_numpy(float)[rows]
                arrays[c] = a.reshape(len(ents), T, len(cols))
            self.groups.append(_Group(ents, cols, arrays))

    def window(self, a_us: int, b_us: int) -> tuple[np.ndarray, np.ndarray]:
        """Per entity, the local timeline range [lo, hi) of timestamps in [a, b)."""
        ra, rb = np.searchsorted(self.utimes, [a_us, b_us])
        ents = np.arange(len(self.entities))
        lo = np.searchsorted(self.pairs, ents * self.nt + ra) - self.start
        hi = np.searchsorted(self.pairs, ents * self.nt + rb) - self.start
        return np.clip(lo, 0, self.count), np.clip(hi, 0, self.count)


@dataclass
class _Group:
    entities: np.ndarray  # entity codes
    cols: np.ndarray  # metric codes (sorted) = the array's last axis
    arrays: dict


def _batches(keys: np.ndarray) -> Iterator[np.ndarray]:
    """Indices of the rows of ``keys`` (n, k) that are equal, one array per distinct row."""
    if len(keys) == 0:
        return
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = np.asarray(inv).ravel()
    order = np.argsort(inv, kind="stable")
    cuts = np.flatnonzero(np.diff(inv[order])) + 1
    yield from np.split(order, cuts)


def _take(a: np.ndarray, rows: np.ndarray, lo: np.ndarray, length: int) -> np.ndarray:
    """a[rows[i], lo[i]:lo[i] + length] for every i: a view when the rows share one start."""
    if len(rows) and (lo == lo[0]).all():
        r = rows if len(rows) != a.shape[0] or (rows != np.arange(len(rows))).any() else slice(None)
        return a[r, lo[0]:lo[0] + length]
    return a[rows[:, None], lo[:, None] + np.arange(length)[None, :]]


# --------------------------------------------------------------------------------------------
# models and scores
# --------------------------------------------------------------------------------------------
@dataclass
class ModelGroup:
    """Entities that share metrics and a history length, fitted together."""

    entities: list[str]
    metrics: list[str]
    detector: FleetDetector | EntityDetector  # an EntityDetector holds one entity (IsolationForest)


class _Detectors(Mapping):
    """entity -> (metric names, EntityDetector), built on access from the fitted groups."""

    def __init__(self, groups: list[ModelGroup]):
        self._where = {e: (g, i) for g, grp in enumerate(groups) for i, e in enumerate(grp.entities)}
        self._groups = groups

    def __getitem__(self, entity):
        g, i = self._where[entity]
        grp = self._groups[g]
        det = grp.detector.entity(i) if isinstance(grp.detector, FleetDetector) else grp.detector
        return list(grp.metrics), det

    def __iter__(self):
        return iter(self._where)

    def __len__(self):
        return len(self._where)


@dataclass
class FleetModel:
    """Fitted detectors for one day: groups of entities fitted together, and who is in cold start."""

    day: pd.Timestamp
    version: str
    params: DetectorParams
    train_start: pd.Timestamp
    groups: list[ModelGroup] = field(default_factory=list)
    cold_start: list[str] = field(default_factory=list)
    training_rows: int = 0

    @property
    def detectors(self) -> _Detectors:
        """entity -> (metric names, EntityDetector), as the per-entity formulation keeps them."""
        return _Detectors(self.groups)

    @property
    def entities(self) -> int:
        return sum(len(g.entities) for g in self.groups)

    def absorb(self, other: "FleetModel") -> "FleetModel":
        """This day's model with the entities of ``other`` (the same day, fitted on other entities) added."""
        if (other.day, other.version) != (self.day, self.version):
            raise ValueError(f"cannot merge the model of {other.day} ({other.version}) into {self.day} ({self.version})")
        self.groups += other.groups
        self.cold_start += other.cold_start
        self.training_rows += other.training_rows
        return self


def _wide(features: pd.DataFrame, column: str) -> pd.DataFrame:
    """One entity's rows as a (ts x metric) frame (the per-entity layout the models are defined on)."""
    # (entity, metric, ts) is unique in features.decomposition, so a plain unstack is exact.
    return features.set_index(["ts", "metric"])[column].unstack("metric").sort_index()


def fit_fleet(features: pd.DataFrame, day: pd.Timestamp, params: DetectorParams,
              entities: list[str] | None = None) -> FleetModel:
    """Fit one detector per entity on the decomposition rows of ``[day - training_days, day)``."""
    return fit_days(features, [day], params, {day: entities} if entities is not None else None)[day]


def fit_days(features: pd.DataFrame, days: list[pd.Timestamp], params: DetectorParams,
             entities: Mapping[pd.Timestamp, list[str]] | None = None, *, scored_on_day: bool = False,
             chunk_entities: int | None = None) -> dict[pd.Timestamp, FleetModel]:
    """:func:`fit_fleet` for several days from one frame (laid out once, sliced per day).

    ``features`` holds entity_id, metric, ts, value, residual_z covering every day's training
    window; ``entities[day]`` (optional) are the entities that day scores, or with
    ``scored_on_day`` those with rows on the day itself in ``features``: those without training
    rows are listed as cold start.
    """
    models = {d: FleetModel(d, params.version(d), params, d - pd.Timedelta(days=params.training_days)) for d in days}
    cold = {d: [] for d in days}
    seen = {d: set() for d in days}
    scored = {d: set((entities or {}).get(d) or []) for d in days}
    if len(features) and days:
        ts = features["ts"]
        features = features[(ts >= min(m.train_start for m in models.values())) & (ts < max(days) + DAY)]
    for part in _entity_chunks(features, chunk_entities or CHUNK_ENTITIES):
        tl = _Timelines(part, ("value", "residual_z"))
        flags = [(~np.isnan(grp.arrays["value"]), (~np.isnan(grp.arrays["residual_z"])).any(axis=2)) for grp in tl.groups]
        for day in days:
            model = models[day]
            lo, hi = tl.window(model.train_start.value // 1000, day.value // 1000)
            if scored_on_day:
                a, b = tl.window(day.value // 1000, (day + DAY).value // 1000)
                scored[day].update(tl.entities[b > a].tolist())
            n = hi - lo
            in_window = np.flatnonzero(n > 0)
            seen[day].update(tl.entities[in_window].tolist())
            for grp_id, grp in enumerate(tl.groups):
                ents = grp.entities[n[grp.entities] > 0]
                if len(ents) == 0:
                    continue
                slots = tl.slot[ents]
                val_ok, any_rz_all = flags[grp_id]
                # per entity: metrics present in the window, and the decomposed timestamps
                keys = np.column_stack([lo[ents], n[ents]])
                for b in _batches(keys):
                    e_b, s_b = ents[b], slots[b]
                    l0, T = lo[e_b], int(n[e_b[0]])
                    any_rz = _take(any_rz_all, s_b, l0, T)
                    n_dec = any_rz.sum(axis=1)
                    first = any_rz.argmax(axis=1)
                    last = T - 1 - any_rz[:, ::-1].argmax(axis=1)
                    base = tl.start[e_b] + l0
                    span_days = (tl.pair_ts[base + last] - tl.pair_ts[base + first]) / _DAY_US
                    fit_ok = (n_dec > 0) & ~(span_days < params.min_training_days) & (n_dec >= 16)
                    for i in np.flatnonzero(~fit_ok):
                        cold[day].append(tl.entities[e_b[i]])
                    if not fit_ok.any():
                        continue
                    e_f, s_f, l_f = e_b[fit_ok], s_b[fit_ok], l0[fit_ok]
                    present = _take(val_ok, s_f, l_f, T).any(axis=1)  # (n, metrics)
                    for pb in _batches(present):
                        cols = np.flatnonzero(present[pb[0]])
                        v = _take(grp.arrays["value"], s_f[pb], l_f[pb], T)[:, :, cols]
                        r = _take(grp.arrays["residual_z"], s_f[pb], l_f[pb], T)[:, :, cols]
                        names = tl.entities[e_f[pb]].tolist()
                        metrics = tl.metrics[grp.cols[cols]].tolist()
                        if params.if_weight > 0:
                            for i, name in enumerate(names):
                                model.groups.append(ModelGroup([name], metrics, params.detector().fit(v[i], r[i])))
                        else:
                            model.groups.append(ModelGroup(names, metrics, params.fleet_detector().fit(v, r)))
                        model.training_rows += T * len(names)
    for day, model in models.items():
        # entities in the order the per-entity formulation lists them: sorted by name
        model.groups = _sorted_groups(model.groups)
        model.cold_start = sorted(cold[day]) + sorted(scored[day] - seen[day])
    return models


def _sorted_groups(groups: list[ModelGroup]) -> list[ModelGroup]:
    return sorted(groups, key=lambda g: g.entities[0] if g.entities else "")


def _entity_chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    """The frame in chunks of at most ``size`` entities (all rows of an entity in one chunk)."""
    if len(frame) == 0:
        return
    codes, names = _factorize(frame["entity_id"])
    if len(names) <= size:
        yield frame
        return
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(0, len(names) + size, size))
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            yield frame.iloc[np.sort(order[a:b])]


_S_COLS = ["entity_id", "ts", "anomaly_score", "is_anomaly", "severity", "why", "model_version"]
_E_COLS = ["entity_id", "ts", "metric", "rank", "contribution", "family", "expected", "actual"]


def score_day(features: pd.DataFrame, model: FleetModel, families: dict[str, str] | None = None,
              units: dict[str, str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score the points of ``model.day``; earlier rows in ``features`` only prime the smoothing.

    Returns (anomaly_scores, explanations) frames in the warehouse's column order.
    """
    s, e = score_days(features, {model.day: model}, families, units, warmup=None)
    # the per-entity order: by entity, then time (and rank)
    return (s.sort_values(["entity_id", "ts"], kind="stable", ignore_index=True),
            e.sort_values(["entity_id", "ts", "rank"], kind="stable", ignore_index=True))


def score_days(features: pd.DataFrame, models: Mapping[pd.Timestamp, FleetModel],
               families: dict[str, str] | None = None, units: dict[str, str] | None = None,
               warmup: pd.Timedelta | None = pd.Timedelta(days=2),
               chunk_entities: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`score_day` for every day of ``models`` from one frame.

    Day D is scored from the rows of ``[D - warmup, D + 1)`` (``warmup=None``: every row before
    D), as :func:`score_day` would be on that slice. ``features`` holds entity_id, metric, ts,
    value, residual, residual_z.
    """
    scores, explanations = [], []
    where = {day: {name: (g, i) for g, grp in enumerate(model.groups) for i, name in enumerate(grp.entities)}
             for day, model in models.items()}
    for part in _entity_chunks(features, chunk_entities or CHUNK_ENTITIES):
        tl = _Timelines(part, ("value", "residual_z", "residual"))
        for day, model in sorted(models.items()):
            s, e = _score_one(tl, day, model, where[day], families, units, warmup)
            scores += s
            explanations += e
    s = pd.concat(scores, ignore_index=True)[_S_COLS] if scores else pd.DataFrame(columns=_S_COLS)
    e = pd.concat(explanations, ignore_index=True)[_E_COLS] if explanations else pd.DataFrame(columns=_E_COLS)
    return s, e


def _score_one(tl: _Timelines, day, model: FleetModel, where: dict, families, units, warmup):
    p = model.params
    d_us = day.value // 1000
    a_us = (day - warmup).value // 1000 if warmup is not None else np.iinfo(np.int64).min // 2
    lo, hi = tl.window(a_us, d_us + _DAY_US)
    first = tl.window(d_us, d_us + _DAY_US)[0]
    has_today = hi > np.maximum(first, lo)
    scores, explanations = [], []
    ent_codes = np.flatnonzero(has_today)
    # cold start: today's timestamps, no score
    known = np.array([tl.entities[c] in where for c in ent_codes], bool)
    cold = ent_codes[~known]
    if len(cold):
        reps = hi[cold] - first[cold]
        idx = np.concatenate([tl.start[c] + np.arange(first[c], hi[c]) for c in cold])
        scores.append(pd.DataFrame({
            "entity_id": np.repeat(tl.entities[cold], reps), "ts": pd.to_datetime(tl.pair_ts[idx], unit="us", utc=True),
            "anomaly_score": np.nan, "is_anomaly": False, "severity": "cold_start", "why": None,
            "model_version": model.version}))
    scored = ent_codes[known]
    if len(scored) == 0:
        return scores, explanations
    mgroup = np.array([where[tl.entities[c]][0] for c in scored])
    mslot = np.array([where[tl.entities[c]][1] for c in scored])
    start = np.maximum(lo[scored], first[scored] - p.warmup_points)
    length = hi[scored] - start
    warm = first[scored] - start
    keys = np.column_stack([mgroup, tl.group_of[scored], start, length, warm])
    for b in _batches(keys):
        c_b = scored[b]
        grp = model.groups[mgroup[b[0]]]
        tg = tl.groups[tl.group_of[c_b[0]]]
        # the model's metrics on the timeline's columns (a metric the window lacks reads as missing)
        col = pd.Index(tl.metrics[tg.cols]).get_indexer(grp.metrics)
        slots, st, T, w = tl.slot[c_b], start[b], int(length[b[0]]), int(warm[b[0]])

        def cube(name):
            a = _take(tg.arrays[name], slots, st, T)
            out = a[:, :, np.maximum(col, 0)]
            if (col < 0).any():
                out = out.copy()
                out[:, :, col < 0] = np.nan
            return out

        values, rz = cube("value"), cube("residual_z")
        det = grp.detector
        if isinstance(det, FleetDetector):
            det = det.take(mslot[b])
            parts = det.score_parts(values, rz)
        else:  # one entity with an IsolationForest
            one = det.score_parts(values[0], rz[0])
            parts = type(one)(*(x[None] for x in (one.anomaly_score, one.p_value, one.raw, one.deviation)))
        score = parts.anomaly_score[:, w:]
        sev = severity(score.ravel(), p.warning_p, p.critical_p).reshape(score.shape)
        flagged = sev != "normal"
        names = tl.entities[c_b]
        t_idx = (tl.start[c_b] + st + w)[:, None] + np.arange(T - w)[None, :]
        ts = tl.pair_ts[t_idx]
        why = np.full(score.shape, None, dtype=object)
        if flagged.any():
            gi, ti = np.nonzero(flagged)
            act = values[:, w:][gi, ti]
            exp_ = (values - cube("residual"))[:, w:][gi, ti]
            # metrics ranked by their recent deviation, smoothed like the evidence (warm-up included)
            recent = smoothed_deviation(parts.deviation.transpose(1, 0, 2), p.smoothing_alphas[0]).transpose(1, 0, 2)
            frame, why_f = explain("", pd.to_datetime(ts[gi, ti], unit="us", utc=True).to_numpy(), grp.metrics,
                                   parts.deviation[:, w:][gi, ti], act, exp_, families, units,
                                   rank_by=recent[:, w:][gi, ti])
            frame["entity_id"] = np.repeat(names[gi], len(grp.metrics))
            why[gi, ti] = why_f
            explanations.append(frame)
        scores.append(pd.DataFrame({
            "entity_id": np.repeat(names, T - w), "ts": pd.to_datetime(ts.ravel(), unit="us", utc=True),
            "anomaly_score": score.ravel(), "is_anomaly": flagged.ravel(), "severity": sev.ravel(),
            "why": why.ravel(), "model_version": model.version}))
    return scores, explanations
