"""The detector: expected band, residuals and a calibrated anomaly probability for new points.

One call scores the new points of a batch of entities that share a timeline and metrics, given
what was stored for their past (values, out-of-sample residuals, which points were judged
anomalous), or given the model the batch carries from its last refit (``core/model.py``). The
answer for a point depends only on data before it, so a nightly run and a backfill of the same
days agree (``replay`` is the backfill).

For each *block* of new points the detector refits on a **reference**: the series' history in
the trailing ``reference_days`` (at least ``reference_points`` samples' worth), with the points
judged anomalous left out. The steps, each in its own module:

1. ``core/baseline.py``: the expected value, a robust level plus the calendar effects that
   predict held-out data (no daily cycle is assumed).
2. Scale: the robust spread (1.4826 MAD) of the stored *out-of-sample* residuals of the
   reference, floored by what the data can resolve: the series' quantization step,
   ``floor_level`` of its typical magnitude and ``floor_spread`` of its longer-run
   (deseasonalized) spread. ``residual_z = (value - expected) / scale``.
3. ``core/evidence.py``: per-point evidence from the residual vector (one metric far off, many a
   little, a broken correlation).
4. ``core/calibration.py``: a tail probability per point, smoothed over time and combined.

**Cold start is counted in points.** A series is scored once it has ``min_points`` points; until
its reference holds two days (or ``min_points``), it is refitted each time its count of points
doubles, so a 1-minute series is scored within its first hour and a 1 Hz test-rig run within its
first minute. Daily data refits every day and is scored from its second week.

**A reference that does not chase anomalies.** A metric of a flagged point that deviates by at
least ``exclude_z`` is left out of later references, so a sustained drop is measured against the
level before it; ``core/reference.py`` holds the rules that let it back in (a persistent stretch
is the new normal, what recurs is normal, at most ``max_excluded`` left out).

**The band** ``[lower, upper]`` is ``expected ± e* scale``, where ``e*`` is the deviation of a
single metric that alone makes its point a warning; a side reaching past ``_BAND_REACH`` times
``|expected|`` + 1σ is NaN (no plausible value alone would flag).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np

from anomaly_assets.core import baseline as bl
from anomaly_assets.core import calendar, calibration as cal, events, evidence as ev, reference as ref, selection
from anomaly_assets.core.model import Model
from anomaly_assets.core.transform import Transform

DAY_S = 86_400
_MAD = 1.4826
_BAND_REACH = 1_000.0  # a band side wider than this many times |expected| + 1σ is reported as NULL


@dataclass(frozen=True)
class DetectorParams:
    """Every setting of the detector; the defaults were chosen leave-one-dataset-out
    (``benchmarks/detector_quality.py``, ``docs/detection.md``)."""

    reference_days: float = 28.0
    reference_points: int = 400
    max_reference_points: int = 20_000
    min_points: int = 8
    components: tuple[str, ...] = calendar.COMPONENTS
    seasonality_gain: float = 0.15
    day_bins: int = 96
    level_points: int | None = None
    effects_on_all: bool = True
    transform: str = "auto"
    metric_calibration: bool = True
    calibration_excluded: float = 0.05
    probation_days: float = 21.0
    young_days: float = 3.0
    young_share: float = 0.5
    smooth_fit_doubling: bool = False
    robust_tails: bool = False
    probation_factor: float = 1e3
    floor_level: float = 1e-3
    floor_spread: float = 0.25
    exclude_z: float = 2.0
    accept_days: float = 1.0
    accept_points: int = 7
    max_excluded: float = 0.25
    recurrent_runs: int = 0  # off: a fault that flags in stretches is learnt too (RESULTS.md)
    select_days: int = 1  # >1: a series keeps its calendar components this many days (core/selection.py)
    refit_days: int = 1  # a series' model is refitted every this many days (core/model.py)
    carry_level: float = 0.3  # with refit_days > 1: the share of a day's median residual the level takes
    detector: str = "robust"
    statistics: tuple[str, ...] = ("max", "rms", "pca")
    pca_variance: float = 0.95
    tail_quantile: float = 0.9
    min_calibration: int = 50
    smoothing_alphas: tuple[float, ...] = (1.0, 0.1, 0.02)
    surprise_cap: float = 13.8  # the smoothed scales' input is capped here, the point's own tempered
    warning_p: float = 1e-3
    critical_p: float = 1e-5

    def __post_init__(self):
        if self.detector not in ev.BACKENDS:
            raise ValueError(f"detector must be one of {ev.BACKENDS}, got {self.detector!r}")
        if not self.smoothing_alphas or not all(0 < a <= 1 for a in self.smoothing_alphas):
            raise ValueError(f"smoothing_alphas must be values in (0, 1], got {self.smoothing_alphas}")
        if not 0 < self.critical_p < self.warning_p < 1:
            raise ValueError(f"need 0 < critical_p < warning_p < 1, got {self.critical_p}, {self.warning_p}")
        if not 0.5 <= self.tail_quantile < 1:
            raise ValueError(f"tail_quantile must be in [0.5, 1), got {self.tail_quantile}")
        if self.refit_days < 1:
            raise ValueError(f"refit_days must be at least 1, got {self.refit_days}")
        if self.select_days < 1:
            raise ValueError(f"select_days must be at least 1, got {self.select_days}")
        if not 0 <= self.carry_level <= 1:
            raise ValueError(f"carry_level must be in [0, 1], got {self.carry_level}")
        if self.min_points < 3:
            raise ValueError(f"min_points must be at least 3, got {self.min_points}")
        unknown = set(self.components) - set(calendar.COMPONENTS)
        if unknown:
            raise ValueError(f"unknown components {sorted(unknown)}; expected a subset of {calendar.COMPONENTS}")

    def version(self, code_version: str) -> str:
        params = asdict(self)
        if params["select_days"] == 1:  # added later off: a config without it keeps its version and stored models
            del params["select_days"]
        else:
            params["selection_rule"] = 2  # 05d135d: settled references, salted days
        blob = json.dumps({"params": params, "code": code_version}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class History:
    """What is stored for a batch's past. ``ts`` (T,) epoch seconds; arrays (E, T, m)."""

    ts: np.ndarray
    value: np.ndarray
    residual: np.ndarray  # out-of-sample residual as scored (NaN: not scored)
    excluded: np.ndarray  # left out of later references
    holiday: np.ndarray | None = None  # (T,) bool
    event: np.ndarray | None = None  # (E, T) bool: a known event day (calendar.csv) other than a holiday


