"""From evidence to a probability: how often would normal behaviour be at least this unusual?

Three steps, each a known technique:

1. **Point surprise.** Each evidence statistic is calibrated against its own out-of-sample
   values on the entity's reference with peaks over threshold (Siffer et al., "Anomaly
   Detection in Streams with Extreme Value Theory", KDD 2017): above the reference's
   ``tail_quantile`` the excesses are exponential (the generalized Pareto with shape 0; its
   scale's maximum-likelihood estimate is the mean excess), below it the tail probability falls
   linearly from 1 at zero to ``1 - q`` at the threshold. The surprise is ``s = -ln p``; the
   point's surprise is the largest over statistics less ``ln k`` (Bonferroni over ``k``).
2. **Persistence.** Faults persist, noise does not. The surprise, capped at ``surprise_cap`` so
   one extreme point cannot keep an entity flagged for hours, is smoothed by causal
   exponentially weighted moving averages, one per ``smoothing_alphas``. Under the null a point
   surprise is Exp(1) and an EWMA of independent ones is close to a gamma variable; real
   surprises are autocorrelated, so the gamma's shape and scale are matched to the mean and
   variance of the smoothed surprise over the reference itself (method of moments), which
   carries the autocorrelation into the calibration instead of assuming it away.
3. **Combination.** The scales' probabilities (the unsmoothed one uncapped) are combined by
   Bonferroni, valid however correlated they are; flags are judged on that. For the score the
   unsmoothed surprise is tempered past ``surprise_cap`` (:func:`temper`): a tail fitted on a
   reference of thousands of points, extrapolated to p = 1e-40, claims a precision the reference
   never measured, and would rank one such point above a fault that persists for hours.
   ``anomaly_score = L / (1 + L)`` with ``L = -log10 p`` (0.75 at p = 1e-3, 0.83 at 1e-5): unlike
   ``1 - p`` it keeps ranking the strongest anomalies.

Before an entity has ``min_calibration`` out-of-sample points (its first few dozen), the single
statistic ``max |z|`` is read against a Student t with the degrees of freedom its few reference
points give (a robust z-score whose scale is itself uncertain), Bonferroni over metrics.

All functions take a leading entity axis and time last; nothing here reads or writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter
from scipy.special import gammaincc
from scipy.stats import t as student_t

from anomaly_assets.core.nanstats import nanmedian, nanquantile

_TINY = 1e-300
_TIE = 1e-9  # of max(|threshold|, 1): far above float64 rounding (tests/tolerances.py), far below any real excess


def ewma(x: np.ndarray, alpha: float, initial: np.ndarray | None = None) -> np.ndarray:
    """Causal EWMA along the last axis: ``y_t = a x_t + (1 - a) y_{t-1}``.

    ``initial`` (shape ``x.shape[:-1]``) is ``y_{-1}``; by default ``y_0 = x_0``.
    """
    x = np.asarray(x, float)
    if x.shape[-1] == 0 or alpha >= 1:
        return x.copy()
    y_prev = x[..., :1] if initial is None else np.asarray(initial, float)[..., None]
    y, _ = lfilter([alpha], [1.0, -(1.0 - alpha)], x, axis=-1, zi=(1.0 - alpha) * y_prev)
    return y


@dataclass
class Tail:
    """Peaks-over-threshold tail per entity: threshold ``u`` and exponential scale ``beta`` (E,)."""

    u: np.ndarray
    beta: np.ndarray
    q: float

    def log_sf(self, x: np.ndarray) -> np.ndarray:
        """ln P(evidence >= x) for x of shape (E, T)."""
        u, beta = self.u[:, None], self.beta[:, None]
        p_u = 1.0 - self.q
        above = np.log(p_u) - (x - u) / beta
        below = np.log1p(-(1.0 - p_u) * np.clip(x / np.maximum(u, 1e-12), 0.0, 1.0))
        return np.where(x > u, above, below)

    def isf(self, log_p) -> np.ndarray:
        """The evidence whose tail probability is ``exp(log_p)`` (scalar or per entity), per entity (E,)."""
        p_u = 1.0 - self.q
        log_p = np.asarray(log_p, float)
        return np.where(log_p <= np.log(p_u), self.u + self.beta * (np.log(p_u) - log_p),
                        self.u * (1.0 - np.exp(np.minimum(log_p, 0.0))) / (1.0 - p_u))


def fit_tail(evidence: np.ndarray, q: float, robust: bool = False) -> Tail:
    """Fit a :class:`Tail` per entity to reference evidence (E, n), NaN ignored."""
    ev = np.asarray(evidence, float)
    E = ev.shape[0]
    ok = ~np.isnan(ev)
    has = ok.any(axis=1)
    u = np.zeros(E)
    if has.any():
        u[has] = nanquantile(ev[has], q, axis=1)
    # values within rounding of the threshold (_TIE) are ties, not excesses: evidence rebuilt from
    # stored residuals carries last-digit noise, and tied values of a discrete series counted as
    # excesses of ~0 would collapse the scale (a step of the series then reads as astronomically rare)
    over = ok & (np.nan_to_num(ev) > u[:, None] + _TIE * np.maximum(np.abs(u[:, None]), 1.0))
    if robust:
        # median excess / ln 2: the exponential's scale, not moved by a few huge excesses
        exc = np.where(over, np.nan_to_num(ev) - u[:, None], np.nan)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            scale = np.nan_to_num(nanmedian(exc, axis=1)) / np.log(2.0)
    else:
        excess = np.where(over, np.nan_to_num(ev) - u[:, None], 0.0).sum(axis=1)
        scale = excess / np.maximum(over.sum(axis=1), 1)
    beta = np.maximum.reduce([scale, 1e-3 * np.maximum(np.abs(u), 1e-3), np.full(E, 1e-9)])
    return Tail(u, beta, q)


@dataclass
class Gamma:
    """Gamma law of a smoothed surprise per entity: shape ``k`` and scale ``theta`` (E,)."""

    k: np.ndarray
    theta: np.ndarray

    def log_sf(self, x: np.ndarray) -> np.ndarray:
        k, th = self.k[:, None], self.theta[:, None]
        return np.log(np.maximum(gammaincc(k, np.maximum(x, 0.0) / th), _TINY))


def fit_gamma(smoothed: np.ndarray, alpha: float, min_points: int, persistent: bool = False) -> Gamma:
    """Method-of-moments gamma per entity from reference smoothed surprises (E, n), NaN ignored.

    Entities with fewer than ``min_points`` values get the law of an EWMA of independent Exp(1)
    surprises: mean 1, variance ``alpha / (2 - alpha)``. With ``persistent`` every entity gets
    the law of fully persistent surprises, Exp(1): a smoothed surprise is then read as one
    point's. For references whose surprises are not yet stationary (a series refitted as its
    history doubles scores each block further ahead than its reference's residuals were), where
    moments would understate the smoothed tail.
    """
    s = np.asarray(smoothed, float)
    if persistent:
        return Gamma(np.ones(s.shape[0]), np.ones(s.shape[0]))
    ok = ~np.isnan(s)
    n = ok.sum(axis=1)
    filled = np.where(ok, s, 0.0)
    mean = filled.sum(axis=1) / np.maximum(n, 1)
    var = np.where(ok, (filled - mean[:, None]) ** 2, 0.0).sum(axis=1) / np.maximum(n, 1)
    k0, th0 = (2.0 - alpha) / alpha, alpha / (2.0 - alpha)
    enough = (n >= min_points) & (mean > 1e-6) & (var > 1e-12)
    k = np.where(enough, mean ** 2 / np.where(enough, var, 1.0), k0)
    theta = np.where(enough, var / np.where(enough, mean, 1.0), th0)
    return Gamma(np.maximum(k, 0.05), np.maximum(theta, 1e-6))


def _t_dof(n_ref) -> np.ndarray:
    """The warm-up t's degrees of freedom from ``n_ref`` reference points: ``0.37 (n - 1)``, the
    MAD's efficiency at the normal, at least 1."""
    return np.maximum(0.37 * (np.asarray(n_ref, float) - 1.0), 1.0)


