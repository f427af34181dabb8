"""Batched STL / MSTL against statsmodels, row by row on the same input."""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from statsmodels.tsa.seasonal import MSTL, STL

from anomaly_assets.core import decompose
from anomaly_assets.core.decompose import MSTLResult, STLResult, mstl, stl

NONROBUST_TOL = 1e-8
ROBUST_TOL = 1e-6


def _series(n_series, n, period, seed, *, spikes=False, shift=False, level=50.0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    Y = (
        level
        + rng.normal(0, 10, size=(n_series, 1))
        + 4.0 * np.sin(2 * np.pi * t / period)[None, :] * rng.uniform(0.5, 2, (n_series, 1))
        + 0.02 * t[None, :] * rng.normal(size=(n_series, 1))
        + rng.normal(size=(n_series, n))
    )
    if spikes:
        idx = rng.choice(n, size=max(3, n // 50), replace=False)
        Y[:, idx] += rng.choice([-1, 1], size=len(idx)) * rng.uniform(15, 40, size=len(idx))
    if shift:
        Y[:, n // 2 + 3:] += 12.0
    return Y


def _scale(y):
    return max(float(np.ptp(y)), 1.0)


def _assert_matches(res: STLResult, Y, period, tol, *, stl_kwargs=None, fit_kwargs=None,
                    rows=None, check_weights=True):
    stl_kwargs = stl_kwargs or {}
    fit_kwargs = fit_kwargs or {}
    rows = range(Y.shape[0]) if rows is None else rows
    for i in rows:
        ref = STL(Y[i], period=period, **stl_kwargs).fit(**fit_kwargs)
        bound = tol * _scale(Y[i])
        for name, ours, theirs in (
            ("trend", res.trend[i], ref.trend),
            ("seasonal", res.seasonal[i], ref.seasonal),
            ("resid", res.resid[i], ref.resid),
        ):
            err = np.max(np.abs(ours - theirs))
            assert err <= bound, f"row {i} {name}: max abs diff {err:.3g} > {bound:.3g}"
        if check_weights:
            err = np.max(np.abs(res.weights[i] - ref.weights))
            assert err <= tol, f"row {i} weights: max abs diff {err:.3g} > {tol:.3g}"


# ----------------------------------------------------------------- non-robust

@pytest.mark.parametrize(
    "period,n",
    [
        (7, 70),      # multiple of the period
        (7, 75),      # not a multiple
        (7, 14),      # the minimum, n = 2 * period
        (24, 720),
        (24, 731),
        (24, 48),     # the minimum
        (48, 1000),
        (288, 288 * 4 + 101),  # long spans: FFT interior
    ],
)
def test_stl_nonrobust_matches_statsmodels(period, n):
    Y = _series(3, n, period, seed=period + n)
    res = stl(Y, period)
    assert res.trend.shape == res.seasonal.shape == res.resid.shape == res.weights.shape == Y.shape
    assert np.all(res.weights == 1.0)
    np.testing.assert_allclose(res.trend + res.seasonal + res.resid, Y, rtol=0, atol=1e-9)
    _assert_matches(res, Y, period, NONROBUST_TOL)


def test_stl_period_1440_four_days():
    period, n = 1440, 4 * 1440
    Y = _series(1, n, period, seed=3)
    _assert_matches(stl(Y, period), Y, period, NONROBUST_TOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(seasonal=13, trend=41, low_pass=27),
        dict(seasonal=35, trend=101, low_pass=49),  # seasonal span > subseries length
        dict(seasonal=9, seasonal_deg=0, trend_deg=0),
        dict(seasonal=7, trend_deg=0, low_pass_deg=0),
        dict(seasonal=3, trend=1001),  # trend span > n_obs
    ],
)
def test_stl_nondefault_parameters(kwargs):
    period, n = 24, 24 * 20 + 5
    Y = _series(2, n, period, seed=11)
    res = stl(Y, period, **kwargs)
    _assert_matches(res, Y, period, NONROBUST_TOL, stl_kwargs=kwargs)


def test_stl_inner_iter_nonrobust():
    period, n = 12, 240
    Y = _series(2, n, period, seed=5)
    res = stl(Y, period, inner_iter=3)
    _assert_matches(res, Y, period, NONROBUST_TOL, fit_kwargs=dict(inner_iter=3))


# --------------------------------------------------------------------- robust

@pytest.mark.parametrize(
    "period,n,fit_kwargs",
    [
        (24, 720, {}),  # statsmodels' defaults: inner 2, outer 15
        (24, 731, dict(inner_iter=2, outer_iter=5)),
        (7, 100, dict(inner_iter=1, outer_iter=4)),
        (48, 1000, dict(inner_iter=2, outer_iter=5)),
        (288, 288 * 5 + 17, dict(inner_iter=2, outer_iter=3)),  # FFT interior with weights
    ],
)
def test_stl_robust_matches_statsmodels(period, n, fit_kwargs):
    Y = _series(3, n, period, seed=n, spikes=True, shift=True)
    res = stl(Y, period, robust=True, **fit_kwargs)
    assert np.any(res.weights < 1.0)
    _assert_matches(res, Y, period, ROBUST_TOL, stl_kwargs=dict(robust=True),
                    fit_kwargs=fit_kwargs)


def test_stl_robust_nondefault_parameters():
    period, n = 24, 24 * 15 + 7
    kwargs = dict(seasonal=11, trend=45, low_pass=31, seasonal_deg=0, trend_deg=1,
                  low_pass_deg=0)
    Y = _series(2, n, period, seed=21, spikes=True, shift=True)
    res = stl(Y, period, robust=True, outer_iter=4, **kwargs)
    _assert_matches(res, Y, period, ROBUST_TOL, stl_kwargs=dict(robust=True, **kwargs),
                    fit_kwargs=dict(outer_iter=4))


def test_stl_robust_period_1440():
    period, n = 1440, 4 * 1440
    Y = _series(1, n, period, seed=8, spikes=True, shift=True)
    res = stl(Y, period, robust=True, inner_iter=1, outer_iter=1)
    _assert_matches(res, Y, period, ROBUST_TOL, stl_kwargs=dict(robust=True),
                    fit_kwargs=dict(inner_iter=1, outer_iter=1))


def test_robust_false_with_outer_iter_uses_weights_like_statsmodels():
    # statsmodels applies robustness weights whenever outer_iter > 0
    period, n = 12, 300
    Y = _series(2, n, period, seed=2, spikes=True)
    res = stl(Y, period, outer_iter=2)
    _assert_matches(res, Y, period, ROBUST_TOL, fit_kwargs=dict(outer_iter=2))


# ----------------------------------------------------------- constant / batch

def test_constant_row_in_batch():
    period, n = 24, 24 * 10
    Y = _series(3, n, period, seed=4, spikes=True)
    Y[1] = 7.3
    res = stl(Y, period)
    _assert_matches(res, Y, period, NONROBUST_TOL)
    assert np.all(res.trend[1] == 7.3) and np.all(res.seasonal[1] == 0.0)

    res = stl(Y, period, robust=True, outer_iter=3)
    # statsmodels' robustness weights of a constant series come from
    # floating-point noise in its (zero) residuals; ours are exactly 1
    _assert_matches(res, Y, period, ROBUST_TOL, stl_kwargs=dict(robust=True),
                    fit_kwargs=dict(outer_iter=3), rows=[0, 2])
    _assert_matches(res, Y, period, ROBUST_TOL, stl_kwargs=dict(robust=True),
                    fit_kwargs=dict(outer_iter=3), rows=[1], check_weights=False)
    assert np.all(res.weights[1] == 1.0)


@pytest.mark.parametrize("robust", [False, True])
def test_batch_independence(robust):
    period, n = 24, 24 * 12 + 5
    Y = _series(6, n, period, seed=9, spikes=True, shift=True)
    Y[4] = 0.0
    kw = dict(robust=robust, outer_iter=3 if robust else 0)
    together = stl(Y, period, **kw)
    for i in range(Y.shape[0]):
        alone = stl(Y[i], period, **kw)
        sub = stl(Y[[i, (i + 1) % 6, (i + 3) % 6]], period, **kw)
        for field in ("trend", "seasonal", "resid", "weights"):
            a = getattr(together, field)[i]
            np.testing.assert_allclose(getattr(alone, field)[0], a, rtol=0,
                                       atol=1e-11 * _scale(Y[i]))
            np.testing.assert_allclose(getattr(sub, field)[0], a, rtol=0,
                                       atol=1e-11 * _scale(Y[i]))


def test_chunking_does_not_change_results(monkeypatch):
    period, n = 12, 200
    Y = _series(10, n, period, seed=13, spikes=True)
    ref = stl(Y, period, robust=True, outer_iter=2)
    monkeypatch.setattr(decompose, "_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(decompose, "_MIN_CHUNK_SERIES", 3)
    chunked = stl(Y, period, robust=True, outer_iter=2)
    for field in ("trend", "seasonal", "weights"):
        np.testing.assert_allclose(getattr(chunked, field), getattr(ref, field), rtol=0,
                                   atol=1e-11 * _scale(Y))


def test_one_dimensional_input_and_result_type():
    Y = _series(1, 100, 10, seed=1)[0]
    res = stl(Y, 10)
    assert isinstance(res, STLResult)
    assert res.trend.shape == (1, 100) and res.trend.dtype == np.float64
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.trend = None  # type: ignore[misc]
    _assert_matches(res, Y[None, :], 10, NONROBUST_TOL)


# ------------------------------------------------ loess step vs a literal _est

def _est_reference(y, n, len_, ideg, xs, nleft, nright, userw, rw):
    """Literal transcription of statsmodels' ``_est`` (1-based xs/nleft/nright)."""
    rng_ = n - 1.0
    h = max(xs - nleft, nright - xs)
    if len_ > n:
        h += (len_ - n) // 2
    j = np.arange(nleft - 1, nright)
    r = np.abs(j + 1 - xs).astype(float)
    w = np.where(r <= 0.001 * h, 1.0, (1.0 - (r / h) ** 3) ** 3)
    w = np.where(r <= 0.999 * h, w, 0.0)
    if userw:
        w = w * rw[j]
    a = w.sum()
    if a <= 0:
        return math.nan
    w = w / a
    if h > 0 and ideg > 0:
        a = np.sum(w * (j + 1))
        b = xs - a
        c = np.sum(w * (j + 1 - a) ** 2)
        if math.sqrt(c) > 0.001 * rng_:
            w = w * (b / c * (j + 1 - a) + 1.0)
    return float(np.sum(w * y[j]))


def _ess_reference(y, len_, ideg, rw):
    n = len(y)
    out = np.empty(n)
    nsh = (len_ + 2) // 2
    nleft, nright = 1, min(len_, n)
    for i in range(n):
        if len_ < n and i + 1 > nsh and nright != n:
            nleft += 1
            nright += 1
        v = _est_reference(y, n, len_, ideg, i + 1, nleft, nright, rw is not None, rw)
        out[i] = y[i] if math.isnan(v) else v
    return out


@pytest.mark.parametrize("n,span,deg", [(900, 301, 1), (900, 301, 0), (400, 45, 1),
                                        (60, 7, 1), (30, 61, 1)])
def test_weighted_loess_step_with_vanishing_weights(n, span, deg):
    """Windows whose robustness weights are all 0 (or tiny) are handled like _est."""
    rng = np.random.default_rng(n + span)
    y = rng.normal(size=n) + 5.0
    rho = rng.uniform(0, 1, size=n)
    rho[rng.random(n) < 0.5] = 0.0
    rho[n // 4: n // 4 + span + 20] = 0.0  # windows with no weight at all
    rho[n // 4 + span + 25: n // 4 + span + 28] = 1e-7  # and windows with very little
    plan = decompose._LoessPlan(n, span, deg, False)
    state = plan.prepare(rho[:, None])
    ours = plan.weighted(y[:, None], rho[:, None], state)[:, 0]
    if state.missing is not None:
        miss = state.missing[:, 0]
        ours[miss] = y[miss]
    ref = _ess_reference(y, span, deg, rho)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-8)
    np.testing.assert_allclose(plan.op(y[:, None])[:, 0], _ess_reference(y, span, deg, None),
                               rtol=0, atol=1e-11)


# ------------------------------------------------------------------- validation

@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(period=1), "period"),
        (dict(period=2.0), "period"),
        (dict(period=24, seasonal=8), "seasonal"),
        (dict(period=24, seasonal=1), "seasonal"),
        (dict(period=24, trend=40), "trend"),
        (dict(period=24, trend=23), "trend"),
        (dict(period=24, low_pass=25.0), "low_pass"),
        (dict(period=24, low_pass=23), "low_pass"),
        (dict(period=24, seasonal_deg=2), "seasonal_deg"),
        (dict(period=24, trend_deg=-1), "trend_deg"),
        (dict(period=24, low_pass_deg=1.0), "low_pass_deg"),
        (dict(period=24, inner_iter=0), "inner_iter"),
        (dict(period=24, outer_iter=-1), "outer_iter"),
        (dict(period=100), "n_obs"),
    ],
)
def test_invalid_parameters_raise(kwargs, name):
    Y = _series(2, 150, 24, seed=0)
    with pytest.raises(ValueError, match=name):
        stl(Y, **kwargs)


def test_invalid_input_raises():
    Y = _series(2, 150, 24, seed=0)
    Y[1, 7] = np.nan
    with pytest.raises(ValueError, match="finite"):
        stl(Y, 24)
    with pytest.raises(ValueError, match="Y"):
        stl(np.zeros((2, 3, 100)), 10)


# ------------------------------------------------------------------------ mstl

def _assert_mstl_matches(res: MSTLResult, Y, periods, tol, **ref_kwargs):
    for i in range(Y.shape[0]):
        kw = dict(ref_kwargs)
        if "stl_kwargs" in kw:  # MSTL.fit pops inner_iter/outer_iter from it
            kw["stl_kwargs"] = dict(kw["stl_kwargs"])
        ref = MSTL(Y[i], periods=periods, **kw).fit()
        bound = tol * _scale(Y[i])
        ref_seasonal = np.asarray(ref.seasonal).reshape(Y.shape[1], -1).T
        assert res.seasonal.shape[1:] == ref_seasonal.shape
        for name, ours, theirs in (
            ("trend", res.trend[i], ref.trend),
            ("seasonal", res.seasonal[i], ref_seasonal),
            ("resid", res.resid[i], ref.resid),
            ("weights", res.weights[i], ref.weights),
        ):
            err = np.max(np.abs(ours - theirs))
            assert err <= bound, f"row {i} {name}: max abs diff {err:.3g} > {bound:.3g}"


def _hourly_two_seasons(n_series, weeks, seed):
    n = 24 * 7 * weeks
    t = np.arange(n)
    rng = np.random.default_rng(seed)
    return (
        100
        + 5 * np.sin(2 * np.pi * t / 24)[None, :]
        + 8 * np.sin(2 * np.pi * t / 168)[None, :] * rng.uniform(0.5, 1.5, (n_series, 1))
        + 0.01 * t[None, :]
        + rng.normal(size=(n_series, n))
    )


def test_mstl_matches_statsmodels():
    Y = _hourly_two_seasons(3, 5, seed=0)
    res = mstl(Y, (168, 24))  # sorted ascending like statsmodels
    assert res.periods == (24, 168)
    assert res.seasonal.shape == (3, 2, Y.shape[1])
    _assert_mstl_matches(res, Y, (168, 24), NONROBUST_TOL)


def test_mstl_windows_and_robust():
    Y = _hourly_two_seasons(2, 5, seed=1)
    Y[:, 300] += 40
    res = mstl(Y, (168, 24), windows=(15, 11), robust=True, inner_iter=2, outer_iter=3)
    _assert_mstl_matches(res, Y, (168, 24), ROBUST_TOL, windows=(15, 11),
                         stl_kwargs=dict(robust=True, inner_iter=2, outer_iter=3))


def test_mstl_drops_long_periods_like_statsmodels():
    Y = _hourly_two_seasons(2, 5, seed=2)[:, :400]
    with pytest.warns(UserWarning, match="larger than half"):
        res = mstl(Y, (24, 168, 200))  # 2 * 200 >= 400 is dropped
    assert res.periods == (24, 168)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _assert_mstl_matches(res, Y, (24, 168, 200), NONROBUST_TOL)


def test_mstl_single_period_equals_stl():
    Y = _hourly_two_seasons(2, 3, seed=3)
    res = mstl(Y, 24, iterate=3)  # one period: statsmodels iterates once
    one = stl(Y, 24, seasonal=11)
    np.testing.assert_allclose(res.seasonal[:, 0], one.seasonal, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.trend, one.trend, rtol=0, atol=1e-12)


def test_mstl_invalid_parameters():
    Y = _hourly_two_seasons(1, 2, seed=4)
    with pytest.raises(ValueError, match="windows"):
        mstl(Y, (24, 168), windows=(11,))
    with pytest.raises(ValueError, match="periods"), pytest.warns(UserWarning):
        mstl(Y, (1000,))
    with pytest.raises(ValueError, match="periods"):
        mstl(Y, ())