@dataclass
class Scored:
    """The detector's answer for new points. Arrays (E, T, m) unless noted; NaN in cold start."""

    expected: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: np.ndarray
    seasonal: np.ndarray
    residual: np.ndarray
    residual_z: np.ndarray
    excluded: np.ndarray
    p: np.ndarray  # (E, T) tail probability of the point (its score), tempered past 3e-6; NaN in cold start
    p_alert: np.ndarray  # (E, T) the probability flags are judged on: untempered, raised in probation
    rank_by: np.ndarray  # recent |deviation| per metric, for explanations
    driver: np.ndarray = None  # (E, T) the evidence statistic that surprised most (names: statistics)
    span: np.ndarray = None  # (E, T) 1, or ~1/alpha of the smoothing that flagged a point not flagged alone
    statistics: tuple = ()
    refits: list[Model] = field(default_factory=list)  # the refits of this call, in order
    model: Model | None = None  # the model at the end of the new points (None: all in cold start)
    start: Model | None = None  # with keep_start: the model fitted before the first new point
    kept_given: np.ndarray | None = None  # (E,) with one refit before the first point: who kept a selection


def interval_of(ts: np.ndarray) -> float:
    """Sampling interval in seconds: the median spacing of distinct timestamps (a day if fewer than 2)."""
    u = np.unique(np.asarray(ts))
    return float(max(np.median(np.diff(u)), 1.0)) if len(u) > 1 else float(DAY_S)


def interval_before(ts_hist: np.ndarray, ts_new: np.ndarray, params: DetectorParams) -> float:
    """The sampling interval new points are fitted with: from the last ``2 reference_points`` of
    the history once it holds ``min_points``, so that a day's models do not depend on that day's
    points, not even on their timestamps (a run of the whole day fits what its first micro-batch
    fitted); from the history and the new points before that (a series' first points)."""
    n = len(ts_hist)
    if n >= params.min_points:
        return interval_of(ts_hist[max(0, n - 2 * params.reference_points):])
    return interval_of(np.concatenate([ts_hist, ts_new]))


