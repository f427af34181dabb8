"""Tail probabilities: peaks over threshold, smoothed surprises, scores and severities."""

import numpy as np
import pytest

from anomaly_assets.core import calibration as cal

RNG = np.random.default_rng(1)


def test_exponential_tail_recovers_its_scale_and_inverts():
    ev = RNG.exponential(scale=2.0, size=(3, 20_000))
    tail = cal.fit_tail(ev, 0.9)
    # the excesses over any threshold of an exponential are exponential with the same scale
    np.testing.assert_allclose(tail.beta, 2.0, rtol=0.06)
    x = np.array([[1.0, 5.0, 12.0]] * 3)
    log_p = tail.log_sf(x)
    np.testing.assert_allclose(log_p[:, 2], np.log(np.exp(-12.0 / 2.0)), atol=0.25)  # true sf, on 2k excesses
    back = tail.isf(log_p[:, 2])  # per entity: each tail inverts its own probability
    np.testing.assert_allclose(back, 12.0, rtol=1e-9)


def test_tail_ignores_nan_and_is_monotone():
    ev = RNG.exponential(size=(2, 500))
    ev[0, ::3] = np.nan
    tail = cal.fit_tail(ev, 0.95)
    grid = np.tile(np.linspace(0, 20, 200), (2, 1))
    lp = tail.log_sf(grid)
    assert np.all(np.diff(lp, axis=1) <= 1e-12) and np.all(lp <= 0)


def test_ewma_is_causal_and_starts_from_its_initial_state():
    x = RNG.normal(size=(2, 50))
    y = cal.ewma(x, 0.2)
    np.testing.assert_allclose(y[:, 0], x[:, 0])
    y2 = cal.ewma(np.concatenate([x, RNG.normal(size=(2, 10))], axis=1), 0.2)
    np.testing.assert_allclose(y2[:, :50], y, rtol=1e-12)  # later points change nothing before them
    z = cal.ewma(x[:, 25:], 0.2, initial=y[:, 24])
    np.testing.assert_allclose(z, y[:, 25:], rtol=1e-10, atol=1e-12)


def test_gamma_of_smoothed_independent_surprises_is_calibrated():
    """Moment-matched gamma tails are within a factor of 2.5 of the true ones down to 1e-3 (the
    EWMA of exponentials has a slightly heavier tail than its gamma: conservative about misses,
    at most ~2x the nominal share of flags)."""
    alpha = 0.1
    s = RNG.exponential(size=(1, 400_000))
    sm = cal.ewma(s, alpha)[:, 100:]
    g = cal.fit_gamma(sm, alpha, 50)
    for q in (1e-2, 1e-3):
        thr = np.quantile(sm, 1 - q)
        got = np.exp(g.log_sf(np.array([[thr]])))[0, 0]
        assert q / 2.5 < got < q * 2.5
    few = cal.fit_gamma(sm[:, :10], alpha, 50)  # too few: the independent-Exp(1) law
    np.testing.assert_allclose(few.k * few.theta, 1.0)


def test_scores_and_severities():
    p = np.array([0.5, 1e-3, 1e-5, 1e-20])
    s = cal.score_from_p(p)
    assert np.all(np.diff(s) > 0) and s[1] == pytest.approx(0.75) and s[-1] < 1
    np.testing.assert_allclose(cal.p_from_score(s), p, rtol=1e-9)
    assert list(cal.severity(p, 1e-3, 1e-5)) == ["normal", "warning", "critical", "critical"]
    with pytest.raises(ValueError, match="critical_p"):
        cal.severity(p, 1e-5, 1e-3)


def test_warm_up_t_tail_needs_more_evidence_with_fewer_points():
    z = np.array([[6.0]])
    few = cal.t_log_sf(z, np.array([8]), 4)
    many = cal.t_log_sf(z, np.array([400]), 4)
    assert few[0, 0] > many[0, 0]
    back = cal.t_isf(-many[0, 0], np.array([400]), 4)
    np.testing.assert_allclose(back, 6.0, rtol=1e-6)


def test_a_persistent_law_reads_a_smoothed_surprise_as_one_points():
    sm = cal.ewma(RNG.exponential(size=(2, 400)), 0.1)
    fitted = cal.fit_gamma(sm, 0.1, 50)
    persistent = cal.fit_gamma(sm, 0.1, 50, persistent=True)
    x = np.array([[3.0, 8.0]] * 2)
    np.testing.assert_allclose(persistent.log_sf(x), -x, rtol=1e-9)  # Exp(1): P(s >= x) = e^-x
    # moments of a short, smoothed series give a far lighter tail than that
    assert (fitted.log_sf(x)[:, 1] < -x[:, 1] - 5).all()


def test_ties_at_the_threshold_carrying_rounding_noise_are_not_excesses():
    # a discrete statistic (0, 1 or 2) whose 0.9 quantile is the tied value 1; rebuilt from stored
    # residuals, its ties carry last-digit noise that must not count as excesses of ~0
    n = 20_000
    exact = np.where(RNG.random((1, n)) < 0.5, 0.0, np.where(RNG.random((1, n)) < 0.9, 1.0, 2.0))
    noisy = exact * (1.0 + 1e-15 * RNG.standard_normal((1, n)))
    a, b = cal.fit_tail(exact, 0.9), cal.fit_tail(noisy, 0.9)
    np.testing.assert_allclose(a.beta, 1.0, rtol=1e-9)  # the excesses are the 2s, one step above
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-9)
    np.testing.assert_allclose(b.log_sf(np.array([[3.0]])), a.log_sf(np.array([[3.0]])), rtol=1e-9)


def test_a_surprise_past_the_cap_is_tempered_not_cut():
    s = np.array([0.0, 5.0, 13.8, 13.8 + np.e - 1, 100.0, 1000.0])
    t = cal.temper(s, 13.8)
    np.testing.assert_array_equal(t[:3], s[:3])  # the identity up to the cap
    assert t[3] == pytest.approx(14.8)
    assert np.all(np.diff(t) > 0)  # rarer stays rarer
    assert t[-1] < 21  # e^-1000 reads as about e^-20.7: rarer than anything seen, not by how much
