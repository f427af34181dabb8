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
Internally the arrays are time-major, ``(n_obs, n_series)``, so that every
fixed weight matrix multiplies the whole batch from the left (one GEMM).

* Without robustness weights every loess is a fixed linear operator: the
  effective weights of each output point (normalised and degree-corrected
  exactly as in ``_est``) are computed once per ``(length, span, degree)``.
  The interior points share one kernel (a correlation along time); the
  ``(span - 1) / 2`` edge points at each end share one window and are one
  small dense matrix (the right edge is the mirror image of the left one).
  The low-pass step (three moving averages, a loess, and the subtraction
  from ``C``) is composed into one banded operator on ``C``.
* With robustness weights ``rho`` (different per series) a degree-1 fit at
  ``x0`` is the weighted least-squares line
  ``(T0 (S2 - x0 S1) + T1 (x0 S0 - S1)) / (S0 S2 - S1^2)`` (``T0 / S0`` when
  the ``c`` guard above fails), with ``S_k = sum K(d) d^k rho`` and
  ``T_k = sum K(d) d^k rho y``: correlations along time of ``rho`` and
  ``rho * y`` with the fixed kernels ``K``, ``d K``, ``d^2 K`` (and the
  edge points: the same sums with their gathered ``(n_edge, span)`` kernel
  matrices, a matmul).  ``rho`` only changes between outer iterations, so the
  ``S_k`` (and the resulting per-point coefficients) are computed once per
  outer iteration and each inner pass needs only ``T0``, ``T1``.
* Interior correlations: spans below ``_FFT_MIN_SPAN`` (192; the measured
  cross-over) are exact direct sums done as block-Toeplitz matmuls (time in
  blocks of B outputs, each block one GEMM with a banded ``(B, B + span - 1)``
  matrix); longer spans use FFT correlation (``scipy.fft``).  Where an FFT
  weight sum is small (the robustness weights leave less than 1% of the
  kernel mass, or none) the sums are recomputed exactly, because FFT
  rounding is relative to the global, not the local, magnitude.
