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
from collections import OrderedDict
from typing import Sequence
import warnings

import numpy as np
import scipy.fft as sfft
from scipy import signal

__all__ = ["STLResult", "MSTLResult", "stl", "mstl"]

# Interior correlations with a span above this use FFT, else an exact
# block-Toeplitz matmul.
_FFT_MIN_SPAN = 192
# Series (or subseries) this short get one dense (n_out x n) weight matrix.
_DENSE_MAX_N = 128
# Chunk size over series, in elements of one (n_obs + 2 * period, chunk) array.
_CHUNK_ELEMENTS = 1 << 17
_MIN_CHUNK_SERIES = 64
# Block-Toeplitz correlation: blocks of B = max(_TOEPLITZ_BLOCK,
# _TOEPLITZ_MIN_GEMM / n_series) outputs.
_TOEPLITZ_BLOCK = 16
_TOEPLITZ_MIN_GEMM = 2048


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
# Banded linear operators along time (axis 0 of a time-major (n, S) array)
# --------------------------------------------------------------------------


class _Corr:
    """Valid correlations of a time-major X with a stack of kernels.

    ``out[k][t, s] = sum_u kern[k, u] * X[t + u, s]`` for t = 0 .. n - span.
    Short kernels: exact direct sums done as block-Toeplitz matmuls (time cut
    in blocks of B outputs, each block one GEMM ``(B, B + span - 1) @ (B +
    span - 1, S)``).  Long kernels: FFT (circular, nfft >= n so the valid part
    never wraps).
    """

    def __init__(self, kern: np.ndarray):
        kern = np.atleast_2d(np.asarray(kern, dtype=np.float64))
        self.kern = kern
        self.nk, self.span = kern.shape
        self.use_fft = self.span >= _FFT_MIN_SPAN
        self._toeplitz: dict = {}
        self._fft: dict = {}

    def _tmat(self, B):
        T = self._toeplitz.get(B)
        if T is None:
            L = B + self.span - 1
            T = np.zeros((self.nk, B, L))
            for o in range(B):
                T[:, o, o:o + self.span] = self.kern
            self._toeplitz[B] = T
        return T

    def __call__(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X (n, S) -> (nk, n - span + 1, S) (or into ``out``)."""
        n, S = X.shape
        m = n - self.span + 1
        if out is None:
            out = np.empty((self.nk, m, S))
        if self.use_fft:
            nfft = sfft.next_fast_len(n, real=True)
            Kf = self._fft.get(nfft)
            if Kf is None:
                Kf = sfft.rfft(self.kern[:, ::-1], nfft, axis=1)[:, :, None]
                self._fft[nfft] = Kf
            Xf = sfft.rfft(X, nfft, axis=0, workers=-1)
            for k in range(self.nk):
                out[k] = sfft.irfft(Xf * Kf[k], nfft, axis=0, workers=-1)[self.span - 1:n]
            return out
        # small blocks waste fewest multiply-adds (B + span - 1 per output
        # instead of span); with few series use bigger blocks (fewer calls)
        B = min(m, max(_TOEPLITZ_BLOCK, -(-_TOEPLITZ_MIN_GEMM // max(S, 1))))
        T = self._tmat(B)
        for t0 in range(0, m, B):
            b = min(B, m - t0)
            Tb = T if b == B else T[:, :b, :b + self.span - 1]
            np.matmul(Tb, X[t0:t0 + b + self.span - 1], out=out[:, t0:t0 + b])
        return out


class _BandedOp:
    """Fixed linear map along time: dense edge blocks + Toeplitz interior.

    ``blocks``: list of (o0, o1, start, W) with ``out[o0:o1] = W @ X[start:start+L]``;
    ``interior``: (o0, o1, kernel) with ``out[o0 + t] = sum_u kernel[u] X[t + u]``.
    """

    def __init__(self, n_in, n_out, blocks, interior):
        self.n_in, self.n_out = n_in, n_out
        self.blocks = [(o0, o1, st, np.ascontiguousarray(W)) for o0, o1, st, W in blocks]
        self.interior = None
        if interior is not None:
            o0, o1, kern = interior
            self.interior = (o0, o1, _Corr(kern))
            assert o1 - o0 == n_in - len(kern) + 1

    @property
    def nbytes(self) -> int:
        return sum(W.nbytes for *_, W in self.blocks)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((self.n_out, X.shape[1]))
        for o0, o1, st, W in self.blocks:
            np.matmul(W, X[st:st + W.shape[1]], out=out[o0:o1])
        if self.interior is not None:
            o0, o1, corr = self.interior
            corr(X, out=out[None, o0:o1])
        return out


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
    """(xs, nleft, nright), 1-based, of every output row, as ``_ess``/``_ss``."""
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
    """Output rows ``[o0, o1)`` sharing the input window ``[start, start + L)``."""

    def __init__(self, o0, o1, start, L, xs, nl, nr, h, deg, rng):
        self.o0, self.o1, self.start, self.L = int(o0), int(o1), int(start), int(L)
        pos = np.arange(start + 1, start + L + 1, dtype=np.float64)  # 1-based
        xs = xs.astype(np.float64)
        inwin = (pos[None, :] >= nl[:, None]) & (pos[None, :] <= nr[:, None])
        K = np.where(inwin, _tricube(np.abs(pos[None, :] - xs[:, None]), h[:, None]), 0.0)
        a = K.sum(axis=1)
        bad = a <= 0
        self.apply_deg = ((h > 0) & (deg > 0))[:, None]
        # effective linear weights, exactly as _est computes them (no rho)
        with np.errstate(divide="ignore", invalid="ignore"):
            w = K / np.where(bad, 1.0, a)[:, None]
            if deg > 0:
                am = (w * pos[None, :]).sum(axis=1)
                b = xs - am
                c = (w * (pos[None, :] - am[:, None]) ** 2).sum(axis=1)
                ok = self.apply_deg[:, 0] & (np.sqrt(c) > 0.001 * rng)
                fac = b / np.where(ok, c, 1.0)
                corr = fac[:, None] * (pos[None, :] - am[:, None]) + 1.0
                w = np.where(ok[:, None], w * corr, w)
        # a missing fit (no positive weight) can only come from robustness
        # weights; flag it with NaN weights so it shows up
        w[bad] = np.nan
        self.weff = w  # (rows, L)
        # kernels for the robust sums, offsets centred on an integer
        # reference near the kernel mean (limits cancellation)
        ref = np.rint((K * pos[None, :]).sum(axis=1) / np.where(bad, 1.0, a))
        ref = np.where(bad, xs, ref)
        D = pos[None, :] - ref[:, None]
        self.x0 = (xs - ref)[:, None]
        r = len(K)
        self.k_rho = np.concatenate([K, K * D, K * D * D]) if deg > 0 else K
        self.k_z = np.ascontiguousarray(self.k_rho[: (2 * r if deg > 0 else r)])


class _RobustState:
    """Per-outer-iteration loess coefficients for fixed robustness weights.

    The degree-1 fit is linear in y: ``ys = alpha * T0 + beta * T1`` with
    ``T_k = sum K d^k rho y`` and ``alpha``, ``beta`` functions of the sums
    ``S_k = sum K d^k rho`` only (see ``_coefs``).
    """

    def __init__(self, blocks, interior, missing):
        self.blocks = blocks  # list of (alpha, beta)
        self.interior = interior  # (alpha, beta) or None
        self.missing = missing  # (n_out, S) bool or None


def _coefs(S0, S1, S2, x0, apply_deg, rng):
    """alpha, beta of the local fit at x0 (coords of the sums); 0 where missing.

    Weighted LS line through the window evaluated at x0:
    ``ys = (T0 (S2 - x0 S1) + T1 (x0 S0 - S1)) / (S0 S2 - S1^2)``, used when
    ``sqrt(c) > 0.001 * rng`` with ``c = (S0 S2 - S1^2) / S0^2`` (as ``_est``),
    else the weighted mean ``T0 / S0``.
    """
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        delta = S0 * S2
        delta -= S1 * S1
        inv = 1.0 / delta
        if np.ndim(x0) == 0 and x0 == 0:
            alpha = S2 * inv
            beta = S1 * inv
            np.negative(beta, out=beta)
        else:
            alpha = (S2 - x0 * S1) * inv
            beta = (x0 * S0 - S1) * inv
        s0sq = S0 * S0
        s0sq *= (0.001 * rng) ** 2
        low = ~(delta > s0sq)  # also true where S0 == 0 (delta == 0)
        if not np.all(apply_deg):
            low |= ~np.asarray(apply_deg)
        if low.any():
            alpha[low] = 1.0 / S0[low]
            beta[low] = 0.0
    miss = ~(S0 > 0)
    if miss.any():
        alpha[miss] = 0.0
        beta[miss] = 0.0
    else:
        miss = None
    return alpha, beta, miss


def _coefs0(S0):
    with np.errstate(divide="ignore"):
        alpha = 1.0 / S0
    miss = ~(S0 > 0)
    if miss.any():
        alpha[miss] = 0.0
    else:
        miss = None
    return alpha, None, miss


class _LoessPlan:
    """Fixed geometry of one loess pass (``_ess``, jump 1) over length n.

    With ``extrapolate`` (cycle-subseries smoothing) the output has n + 2
    rows: the ``_ss`` extrapolations at x = 0 and x = n + 1 around the n fits.
    """

    def __init__(self, n: int, span: int, deg: int, extrapolate: bool):
        self.n, self.span, self.deg = n, span, deg
        self.n_out = n + 2 if extrapolate else n
        self.rng = n - 1.0
        xs, nl, nr = _row_windows(n, span, extrapolate)
        h = np.maximum(xs - nl, nr - xs).astype(np.float64)
        if span > n:
            h += (span - n) // 2
        q = (span - 1) // 2
        self.blocks: list[_Block] = []
        self.interior = None
        if span >= n or n <= _DENSE_MAX_N:
            self.blocks.append(_Block(0, self.n_out, 0, n, xs, nl, nr, h, deg, self.rng))
        else:
            rows = np.arange(self.n_out)
            centred = (xs - nl == q) & (nr - xs == q)
            interior = rows[centred]
            left = rows[(~centred) & (nl == 1)]
            right = rows[(~centred) & (nl != 1) & (nr == n)]
            assert len(left) + len(right) + len(interior) == self.n_out
            for sel, start in ((left, 0), (right, n - span)):
                assert np.all(np.diff(sel) == 1)
                self.blocks.append(_Block(sel[0], sel[-1] + 1, start, span, xs[sel], nl[sel],
                                          nr[sel], h[sel], deg, self.rng))
            o0, o1 = int(interior[0]), int(interior[-1]) + 1
            assert o1 - o0 == len(interior) == n - span + 1
            first = interior[:1]
            blk = _Block(0, 1, nl[o0] - 1, span, xs[first], nl[first], nr[first], h[first],
                         deg, self.rng)
            d = np.arange(-q, q + 1, dtype=np.float64)
            K = _tricube(np.abs(d), np.float64(q))
            self.int_apply_deg = deg > 0 and q > 0
            self.int_support = int(np.max(np.abs(d[K > 0])))
            k_rho = np.stack([K, K * d, K * d * d]) if deg > 0 else K[None, :]
            self.interior = (o0, o1)
            self.int_weff = blk.weff[0]
            self.corr_rho = _Corr(k_rho)
            self.corr_z = _Corr(k_rho[:2] if deg > 0 else k_rho)
        self.op = _BandedOp(
            n, self.n_out, [(b.o0, b.o1, b.start, b.weff) for b in self.blocks],
            None if self.interior is None else (*self.interior, self.int_weff))

    @property
    def nbytes(self) -> int:
        return sum(b.weff.nbytes + b.k_rho.nbytes for b in self.blocks)

    def prepare(self, rho: np.ndarray) -> _RobustState:
        """Coefficients for robustness weights ``rho`` (n, S)."""
        S = rho.shape[1]
        deg1 = self.deg > 0
        blocks = []
        missing = None

        def _miss(o0, o1, m):
            nonlocal missing
            if m is not None:
                if missing is None:
                    missing = np.zeros((self.n_out, S), dtype=bool)
                missing[o0:o1] |= m

        for b in self.blocks:
            r = b.o1 - b.o0
            SR = b.k_rho @ rho[b.start:b.start + b.L]
            if deg1:
                al, be, m = _coefs(SR[:r], SR[r:2 * r], SR[2 * r:], b.x0, b.apply_deg, self.rng)
            else:
                al, be, m = _coefs0(SR)
            blocks.append((al, be))
            _miss(b.o0, b.o1, m)
        interior = None
        if self.interior is not None:
            o0, o1 = self.interior
            SR = self.corr_rho(rho)
            S0 = SR[0]
            if self.corr_rho.use_fft:
                # FFT sums are not exactly 0 where every weight vanishes:
                # find those windows exactly with an integer count
                e, q = self.int_support, (self.span - 1) // 2
                cnt = np.zeros((self.n + 1, S), dtype=np.int64)
                np.cumsum(rho > 0, axis=0, out=cnt[1:])
                lo, hi = q - e, self.n - q - e
                S0[cnt[lo + 2 * e + 1:hi + 2 * e + 1] == cnt[lo:hi]] = 0.0
            if deg1:
                al, be, m = _coefs(S0, SR[1], SR[2], 0.0, self.int_apply_deg, self.rng)
            else:
                al, be, m = _coefs0(S0)
            interior = (al, be)
            _miss(o0, o1, m)
        return _RobustState(blocks, interior, missing)

    def weighted(self, X: np.ndarray, rho: np.ndarray, st: _RobustState) -> np.ndarray:
        """Robust loess of X (n, S) with the coefficients ``st`` of ``rho``.

        Missing fits (``st.missing``) are left at 0 for the caller to fill.
        """
        Z = rho * X
        out = np.empty((self.n_out, X.shape[1]))
        for b, (al, be) in zip(self.blocks, st.blocks):
            TZ = b.k_z @ Z[b.start:b.start + b.L]
            r = b.o1 - b.o0
            ys = np.multiply(al, TZ[:r], out=out[b.o0:b.o1])
            if be is not None:
                ys += be * TZ[r:]
        if self.interior is not None:
            o0, o1 = self.interior
            al, be = st.interior
            TZ = self.corr_z(Z)
            ys = np.multiply(al, TZ[0], out=out[o0:o1])
            if be is not None:
                TZ[1] *= be
                ys += TZ[1]
        return out


# Plans are reused across chunks and iterations of one call; small ones (the
# usual fleet case) are also kept across calls, big ones (long spans: their
# edge matrices are span^2 sized) are dropped when the call returns.
_SHARED_PLANS: "OrderedDict[tuple, object]" = OrderedDict()
_SHARED_MAX_ENTRIES = 32
_SHARED_MAX_BYTES = 16 << 20


class _Plans:
    def __init__(self):
        self.local: dict = {}

    def _get(self, key, build):
        obj = self.local.get(key)
        if obj is None:
            obj = _SHARED_PLANS.get(key)
        if obj is None:
            obj = build()
            if obj.nbytes <= _SHARED_MAX_BYTES:
                _SHARED_PLANS[key] = obj
                while len(_SHARED_PLANS) > _SHARED_MAX_ENTRIES:
                    _SHARED_PLANS.popitem(last=False)
        self.local[key] = obj
        return obj

    def loess(self, n: int, span: int, deg: int, extrapolate: bool) -> _LoessPlan:
        return self._get(("loess", n, span, deg, extrapolate),
                         lambda: _LoessPlan(n, span, deg, extrapolate))

    def season_op(self, n: int, period: int, low_pass: int, low_pass_deg: int) -> _BandedOp:
        return self._get(("season", n, period, low_pass, low_pass_deg),
                         lambda: _season_op(n, period, low_pass, low_pass_deg, self))


def _season_op(n: int, period: int, low_pass: int, low_pass_deg: int, plans: _Plans) -> _BandedOp:
    """Linear map C (n + 2p) -> seasonal (n): ``C[p:p+n] - loess(MA3(MAp(MAp(C))))``.

    The three moving averages (``_fts``) are one correlation with
    ``h = box_p * box_p * box_3`` (length 2p + 1), so the low-pass loess of
    them is a banded operator on C whose rows are the loess rows convolved
    with h.
    """
    h = np.convolve(np.convolve(np.full(period, 1.0 / period), np.full(period, 1.0 / period)),
                    np.full(3, 1.0 / 3.0))
    lp = plans.loess(n, low_pass, low_pass_deg, False)
    blocks = []
    for b in lp.blocks:
        W = _conv_rows(b.weff, h)  # (rows, L + 2p) over C[start : start + L + 2p]
        W = -W
        rows = np.arange(b.o0, b.o1)
        W[rows - b.o0, period + rows - b.start] += 1.0
        blocks.append((b.o0, b.o1, b.start, W))
    interior = None
    if lp.interior is not None:
        o0, o1 = lp.interior
        g = -_conv_rows(lp.int_weff[None, :], h)[0]
        g[period + (low_pass - 1) // 2] += 1.0
        interior = (o0, o1, g)
    return _BandedOp(n + 2 * period, n, blocks, interior)


def _conv_rows(W, h):
    """Full convolution of every row of W with h."""
    if W.shape[1] * len(h) <= 1 << 16:
        out = np.zeros((W.shape[0], W.shape[1] + len(h) - 1))
        for t, ht in enumerate(h):
            out[:, t:t + W.shape[1]] += ht * W
        return out
    return signal.fftconvolve(W, h[None, :], axes=1)


# --------------------------------------------------------------------------
# STL steps (time-major arrays: (n_obs, n_series))
# --------------------------------------------------------------------------


class _SubseriesRobust:
    """Robustness weights of the cycle-subseries and their loess coefficients."""

    def __init__(self, groups):
        self.groups = groups  # list of (rho2d, state)


def _subseries_layout(n, period):
    K, r = divmod(n, period)
    Kc = K + 1 if r else K
    groups = [(r, period, K)]  # j in [r, period): length K
    if r:
        groups.append((0, r, K + 1))  # j in [0, r): length K + 1
    return K, Kc, groups


def _to_cycles(X, period):
    """(n, S) -> (Kc, period, S) view/copy (zero-padded to whole cycles)."""
    n, S = X.shape
    K, Kc, _ = _subseries_layout(n, period)
    if Kc * period == n:
        return X.reshape(Kc, period, S)
    Xp = np.zeros((Kc * period, S))
    Xp[:n] = X
    return Xp.reshape(Kc, period, S)


def _ss_prepare(rho, period, span, deg, plans):
    n, S = rho.shape
    K, Kc, groups = _subseries_layout(n, period)
    R3 = _to_cycles(rho, period)
    out = []
    for j0, j1, k in groups:
        R = R3[:k, j0:j1].reshape(k, (j1 - j0) * S)
        out.append((R, plans.loess(k, span, deg, True).prepare(R)))
    return _SubseriesRobust(out)


def _ss(W, period, span, deg, rob: _SubseriesRobust | None, plans: _Plans):
    """Cycle-subseries smoothing ``_ss``: W (n, S) -> C (n + 2 period, S)."""
    n, S = W.shape
    K, Kc, groups = _subseries_layout(n, period)
    W3 = _to_cycles(W, period)
    out = np.empty((K + 3, period, S))
    for g, (j0, j1, k) in enumerate(groups):
        X = W3[:k, j0:j1].reshape(k, (j1 - j0) * S)
        p = plans.loess(k, span, deg, True)
        if rob is None:
            res = p.op(X)
        else:
            R, st = rob.groups[g]
            res = p.weighted(X, R, st)
            if st.missing is not None:
                m = st.missing
                mid = res[1:k + 1]
                mid[m[1:k + 1]] = X[m[1:k + 1]]
                res[0][m[0]] = res[1][m[0]]
                res[k + 1][m[k + 1]] = res[k][m[k + 1]]
        out[:k + 2, j0:j1] = res.reshape(k + 2, j1 - j0, S)
    return out.reshape((K + 3) * period, S)[:n + 2 * period]


def _rwts(Y, fit):
    """Bisquare robustness weights with 6 * median |residual| (``_rwts``)."""
    R = np.abs(Y - fit)
    n = Y.shape[0]
    m0 = n // 2
    m1 = n - m0 - 1  # == m0 for odd n, m0 - 1 for even n
    part = np.ascontiguousarray(R.T)
    part.partition(m0, axis=1)
    med2 = part[:, m0] + (part[:, m0] if m1 == m0 else part[:, :m0].max(axis=1))
    cmad = 3.0 * med2
    with np.errstate(divide="ignore", invalid="ignore"):
        u = R / cmad
        w = 1.0 - u * u
        w *= w
    w[R <= 0.001 * cmad] = 1.0
    w[R > 0.999 * cmad] = 0.0
    w[:, cmad == 0] = 1.0
    return w


def _stl_chunk(Y, period, seasonal, trend_len, low_pass, sdeg, tdeg, ldeg,
               inner_iter, outer_iter, plans):
    """STL of a time-major chunk Y (n, S); returns (trend, seasonal, weights)."""
    n, S = Y.shape
    season_op = plans.season_op(n, period, low_pass, ldeg)
    tplan = plans.loess(n, trend_len, tdeg, False)
    trend = np.zeros((n, S))
    season = None
    rw = np.ones((n, S))
    rob_ss = rob_t = None
    k = 0
    while True:
        for _ in range(inner_iter):
            C = _ss(Y - trend, period, seasonal, sdeg, rob_ss, plans)
            season = season_op(C)
            D = Y - season
            if rob_t is None:
                trend = tplan.op(D)
            else:
                trend = tplan.weighted(D, rw, rob_t)
                if rob_t.missing is not None:
                    trend[rob_t.missing] = D[rob_t.missing]
        k += 1
        if k > outer_iter:
            break
        rw = _rwts(Y, trend + season)
        rob_ss = _ss_prepare(rw, period, seasonal, sdeg, plans)
        rob_t = tplan.prepare(rw)
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
    # enough series per chunk for efficient matmuls, few enough to stay in cache
    chunk = max(_MIN_CHUNK_SERIES, _CHUNK_ELEMENTS // (n + 2 * period))
    plans = _Plans()
    for s0 in range(0, S, chunk):
        sl = slice(s0, min(S, s0 + chunk))
        # STL is equivariant to adding a constant (it all goes to the trend):
        # decompose the centred series, time-major
        mu = Y[sl].mean(axis=1, keepdims=True)
        Yt = np.ascontiguousarray((Y[sl] - mu).T)
        t, s, w = _stl_chunk(Yt, period, seasonal, trend, low_pass, sdeg, tdeg, ldeg,
                             inner_iter, outer_iter, plans)
        T[sl] = t.T + mu
        Sea[sl] = s.T
        W[sl] = w.T
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
