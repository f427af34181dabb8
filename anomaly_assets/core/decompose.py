"""Fleet-batched STL / MSTL decomposition, numerically equivalent to statsmodels.

This module decomposes many series at once (series along axis 0, time along
axis 1) with no Python loop over series.  It reproduces the arithmetic of
``statsmodels.tsa.seasonal.STL`` (the Cython port ``statsmodels/tsa/stl/_stl.pyx``
of the netlib Fortran) with ``seasonal_jump = trend_jump = low_pass_jump = 1``,
and of ``statsmodels.tsa.seasonal.MSTL`` (without Box-Cox).

Reference
---------
R. B. Cleveland, W. S. Cleveland, J. E. McRae and I. Terpenning (1990),
"STL: A Seasonal-Trend Decomposition Procedure Based on Loess",
Journal of Official Statistics 6(1), 3-73.
K. Bandara, R. J. Hyndman and C. Bergmeir (2021), "MSTL: A Seasonal-Trend
Decomposition Algorithm for Time Series with Multiple Seasonal Patterns",
arXiv:2107.13462.

The algorithm
-------------
``Y`` (n_obs points, period ``p``) is split as ``Y = T + S + R``.  One *inner*
pass (``_onestp``) given the current trend ``T`` and robustness weights ``rho``:

1. cycle-subseries smoothing: the detrended series ``Y - T`` is cut into the
   ``p`` cycle-subseries (points ``j, j+p, j+2p, ...``); each is loess-smoothed
   (span ``seasonal``, degree ``seasonal_deg``, weights ``rho``) and
   extrapolated one step before its start and one after its end, giving
   ``C`` of length ``n_obs + 2p``;
2. low-pass of ``C``: moving averages of lengths ``p``, ``p``, ``3`` (giving
   ``n_obs`` points), then a loess of span ``low_pass`` (degree
   ``low_pass_deg``, never robustness-weighted) -> ``L``;
3. ``S = C[p:p+n_obs] - L``;
4. trend: loess of ``Y - S`` (span ``trend``, degree ``trend_deg``, weights
   ``rho``) -> ``T``.

The inner pass runs ``inner_iter`` times.  With ``outer_iter > 0`` it is
followed by the robustness weights ``rho_t = B(|Y_t - T_t - S_t| / (6 *
median|Y - T - S|))`` with the bisquare ``B(u) = (1 - u^2)^2`` (1 below
``u <= 0.001``, 0 above ``u > 0.999``; all ones if the median is 0), and the
inner loop is rerun with them, ``outer_iter`` times in total.

Every loess fit at abscissa ``x_s`` (1-based), window ``[l, r]`` of the
series of length ``m``, follows ``_est``: ``h = max(x_s - l, r - x_s)``
(plus ``(span - m) // 2`` when the span exceeds the length), raw weights
``w_j = K(|j - x_s|, h) * rho_j`` with the tricube ``K(u, h) = (1 - (u/h)^3)^3``
for ``0.001 h < u <= 0.999 h``, ``1`` for ``u <= 0.001 h`` and ``0`` beyond
``0.999 h``.  With ``W = sum w``, ``a = sum w j / W`` and
``c = sum w (j - a)^2 / W``, the degree-0 fit is ``sum w y / W`` and the
degree-1 fit adds ``(x_s - a) / c * sum w (j - a) y / W`` when
``sqrt(c) > 0.001 (m - 1)``.  ``W = 0`` makes the fit "missing": the loess
then returns the input value (extrapolations return their neighbour).
Windows are centred (``h = (span - 1) / 2``) except for the first and last
``(span - 1) / 2`` points, which share the first (last) ``span`` points as
their window.

How it is vectorised
--------------------
* Without robustness weights each loess is a fixed linear operator: the
  effective weights of every output point (normalised and degree-corrected
  exactly as in ``_est``) are computed once per ``(length, span, degree)``
  and applied to the whole batch: a matmul for the edge points and a
  correlation with one kernel for the interior.
* With robustness weights (different per series) the fit is a ratio of the
  five sums ``S_k = sum K(d) d^k rho`` (k = 0, 1, 2) and
  ``T_k = sum K(d) d^k rho y`` (k = 0, 1), i.e. correlations along time of
  ``rho`` and ``rho * y`` with the fixed kernels ``K(d)``, ``d K(d)``,
  ``d^2 K(d)``.  The edge points (a fixed window each side) are small gathered
  weight matrices applied with a matmul.
* Interior correlations: for short spans (<= 64) an exact direct sum done as
  a block-Toeplitz matmul (time cut in blocks; each block times a banded
  matrix), for long spans an FFT correlation (``scipy.fft``).
* Cycle-subseries: the detrended series is reshaped to
  ``(n_series, n_cycles, p)``; subseries have length ``k`` or ``k - 1``, each
  group is smoothed as one batch of ``n_series * (#subseries)`` rows.
* Series are processed in chunks to bound memory.

Inputs must be finite: callers fill gaps (interpolate / forward-fill) first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence
import warnings

import numpy as np
import scipy.fft as sfft
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["STLResult", "MSTLResult", "stl", "mstl"]

# Interior correlations with a span above this use FFT, else an exact
# block-Toeplitz matmul.
_FFT_MIN_SPAN = 65
# Series (or subseries) this short get one dense (n_out x n) weight matrix.
_DENSE_MAX_N = 128
# Chunk size over series, in elements of one (chunk, n_obs + 2 * period) array.
_CHUNK_ELEMENTS = 1 << 21


@dataclass(frozen=True)
class STLResult:
    """STL components, each ``(n_series, n_obs)`` float64.

    ``weights`` are the robustness weights used in the last inner loop (all
    ones when ``robust=False``); ``resid = Y - trend - seasonal``.
    """

    trend: np.ndarray
    seasonal: np.ndarray
    resid: np.ndarray
    weights: np.ndarray


@dataclass(frozen=True)
class MSTLResult:
    """MSTL components.

    ``trend`` and ``resid`` are ``(n_series, n_obs)``; ``seasonal`` is
    ``(n_series, n_periods, n_obs)`` in the order of ``periods`` (ascending,
    after dropping periods too long for the series).  ``weights`` are the
    robustness weights of the last STL fit.
    """

    trend: np.ndarray
    seasonal: np.ndarray
    resid: np.ndarray
    weights: np.ndarray
    periods: tuple[int, ...]


# --------------------------------------------------------------------------
# Loess plans
# --------------------------------------------------------------------------


def _tricube(r: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Kernel of ``_est``: 1 for r <= .001h, tricube for r <= .999h, else 0."""
    h9 = 0.999 * h
    h1 = 0.001 * h
    with np.errstate(divide="ignore", invalid="ignore"):
        k = (1.0 - (r / h) ** 3) ** 3
    k = np.where(r <= h1, 1.0, k)
    return np.where(r <= h9, k, 0.0)