def detect(history: History, ts: np.ndarray, value: np.ndarray, params: DetectorParams,
           holiday: np.ndarray | None = None, model: Model | None = None, keep_start: bool = False,
           event: np.ndarray | None = None, kept: np.ndarray | None = None,
           kept_given: np.ndarray | None = None) -> Scored:
    """Score new points of a batch given its stored history, or with the model it carries.

    Parameters
    ----------
    history : History
        The batch's stored past (at least the reference window; more is ignored).
    ts : ndarray of shape (T,)
        Epoch seconds of the new points, after ``history.ts``.
    value : ndarray of shape (E, T, m)
        New values, NaN where a metric is missing.
    params : DetectorParams
    holiday : ndarray of bool, shape (T,), optional
        Holiday mask of the new points (with ``history.holiday``, enables that component).
    model : Model, optional
        The batch's model, carried from its last refit: the new points are scored with it and no
        history is read (``history`` may be empty). It is updated in place to their end.
    keep_start : bool, default False
        Keep a copy of the model fitted before the first new point (``Scored.start``) when it
        scores every new point (the series is past its warm-up): the same history gives the same
        model, so later points of the day can be scored from it without refitting.
    event : ndarray of bool, shape (E, T), optional
        Known event days of the new points other than holidays (with ``history.event``:
        ``core/events.py``).
    kept, kept_given : ndarray of bool, shapes (n_comp, E, m) and (E,), optional
        Calendar components selected earlier, used instead of selecting for the entities of
        ``kept_given`` when one refit before the first new point scores them all
        (``core/selection.py``); ``Scored.kept_given`` says whether they were.

    Returns
    -------
    Scored
    """
    value = np.asarray(value, float)
    E, T, m = value.shape
    if (kept is None) != (kept_given is None):
        raise ValueError("kept and kept_given go together: the components, and the entities that use them")
    ts = np.asarray(ts, np.int64)
    th = np.asarray(history.ts, np.int64)
    n_hist = len(th)
    all_ts = np.concatenate([th, ts])
    x = np.concatenate([history.value, value], axis=1)
    resid = np.concatenate([history.residual, np.full((E, T, m), np.nan)], axis=1)
    excl = np.concatenate([history.excluded, np.zeros((E, T, m), bool)], axis=1)
    hol = None
    if history.holiday is not None or holiday is not None:
        hol = np.concatenate([np.zeros(n_hist, bool) if history.holiday is None else history.holiday,
                              np.zeros(T, bool) if holiday is None else holiday])
    evd = None
    if history.event is not None or event is not None:
        evd = np.concatenate([np.zeros((E, n_hist), bool) if history.event is None else history.event,
                              np.zeros((E, T), bool) if event is None else event], axis=1)
    interval = interval_before(th, ts, params)
    out = Scored(*(np.full((E, T, m), np.nan) for _ in range(7)), np.zeros((E, T, m), bool),
                 np.full((E, T), np.nan), np.full((E, T), np.nan), np.zeros((E, T, m)),
                 driver=np.zeros((E, T), np.int8), span=np.ones((E, T), np.int32))
    if model is not None:
        _apply(model, ts, value, holiday, params, out, 0, event)
        out.model = model
        return out
    blocks = _blocks(n_hist, T, interval, params)
    one = blocks == [(0, T)]  # one refit, before the first new point: a given selection is used
    given = kept_given if one and kept_given is not None else np.zeros(E, bool)
    for a, b in blocks:
        fitted = _fit_block(all_ts, x, resid, excl, hol, n_hist + a, interval, params, evd, kept, given)
        if fitted is None:
            continue
        if keep_start and one and n_hist >= max(2 * DAY_S / interval, params.min_points):
            out.start = fitted.take(np.arange(E))  # a copy: _apply moves the model's running parts on
        sl = slice(n_hist + a, n_hist + b)
        _apply(fitted, all_ts[sl], x[:, sl], hol[sl] if hol is not None else None, params, out, a,
               evd[:, sl] if evd is not None else None)
        resid[:, sl] = out.residual[:, a:b]
        excl[:, sl] = out.excluded[:, a:b]
        out.refits.append(fitted)
        out.model = fitted
        out.kept_given = given if one else None
    return out


