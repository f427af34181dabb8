"""Explanations: which metrics drove a flagged point, grouped into families, in one line.

A point's deviation is a vector of per-metric standardized deviations ``d`` (σ-equivalents, see
``core/detector.py``). Each metric's *contribution* is its share of the squared deviation,
``d_j**2 / sum_k d_k**2``: the decomposition of a squared Mahalanobis-style distance (with a
diagonal covariance) into per-metric terms, so contributions are non-negative and sum to 1, and
ranking by contribution is ranking by |z| (the root-cause ranking of Su et al., KDD 2019).

Faults persist and a flagged point is flagged on accumulated evidence (the detector's EWMA), so
the ranking uses each metric's *recent* deviation: the larger of its squared deviation now and a
causal EWMA of it with the detector's fast smoothing coefficient (:func:`smoothed_deviation`,
``rank_by`` in :func:`explain`). A metric that has been off for a while outranks one that wobbles
on this point alone, a spike explains its own point, and the points after it are still explained
by it; where the top metric leads by that memory, the why says so. Measured with root-cause
HitRate at the flagged labeled points (``benchmarks/detector_quality.py``; figures and the
rankings tried in ``benchmarks/RESULTS.md``). Also tried and not kept: a plain EWMA (it dilutes
a lone spike at its own point), calibrating each metric against its own training deviations
(better @150% on SMD, worse @100% on ASD).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly_assets.core.semantics import fmt_pair, infer_kind, name_match

# Inference when a metric is not in the families config: first matching pattern wins.
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("temperature", r"temp|therm|heat|_c$|celsius"),
    ("vibration", r"vib|accel|rms_mm|mm_s"),
    ("voltage", r"volt|_v$"),
    ("current", r"current|amp|_a$"),
    ("power", r"power|watt|kw"),
    ("pressure", r"press|bar$|psi"),
    ("cpu", r"cpu|load"),
    ("memory", r"mem|swap|heap"),
    ("disk", r"disk|io|iops"),
    ("network", r"net|tcp|rx|tx|packet|bandwidth"),
    ("latency", r"latency|duration|response"),
    ("sales", r"sales|units|orders|demand"),
    ("revenue", r"revenue|gmv|amount|price"),
)


def infer_family(metric: str, families: Mapping[str, str] | None = None) -> str:
    """Family of a metric: the configured mapping first, then name patterns, else the name itself."""
    if families and metric in families:
        return families[metric]
    return name_match(metric, _FAMILY_PATTERNS) or metric


def contributions(deviation: np.ndarray) -> np.ndarray:
    """Shares of the squared deviation, shape (n_points, n_metrics); each row sums to 1."""
    sq = np.square(np.nan_to_num(np.asarray(deviation, float)))
    total = sq.sum(axis=1, keepdims=True)
    n = sq.shape[1]
    return np.where(total > 0, sq / np.where(total > 0, total, 1.0), 1.0 / n)


def smoothed_deviation(deviation: np.ndarray, alpha: float) -> np.ndarray:
    """Recent deviation per metric: ``sqrt(max(d**2, EWMA(d**2)))`` along time (causal).

    The larger of the point's own squared deviation and its exponentially weighted recent
    average: a lone spike is explained by itself at its point and is remembered after it.
    ``deviation`` is (n_points, n_metrics) in time order; rows before the points to explain prime
    the average (pass the warm-up too, then slice). Returns the same shape, >= 0.
    """
    from anomaly_assets.core.calibration import ewma

    d2 = np.square(np.nan_to_num(np.asarray(deviation, float)))
    if len(d2) == 0:
        return d2
    return np.sqrt(np.maximum(d2, ewma(d2.T, alpha).T))


def rank_metrics(deviation: np.ndarray) -> np.ndarray:
    """Metric indices by descending |deviation| per point (stable for ties), shape like ``deviation``."""
    return np.argsort(-np.abs(np.nan_to_num(deviation)), axis=1, kind="stable")


def _fmt(actual: float, expected: float, metric: str, unit: str | None,
         kinds: Mapping[str, str] | None) -> tuple[str, str]:
    """Actual and expected in the metric's own terms ($1,110; 12 units; 8.4%), never in
    scientific notation, with the digits that tell them apart."""
    kind = infer_kind(metric, kinds)
    return fmt_pair(actual, expected, kind, unit if kind == "sensor" else None, metric)


def explain(
    entity_id: str,
    ts: np.ndarray,
    metrics: Sequence[str],
    deviation: np.ndarray,
    actual: np.ndarray,
    expected: np.ndarray,
    families: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    rank_by: np.ndarray | None = None,
    kinds: Mapping[str, str] | None = None,
    memory: int | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Rank every metric of every given point and write the one-line why.

    Parameters
    ----------
    ts : (n_points,) timestamps of the flagged points
    deviation, actual, expected : (n_points, n_metrics); ``deviation`` (σ) is what the why shows
    rank_by : (n_points, n_metrics), optional
        Magnitudes to rank and share by (:func:`smoothed_deviation`); default ``|deviation|``.
    kinds : mapping, optional
        Declared metric kinds (``core/semantics.py``): how values are written.
    memory : int, optional
        About how many points ``rank_by`` remembers. Where the top metric leads by its recent
        deviation rather than this point's (``rank_by`` over 1σ above it), the why says so,
        with that deviation (RMS) before the point's own values.

    Returns
    -------
    explanations : DataFrame with entity_id, ts, metric, rank, contribution, family, expected,
        actual — n_points * n_metrics rows.
    why : (n_points,) object array of one-line reasons.
    """
    metrics = list(metrics)
    n, m = deviation.shape
    fam = np.array([infer_family(x, families) for x in metrics], dtype=object)
    magnitude = np.abs(deviation) if rank_by is None else np.asarray(rank_by, float)
    share = contributions(magnitude)
    order = rank_metrics(magnitude)
    rows = np.arange(n)[:, None]
    ranked_share = share[rows, order]
    frame = pd.DataFrame(
        {
            "entity_id": entity_id,
            "ts": np.repeat(ts, m),
            "metric": np.asarray(metrics, dtype=object)[order].ravel(),
            "rank": np.tile(np.arange(1, m + 1, dtype=np.int32), n),
            "contribution": ranked_share.ravel(),
            "family": fam[order].ravel(),
            "expected": expected[rows, order].ravel(),
            "actual": actual[rows, order].ravel(),
        }
    )
    # Family shares per point: sum contributions by family (a small dense matrix product).
    fam_names, fam_idx = np.unique(fam, return_inverse=True)
    onehot = np.zeros((m, len(fam_names)))
    onehot[np.arange(m), fam_idx] = 1.0
    fam_share = share @ onehot
    top = order[:, 0]
    why = np.empty(n, dtype=object)
    units = units or {}
    for i in range(n):  # one string per flagged point: flagged points are few by construction
        j = top[i]
        unit = units.get(metrics[j])
        f = fam_share[i].argmax()
        a, e = _fmt(actual[i, j], expected[i, j], metrics[j], unit, kinds)
        now = f"{a} vs {e} expected ({deviation[i, j]:+.1f}σ)" if np.isfinite(actual[i, j]) else f"missing ({e} expected)"
        if memory and magnitude[i, j] > abs(deviation[i, j]) + 1.0:
            now = f"{magnitude[i, j]:.1f}σ off (rms) over about the last {memory} points, now {now}"
        why[i] = f"{metrics[j]} {now}; {fam_names[f]} family {fam_share[i, f]:.0%} of the deviation"
    return frame, why