def _row_windows(n: int, span: int, extrapolate: bool):
    """(xs, nleft, nright) 1-based for every output row, as ``_ess``/``_ss``."""
    xs = np.arange(1, n + 1)
    if span >= n:
        nl = np.ones(n, dtype=np.int64)
        nr = np.full(n, n, dtype=np.int64)
    else:
        nsh = (span + 2) // 2
        nl = 1 + np.clip(xs - nsh, 0, n - span)
        nr = nl + span - 1
    if extrapolate:
        xs = np.concatenate([[0], xs, [n + 1]])
        nl = np.concatenate([[1], nl, [max(1, n - span + 1)]])
        nr = np.concatenate([[min(span, n)], nr, [n]])
    return xs.astype(np.int64), nl.astype(np.int64), nr.astype(np.int64)


class _Block:
    """Output rows sharing one input window ``[start, start + L)`` (0-based)."""

    def __init__(self, out_idx, start, L, xs, nl, nr, h, deg, rng):
        self.out_idx = np.asarray(out_idx, dtype=np.intp)
        self.start = int(start)
        self.L = int(L)
        pos = np.arange(start + 1, start + L + 1, dtype=np.float64)  # 1-based
        xs = xs.astype(np.float64)
        inwin = (pos[None, :] >= nl[:, None]) & (pos[None, :] <= nr[:, None])
        K = _tricube(np.abs(pos[None, :] - xs[:, None]), h[:, None])
        K = np.where(inwin, K, 0.0)
        a = K.sum(axis=1)
        self.bad = a <= 0
        self.apply_deg = (h > 0) & (deg > 0)
        # --- effective linear weights, exactly as _est (non-robust case)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = K / np.where(self.bad, 1.0, a)[:, None]
            if deg > 0:
                am = (w * pos[None, :]).sum(axis=1)
                b = xs - am
                c = (w * (pos[None, :] - am[:, None]) ** 2).sum(axis=1)
                ok = self.apply_deg & (np.sqrt(c) > 0.001 * rng)
                fac = b / np.where(ok, c, 1.0)
                w = np.where(ok[:, None],
                             w * (fac[:, None] * (pos[None, :] - am[:, None]) + 1.0),
                             w)
        w[self.bad] = 0.0
        self.weff_t = np.ascontiguousarray(w.T)  # (L, rows)
        # --- kernels for the robust ratio-of-sums form, offsets centred on an
        # integer reference near the kernel mean (limits cancellation)
        safe_a = np.where(self.bad, 1.0, a)
        ref = np.rint((K * pos[None, :]).sum(axis=1) / safe_a)
        ref = np.where(self.bad, xs, ref)
        D = pos[None, :] - ref[:, None]
        self.x0 = xs - ref
        if deg > 0:
            ks = np.concatenate([K, K * D, K * D * D], axis=0)
        else:
            ks = K
        self.k_rho_t = np.ascontiguousarray(ks.T)  # (L, 3*rows) or (L, rows)
        self.k_z_t = np.ascontiguousarray(ks[: (2 if deg > 0 else 1) * len(K)].T)