def _warm_until(interval: float, p: DetectorParams) -> float:
    """The history (in points) below which a series is refitted each time its count doubles."""
    return max(2 * DAY_S / interval, p.min_points)


def _blocks(n_hist: int, n_new: int, interval: float, p: DetectorParams) -> list[tuple[int, int]]:
    """Blocks [a, b) of new points that share a refit: a refit each time the point count doubles
    from ``min_points`` while the history is short, else one block. Points before ``min_points``
    form no block (cold start)."""
    warm_until = _warm_until(interval, p)
    starts = []
    k = p.min_points
    while k < n_hist + n_new and k < warm_until:
        if k >= n_hist:
            starts.append(k - n_hist)
        k *= 2
    first = max(0, p.min_points - n_hist)
    if first < n_new and (not starts or starts[0] > first):
        starts.insert(0, first)
    starts = sorted(set(s for s in starts if s < n_new))
    return list(zip(starts, starts[1:] + [n_new]))


def _young_until(first: float, p: DetectorParams) -> float:
    """Until when (epoch s) a series that started at ``first`` was scored by models fitted before
    it had ``young_days`` of history, such as a day's model fitted too early to keep the daily
    cycle.

    A day's model is fitted before the day's first point, so such a model scores on to the next
    day (UTC) at least. With carried models (``refit_days`` above 1) a young series is refitted
    once its model is as old as the history it was fitted on (the history doubles), so one
    fitted before ``young_days`` can score until twice that, and on to the next day's start.
    """
    if p.young_days <= 0:
        return first
    reach = (1.0 if p.refit_days <= 1 else 2.0) * p.young_days * DAY_S
    return float(np.ceil((first + reach) / DAY_S) * DAY_S)


