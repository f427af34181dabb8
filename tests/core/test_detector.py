"""The detector's promises, each on data built to show it."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.detector import DetectorParams, History, detect
from anomaly_assets.core.replay import replay

H, D, MIN = 3_600, 86_400, 60
P = DetectorParams()


def _series(n, step, seed=0, cycle=0.0, noise=1.0, level=100.0):
    rng = np.random.default_rng(seed)
    ts = 1_760_000_000 // D * D + np.arange(n) * step
    x = level + cycle * np.sin(2 * np.pi * (ts % D) / D) + rng.normal(scale=noise, size=n)
    return ts, x


def _flags(r, params=P):
    return np.nan_to_num(r.p_alert, nan=1.0) <= params.warning_p


def test_a_point_never_depends_on_later_data():
    ts, x = _series(24 * 30, H, cycle=5)
    full = replay(ts, x[None, :, None], P)
    cut = 24 * 20 + 7
    altered = x.copy()
    altered[cut:] += np.random.default_rng(9).normal(scale=20, size=len(x) - cut)  # a different future
    other = replay(ts, altered[None, :, None], P)
    np.testing.assert_array_equal(full.p[:, :cut], other.p[:, :cut])
    np.testing.assert_array_equal(full.expected[:, :cut], other.expected[:, :cut])


def test_cold_start_is_counted_in_points():
    ts, x = _series(180, MIN)  # a new device on 1-minute data
    r = replay(ts, x[None, :, None], P)
    scored = ~np.isnan(r.p[0])
    assert not scored[:P.min_points].any() and scored[P.min_points:60].all()  # scored within its first hour
    ts, x = _series(30, D)  # daily data
    r = replay(ts, x[None, :, None], P)
    assert np.isnan(r.p[0, :7]).all() and not np.isnan(r.p[0, 8:]).any()  # from its second week


def test_a_test_rig_run_leaves_its_warm_up():
    # a 20-minute run at 1 Hz keeps no calendar component: its young residuals are those of its
    # first half, so it is calibrated against its own tails long before it ends
    ts, x = _series(1200, 1, seed=6)
    r = replay(ts, np.stack([x, x[::-1]], axis=-1)[None], P)
    assert not r.refits[-1].warm.any()
    assert _flags(r)[0, 100:].mean() < 0.01


SKAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "skab"


@pytest.mark.skipif(not SKAB.exists(), reason="needs ../shared/data/skab")
@pytest.mark.parametrize("run", ["other-3", "other-4"])
def test_a_test_rig_run_is_quiet_before_its_fault(run):
    # real water-pump runs (SKAB): before the fault the 8 sensors drift and two-level gauges flip;
    # read in the warm-up's t law, or with smoothed laws fitted on a doubling history, a third of
    # these points were flagged
    d = pd.read_csv(SKAB / f"{run}.csv")
    label = pd.read_csv(SKAB / "labels.csv").set_index("entity_id").loc[run]
    seconds = lambda t: (pd.to_datetime(t) - pd.Timestamp(0)) // pd.Timedelta("1s")  # noqa: E731
    ts = seconds(d.timestamp).to_numpy()
    onset = int(np.searchsorted(ts, seconds(label.start)))
    r = replay(ts, d.drop(columns=["entity_id", "timestamp"]).to_numpy(float)[None], P)
    assert _flags(r)[0, :onset].mean() < 0.12
    assert _flags(r)[0, onset:].mean() > 0.3


def test_white_noise_flags_about_nothing():
    ts, x = _series(24 * 60, H, seed=3)
    r = replay(ts, np.stack([x, x[::-1]], axis=-1)[None], P)
    share = _flags(r)[0, 24 * 7:].mean()
    assert share < 0.01


def test_a_daily_cycle_is_learnt_not_flagged():
    ts, x = _series(24 * 40, H, seed=4, cycle=20, noise=1)
    r = replay(ts, x[None, :, None], P)
    assert _flags(r)[0, 24 * 7:].mean() < 0.01
    comps = r.refits[-1].baseline.components_of(0, 0)
    assert "day" in comps
    # a 20-minute test-rig run at 1 Hz has no cycle to find
    ts2, x2 = _series(1200, 1, seed=5)
    r2 = replay(ts2, x2[None, :, None], P)
    assert r2.refits[-1].baseline.components_of(0, 0) == []


def test_a_sustained_drop_stays_anomalous_until_it_is_accepted():
    ts, x = _series(24 * 40, H, seed=6, noise=1, level=100)
    start = 24 * 25 + 5
    x[start:] -= 15  # a lasting drop
    r = replay(ts, x[None, :, None], P)
    f = _flags(r)[0]
    assert f[start + 2:start + 20].mean() > 0.9  # measured against the level before it
    assert r.expected[0, start + 20, 0] == pytest.approx(100, abs=1.0)
    # a day later the new level is the normal: flags stop within a second day
    assert f[start + 2 * 24:].mean() < 0.05
    assert r.expected[0, -1, 0] == pytest.approx(85, abs=1.0)


def test_a_lone_extreme_point_does_not_outrank_a_fault_that_persists():
    # the extrapolated tail of one point 200 σ out would read p ~ 1e-35, above any fault that lasts
    ts, a = _series(24 * 35, H, seed=3, cycle=5)
    b = 50 + np.random.default_rng(4).normal(size=len(ts))
    x = np.stack([a, b], axis=1)
    spike, shift = 24 * 28 + 3, 24 * 31 + 2
    young = 24 * 12 + 3  # in probation (its reference spans under 21 days): a flag needs p <= 1e-8
    x[young, 1] += 40
    x[spike, 1] += 200
    x[shift:shift + 12, 0] += 5  # half a day, 5 σ off
    r = replay(ts, x[None], P)
    assert (r.p[0, shift + 9:shift + 12] < r.p[0, spike] / 100).all()
    # tempering ranks; flags are judged on the calibrated p: both spikes stay critical
    assert r.p_alert[0, spike] <= P.critical_p and r.p_alert[0, young] <= P.critical_p


def test_a_short_plant_wide_dip_does_not_keep_devices_flagged():
    ts, x = _series(24 * 30, H, seed=7, cycle=5)
    dip = 24 * 22 + 10
    x[dip] -= 60  # one hour
    r = replay(ts, x[None, :, None], P)
    f = _flags(r)[0]
    assert f[dip]
    assert f[dip + 4:dip + 24].sum() == 0  # quiet again within hours, not until midnight


def test_non_negative_metric_never_expects_a_negative_value():
    ts, x = _series(24 * 30, H, seed=8, level=2, noise=1)
    x = np.clip(x, 0, None)
    x[24 * 20:] = 0  # the metric drops to zero and stays there
    r = replay(ts, x[None, :, None], P)
    ok = ~np.isnan(r.expected[0, :, 0])
    assert (r.expected[0, ok, 0] >= 0).all() and (r.lower[0, ok, 0] >= 0).all()


def test_constant_series_flags_a_change_with_a_readable_deviation():
    ts = 1_760_000_000 // D * D + np.arange(24 * 20) * H
    x = np.full(len(ts), 4.65)  # a price
    x[24 * 15] = 4.99
    r = replay(ts, x[None, :, None], P)
    assert _flags(r)[0, 24 * 15]
    z = r.residual_z[0, 24 * 15, 0]
    assert np.isfinite(z) and 1 < abs(z) < 1e3
    assert not _flags(r)[0, 24 * 4:24 * 15].any()


def test_a_young_series_that_never_moved_shows_a_finite_deviation():
    # in the warm-up the scale of a constant series is its floor; the deviation printed is the
    # warm-up's σ-equivalent, not the raw ratio to that floor
    ts = 1_760_000_000 // D * D + np.arange(40) * H
    x = np.zeros(len(ts))
    x[30] = 2.0
    r = replay(ts, x[None, :, None], P)
    z = r.residual_z[0, 30, 0]
    assert _flags(r)[0, 30] and np.isfinite(z) and 5 < z < 40
    # the explanations' ranking is in the same σ-equivalents, not the raw ratio to the floor
    assert r.rank_by[0, 30, 0] == pytest.approx(abs(z), rel=1e-9)
    assert (r.rank_by[0, 30:, 0] < 40).all()


def test_probation_ends_when_the_reference_is_as_long_as_it_gets():
    # on fast data the reference is capped in points before it spans `probation_days`: a series
    # whose reference is full leaves probation (it would never see more), one still growing does not
    ts, x = _series(4 * 24 * 60, MIN, cycle=3)
    capped = DetectorParams(max_reference_points=2_000)  # 1.4 days of 1-minute points
    last = replay(ts, x[None, :, None], capped).refits[-1]
    assert not last.warm[0] and not last.probation[0]
    assert replay(ts, x[None, :, None], P).refits[-1].probation[0]  # 4 days < 21, reference not full


def test_recurrent_runs_lets_what_recurs_back_into_the_reference():
    # isolated spikes every 30 h: flagged at first, then part of the series' normal
    rng = np.random.default_rng(12)
    ts = 1_760_000_000 // D * D + np.arange(24 * 30) * H
    x = 10 + rng.normal(0, 0.5, len(ts))
    x[::30] += 6.0
    late = slice(24 * 22, None)
    kept_out = replay(ts, x[None, :, None], P.__class__(**{**P.__dict__, "recurrent_runs": 0}))
    back_in = replay(ts, x[None, :, None], P.__class__(**{**P.__dict__, "recurrent_runs": 12}))
    assert _flags(back_in)[0, late].sum() < _flags(kept_out)[0, late].sum()
    assert not back_in.excluded[0, late].all()


def test_integer_counts_are_not_flagged_for_being_integers():
    rng = np.random.default_rng(10)
    ts = 1_760_000_000 // D * D + np.arange(24 * 40) * H
    x = rng.poisson(0.4, size=len(ts)).astype(float)  # mostly 0, sometimes 1 or 2
    r = replay(ts, x[None, :, None], P)
    assert _flags(r)[0, 24 * 7:].mean() < 0.01


def test_the_band_is_where_a_single_metric_alone_flags():
    ts, x = _series(24 * 30, H, seed=11, cycle=5)
    y = x.copy()
    k = 24 * 25 + 3
    r = replay(ts, y[None, :, None], P)
    hi = r.upper[0, k, 0]
    assert np.isfinite(hi) and r.lower[0, k, 0] < r.expected[0, k, 0] < hi
    y[k] = hi + 5 * (hi - r.expected[0, k, 0])
    r2 = replay(ts, y[None, :, None], P)
    assert _flags(r2)[0, k]
    assert r2.residual_z[0, k, 0] > 0


def test_a_band_reaching_past_any_plausible_value_is_null():
    # intermittent and heavy-tailed (zero 45 % of the time, else spread over orders of magnitude):
    # log-transformed, the band that alone would flag reaches 1000x the largest value ever seen
    rng = np.random.default_rng(0)
    ts = 1_760_000_000 // D * D + np.arange(24 * 30) * H
    x = np.where(rng.random(len(ts)) < 0.45, 0.0, 1e-5 * rng.lognormal(0, 2.0, len(ts)))
    r = replay(ts, x[None, :, None], P)
    scored = np.isfinite(r.expected[0, :, 0])
    upper = r.upper[0, scored, 0]
    assert np.isnan(upper).mean() > 0.5
    assert np.nanmax(upper) < 10 * x.max()
    # an ordinary series keeps its band everywhere it is scored
    ts2, y = _series(24 * 30, H, seed=11, cycle=5)
    r2 = replay(ts2, y[None, :, None], P)
    ok = np.isfinite(r2.expected[0, :, 0])
    assert np.isfinite(r2.upper[0, ok, 0]).all() and np.isfinite(r2.lower[0, ok, 0]).all()


@pytest.mark.parametrize("backend", ["iforest", "ecod", "hbos"])
def test_other_backends_score_through_the_same_calibration(backend):
    ts, x = _series(24 * 20, H, seed=12)
    X = np.stack([x, x * 0.5 + np.random.default_rng(13).normal(size=len(x))], axis=-1)
    X[24 * 18, :] += 40
    p = DetectorParams(detector=backend)
    r = replay(ts, X[None], p)
    assert np.isfinite(r.p[0, 24 * 5:]).all()
    assert r.p[0, 24 * 18] < np.median(r.p[0, 24 * 5:])


def test_entities_of_a_batch_score_as_they_would_alone():
    ts, a = _series(24 * 20, H, seed=14, cycle=3)
    _, b = _series(24 * 20, H, seed=15, cycle=0, level=7)
    both = replay(ts, np.stack([a, b])[:, :, None], P)
    for i, x in enumerate((a, b)):
        one = replay(ts, x[None, :, None], P)
        np.testing.assert_allclose(both.p[i], one.p[0], rtol=1e-9, atol=0, equal_nan=True)


def test_detect_checks_its_parameters():
    with pytest.raises(ValueError, match="detector"):
        DetectorParams(detector="nope")
    with pytest.raises(ValueError, match="components"):
        DetectorParams(components=("day", "fortnight"))
    with pytest.raises(ValueError, match="critical_p"):
        DetectorParams(warning_p=1e-6, critical_p=1e-3)


def test_history_longer_than_needed_changes_nothing():
    ts, x = _series(24 * 60, H, seed=16, cycle=4)
    r = replay(ts, x[None, :, None], P)
    day = 24 * 55
    short = History(ts[day - 24 * 30:day], x[None, day - 24 * 30:day, None], r.residual[:, day - 24 * 30:day],
                    r.excluded[:, day - 24 * 30:day])
    long = History(ts[:day], x[None, :day, None], r.residual[:, :day], r.excluded[:, :day])
    a = detect(short, ts[day:day + 24], x[None, day:day + 24, None], P)
    b = detect(long, ts[day:day + 24], x[None, day:day + 24, None], P)
    np.testing.assert_array_equal(a.p, b.p)
