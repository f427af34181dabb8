"""A batch scored day by day as the nightly runs would score it: the reference implementation the
fleet path (``core/fleet.py``) is tested against."""

from __future__ import annotations

import numpy as np

from anomaly_assets.core import selection
from anomaly_assets.core.detector import DAY_S, DetectorParams, History, Scored, detect, interval_before


def replay(ts: np.ndarray, value: np.ndarray, params: DetectorParams, holiday: np.ndarray | None = None,
           history_days: float | None = None, names=None) -> Scored:
    """Score a whole batch day by day, feeding each day's outputs and selections back.

    Parameters
    ----------
    ts : ndarray of shape (T,)
        Epoch seconds, in order.
    value : ndarray of shape (E, T, m)
    params : DetectorParams
    holiday : ndarray of bool, shape (T,), optional
    history_days : float, optional
        The history each day reads (default: the reference window and a day).
    names : sequence of str, optional
        The entities' names (E), which spread their reselection days (default: "0", "1", ...).

    Returns
    -------
    Scored
        Every point's answer (the first ones in cold start).
    """
    ts = np.asarray(ts, np.int64)
    value = np.asarray(value, float)
    E, T, m = value.shape
    days = ts // DAY_S
    bounds = np.flatnonzero(np.r_[True, np.diff(days) != 0, True])
    res = Scored(*(np.full((E, T, m), np.nan) for _ in range(7)), np.zeros((E, T, m), bool),
                 np.full((E, T), np.nan), np.full((E, T), np.nan), np.zeros((E, T, m)),
                 driver=np.zeros((E, T), np.int8), span=np.ones((E, T), np.int32))
    keep = history_days or max(params.reference_days, 1) + 1
    kept = selection.Selections(params.select_days) if params.select_days > 1 else None
    names = [str(e) for e in range(E)] if names is None else [str(e) for e in names]
    metrics = [str(j) for j in range(m)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        interval = interval_before(ts[max(0, a - 2 * params.reference_points):a], ts[a:b], params)
        span = max(keep * DAY_S, params.reference_points * interval)
        lo = max(int(np.searchsorted(ts, ts[a] - span)), a - params.max_reference_points)
        lo = max(lo, 0)
        hist = History(ts[lo:a], value[:, lo:a], res.residual[:, lo:a], res.excluded[:, lo:a],
                       holiday[lo:a] if holiday is not None else None)
        prior, given = kept.prior(names, metrics, int(days[a])) if kept is not None else (None, None)
        s = detect(hist, ts[a:b], value[:, a:b], params, holiday[a:b] if holiday is not None else None,
                   kept=prior, kept_given=given)
        selection.record(kept, names, metrics, s, int(days[a]))
        for name in ("expected", "lower", "upper", "level", "seasonal", "residual", "residual_z", "excluded",
                     "p", "p_alert", "rank_by", "driver", "span"):
            getattr(res, name)[:, a:b] = getattr(s, name)
        res.refits += s.refits
        res.statistics = s.statistics or res.statistics
    return res