def _fit_block(all_ts, x, resid, excl, hol, start, interval, p, evd=None, kept=None, kept_given=None) -> Model | None:
    """Refit on the reference before position ``start``; None when no series has enough points."""
    E, _, m = x.shape
    idx, left_out, level_from = ref.window(all_ts, excl, start, interval, p)
    ts_ref = all_ts[idx]
    raw_ref = x[:, idx, :]
    flagged_out, ev_ref, ev_day = left_out, None, None
    if evd is not None:  # known events stay out of the reference (core/events.py)
        ev_ref = events.reference_points(evd[:, idx], raw_ref, left_out)
        ev_day = ev_ref.any(axis=2)
        left_out = left_out | ev_ref
    usable = ~np.isnan(raw_ref) & ~left_out
    n_use = usable.sum(axis=1)  # (E, m)
    if len(idx) == 0 or not (n_use >= p.min_points).any():
        return None
    tf = Transform.choose(np.where(usable, raw_ref, np.nan), p.transform)
    # everything below is in the transformed scale (log for skewed non-negative series)
    xt = tf.fwd(raw_ref)
    xt_ref = np.where(left_out, np.nan, xt)
    hol_ref = hol[idx] if hol is not None else None
    x_fit = xt if p.effects_on_all else xt_ref
    if ev_ref is not None:  # an event's lift is its own effect, not the calendar's
        x_fit = np.where(ev_ref, np.nan, x_fit)
    base = bl.fit(x_fit, ts_ref, interval, left_out=left_out, components=p.components,
                  gain=p.seasonality_gain, day_bins=p.day_bins, holiday=hol_ref, level_points=p.level_points,
                  level_from=level_from, kept=kept, kept_given=kept_given)
    fitted_ref = base.expected(ts_ref, hol_ref)
    if ev_ref is not None:
        base.event, base.event_spread = events.effect(xt - fitted_ref, ev_ref, flagged_out)
        fitted_ref = base.expected(ts_ref, hol_ref, ev_day)
    r_in = xt_ref - fitted_ref
    stored = resid[:, idx, :]  # out-of-sample residuals as scored, in the metric's units
    r_win = xt - tf.fwd(raw_ref - stored)  # ... in the transformed scale (NaN where not scored)
    # a series that started inside the window was scored by cruder models while young: before it
    # had the history to learn its calendar components (`_young_until`), or, keeping none, by
    # the models fitted on the first half of its history (`young_share`). Those
    # residuals say how wrong the young model was, not this one: they stay out of the scale and
    # the calibration
    span = ref.span(interval, p)
    seen = float(ts_ref[-1] - ts_ref[0] + interval) if len(ts_ref) else 0.0
    settled = selection.settled(usable, ts_ref, all_ts[start], min(span, p.max_reference_points * interval))
    if len(ts_ref) and ts_ref[0] >= all_ts[start] - span + 2 * interval:
        plain = ts_ref[0] + min(p.young_days * DAY_S, p.young_share * seen)
        # a window cut at `max_reference_points` (data finer than ~2 minutes) passes the test above
        # whether or not the series started in it: its start is read as young all the same (the
        # defaults were chosen with it), but never more than `young_share` of it
        capped = start - idx[0] >= p.max_reference_points
        until = np.where(base.kept.any(axis=0), plain if capped else _young_until(ts_ref[0], p),
                         plain)  # (E, m) epoch s
        young = ts_ref[None, :, None] < until[:, None, :]
        r_win = np.where(young, np.nan, r_win)
    r_oos = np.where(left_out, np.nan, r_win)
    n_oos = (~np.isnan(r_oos)).sum(axis=1)
    sc_oos = _MAD * bl._nanmedian(np.abs(r_oos - bl._nanmedian(r_oos)[:, None, :]))
    sc_in = _MAD * bl._nanmedian(np.abs(r_in - bl._nanmedian(r_in)[:, None, :]))
    sc_in = sc_in * (1.0 + 1.0 / np.sqrt(np.maximum(n_use - 1, 1)))
    scale = np.where(n_oos >= p.min_calibration, sc_oos, sc_in)
    scale = np.maximum(np.nan_to_num(scale), _floor(xt_ref, base, p))
    valid = n_use >= p.min_points  # (E, m): series that can be scored
    # residuals of every reference point: out-of-sample where stored, in-sample in the warm-up
    sc_win = events.scale_on(scale, base.event_spread, ev_day, xt.shape)
    z_win = np.where(valid[:, None, :], np.where(np.isnan(r_win), xt - fitted_ref, r_win) / sc_win, np.nan)
    # calibration keeps out at most `calibration_excluded` of the reference (the most extreme
    # flagged points): past that budget the flags are likelier wrong than the data, and leaving
    # them out would make the tails lighter and the flags more frequent still
    cal_out = _calibration_out(flagged_out.any(axis=2), np.abs(np.nan_to_num(z_win)).max(axis=2),
                               p.calibration_excluded)
    if ev_day is not None:  # an event day's residuals say how events vary, not normal days
        cal_out = cal_out | ev_day
    n_cal = ((~np.isnan(r_win)).any(axis=2) & ~cal_out).sum(axis=1)  # (E,) out-of-sample points
    warm = n_cal < p.min_calibration  # too few to calibrate: the warm-up's robust z-score
    z_cal = np.where(cal_out[:, :, None], np.nan, z_win)
    # each metric calibrated against its own tail first: a heavy-tailed metric's usual jumps then
    # weigh what a well-behaved metric's rarer deviation weighs (Gaussianized residuals u)
    mtail = cal.fit_tail(np.abs(z_cal).transpose(0, 2, 1).reshape(E * m, -1), p.tail_quantile, p.robust_tails) \
        if p.metric_calibration else None
    u_win = _gauss_warm(z_win, mtail, warm)
    u_cal = np.where(cal_out[:, :, None], np.nan, u_win)  # = gauss(z_cal): it works point by point
    evm = ev.fit(u_cal, p.detector, p.pca_variance, statistics=p.statistics)
    ev_win = evm.score(u_win)
    ev_ref = np.where((~np.isnan(z_cal)).any(axis=2)[None], ev_win, np.nan)
    tails = [cal.fit_tail(e, p.tail_quantile, p.robust_tails) for e in ev_ref]
    n_ref = usable.any(axis=2).sum(axis=1)
    s_win = _surprise(u_win, ev_win, tails, warm, n_ref)
    # the smoothed surprises' laws, and their EWMA states at the reference's end
    gammas, smooth = [], np.full((E, len(p.smoothing_alphas)), np.nan)
    # while the history doubles, each block is scored further ahead than the reference's residuals
    # were: their moments would understate the smoothed tail (calibration.fit_gamma)
    persistent = not p.smooth_fit_doubling and start < _warm_until(interval, p)
    for k, alpha in enumerate(p.smoothing_alphas):
        if alpha >= 1:
            gammas.append(None)
            continue
        sm = cal.ewma(np.minimum(s_win, p.surprise_cap), alpha)
        gammas.append(cal.fit_gamma(np.where(~cal_out, sm, np.nan), alpha, p.min_calibration, persistent))
        smooth[:, k] = sm[:, -1]
    # Probation, until the reference spans `probation_days` (or is as long as it gets: 20,000
    # one-minute points span 13.9 days) and the warm-up is over: a flag needs `probation_factor`
    # times stronger evidence (a new series has not shown its daily cycle or its drift yet; its
    # scores still rank)
    probation = warm | (seen < min(p.probation_days * DAY_S, p.max_reference_points * interval))
    # the band: the single-metric deviation that alone makes a point a warning
    s_star = -np.log(p.warning_p / len(p.smoothing_alphas)) + np.where(probation, np.log(p.probation_factor), 0.0)
    e_star = np.full((E, m), np.nan)
    if p.detector == "robust" and evm.names[0] == "max":
        u_star = tails[0].isf(-(s_star + np.log(len(tails))))  # (E,) in u units
        e_star = _z_of_u(u_star, mtail, E, m)
    e_star = np.where(warm[:, None], cal.t_isf(s_star, n_ref, m)[:, None], e_star)
    # explanations rank metrics by their recent deviation (the fast smoothing's memory)
    d2 = np.square(np.nan_to_num(_shown(u_win[:, -64:], warm, n_ref))).transpose(0, 2, 1)
    rank = cal.ewma(d2, fast_alpha(p))[:, :, -1]
    return Model(fitted_at=np.full(E, int(all_ts[start]), np.int64), seen=np.full(E, seen),
                 reference_points=np.full(E, len(idx), np.int64), baseline=base, transform=tf, scale=scale,
                 mtail=mtail, evidence=evm, tails=tails, gammas=gammas, warm=warm, probation=probation,
                 n_ref=n_ref, settled=settled, band_z=e_star, valid=valid, smooth=smooth, rank=rank,
                 drift=np.zeros(E, bool),
                 last_ts=np.full(E, int(all_ts[start - 1]) if start else 0, np.int64))


