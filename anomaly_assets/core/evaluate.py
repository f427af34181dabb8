"""Detection-quality metrics for labeled benchmark data (NAB, SMD, ASD, demo fleet).

Pure numpy / pandas / scikit-learn; no I/O.  Everything takes arrays for *one*
series (one entity) unless stated otherwise and returns plain Python floats or
small frozen dataclasses, so results can be logged as Dagster metadata as is.

Conventions
-----------
* ``y_true`` / ``y_pred`` are 1-D boolean (or 0/1) arrays of equal length.
* ``scores`` are 1-D float arrays; larger means more anomalous.
* Point-wise metrics are *strict*: no point-adjust (the protocol criticised by
  Kim et al., AAAI 2022, that inflates F1 on SMD/SWaT).  Event-level metrics
  are reported separately by :func:`event_metrics`.
* Ratios that are undefined (0 / 0) are reported as ``0.0`` without warnings,
  except where a docstring says otherwise (``best_f1`` and
  ``average_precision`` return NaN when there are no positive labels, because
  a threshold-free score of a series without anomalies is meaningless).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve

__all__ = [
    "BestF1",
    "EventMetrics",
    "PointwiseMetrics",
    "average_precision",
    "best_f1",
    "event_metrics",
    "events",
    "hit_rate",
    "label_mask",
    "pointwise",
]


# --------------------------------------------------------------------------- #
# result types
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class PointwiseMetrics:
    """Point-wise precision / recall / F1 plus the confusion counts."""

    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


@dataclass(frozen=True)
class BestF1:
    """Best point-wise F1 over all score thresholds.

    ``threshold`` is the score cut-off: a point is predicted anomalous when
    ``score >= threshold``.
    """

    f1: float
    threshold: float
    precision: float
    recall: float


@dataclass(frozen=True)
class EventMetrics:
    """Event-level (range) recall and precision.

    ``n_true_events`` / ``n_pred_events`` are the numbers of runs, and
    ``true_events_hit`` / ``pred_events_correct`` the numerators, so results
    of several entities can be micro-averaged by summing counts.
    """

    event_recall: float
    event_precision: float
    event_f1: float
    n_true_events: int
    n_pred_events: int
    true_events_hit: int
    pred_events_correct: int


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _as_bool(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must be boolean or 0/1")
    return arr.astype(bool)


def _as_scores(a: Any, name: str = "scores") -> np.ndarray:
    arr = np.asarray(a, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN/inf)")
    return arr


def _same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"length mismatch: {a.shape[0]} vs {b.shape[0]}")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den > 0 else 0.0


def _f1(p: float, r: float) -> float:
    return 2.0 * p * r / (p + r) if (p + r) > 0 else 0.0


def _to_utc_naive(values: Any) -> pd.DatetimeIndex:
    """Anything datetime-like -> tz-naive UTC DatetimeIndex (ns)."""
    idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    return idx.tz_localize(None).as_unit("ns")


def _to_utc_naive_scalar(value: Any) -> np.datetime64:
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return ts.as_unit("ns").to_datetime64()


# --------------------------------------------------------------------------- #
# labels
# --------------------------------------------------------------------------- #
def label_mask(ts: Any, windows: Iterable[tuple[Any, Any]]) -> np.ndarray:
    """Boolean mask of the timestamps that fall inside any labeled window.

    Parameters
    ----------
    ts : array-like of datetime64
        1-D timestamps of one entity.  Naive values are taken as UTC;
        tz-aware values (e.g. a ``DatetimeIndex`` in UTC) are converted.
        Need not be sorted.
    windows : iterable of (start, end)
        Inclusive windows; bounds may be ISO strings (``"...Z"``),
        ``pd.Timestamp``, ``datetime`` or ``np.datetime64``.

    Returns
    -------
    numpy.ndarray of bool
        Same length as ``ts``; True where ``start <= ts <= end`` for some
        window.

    Raises
    ------
    ValueError
        If a window has ``end < start``.

    Examples
    --------
    >>> ts = np.array(["2026-01-01T00", "2026-01-01T01", "2026-01-01T02"],
    ...               dtype="datetime64[ns]")
    >>> label_mask(ts, [("2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z")]).tolist()
    [False, True, True]
    """
    t64 = _to_utc_naive(ts).to_numpy()
    mask = np.zeros(t64.shape[0], dtype=bool)
    for start, end in windows:
        s = _to_utc_naive_scalar(start)
        e = _to_utc_naive_scalar(end)
        if e < s:
            raise ValueError(f"window end {end!r} is before start {start!r}")
        mask |= (t64 >= s) & (t64 <= e)
    return mask


# --------------------------------------------------------------------------- #
# point-wise
# --------------------------------------------------------------------------- #
def pointwise(y_true: Any, y_pred: Any) -> PointwiseMetrics:
    """Point-wise precision, recall and F1 (no point-adjust).

    Parameters
    ----------
    y_true, y_pred : array-like of bool
        1-D label and prediction arrays of equal length.

    Returns
    -------
    PointwiseMetrics
        ``precision = tp / (tp + fp)``, ``recall = tp / (tp + fn)``,
        ``f1`` their harmonic mean.  Each is ``0.0`` when its denominator is
        zero (no predictions / no positives), never NaN.
    """
    yt = _as_bool(y_true, "y_true")
    yp = _as_bool(y_pred, "y_pred")
    _same_length(yt, yp)
    tp = int(np.count_nonzero(yt & yp))
    fp = int(np.count_nonzero(~yt & yp))
    fn = int(np.count_nonzero(yt & ~yp))
    p = _ratio(tp, tp + fp)
    r = _ratio(tp, tp + fn)
    return PointwiseMetrics(precision=p, recall=r, f1=_f1(p, r), tp=tp, fp=fp, fn=fn)


def best_f1(y_true: Any, scores: Any) -> BestF1:
    """Best point-wise F1 over every threshold of ``scores`` (no point-adjust).

    Thresholds are the distinct score values (sklearn's
    ``precision_recall_curve``); a point is flagged when
    ``score >= threshold``.  This is an *oracle* number (the threshold is
    chosen on the labels), useful to compare scorers independently of
    threshold calibration.

    Parameters
    ----------
    y_true : array-like of bool
        1-D labels.
    scores : array-like of float
        1-D anomaly scores, larger = more anomalous, finite.

    Returns
    -------
    BestF1
        ``f1``, ``threshold``, ``precision``, ``recall`` at the best
        threshold.  Ties in F1 are broken towards the *highest* threshold
        (fewest alarms).  When ``y_true`` has no positives the F1 is
        undefined and every field is NaN.  Empty input also gives NaN.

    Examples
    --------
    >>> r = best_f1([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> round(r.f1, 4), r.threshold
    (0.8, 0.35)
    """
    yt = _as_bool(y_true, "y_true")
    sc = _as_scores(scores)
    _same_length(yt, sc)
    nan = float("nan")
    if yt.size == 0 or not yt.any():
        return BestF1(f1=nan, threshold=nan, precision=nan, recall=nan)
    precision, recall, thresholds = precision_recall_curve(yt, sc)
    # The last (precision=1, recall=0) point has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denom = precision + recall
    f1 = np.divide(
        2.0 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0
    )
    best = float(f1.max())
    # thresholds are increasing -> last tied index = highest threshold
    i = int(np.flatnonzero(f1 >= best - 1e-12)[-1])
    return BestF1(
        f1=float(f1[i]),
        threshold=float(thresholds[i]),
        precision=float(precision[i]),
        recall=float(recall[i]),
    )


def average_precision(y_true: Any, scores: Any) -> float:
    """Area under the precision-recall curve (sklearn ``average_precision_score``).

    Parameters
    ----------
    y_true : array-like of bool
        1-D labels.
    scores : array-like of float
        1-D anomaly scores, larger = more anomalous, finite.

    Returns
    -------
    float
        Average precision in [0, 1]; the chance level is the positive rate.
        NaN (without a warning) when there are no positive labels or the
        input is empty.
    """
    yt = _as_bool(y_true, "y_true")
    sc = _as_scores(scores)
    _same_length(yt, sc)
    if yt.size == 0 or not yt.any():
        return float("nan")
    return float(average_precision_score(yt, sc))


# --------------------------------------------------------------------------- #
# event level
# --------------------------------------------------------------------------- #
def events(mask: Any) -> list[tuple[int, int]]:
    """Runs of consecutive True values.

    Parameters
    ----------
    mask : array-like of bool
        1-D.

    Returns
    -------
    list of (int, int)
        ``(start_idx, end_idx)`` of each run, both inclusive, in order.
        Empty list when there is no True value.

    Examples
    --------
    >>> events([0, 1, 1, 0, 1])
    [(1, 2), (4, 4)]
    """
    m = _as_bool(mask, "mask")
    if m.size == 0:
        return []
    d = np.diff(np.concatenate(([0], m.astype(np.int8), [0])))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return [(int(s), int(e)) for s, e in zip(starts, ends, strict=True)]


def _runs_hit(runs: Sequence[tuple[int, int]], other: np.ndarray) -> int:
    """How many runs contain at least one True of ``other``."""
    if not runs:
        return 0
    cs = np.concatenate(([0], np.cumsum(other, dtype=np.int64)))
    r = np.asarray(runs, dtype=np.int64)
    return int(np.count_nonzero(cs[r[:, 1] + 1] - cs[r[:, 0]] > 0))


def event_metrics(y_true: Any, y_pred: Any) -> EventMetrics:
    """Event-level recall and precision.

    A *true event* is a run of consecutive true labels; a *predicted event* a
    run of consecutive predicted points.

    Parameters
    ----------
    y_true, y_pred : array-like of bool
        1-D, equal length.

    Returns
    -------
    EventMetrics
        ``event_recall``: share of true events with at least one predicted
        point; ``event_precision``: share of predicted events that overlap a
        true event; ``event_f1`` their harmonic mean.  A ratio is ``0.0``
        when its denominator (number of events) is zero; the counts are
        returned so callers can tell "undefined" from "bad" and micro-average
        over entities.
    """
    yt = _as_bool(y_true, "y_true")
    yp = _as_bool(y_pred, "y_pred")
    _same_length(yt, yp)
    true_ev = events(yt)
    pred_ev = events(yp)
    hit = _runs_hit(true_ev, yp)
    correct = _runs_hit(pred_ev, yt)
    r = _ratio(hit, len(true_ev))
    p = _ratio(correct, len(pred_ev))
    return EventMetrics(
        event_recall=r,
        event_precision=p,
        event_f1=_f1(p, r),
        n_true_events=len(true_ev),
        n_pred_events=len(pred_ev),
        true_events_hit=hit,
        pred_events_correct=correct,
    )


# --------------------------------------------------------------------------- #
# root-cause ranking
# --------------------------------------------------------------------------- #
def hit_rate(
    ranked_metrics: Sequence[Sequence[str]],
    true_metrics: Sequence[Iterable[str]],
    p: float = 1.0,
) -> float:
    """HitRate@P% of a root-cause (metric) ranking (Su et al., KDD 2019).

    For every labeled anomalous point *i* with ``g = |true_metrics[i]|`` true
    root-cause metrics, take the top ``k = floor(p * g)`` metrics of
    ``ranked_metrics[i]``; the point scores ``|top_k ∩ true| / g``.  The
    result is the mean over points.  ``p = 1.0`` and ``p = 1.5`` are the
    values reported in the OmniAnomaly paper (HitRate@100% / @150%).

    Parameters
    ----------
    ranked_metrics : sequence of sequence of str
        Per point, metric names ordered most-suspicious first.  May be
        shorter than ``k`` (then all of it is used).
    true_metrics : sequence of iterable of str
        Per point, the set of true root-cause metrics.
    p : float, default 1.0
        Multiplier of the ground-truth size, > 0.

    Returns
    -------
    float
        Mean hit rate in [0, 1].  Points whose true set is empty are skipped;
        NaN if no point remains.

    Raises
    ------
    ValueError
        If the two sequences differ in length or ``p <= 0``.

    Examples
    --------
    >>> hit_rate([["a", "b", "c"]], [{"b"}], p=1.5)   # g=1 -> top 1 = ["a"]
    0.0
    >>> hit_rate([["a", "b", "c"]], [{"a", "c"}], p=1.5)  # g=2 -> top 3
    1.0
    """
    if len(ranked_metrics) != len(true_metrics):
        raise ValueError(
            f"length mismatch: {len(ranked_metrics)} rankings vs "
            f"{len(true_metrics)} label sets"
        )
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    total = 0.0
    n = 0
    for ranked, truth in zip(ranked_metrics, true_metrics, strict=True):
        true_set = set(truth)
        g = len(true_set)
        if g == 0:
            continue
        k = math.floor(p * g + 1e-9)  # guard float error: 0.29 * 100 = 28.999...
        top = set(list(ranked)[:k])
        total += len(top & true_set) / g
        n += 1
    return total / n if n else float("nan")