def t_log_sf(z_abs: np.ndarray, n_ref: np.ndarray, n_metrics: int) -> np.ndarray:
    """ln of the warm-up tail probability of ``max_j |z_j|`` (E, T) from ``n_ref`` points (E,).

    Two-sided Student t with ``0.37 (n - 1)`` degrees of freedom (the MAD's efficiency at the
    normal), Bonferroni over the metrics.
    """
    dof = _t_dof(n_ref)[:, None]
    return np.minimum(np.log(2.0 * n_metrics) + student_t.logsf(np.abs(z_abs), dof), 0.0)


def t_sigma(z: np.ndarray, n_ref: np.ndarray) -> np.ndarray:
    """Warm-up σ-equivalent of each metric's z (E, T, m): the normal score as rare as ``|z|`` is
    under the warm-up's Student t (:func:`t_log_sf`, one metric), signed; finite for any z."""
    from scipy.special import ndtri

    dof = _t_dof(n_ref)[:, None, None]
    a = np.abs(np.nan_to_num(z))
    p_one = np.exp(student_t.logsf(a, dof))  # one-sided: the sign is put back below
    u = -ndtri(np.clip(p_one, 1e-300, 0.5))
    return np.where(np.isnan(z), np.nan, np.sign(z) * u)


def t_isf(surprise, n_ref: np.ndarray, n_metrics: int) -> np.ndarray:
    """The |z| whose warm-up tail probability (:func:`t_log_sf`) is ``exp(-surprise)``, per entity."""
    dof = _t_dof(n_ref)
    return student_t.isf(np.exp(-np.asarray(surprise, float)) / (2.0 * n_metrics), dof)