class _LoessPlan:
    """All fixed geometry of one loess pass (``_ess``, jump 1) over length n.

    With ``extrapolate`` (cycle-subseries smoothing) the output has n + 2
    points: the ``_ss`` extrapolations at x = 0 and x = n + 1 around the n fits.
    """

    def __init__(self, n: int, span: int, deg: int, extrapolate: bool):
        self.n, self.span, self.deg = n, span, deg
        self.extrapolate = extrapolate
        self.n_out = n + 2 if extrapolate else n
        rng = n - 1.0
        xs, nl, nr = _row_windows(n, span, extrapolate)
        h = np.maximum(xs - nl, nr - xs).astype(np.float64)
        if span > n:
            h += (span - n) // 2
        self.blocks: list[_Block] = []
        self.interior = None
        q = (span - 1) // 2
        rows = np.arange(self.n_out)
        if span >= n or n <= _DENSE_MAX_N or span % 2 == 0:
            self.blocks.append(_Block(rows, 0, n, xs, nl, nr, h, deg, rng))
            return
        centred = (xs - nl == q) & (nr - xs == q)
        interior = rows[centred]
        left = rows[(~centred) & (nl == 1)]
        right = rows[(~centred) & (nl != 1) & (nr == n)]
        assert len(left) + len(right) + len(interior) == self.n_out
        assert np.all(np.diff(interior) == 1)
        for sel, start in ((left, 0), (right, n - span)):
            self.blocks.append(
                _Block(sel, start, span, xs[sel], nl[sel], nr[sel], h[sel], deg, rng))
        # interior: every row has the same kernel over offsets d = -q..q
        o0, o1 = int(interior[0]), int(interior[-1]) + 1
        self.interior = (o0, o1)
        first = interior[:1]
        blk = _Block(first, nl[first[0]] - 1, span, xs[first], nl[first],
                     nr[first], h[first], deg, rng)
        self.int_weff = blk.weff_t[:, 0].copy()  # (span,)
        d = np.arange(-q, q + 1, dtype=np.float64)
        K = _tricube(np.abs(d), np.float64(q))
        self.int_apply_deg = deg > 0 and q > 0
        self.int_support = int(np.max(np.abs(d[K > 0]))) if np.any(K > 0) else -1
        if deg > 0:
            self.int_k_rho = np.stack([K, K * d, K * d * d])
            self.int_k_z = self.int_k_rho[:2]
        else:
            self.int_k_rho = K[None, :]
            self.int_k_z = K[None, :]
        self.use_fft = span >= _FFT_MIN_SPAN
        self._toeplitz_cache: dict = {}
        self._fft_cache: dict = {}

    # ---------------------------------------------------------- correlations
    def _corr(self, X: np.ndarray, kern: np.ndarray, key: str) -> np.ndarray:
        """Valid correlation ``out[:, k, t] = sum_d kern[k, d] X[:, t + d]``."""
        if self.use_fft:
            return self._corr_fft(X, kern, key)
        return self._corr_toeplitz(X, kern, key)

    def _corr_toeplitz(self, X, kern, key):
        S, n = X.shape
        nk, span = kern.shape
        m = n - span + 1
        B = max(2 * span, 64)
        nb = -(-m // B)
        L = B + span - 1
        T = self._toeplitz_cache.get(key)
        if T is None:
            T = np.zeros((L, nk, B))
            for o in range(B):
                T[o:o + span, :, o] = kern.T
            T = T.reshape(L, nk * B)
            self._toeplitz_cache[key] = T
        pad = nb * B + span - 1 - n
        Xp = np.pad(X, ((0, 0), (0, pad))) if pad else X
        win = sliding_window_view(Xp, L, axis=1)[:, ::B]  # (S, nb, L)
        out = win.reshape(S * nb, L) @ T  # (S*nb, nk*B)
        out = out.reshape(S, nb, nk, B).transpose(0, 2, 1, 3).reshape(S, nk, nb * B)
        return out[:, :, :m]

    def _corr_fft(self, X, kern, key):
        S, n = X.shape
        nk, span = kern.shape
        nfft = sfft.next_fast_len(n, real=True)
        Kf = self._fft_cache.get((key, nfft))
        if Kf is None:
            # circular convolution with the reversed kernel; outputs
            # span-1 .. n-1 never wrap because nfft >= n
            Kf = sfft.rfft(kern[:, ::-1], nfft, axis=1)
            self._fft_cache[(key, nfft)] = Kf
        Xf = sfft.rfft(X, nfft, axis=1, workers=-1)
        out = np.empty((S, nk, n - span + 1))
        for k in range(nk):
            out[:, k] = sfft.irfft(Xf * Kf[k], nfft, axis=1, workers=-1)[:, span - 1:n]
        return out

    # ---------------------------------------------------------------- linear
    def linear(self, Y: np.ndarray) -> np.ndarray:
        """Loess without robustness weights (NaN where the fit is missing)."""
        S = Y.shape[0]
        out = np.empty((S, self.n_out))
        for b in self.blocks:
            out[:, b.out_idx] = Y[:, b.start:b.start + b.L] @ b.weff_t
            if b.bad.any():
                out[:, b.out_idx[b.bad]] = np.nan
        if self.interior is not None:
            o0, o1 = self.interior
            out[:, o0:o1] = self._corr(Y, self.int_weff[None, :], "lin")[:, 0]
        return out

    # -------------------------------------------------------------- weighted
    def weighted(self, Y: np.ndarray, rho: np.ndarray) -> np.ndarray:
        """Loess with per-series robustness weights ``rho`` (same shape as Y)."""
        S = Y.shape[0]
        deg1 = self.deg > 0
        mu = Y.mean(axis=1, keepdims=True)
        Z = rho * (Y - mu)  # loess is affine-equivariant: fit Y - mu, add mu
        out = np.empty((S, self.n_out))
        for b in self.blocks:
            r = len(b.out_idx)
            sl = slice(b.start, b.start + b.L)
            SR = rho[:, sl] @ b.k_rho_t
            SZ = Z[:, sl] @ b.k_z_t
            if deg1:
                ys = _combine(SR[:, :r], SR[:, r:2 * r], SR[:, 2 * r:], SZ[:, :r],
                              SZ[:, r:], b.x0[None, :], b.apply_deg[None, :],
                              self.n - 1.0)
            else:
                ys = _combine0(SR, SZ)
            out[:, b.out_idx] = ys
        if self.interior is not None:
            o0, o1 = self.interior
            SR = self._corr(rho, self.int_k_rho, "rho")
            SZ = self._corr(Z, self.int_k_z, "z")
            S0 = SR[:, 0]
            if self.use_fft:
                # FFT sums are not exactly zero where every weight vanishes:
                # find those windows exactly with an integer count
                e = self.int_support
                q = (self.span - 1) // 2
                cnt = np.zeros((S, self.n + 1), dtype=np.int64)
                np.cumsum(rho > 0, axis=1, out=cnt[:, 1:])
                lo, hi = q - e, self.n - q - e  # window [t+q-e, t+q+e]
                nz = cnt[:, lo + 2 * e + 1:hi + 2 * e + 1] - cnt[:, lo:hi]
                S0 = np.where(nz > 0, S0, 0.0)
            if deg1:
                ys = _combine(S0, SR[:, 1], SR[:, 2], SZ[:, 0], SZ[:, 1], 0.0,
                              self.int_apply_deg, self.n - 1.0)
            else:
                ys = _combine0(S0, SZ[:, 0])
            out[:, o0:o1] = ys
        out += mu
        return out


def _combine0(S0, T0):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(S0 > 0, T0 / S0, np.nan)


def _combine(S0, S1, S2, T0, T1, x0, apply_deg, rng):
    """Degree-1 loess value from the five weighted sums (see module doc)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / S0
        a = S1 * inv
        c = S2 * inv - a * a
        m0 = T0 * inv
        m1 = T1 * inv
        ok = apply_deg & (np.sqrt(c) > 0.001 * rng)
        ys = np.where(ok, m0 + (x0 - a) / c * (m1 - a * m0), m0)
    return np.where(S0 > 0, ys, np.nan)


@lru_cache(maxsize=64)
def _plan(n: int, span: int, deg: int, extrapolate: bool) -> _LoessPlan:
    return _LoessPlan(n, span, deg, extrapolate)


def _loess(Y, span, deg, rho=None):
    """``_ess`` (jump 1): missing fits fall back to the input value."""
    p = _plan(Y.shape[1], span, deg, False)
    out = p.linear(Y) if rho is None else p.weighted(Y, rho)
    bad = np.isnan(out)
    if bad.any():
        out[bad] = Y[bad]
    return out


# --------------------------------------------------------------------------
# STL steps
# --------------------------------------------------------------------------


def _subseries_smooth(X, rho, k, span, deg):
    """Smooth rows (length k) and extrapolate: ``_ss`` body -> (rows, k + 2)."""
    p = _plan(k, span, deg, True)
    out = p.linear(X) if rho is None else p.weighted(X, rho)
    mid = out[:, 1:k + 1]
    bad = np.isnan(mid)
    if bad.any():
        mid[bad] = X[bad]
    for e, nb in ((0, 1), (k + 1, k)):
        bad = np.isnan(out[:, e])
        if bad.any():
            out[bad, e] = out[bad, nb]
    return out


def _ss(W, rho, period, span, deg):
    """Cycle-subseries smoothing: (S, n) -> C (S, n + 2 * period)."""
    S, n = W.shape
    K, r = divmod(n, period)
    Kc = K + 1 if r else K
    tot = Kc * period
    Wp = np.zeros((S, tot))
    Wp[:, :n] = W
    Wp = Wp.reshape(S, Kc, period)
    if rho is not None:
        Rp = np.ones((S, tot))
        Rp[:, :n] = rho
        Rp = Rp.reshape(S, Kc, period)
    out = np.empty((S, K + 3, period))
    groups = [(slice(r, period), K)]
    if r:
        groups.append((slice(0, r), K + 1))
    for js, k in groups:
        nj = js.stop - js.start
        X = Wp[:, :k, js].transpose(0, 2, 1).reshape(S * nj, k)
        R = None if rho is None else Rp[:, :k, js].transpose(0, 2, 1).reshape(S * nj, k)
        res = _subseries_smooth(X, R, k, span, deg)
        out[:, :k + 2, js] = res.reshape(S, nj, k + 2).transpose(0, 2, 1)
    return out.reshape(S, (K + 3) * period)[:, :n + 2 * period]


def _ma(x, L):
    """Moving average of length L along axis 1 (``_ma``): n -> n - L + 1."""
    cs = np.cumsum(x, axis=1)
    out = np.empty((x.shape[0], x.shape[1] - L + 1))
    out[:, 0] = cs[:, L - 1]
    np.subtract(cs[:, L:], cs[:, :-L], out=out[:, 1:])
    out /= L
    return out


def _fts(C, period):
    """The three moving averages of the low-pass filter: n + 2p -> n."""
    mu = C.mean(axis=1, keepdims=True)
    x = _ma(_ma(_ma(C - mu, period), period), 3)
    x += mu
    return x


def _rwts(Y, fit):
    """Bisquare robustness weights with 6 * median absolute residual."""
    R = np.abs(Y - fit)
    n = Y.shape[1]
    m0 = n // 2
    m1 = n - m0 - 1
    part = np.partition(R, sorted({m0, m1}), axis=1)
    cmad = 3.0 * (part[:, m0] + part[:, m1])
    cm = cmad[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(R <= 0.001 * cm, 1.0,
                     np.where(R <= 0.999 * cm, (1.0 - (R / cm) ** 2) ** 2, 0.0))
    w[cmad == 0] = 1.0
    return w


def _stl_chunk(Y, period, seasonal, trend_len, low_pass, sdeg, tdeg, ldeg,
               inner_iter, outer_iter):
    S, n = Y.shape
    trend = np.zeros((S, n))
    season = np.zeros((S, n))
    rw = np.ones((S, n))
    use_rw = False
    k = 0
    while True:
        rho = rw if use_rw else None
        for _ in range(inner_iter):
            C = _ss(Y - trend, rho, period, seasonal, sdeg)
            low = _loess(_fts(C, period), low_pass, ldeg)
            season = C[:, period:period + n] - low
            trend = _loess(Y - season, trend_len, tdeg, rho)
        k += 1
        if k > outer_iter:
            break
        rw = _rwts(Y, trend + season)
        use_rw = True
    return trend, season, rw


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _as_2d(Y) -> np.ndarray:
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[None, :]
    if Y.ndim != 2:
        raise ValueError(f"Y must be 1-D or 2-D (n_series, n_obs), got shape {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y must be finite: fill gaps before decomposing")
    return Y


def _resolve_params(n, period, seasonal, trend, low_pass, seasonal_deg, trend_deg,
                    low_pass_deg, robust, inner_iter, outer_iter):
    if not _is_int(period) or period < 2:
        raise ValueError(f"period must be an integer >= 2, got {period!r}")
    period = int(period)
    if not _is_int(seasonal) or seasonal < 3 or seasonal % 2 == 0:
        raise ValueError(f"seasonal must be an odd integer >= 3, got {seasonal!r}")
    if trend is None:
        trend = int(np.ceil(1.5 * period / (1 - 1.5 / seasonal)))
        trend += (trend % 2) == 0
    if not _is_int(trend) or trend < 3 or trend % 2 == 0 or trend <= period:
        raise ValueError(
            f"trend must be an odd integer >= 3 with trend > period ({period}), got {trend!r}")
    if low_pass is None:
        low_pass = period + 1
        low_pass += (low_pass % 2) == 0
    if not _is_int(low_pass) or low_pass < 3 or low_pass % 2 == 0 or low_pass <= period:
        raise ValueError(
            f"low_pass must be an odd integer >= 3 with low_pass > period ({period}), "
            f"got {low_pass!r}")
    for name, val in (("seasonal_deg", seasonal_deg), ("trend_deg", trend_deg),
                      ("low_pass_deg", low_pass_deg)):
        if not _is_int(val) or val not in (0, 1):
            raise ValueError(f"{name} must be 0 or 1, got {val!r}")
    if inner_iter is None:
        inner_iter = 2 if robust else 5  # statsmodels STL.fit defaults
    if outer_iter is None:
        outer_iter = 15 if robust else 0
    if not _is_int(inner_iter) or inner_iter < 1:
        raise ValueError(f"inner_iter must be an integer >= 1, got {inner_iter!r}")
    if not _is_int(outer_iter) or outer_iter < 0:
        raise ValueError(f"outer_iter must be an integer >= 0, got {outer_iter!r}")
    if n < 2 * period:
        raise ValueError(f"n_obs must be >= 2 * period ({2 * period}), got n_obs={n}")
    return (period, int(seasonal), int(trend), int(low_pass), int(seasonal_deg),
            int(trend_deg), int(low_pass_deg), int(inner_iter), int(outer_iter))


def stl(Y, period, *, seasonal=7, trend=None, low_pass=None, seasonal_deg=1,
        trend_deg=1, low_pass_deg=1, robust=False, inner_iter=None,
        outer_iter=None) -> STLResult:
    """STL decomposition of every row of ``Y`` (statsmodels-equivalent).

    Parameters mirror ``statsmodels.tsa.seasonal.STL(...).fit(inner_iter,
    outer_iter)`` with all jumps equal to 1.

    Parameters
    ----------
    Y : array (n_series, n_obs) or (n_obs,)
        Finite values (fill gaps first). 1-D input is one series.
    period : int >= 2, with ``n_obs >= 2 * period``.
    seasonal : odd int >= 3, span of the cycle-subseries loess.
    trend : odd int > period, default smallest odd int >=
        ``1.5 * period / (1 - 1.5 / seasonal)``.
    low_pass : odd int > period, default smallest odd int > period.
    seasonal_deg, trend_deg, low_pass_deg : 0 or 1, loess degrees.
    robust : use bisquare robustness weights in the outer loop.
    inner_iter : default 2 if robust else 5 (statsmodels' ``STL.fit``).
    outer_iter : default 15 if robust else 0.

    Returns
    -------
    STLResult with ``trend``, ``seasonal``, ``resid``, ``weights``, each
    ``(n_series, n_obs)``.
    """
    Y = _as_2d(Y)
    S, n = Y.shape
    (period, seasonal, trend, low_pass, sdeg, tdeg, ldeg, inner_iter,
     outer_iter) = _resolve_params(n, period, seasonal, trend, low_pass, seasonal_deg,
                                   trend_deg, low_pass_deg, robust, inner_iter, outer_iter)
    T = np.empty((S, n))
    Sea = np.empty((S, n))
    W = np.empty((S, n))
    chunk = max(1, _CHUNK_ELEMENTS // (n + 2 * period))
    for s0 in range(0, S, chunk):
        sl = slice(s0, min(S, s0 + chunk))
        T[sl], Sea[sl], W[sl] = _stl_chunk(Y[sl], period, seasonal, trend, low_pass,
                                           sdeg, tdeg, ldeg, inner_iter, outer_iter)
    return STLResult(trend=T, seasonal=Sea, resid=Y - T - Sea, weights=W)


def mstl(Y, periods, *, windows=None, iterate=2, robust=False, **stl_kwargs) -> MSTLResult:
    """MSTL of every row of ``Y``, mirroring ``statsmodels.tsa.seasonal.MSTL``.

    No Box-Cox (``lmbda=None``).  ``periods`` are sorted ascending (with their
    ``windows``); default windows are ``7 + 4 * i`` for i = 1..n_periods;
    periods with ``period >= n_obs / 2`` are dropped with a warning, exactly
    like statsmodels.  With a single period ``iterate`` is 1.  ``stl_kwargs``
    (``trend``, ``low_pass``, degrees, ``inner_iter``, ``outer_iter``) go to
    every STL fit; ``robust`` too.
    """
    Y = _as_2d(Y)
    S, n = Y.shape
    if _is_int(periods):
        periods = (int(periods),)
    periods = tuple(periods)
    if len(periods) == 0:
        raise ValueError("periods must contain at least one period")
    for p in periods:
        if not _is_int(p) or p < 2:
            raise ValueError(f"periods must be integers >= 2, got {periods!r}")
    if windows:
        windows = (windows,) if _is_int(windows) else tuple(windows)
        if len(periods) != len(windows):
            raise ValueError(
                f"periods and windows must have the same length, got {periods!r}, {windows!r}")
        periods, windows = zip(*sorted(zip(periods, windows)))
    else:
        windows = tuple(7 + 4 * i for i in range(1, len(periods) + 1))
        periods = tuple(sorted(periods))
    if any(p >= n / 2 for p in periods):
        warnings.warn("A period(s) is larger than half the length of time series."
                      " Removing these period(s).", UserWarning, stacklevel=2)
        periods = tuple(p for p in periods if p < n / 2)
        windows = windows[:len(periods)]
    if not periods:
        raise ValueError(f"periods: no period is shorter than n_obs / 2 = {n / 2}")
    for key in ("period", "seasonal", "endog"):
        if key in stl_kwargs:
            raise ValueError(f"stl_kwargs may not contain {key!r}")
    iterate = 1 if len(periods) == 1 else iterate
    if not _is_int(iterate) or iterate < 1:
        raise ValueError(f"iterate must be an integer >= 1, got {iterate!r}")
    seasonal = np.zeros((S, len(periods), n))
    deseas = Y
    res = None
    for _ in range(iterate):
        for i, (p, w) in enumerate(zip(periods, windows)):
            deseas = deseas + seasonal[:, i]
            res = stl(deseas, p, seasonal=w, robust=robust, **stl_kwargs)
            seasonal[:, i] = res.seasonal
            deseas = deseas - seasonal[:, i]
    return MSTLResult(trend=res.trend, seasonal=seasonal, resid=deseas - res.trend,
                      weights=res.weights, periods=tuple(int(p) for p in periods))