def fast_alpha(p) -> float:
    """The fastest smoothing coefficient below 1: the explanations' ranking memory (~1/α points)."""
    return max((a for a in p.smoothing_alphas if a < 1), default=1.0)


def _shown(u, warm, n_ref):
    """The σ-equivalents residual_z shows (E, T, m): in the warm-up a raw z, which may be in the
    thousands, goes through the warm-up's t law; explanations rank by these."""
    if not warm.any():
        return u
    u = u.copy()
    u[warm] = cal.t_sigma(u[warm], n_ref[warm])
    return u


def _gauss_warm(z, mtail, warm):
    return np.where(warm[:, None, None], z, _gauss(z, mtail))


def _surprise(u, evidence, tails, warm, n_ref):
    """-ln p of each point (E, T) from its evidence: the statistics' tails, Bonferroni-combined;
    in the warm-up, the largest |z| under the warm-up's t law."""
    m = u.shape[2]
    s = np.max([-t.log_sf(e) for t, e in zip(tails, evidence)], axis=0) - np.log(len(tails))
    if warm.any():
        s_warm = -cal.t_log_sf(np.abs(np.nan_to_num(u)).max(axis=2), n_ref, m)
        s = np.where(warm[:, None], s_warm, s)
    return np.maximum(s, 0.0)


