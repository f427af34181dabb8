"""The expected value of every metric: a robust level plus the calendar effects the data show.

For a series ``x_t`` the baseline is additive,

    expected(t) = level + sum over kept components c of effect_c[bin_c(t)],

with components from ``core/calendar.py`` (time of day, day of week, day of month, holidays).
It is fitted on a *reference*: the recent history of the series with the points judged
anomalous left out (``core/detector.py`` decides which), so a fault is measured against the
behaviour before it, not absorbed into it.

**Fit.** Median polish (Tukey, *Exploratory Data Analysis*, 1977), i.e. backfitting (Hastie &
Tibshirani, *Generalized Additive Models*, 1990, ch. 4) with medians: each component's effect
per bin is the median over the bin's cycles of what the level and the other components leave,
centred to a zero median. Effects are fitted on *every* reference point, anomalies included: a
median over cycles cannot be moved by a fault in fewer than half of them, while a regular effect
on few days (rent on the 1st) is learnt at once even though each of its days looks anomalous
against the level. The **level** is the median of the deseasonalized points *not* judged
anomalous, so a sustained drop does not pull it down.

**Which components.** A component is kept for a series only when it predicts *unseen* data: the
baseline is fitted on the first part of the reference and each candidate set of components
judged on the rest by the mean absolute error of its forecast (centred, so a level change in
the held-out part is not held against any component). Starting from no component, the one that
cuts this error most is added while it cuts it by at least ``gain``: daily seasonality on server
metrics, weekly and month-start effects on business series, nothing on a 20-minute test-rig run.
A refinement (``weekend_day`` of ``day``, ``calendar.REQUIRES``) is only judged on top of what it
refines. Each series' effects are then fitted with exactly the components it keeps.

**Non-negative metrics.** A series whose reference never goes below zero (counts, amounts,
rates) never gets a negative expected value.

Arrays are ``(n_entities, n_points, n_metrics)``: many series of one timeline at once. NaN marks
a point that is missing or left out of the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from anomaly_assets.core import calendar
from anomaly_assets.core.nanstats import masked_median as _masked_median
from anomaly_assets.core.nanstats import nanmedian as _nanmedian
from anomaly_assets.core.nanstats import nanquantile

_MAD = 1.4826


@dataclass
class Baseline:
    """A fitted baseline for a batch of series. Shapes: (E, m) unless noted.

    ``effects[c]`` is (E, n_bins, m), zero where component ``c`` is not kept for the series;
    ``kept`` is (n_components, E, m) in the order of ``calendar.COMPONENTS``.
    """

    level: np.ndarray
    effects: dict[str, np.ndarray]
    kept: np.ndarray
    nonnegative: np.ndarray
    interval: float
    day_bins: int = 96
    spread: np.ndarray = field(default=None)  # robust spread of the deseasonalized reference
    event: np.ndarray | None = None  # (E, m) effect of a known event day (calendar.csv), None: none
    event_spread: np.ndarray | None = None  # (E, m) robust spread of the event days around it

    def seasonal(self, ts: np.ndarray, holiday: np.ndarray | None = None,
                 event: np.ndarray | None = None) -> np.ndarray:
        """Sum of the kept calendar effects at ``ts`` (and the event effect where ``event``, (E, T)
        bool, marks a known event), shape (E, len(ts), m)."""
        out = np.zeros((self.level.shape[0], len(ts), self.level.shape[1]))
        for c, eff in self.effects.items():
            b, _ = calendar.bins(ts, self.interval, c, self.day_bins, holiday)
            out += eff[:, b, :]
        if event is not None and self.event is not None:
            out += np.asarray(event, bool)[:, :, None] * self.event[:, None, :]
        return out

    def expected(self, ts: np.ndarray, holiday: np.ndarray | None = None,
                 event: np.ndarray | None = None) -> np.ndarray:
        """level + seasonal at ``ts``, never below zero for a non-negative series; (E, len(ts), m)."""
        out = self.seasonal(ts, holiday, event) + self.level[:, None, :]
        return np.where(self.nonnegative[:, None, :], np.maximum(out, 0.0), out)

    def components_of(self, e: int, j: int) -> list[str]:
        """The components kept for series (entity ``e``, metric ``j``)."""
        return [c for k, c in enumerate(calendar.COMPONENTS) if self.kept[k, e, j]]


def fit(x: np.ndarray, ts: np.ndarray, interval: float, *, left_out: np.ndarray | None = None,
        components=calendar.COMPONENTS, gain: float = 0.15, holdout: float = 0.25, day_bins: int = 96,
        sweeps: int = 2, holiday: np.ndarray | None = None, level_points: int | None = None,
        level_from: np.ndarray | None = None, kept: np.ndarray | None = None,
        kept_given: np.ndarray | None = None) -> Baseline:
    """Fit the baseline of a batch of series on their reference.

    Parameters
    ----------
    x : ndarray of shape (E, T, m)
        Reference values in time order; NaN where missing.
    ts : ndarray of shape (T,)
        Epoch seconds of the reference points (shared by the batch).
    interval : float
        Sampling interval in seconds.
    left_out : ndarray of bool, shape (E, T, m), optional
        Points judged anomalous: kept out of the level and the spread.
    components : sequence of str
        Calendar components that may be kept (``calendar.COMPONENTS``).
    gain : float
        Least relative cut of the held-out error for a component to be kept.
    holdout : float
        Share of the reference (by time, at its end) that candidate components are judged on.
    day_bins, sweeps :
        Bins of the time-of-day component and median-polish sweeps.
    holiday : ndarray of bool, shape (T,), optional
        Holiday mask of the reference points.
    level_points : int, optional
        The level is the median of the last this many deseasonalized reference points
        (default: all of them).
    level_from : ndarray of int, shape (E, m), optional
        Per series, the first position the level is measured from (a new normal's start).
    kept : ndarray of bool, shape (n_comp, E, m), optional
        Components selected earlier (``core/selection.py``), used for the entities of ``kept_given``
        instead of selecting (those not applicable to this reference are dropped).
    kept_given : ndarray of bool, shape (E,), optional
        The entities whose ``kept`` is used; the others select.

    Returns
    -------
    Baseline
    """
    x = np.asarray(x, float)
    E, T, m = x.shape
    ts = np.asarray(ts)
    has_hol = holiday is not None and bool(np.any(holiday))
    span = float(ts[-1] - ts[0] + interval) if T else 0.0
    prior, given = kept, np.zeros(E, bool) if kept_given is None else np.asarray(kept_given, bool)
    kept = np.zeros((len(calendar.COMPONENTS), E, m), bool)
    cand = [c for c in components if T and calendar.applicable(c, interval, span * (1 - holdout), has_hol)]
    bins_all = {c: calendar.bins(ts, interval, c, day_bins, holiday) for c in cand}
    if cand and not given.all():  # each series selects on its own columns: a subset selects the same
        kept[:, ~given] = _select(x if not given.any() else x[~given], ts, bins_all, cand, gain, holdout, sweeps)
    if cand and given.any():
        kept[:, given] = prior[:, given] & np.isin(calendar.COMPONENTS, cand)[:, None, None]
    used = [c for c in cand if kept[calendar.COMPONENTS.index(c)].any()]
    effects = _polish_by_pattern(x, bins_all, used, kept, sweeps)
    seasonal = np.zeros_like(x)
    for c in used:
        seasonal += effects[c][:, bins_all[c][0], :]
    deseason = x - seasonal
    if left_out is not None:
        deseason = np.where(left_out, np.nan, deseason)
    if level_from is not None:
        deseason = np.where(np.arange(T)[None, :, None] >= level_from[:, None, :], deseason, np.nan)
    level = _nanmedian_last(deseason, level_points) if level_points else _nanmedian(deseason)
    level = np.nan_to_num(level)
    with np.errstate(invalid="ignore"):
        nonneg = ~(np.nanmin(np.where(np.isnan(x), np.inf, x), axis=1) < 0)
    spread = np.zeros((E, m))
    if T:
        q = nanquantile(deseason, [0.05, 0.95], axis=1)
        spread = np.nan_to_num((q[1] - q[0]) / 3.29)
    return Baseline(level, effects, kept, nonneg, float(interval), day_bins, spread)


def _nanmedian_last(a: np.ndarray, n: int) -> np.ndarray:
    """Median of the last ``n`` non-NaN values along axis 1 of (E, T, m)."""
    ok = ~np.isnan(a)
    from_end = np.cumsum(ok[:, ::-1, :], axis=1)[:, ::-1, :]
    return _nanmedian(np.where(ok & (from_end <= n), a, np.nan))


def _bin_medians(r: np.ndarray, b: np.ndarray, nb: int, scale: np.ndarray | None = None,
                 huber_k: float = 2.0) -> np.ndarray:
    """Robust location of the non-NaN values of r (E, T, m) per bin b (T,): (E, nb, m), NaN
    where empty.

    The median per bin, then (with ``scale``, (E, m)) one Huber step from it: the mean of the
    deviations from the median clipped at ``huber_k`` scales (a one-step M-estimator, Huber
    1981): nearly the efficiency of a mean on clean bins, the robustness of the median on
    contaminated ones. The points of each bin are laid out along a cycle axis (padded with NaN)
    and reduced at once."""
    E, T, m = r.shape
    order = np.argsort(b, kind="stable")
    bs = b[order]
    occurrence = np.arange(T) - np.searchsorted(bs, bs, side="left")
    depth = int(occurrence.max()) + 1 if T else 1
    slot = np.empty(T, np.int64)  # each point's place in the (cycle, bin) grid
    slot[order] = occurrence * nb + bs
    pad = np.full((E, depth * nb, m), np.nan)
    # put_along_axis: faster than the equivalent fancy-index assignment (benchmarks/RESULTS.md)
    np.put_along_axis(pad, np.broadcast_to(slot[None, :, None], r.shape), r, axis=1)
    pad = pad.reshape(E, depth, nb, m)
    med = _masked_median(pad, axis=1)
    if scale is None:
        return med
    c = huber_k * np.maximum(scale, 1e-12)[:, None, None, :]
    dev = pad - med[:, None]
    np.clip(dev, -c, c, out=dev)
    ok = ~np.isnan(dev)
    n_ok = ok.sum(axis=1)
    dev[~ok] = 0.0
    step = dev.sum(axis=1) / np.maximum(n_ok, 1)
    return med + step


def _polish_by_pattern(x, bins_all, used, kept, sweeps) -> dict[str, np.ndarray]:
    """Effects {c: (E, nb, m)} of the kept components, each series polished with exactly the
    components it keeps: fitted jointly, overlapping components (day of week and business day)
    would share an effect that masking then takes away from a series keeping only one of them."""
    E, T, m = x.shape
    idx = [calendar.COMPONENTS.index(c) for c in used]
    code = sum((kept[i].astype(np.int64) << k for k, i in enumerate(idx)), np.zeros((E, m), np.int64)).ravel()
    cols = _columns(x)
    flat = {c: np.zeros((E * m, bins_all[c][1])) for c in used}
    for pattern in np.unique(code[code > 0]):
        sel = np.flatnonzero(code == pattern)
        comps = [c for k, c in enumerate(used) if pattern >> k & 1]
        _, eff = _polish(cols[sel], {c: bins_all[c] for c in comps}, comps, sweeps)
        for c in comps:
            flat[c][sel] = eff[c][:, :, 0]
    return {c: np.ascontiguousarray(f.reshape(E, m, -1).transpose(0, 2, 1)) for c, f in flat.items()}


def _columns(x: np.ndarray) -> np.ndarray:
    """(E, T, m) -> (E*m, T, 1): one column per series (entity-major), so any subset of series can
    be fitted on its own."""
    E, T, m = x.shape
    return x.transpose(0, 2, 1).reshape(E * m, T)[:, :, None]


def _polish(x, bins_by, comps, sweeps):
    """Median polish: level (E, m) and effects {c: (E, nb, m)} with zero-median effects."""
    E, T, m = x.shape
    level = np.nan_to_num(_nanmedian(x))
    effects = {c: np.zeros((E, bins_by[c][1], m)) for c in comps}
    if not comps:
        return level, effects
    resid = x - level[:, None, :]
    for sweep in range(sweeps):
        # the Huber step needs a residual scale, known from the second sweep on
        scale = None if sweep == 0 else 1.4826 * np.nan_to_num(_nanmedian(np.abs(resid - _nanmedian(resid)[:, None, :])))
        for c in comps:
            b, nb = bins_by[c]
            step = _bin_medians(resid, b, nb, scale)
            centre = np.nan_to_num(_nanmedian(step))
            step = np.nan_to_num(step - centre[:, None, :])
            effects[c] += step
            resid -= step[:, b, :]
            level += centre
            resid -= centre[:, None, :]
    return level, effects


def _select(x, ts, bins_all, cand, gain, holdout, sweeps) -> np.ndarray:
    """Greedy forward selection of components per series by held-out error; (n_comp, E, m) bool.

    Each series' error is computed only for the sets its own path reaches (a series that keeps
    no time of day never pays for the weekend profile)."""
    E, T, m = x.shape
    cut = ts[0] + (1 - holdout) * (ts[-1] - ts[0])
    tr = ts < cut
    te = ~tr
    kept = np.zeros((len(calendar.COMPONENTS), E, m), bool)
    if tr.sum() < 8 or te.sum() < 4:
        return kept
    n_col = E * m
    xtr, xte = _columns(x[:, tr, :]), _columns(x[:, te, :])

    def error(subset: tuple[str, ...], cols: np.ndarray) -> np.ndarray:
        """Held-out error of the baseline with exactly these components, fitted on the rest."""
        a, b = xtr[cols], xte[cols]
        lvl, eff = _polish(a, {c: (bins_all[c][0][tr], bins_all[c][1]) for c in subset}, list(subset), sweeps)
        s_te = sum((eff[c][:, bins_all[c][0][te], :] for c in subset), np.zeros_like(b))
        s_tr = sum((eff[c][:, bins_all[c][0][tr], :] for c in subset), np.zeros_like(a))
        lvl = _nanmedian(a - s_tr)
        r = b - s_te - lvl[:, None, :]
        # mean (not median) absolute error: a regular effect on few days (rent on the 1st) counts
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nan_to_num(np.nanmean(np.abs(r - _nanmedian(r)[:, None, :]), axis=1))[:, 0]

    k = len(cand)
    # subsets as bitmasks over `cand`; a refinement without what it refines is never a candidate
    subsets = [tuple(c for i, c in enumerate(cand) if mask >> i & 1) for mask in range(2 ** k)]
    valid = [all(calendar.REQUIRES.get(c, c) in sub for c in sub) for sub in subsets]
    errs = np.full((2 ** k, n_col), np.nan)

    def need(masks: np.ndarray, where: np.ndarray) -> None:
        for mask in np.unique(masks[where]):
            cols = np.flatnonzero(where & (masks == mask) & np.isnan(errs[mask]))
            if len(cols):
                errs[mask, cols] = error(subsets[mask], cols) if valid[mask] else np.inf

    cols_all = np.arange(n_col)
    current = np.zeros(n_col, np.int64)
    need(current, np.ones(n_col, bool))
    active = np.ones(n_col, bool)
    for _ in range(k):
        cur_err = errs[current, cols_all]
        best_gain = np.zeros(n_col)
        best = current.copy()
        for i in range(k):
            cand_mask = current | (1 << i)
            grows = active & (cand_mask != current)
            need(cand_mask, grows)
            with np.errstate(divide="ignore", invalid="ignore"):
                g = np.where(grows & (cur_err > 0), 1.0 - errs[cand_mask, cols_all] / cur_err, 0.0)
            better = grows & (g >= gain) & (g > best_gain)
            best_gain = np.where(better, g, best_gain)
            best = np.where(better, cand_mask, best)
        active = best != current
        if not active.any():
            break
        current = best
    for i, c in enumerate(cand):
        kept[calendar.COMPONENTS.index(c)] = ((current >> i) & 1).astype(bool).reshape(E, m)
    return kept