def temper(surprise: np.ndarray, cap: float) -> np.ndarray:
    """A surprise past ``cap`` grows logarithmically: ``cap + ln(1 + s - cap)``.

    Monotone, so rarer stays rarer, and the identity up to ``cap``. Beyond it the exponential tail
    is extrapolated far past any value the reference held, so its surprise says "rarer than
    anything seen", not by how much. For ranking only: a flag is judged on the calibrated surprise.

    Parameters
    ----------
    surprise : ndarray
        ``-ln p`` of each point, any shape.
    cap : float
        Where tempering starts.

    Returns
    -------
    ndarray
        The tempered surprise, same shape.
    """
    s = np.asarray(surprise, float)
    return np.where(s > cap, cap + np.log1p(np.maximum(s - cap, 0.0)), s)


def combine(log_ps: list[np.ndarray]) -> np.ndarray:
    """Bonferroni: ln min(1, k * min_i p_i) over the k time scales."""
    return np.minimum(np.min(log_ps, axis=0) + np.log(len(log_ps)), 0.0)


def score_from_p(p: np.ndarray) -> np.ndarray:
    """anomaly_score in [0, 1) from a tail probability: ``L / (1 + L)``, ``L = -log10 p``."""
    surprise = -np.log10(np.clip(np.asarray(p, float), _TINY, 1.0))
    return surprise / (1.0 + surprise)


def p_from_score(anomaly_score: np.ndarray) -> np.ndarray:
    """The tail probability behind an anomaly_score (inverse of :func:`score_from_p`)."""
    s = np.clip(np.asarray(anomaly_score, float), 0.0, 1.0 - 1e-12)
    return 10.0 ** (-s / (1.0 - s))


def severity(p: np.ndarray, warning_p: float, critical_p: float) -> np.ndarray:
    """normal / warning / critical from tail probabilities."""
    if not 0 < critical_p < warning_p < 1:
        raise ValueError(f"need 0 < critical_p < warning_p < 1, got {critical_p}, {warning_p}")
    p = np.asarray(p, float)
    return np.where(p <= critical_p * (1 + 1e-9), "critical", np.where(p <= warning_p * (1 + 1e-9), "warning", "normal"))