def _apply(model: Model, ts, xs, hol_new, p, out, offset, event=None) -> None:
    """Score the points ``xs`` (E, T, m) at ``ts`` with ``model`` into ``out`` from ``offset``,
    carrying the model's running state on to their end."""
    E, T, m = xs.shape
    base, tf, scale, valid, warm = model.baseline, model.transform, model.scale, model.valid, model.warm
    expected_t = np.where(valid[:, None, :], base.expected(ts, hol_new, event), np.nan)
    sc_t = events.scale_on(scale, base.event_spread, event, xs.shape)
    z_new = (tf.fwd(xs) - expected_t) / sc_t
    u_new = _gauss_warm(z_new, model.mtail, warm)
    ev_new = model.evidence.score(u_new)
    s_new = _surprise(u_new, ev_new, model.tails, warm, model.n_ref)
    if model.evidence.names:
        out.statistics = model.evidence.names
        out.driver[:, offset:offset + T] = np.argmax([-t.log_sf(e) for t, e in zip(model.tails, ev_new)], axis=0)
    log_ps = []
    for k, alpha in enumerate(p.smoothing_alphas):
        if alpha >= 1:
            log_ps.append(-s_new)
            continue
        sm = cal.ewma(np.minimum(s_new, p.surprise_cap), alpha, initial=model.smooth[:, k])
        model.smooth[:, k] = sm[:, -1]
        # in the warm-up only the point's own evidence counts: the smoothed scales' calibration
        # needs out-of-sample surprises to match
        log_ps.append(np.where(warm[:, None], 0.0, model.gammas[k].log_sf(sm)))
    log_p = cal.combine(log_ps)
    # the score ranks with the point's own surprise tempered past the cap: a lone point past anything
    # the reference held still ranks above lesser ones, not above a fault that persists. Flags stay
    # on the calibrated p (tempered, a critical in probation would need p ~ 1e-138)
    log_rank = cal.combine([-cal.temper(s_new, p.surprise_cap) if a >= 1 else lp
                            for lp, a in zip(log_ps, p.smoothing_alphas)])
    # which time scale surprised most, where the point alone would not have been flagged: such a
    # flag says so in its why
    spans = np.array([1 if a >= 1 else max(2, round(1 / a)) for a in p.smoothing_alphas], np.int32)
    alone = cal.combine([lp if a >= 1 else np.zeros_like(lp) for lp, a in zip(log_ps, p.smoothing_alphas)])
    out.span[:, offset:offset + T] = np.where(alone <= np.log(p.warning_p), 1, spans[np.argmin(log_ps, axis=0)])
    # the score and what the reference leaves out are judged on the evidence itself; probation
    # only raises the bar for a flag
    pv = np.exp(log_p)
    judged = pv <= p.warning_p
    p_alert = np.exp(np.minimum(log_p + np.where(model.probation, np.log(p.probation_factor), 0.0)[:, None], 0.0))
    half = model.band_z[:, None, :] * sc_t
    expected = tf.inv(expected_t)
    j = slice(offset, offset + T)
    out.expected[:, j] = expected
    # a non-negative metric's band does not reach below zero either
    lower = np.where(base.nonnegative[:, None, :], np.maximum(tf.inv(expected_t - half), 0.0),
                     tf.inv(expected_t - half))
    upper = tf.inv(expected_t + half)
    # a side of the band that reaches past any plausible value (a heavy-tailed metric that alone
    # can hardly flag, widened by its log transform) is no bound: NULL, not 1e+300
    reach = _BAND_REACH * (np.abs(expected) + np.abs(tf.inv(expected_t + scale[:, None, :]) - expected))
    out.lower[:, j] = np.where(expected - lower > reach, np.nan, lower)
    out.upper[:, j] = np.where(upper - expected > reach, np.nan, upper)
    seasonal_t = base.seasonal(ts, hol_new, event)
    level = tf.inv(np.broadcast_to(base.level[:, None, :], seasonal_t.shape))
    out.level[:, j] = np.where(valid[:, None, :], level, np.nan)
    out.seasonal[:, j] = np.where(valid[:, None, :], expected - level, np.nan)
    out.residual[:, j] = xs - expected
    # σ-equivalent: as rare as this many σ of a normal (in the warm-up, under its t law: a series
    # that never moved shows a finite deviation when it first does)
    shown = _shown(u_new, warm, model.n_ref)
    out.residual_z[:, j] = shown
    dev = np.abs(np.nan_to_num(z_new))
    left = judged[:, :, None] & ((dev >= p.exclude_z) | (m == 1))
    out.excluded[:, j] = left
    out.p[:, j] = np.where(valid.any(axis=1)[:, None], np.exp(log_rank), np.nan)
    out.p_alert[:, j] = np.where(valid.any(axis=1)[:, None], p_alert, np.nan)
    d2 = np.square(np.nan_to_num(shown)).transpose(0, 2, 1)
    r = cal.ewma(d2, fast_alpha(p), initial=model.rank)
    out.rank_by[:, j] = np.sqrt(np.maximum(d2, r)).transpose(0, 2, 1)
    model.rank = r[:, :, -1].copy()
    model.drift = left.any(axis=(1, 2))
    if p.refit_days > 1 and p.carry_level > 0:
        # between refits the level follows the series: a share of the way to the median residual
        # of the points kept (a drift the reference would have taken in, not an anomaly)
        r_t = tf.fwd(xs) - expected_t
        kept = ~left & ~np.isnan(r_t)
        if event is not None:  # an event day says nothing of the level either
            kept &= ~np.asarray(event, bool)[:, :, None]
        enough = kept.sum(axis=1) >= max(p.min_points, T // 2)
        step = np.where(enough, np.nan_to_num(bl._nanmedian(np.where(kept, r_t, np.nan))), 0.0)
        model.baseline.level = model.baseline.level + p.carry_level * step
    model.last_ts = np.full(E, int(ts[-1]), np.int64)


def _calibration_out(flagged: np.ndarray, strength: np.ndarray, share: float) -> np.ndarray:
    """Flagged reference points (E, n) kept out of calibration: all of them, or the ``share`` of
    the reference with the largest ``strength`` when more were flagged."""
    E, n = flagged.shape
    budget = int(share * n)
    if (flagged.sum(axis=1) <= budget).all():
        return flagged
    order = np.argsort(np.where(flagged, -strength, np.inf), axis=1, kind="stable")
    out = np.zeros_like(flagged)
    np.put_along_axis(out, order[:, :budget], True, axis=1)
    return out & flagged


def _gauss(z: np.ndarray, mtail) -> np.ndarray:
    """Signed normal score of each metric's tail probability: ``sign(z) Φ^-1(1 - p/2)``, where
    ``p`` is P(|z| at least this large) under the metric's own reference tail (E, T, m)."""
    if mtail is None:
        return z
    from scipy.special import ndtri

    E, T, m = z.shape
    a = np.abs(np.nan_to_num(z)).transpose(0, 2, 1).reshape(E * m, T)
    log_p = np.minimum(mtail.log_sf(a), 0.0)
    u = -ndtri(np.maximum(np.exp(log_p) / 2.0, 1e-300))
    u = np.where(a > 0, np.maximum(u, 0.0), 0.0).reshape(E, m, T).transpose(0, 2, 1)
    return np.where(np.isnan(z), np.nan, np.sign(z) * u)


def _z_of_u(u_star: np.ndarray, mtail, E: int, m: int) -> np.ndarray:
    """The |z| of each metric whose normal score is ``u_star`` (E,), shape (E, m)."""
    if mtail is None:
        return np.repeat(u_star[:, None], m, axis=1)
    from scipy.special import ndtr

    log_p = np.log(np.maximum(2.0 * ndtr(-np.repeat(u_star, m)), 1e-300))
    u, beta, q = mtail.u, mtail.beta, mtail.q
    p_u = 1.0 - q
    z = np.where(log_p <= np.log(p_u), u + beta * (np.log(p_u) - log_p),
                 u * (1.0 - np.exp(log_p)) / (1.0 - p_u))
    return z.reshape(E, m)


def _floor(x_ref, base, p) -> np.ndarray:
    """What the data can resolve (E, m): quantization step, a share of the typical magnitude and
    of the longer-run spread."""
    srt = np.sort(x_ref, axis=1)
    d = np.diff(srt, axis=1)
    # the typical spacing of the values a series takes: 1 for counts, the step of a stepped gauge
    step = np.nan_to_num(bl._nanmedian(np.where(d > 0, d, np.nan))) if d.shape[1] else np.zeros(srt.shape[::2])
    typical = np.nan_to_num(bl._nanmedian(np.abs(x_ref)))
    return np.maximum.reduce([step, p.floor_level * typical, p.floor_spread * base.spread,
                              np.full_like(step, 1e-9)])