* Cycle-subseries: the detrended series is reshaped (a view) to
  ``(n_cycles, p, n_series)``; subseries have length ``k`` or ``k - 1`` and
  each group is smoothed as one batch of ``n_series * (#subseries)`` columns.
* Series are processed in chunks (``_CHUNK_ELEMENTS``) to stay in cache and
  bound memory; each series is centred by its mean first (STL is equivariant
  to adding a constant; this keeps sums small and makes constant series
  exact).  BLAS is limited to one thread during a call: the GEMMs are small
  and threaded BLAS only adds overhead; scale out over series with processes.

Inputs must be finite: callers fill gaps (interpolate / forward-fill) first.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import signal

try:  # a transitive dependency (scikit-learn); optional here
    from threadpoolctl import threadpool_limits as _threadpool_limits
except ImportError:  # pragma: no cover
    _threadpool_limits = None

__all__ = ["STLResult", "MSTLResult", "stl", "mstl"]

# Interior correlations with a span of at least this use FFT, shorter ones an
# exact block-Toeplitz matmul (measured cross-over, 720 x 170 .. 47000 x 38).
_FFT_MIN_SPAN = 192
# FFT sums below this fraction of the full kernel mass are recomputed directly.
_FFT_GUARD = 1e-2
# Series (or subseries) this short get one dense (n_out x n) weight matrix.
_DENSE_MAX_N = 128
# Chunk size over series, in elements of one (n_obs + 2 * period, chunk) array.
_CHUNK_ELEMENTS = 1 << 17
_MIN_CHUNK_SERIES = 64
# Limit BLAS to one thread during a decomposition (see _blas_single_thread).
_BLAS_SINGLE_THREAD = True
# Block-Toeplitz correlation: blocks of B = max(_TOEPLITZ_BLOCK,
# _TOEPLITZ_MIN_GEMM / n_series) outputs, at most _TOEPLITZ_MAX_BLOCK.
_TOEPLITZ_BLOCK = 16
_TOEPLITZ_MIN_GEMM = 2048
_TOEPLITZ_MAX_BLOCK = 256


@dataclass(frozen=True)
class STLResult:
    """STL components, each ``(n_series, n_obs)`` float64.

    ``weights`` are the robustness weights used in the last inner loop (all
    ones when ``outer_iter == 0``, the default without ``robust``);
    ``resid = Y - trend - seasonal``.
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

    def __init__(self, kern: np.ndarray, dtype=np.float64):
        kern = np.atleast_2d(np.asarray(kern, dtype=np.float64)).astype(dtype, copy=False)
        self.kern = kern
        self.nk, self.span = kern.shape
        self.use_fft = self.span >= _FFT_MIN_SPAN
        self._toeplitz: dict = {}
        self._fft: dict = {}

    def _tmat(self, B):
        T = self._toeplitz.get(B)
        if T is None:
            L = B + self.span - 1
            T = np.zeros((self.nk, B, L), dtype=self.kern.dtype)
            for o in range(B):
                T[:, o, o:o + self.span] = self.kern
            self._toeplitz[B] = T
        return T

    def __call__(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """X (n, S) -> (nk, n - span + 1, S) (or into ``out``)."""
        n, S = X.shape
        m = n - self.span + 1
        if out is None:
            out = np.empty((self.nk, m, S), dtype=X.dtype)
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
        B = min(m, _TOEPLITZ_MAX_BLOCK,
                max(_TOEPLITZ_BLOCK, -(-_TOEPLITZ_MIN_GEMM // max(S, 1))))
        T = self._tmat(B)
        for t0 in range(0, m, B):
            b = min(B, m - t0)
            Tb = T if b == B else T[:, :b, :b + self.span - 1]
            np.matmul(Tb, X[t0:t0 + b + self.span - 1], out=out[:, t0:t0 + b])
        return out


class _BandedOp:
    """Fixed linear map along time: dense edge blocks + Toeplitz interior.

    ``blocks``: list of (o0, o1, start, W, mirrored) with
    ``out[o0:o1] = W @ X[start:start+L]``, or for a mirrored block (the right
    edge, the mirror image of the left one) the same with the window and the
    rows reversed; ``interior``: (o0, o1, kernel) with
    ``out[o0 + t] = sum_u kernel[u] X[t + u]``.
    """

    def __init__(self, n_in, n_out, blocks, interior, dtype=np.float64):
        self.n_in, self.n_out = n_in, n_out
        self.blocks = [(o0, o1, st, W.astype(dtype, copy=False), m) for o0, o1, st, W, m in blocks]
        self._master = (blocks, interior)  # float64, for other precisions
        self.interior = None
        if interior is not None:
            o0, o1, kern = interior
            self.interior = (o0, o1, _Corr(kern, dtype))
            assert o1 - o0 == n_in - len(kern) + 1

    def astype(self, dtype) -> "_BandedOp":
        return _BandedOp(self.n_in, self.n_out, *self._master, dtype=dtype)

    @property
    def nbytes(self) -> int:
        return sum(W.nbytes for _, _, _, W, mirrored in self.blocks if not mirrored)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        out = np.empty((self.n_out, X.shape[1]), dtype=X.dtype)
        for o0, o1, st, W, mirrored in self.blocks:
            Xw = X[st:st + W.shape[1]]
            if mirrored:
                out[o0:o1] = (W @ Xw[::-1])[::-1]
            else:
                np.matmul(W, Xw, out=out[o0:o1])
        if self.interior is not None:
            o0, o1, corr = self.interior
            corr(X, out=out[None, o0:o1])
        return out


# --------------------------------------------------------------------------
# Loess plans
# --------------------------------------------------------------------------


def _tricube(r: np.ndarray, h) -> np.ndarray:
    """Kernel of ``_est``: 1 for r <= .001h, tricube for r <= .999h, else 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        k = r / h
    k *= k * k
    np.subtract(1.0, k, out=k)
    k *= k * k
    k[r <= 0.001 * h] = 1.0
    k[~(r <= 0.999 * h)] = 0.0
    return k


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
    """Loess rows sharing one input window of length L starting at ``start``.

    ``weff``: the effective linear weights (no robustness weights), exactly
    as ``_est`` builds them; ``k_rho`` (built on first use): the kernels K,
    K d, K d^2 whose products with the robustness weights give the sums of
    ``_coefs``, with offsets d from an integer reference near the kernel
    mean (limits cancellation) and the fit abscissa at ``x0`` in them.
    """

    def __init__(self, start, L, xs, nl, nr, h, deg, rng):
        self.start, self.L, self.deg, self.rows = int(start), int(L), deg, len(xs)
        pos = np.arange(start + 1, start + L + 1, dtype=np.float64)  # 1-based
        xs = xs.astype(np.float64)
        R = np.abs(pos[None, :] - xs[:, None])
        K = _tricube(R, h[:, None])
        del R
        K[(pos[None, :] < nl[:, None]) | (pos[None, :] > nr[:, None])] = 0.0
        a = K.sum(axis=1)
        bad = a <= 0
        safe_a = np.where(bad, 1.0, a)
        self.apply_deg = ((h > 0) & (deg > 0))[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            w = K / safe_a[:, None]
            if deg > 0:
                am = w @ pos
                c = np.einsum("ij,ij->i", w, (pos[None, :] - am[:, None]) ** 2)
                ok = self.apply_deg[:, 0] & (np.sqrt(c) > 0.001 * rng)
                fac = np.where(ok, (xs - am) / np.where(ok, c, 1.0), 0.0)
                # w * (fac * (pos - am) + 1)
                w *= fac[:, None] * (pos[None, :] - am[:, None]) + 1.0
        # a missing fit (no positive weight) can only come from robustness
        # weights; flag it with NaN weights so it shows up
        w[bad] = np.nan
        self.weff = w  # (rows, L)
        self.ref = np.where(bad, xs, np.rint((K @ pos) / safe_a))
        self.x0 = (xs - self.ref)[:, None]
        self._pos = pos
        self._K = K
        self._k_rho = None
        self.dtype = np.float64

    def astype(self, dtype) -> "_Block":
        """The same block computing in ``dtype`` (weights built in float64, then rounded)."""
        out = copy.copy(self)
        out.dtype = dtype
        out.weff = self.weff.astype(dtype)
        out.x0 = self.x0.astype(dtype)
        out._k_rho = None if self._k_rho is None else self._k_rho.astype(dtype)
        return out

    @property
    def k_rho(self) -> np.ndarray:
        if self._k_rho is None:
            K = self._K
            if self.deg > 0:
                D = self._pos[None, :] - self.ref[:, None]
                kd = K * D
                self._k_rho = np.concatenate([K, kd, kd * D])
            else:
                self._k_rho = K
            self._k_rho = self._k_rho.astype(self.dtype, copy=False)
            self._K = None
        return self._k_rho

    @property
    def k_z(self) -> np.ndarray:
        return self.k_rho[: 2 * self.rows] if self.deg > 0 else self.k_rho

    @property
    def nbytes(self) -> int:
        return self.weff.nbytes * (4 if self.deg > 0 else 2)


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


def _direct_sums(X, ti, si, kern):
    """Exact ``sum_u kern[:, u] X[t + u, s]`` for the (t, s) pairs given: (nk, len(ti))."""
    out = np.empty((kern.shape[0], len(ti)), dtype=X.dtype)
    u = np.arange(kern.shape[1])
    step = max(1, (1 << 22) // kern.shape[1])
    for i0 in range(0, len(ti), step):
        t, s = ti[i0:i0 + step], si[i0:i0 + step]
        win = X[t[:, None] + u[None, :], s[:, None]]  # (batch, span)
        out[:, i0:i0 + step] = kern @ win.T
    return out


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
    Short series: one dense block.  Otherwise the left edge rows (window
    ``[0, span)``), the right edge rows (the mirror image of the left ones,
    window ``[n - span, n)``) and the interior rows (one kernel, correlation).
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
        # placements: (o0, o1, block, mirrored)
        self.blocks: list[tuple[int, int, _Block, bool]] = []
        self.interior = None
        if span >= n or n <= _DENSE_MAX_N:
            blk = _Block(0, n, xs, nl, nr, h, deg, self.rng)
            self.blocks.append((0, self.n_out, blk, False))
        else:
            rows = np.arange(self.n_out)
            centred = (xs - nl == q) & (nr - xs == q)
            interior = rows[centred]
            left = rows[(~centred) & (nl == 1)]
            right = rows[(~centred) & (nl != 1) & (nr == n)]
            assert len(left) + len(right) + len(interior) == self.n_out
            assert np.all(np.diff(left) == 1) and np.all(np.diff(right) == 1)
            # the right edge is the left edge reflected (x -> n + 1 - x)
            assert np.array_equal(xs[right], n + 1 - xs[left][::-1])
            assert np.array_equal(nl[right], n + 1 - nr[left][::-1])
            assert np.array_equal(h[right], h[left][::-1])
            blk = _Block(0, span, xs[left], nl[left], nr[left], h[left], deg, self.rng)
            self.blocks.append((int(left[0]), int(left[-1]) + 1, blk, False))
            self.blocks.append((int(right[0]), int(right[-1]) + 1, blk, True))
            o0, o1 = int(interior[0]), int(interior[-1]) + 1
            assert o1 - o0 == len(interior) == n - span + 1
            first = interior[:1]
            one = _Block(nl[o0] - 1, span, xs[first], nl[first], nr[first], h[first], deg,
                         self.rng)
            d = np.arange(-q, q + 1, dtype=np.float64)
            K = _tricube(np.abs(d), np.float64(q))
            self.int_apply_deg = deg > 0 and q > 0
            self.int_ksum = float(K.sum())
            k_rho = np.stack([K, K * d, K * d * d]) if deg > 0 else K[None, :]
            self.interior = (o0, o1)
            self.int_weff = one.weff[0]
            self.corr_rho = _Corr(k_rho)
            self.corr_z = _Corr(k_rho[:2] if deg > 0 else k_rho)
        self.op = _BandedOp(
            n, self.n_out,
            [(o0, o1, n - b.L if m else b.start, b.weff, m) for o0, o1, b, m in self.blocks],
            None if self.interior is None else (*self.interior, self.int_weff))

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for _, _, b, m in self.blocks if not m)

    def astype(self, dtype) -> "_LoessPlan":
        """The same plan computing in ``dtype``: its weights built in float64, then rounded."""
        out = copy.copy(self)
        cast = {}
        out.blocks = [(o0, o1, cast.setdefault(id(b), b.astype(dtype)), m) for o0, o1, b, m in self.blocks]
        if self.interior is not None:
            out.int_weff = self.int_weff.astype(dtype)
            out.corr_rho = _Corr(self.corr_rho.kern, dtype)
            out.corr_z = _Corr(self.corr_z.kern, dtype)
        out.op = self.op.astype(dtype)
        return out

    def _window(self, X, b: _Block, mirrored: bool):
        return X[self.n - b.L:][::-1] if mirrored else X[b.start:b.start + b.L]

    def prepare(self, rho: np.ndarray) -> _RobustState:
        """Coefficients for robustness weights ``rho`` (n, S)."""
        S = rho.shape[1]
        deg1 = self.deg > 0
        blocks = []
        missing = None
        for o0, o1, b, mirrored in self.blocks:
            r = b.rows
            SR = b.k_rho @ self._window(rho, b, mirrored)
            if deg1:
                al, be, m = _coefs(SR[:r], SR[r:2 * r], SR[2 * r:], b.x0, b.apply_deg, self.rng)
            else:
                al, be, m = _coefs0(SR)
            blocks.append((al, be))
            if m is not None:
                if missing is None:
                    missing = np.zeros((self.n_out, S), dtype=bool)
                missing[o0:o1] |= m[::-1] if mirrored else m
        interior = None
        if self.interior is not None:
            o0, o1 = self.interior
            SR = self.corr_rho(rho)
            S0 = SR[0]
            fragile = None
            if self.corr_rho.use_fft:
                # FFT sums carry an absolute error of ~1e-16 x the global
                # sums: where the robustness weights leave little local mass
                # (or none: S0 must then be exactly 0), redo the sums directly
                ti, si = np.nonzero(S0 < _FFT_GUARD * self.int_ksum)
                if len(ti):
                    fragile = (ti, si)
                    SR[:, ti, si] = _direct_sums(rho, ti, si, self.corr_rho.kern)
            if deg1:
                al, be, m = _coefs(S0, SR[1], SR[2], 0.0, self.int_apply_deg, self.rng)
            else:
                al, be, m = _coefs0(S0)
            interior = (al, be, fragile)
            if m is not None:
                if missing is None:
                    missing = np.zeros((self.n_out, S), dtype=bool)
                missing[o0:o1] |= m
        return _RobustState(blocks, interior, missing)

    def weighted(self, X: np.ndarray, rho: np.ndarray, st: _RobustState) -> np.ndarray:
        """Robust loess of X (n, S) with the coefficients ``st`` of ``rho``.

        Missing fits (``st.missing``) are left at 0 for the caller to fill.
        """
        Z = rho * X
        out = np.empty((self.n_out, X.shape[1]), dtype=X.dtype)
        for (o0, o1, b, mirrored), (al, be) in zip(self.blocks, st.blocks):
            TZ = b.k_z @ self._window(Z, b, mirrored)
            r = b.rows
            ys = al * TZ[:r]
            if be is not None:
                ys += be * TZ[r:]
            out[o0:o1] = ys[::-1] if mirrored else ys
        if self.interior is not None:
            o0, o1 = self.interior
            al, be, fragile = st.interior
            TZ = self.corr_z(Z)
            if fragile is not None:
                TZ[:, fragile[0], fragile[1]] = _direct_sums(Z, *fragile, self.corr_z.kern)
            ys = np.multiply(al, TZ[0], out=out[o0:o1])
            if be is not None:
                TZ[1] *= be
                ys += TZ[1]
        return out


# Plans are reused across chunks and iterations of one call; small ones (the
# usual fleet case) are also kept across calls, big ones (long spans: their
# edge matrices are span^2 sized) are dropped when the call returns.
_SHARED_PLANS: "OrderedDict[tuple, object]" = OrderedDict()
_SHARED_MAX_BYTES = 8 << 20  # per plan
_SHARED_TOTAL_BYTES = 64 << 20


class _Plans:
    """Plans of one call (see above); races between threads only rebuild.

    Plans are built in float64; a plan of another precision is the float64 plan's weights
    rounded (its own cache entry)."""

    def __init__(self, dtype=np.float64):
        self.local: dict = {}
        self.dtype = np.dtype(dtype)

    def _get(self, key, build):
        obj = self.local.get(key)
        if obj is not None:
            return obj
        obj = _SHARED_PLANS.get(key)
        if obj is None:
            obj = build()
            if obj.nbytes <= _SHARED_MAX_BYTES:
                _SHARED_PLANS[key] = obj
                while (len(_SHARED_PLANS) > 1 and sum(o.nbytes for o in _SHARED_PLANS.values())
                       > _SHARED_TOTAL_BYTES):
                    _SHARED_PLANS.popitem(last=False)
        self.local[key] = obj
        return obj

    def loess(self, n: int, span: int, deg: int, extrapolate: bool, dtype=None) -> _LoessPlan:
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if dtype != np.float64:
            return self._get(("loess", n, span, deg, extrapolate, dtype.str),
                             lambda: self.loess(n, span, deg, extrapolate, np.float64).astype(dtype))
        return self._get(("loess", n, span, deg, extrapolate),
                         lambda: _LoessPlan(n, span, deg, extrapolate))

    def season_op(self, n: int, period: int, low_pass: int, low_pass_deg: int) -> _BandedOp:
        op = self._get(("season", n, period, low_pass, low_pass_deg),
                       lambda: _season_op(n, period, low_pass, low_pass_deg, self))
        if self.dtype == np.float64:
            return op
        return self._get(("season", n, period, low_pass, low_pass_deg, self.dtype.str), lambda: op.astype(self.dtype))


def _season_op(n: int, period: int, low_pass: int, low_pass_deg: int, plans: _Plans) -> _BandedOp:
    """Linear map C (n + 2p) -> seasonal (n): ``C[p:p+n] - loess(MA3(MAp(MAp(C))))``.

    The three moving averages (``_fts``) are one correlation with
    ``h = box_p * box_p * box_3`` (length 2p + 1), so the low-pass loess of
    them is a banded operator on C whose rows are the loess rows convolved
    with h.
    """
    h = np.convolve(np.convolve(np.full(period, 1.0 / period), np.full(period, 1.0 / period)),
                    np.full(3, 1.0 / 3.0))
    lp = plans.loess(n, low_pass, low_pass_deg, False, np.float64)
    blocks = []
    composite = {}
    for o0, o1, b, mirrored in lp.blocks:
        if id(b) not in composite:
            # rows of this (unmirrored) block over C[start : start + L + 2p]
            W = -_conv_rows(b.weff, h)
            rows = np.arange(b.rows)
            W[rows, period + o0 + rows - b.start] += 1.0  # + C[p + i]
            composite[id(b)] = W
        W = composite[id(b)]
        start = n + 2 * period - W.shape[1] if mirrored else b.start
        blocks.append((o0, o1, start, W, mirrored))
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
    Xp = np.zeros((Kc * period, S), dtype=X.dtype)
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
    out = np.empty((K + 3, period, S), dtype=W.dtype)
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
    part = R.T.copy()  # (S, n); partition along the contiguous axis
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
    trend = np.zeros((n, S), dtype=Y.dtype)
    season = None
    rw = np.ones((n, S), dtype=Y.dtype)
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
        outer_iter=None, dtype=np.float64) -> STLResult:
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
    dtype : float64 (default) or float32, the precision of the arithmetic. The loess
        weights are built in float64 either way; float32 sums run about twice as fast
        (half the bytes per GEMM and per elementwise pass) with rounding errors of about
        1e-6 of the series' range instead of 1e-13. The components are returned as float64.

    Returns
    -------
    STLResult with ``trend``, ``seasonal``, ``resid``, ``weights``, each
    ``(n_series, n_obs)``.

    Notes
    -----
    Results agree with statsmodels to rounding (about 1e-13 relative to the
    data range in practice).  Differences: as in statsmodels, any
    ``outer_iter > 0`` applies robustness weights, even with ``robust=False``;
    a constant series gets weights exactly 1 (statsmodels' come from
    floating-point noise in its zero residuals); likewise a fit that leaves
    residuals at rounding level (e.g. ``n_obs == 2 * period``) has
    noise-driven robustness weights in both.  Stricter validation:
    ``n_obs >= 2 * period``, degrees in {0, 1}, ``inner_iter >= 1``.
    """
    Y = _as_2d(Y)
    S, n = Y.shape
    (period, seasonal, trend, low_pass, sdeg, tdeg, ldeg, inner_iter,
     outer_iter) = _resolve_params(n, period, seasonal, trend, low_pass, seasonal_deg,
                                   trend_deg, low_pass_deg, robust, inner_iter, outer_iter)
    dtype = np.dtype(dtype)
    if dtype not in (np.float64, np.float32):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    T = np.empty((S, n))
    Sea = np.empty((S, n))
    W = np.empty((S, n))
    # enough series per chunk for efficient matmuls, few enough to stay in cache
    chunk = max(_MIN_CHUNK_SERIES, _CHUNK_ELEMENTS // (n + 2 * period))
    plans = _Plans(dtype)
    with _blas_single_thread():
        for s0 in range(0, S, chunk):
            _stl_into(Y, slice(s0, min(S, s0 + chunk)), T, Sea, W, plans, period, seasonal,
                      trend, low_pass, sdeg, tdeg, ldeg, inner_iter, outer_iter)
    return STLResult(trend=T, seasonal=Sea, resid=Y - T - Sea, weights=W)


def _blas_single_thread():
    """The matmuls here are many small GEMMs: threaded BLAS only adds overhead
    (and spins badly on a busy machine), so run them single-threaded.  Scale
    out over series with processes instead."""
    if _threadpool_limits is None or not _BLAS_SINGLE_THREAD:  # pragma: no cover
        return contextlib.nullcontext()
    return _threadpool_limits(limits=1, user_api="blas")


def _stl_into(Y, sl, T, Sea, W, plans, period, seasonal, trend, low_pass, sdeg, tdeg, ldeg,
              inner_iter, outer_iter):
    """Decompose rows ``sl`` of Y into T, Sea, W."""
    # STL is equivariant to adding a constant (it all goes to the trend):
    # decompose the centred series, time-major
    Ys = Y[sl]
    mu = Ys.mean(axis=1, keepdims=True)
    const = Ys.min(axis=1) == Ys.max(axis=1)
    mu[const, 0] = Ys[const, 0]  # constant rows become exact zeros
    Yt = np.ascontiguousarray((Ys - mu).T, dtype=plans.dtype)
    t, s, w = _stl_chunk(Yt, period, seasonal, trend, low_pass, sdeg, tdeg, ldeg,
                         inner_iter, outer_iter, plans)
    T[sl] = t.T + mu
    Sea[sl] = s.T
    W[sl] = w.T


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
