"""The robust calendar baseline: which components it keeps, what it learns, what it ignores."""

import numpy as np
import pytest

from anomaly_assets.core import baseline, calendar

H = 3_600
D = 86_400
RNG = np.random.default_rng(0)


def _kept(b, comp, e=0, j=0):
    return bool(b.kept[calendar.COMPONENTS.index(comp), e, j])


def test_masked_median_equals_numpy_nanmedian():
    a = RNG.normal(size=(5, 37, 3))
    a[a > 1.2] = np.nan
    a[2, :, 1] = np.nan  # an all-NaN column
    got = baseline._masked_median(a, axis=1)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanmedian(a, axis=1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, equal_nan=True)


def test_daily_cycle_is_kept_and_noise_gets_nothing():
    ts = np.arange(24 * 21) * H
    cycle = 5 * np.sin(2 * np.pi * ts / D)
    x = np.stack([cycle + RNG.normal(size=len(ts)), RNG.normal(size=len(ts))], axis=-1)[None]
    b = baseline.fit(x, ts, H)
    assert _kept(b, "day", j=0) and not _kept(b, "day", j=1)
    assert not any(_kept(b, c, j=1) for c in calendar.COMPONENTS)
    # the learnt profile is the cycle, to within the noise of 21 samples per bin
    fitted = b.expected(ts[:24])[0, :, 0]
    assert np.abs(fitted - cycle[:24]).max() < 0.8


def test_weekday_and_month_start_effects_on_daily_data():
    ts = np.arange(400) * D + D * 19_000  # daily, ~13 months
    days = (ts // D).astype("datetime64[D]")
    weekend = ((ts // D + 3) % 7) >= 5
    first = (days - days.astype("datetime64[M]")).astype(int) == 0
    x = 100 + 30 * weekend + 400 * first + RNG.normal(scale=3, size=len(ts))
    b = baseline.fit(x[None, :, None], ts, D)
    # weekends by the day of the week or the business day of the month (its weekend bin)
    assert (_kept(b, "week") or _kept(b, "bday")) and _kept(b, "month")
    assert not _kept(b, "day")  # daily data has no time-of-day phase
    nxt = ts[-1] + D * np.arange(1, 40)
    exp = b.expected(nxt)[0, :, 0]
    nd = (nxt // D).astype("datetime64[D]")
    on_first = (nd - nd.astype("datetime64[M]")).astype(int) == 0
    assert np.all(exp[on_first] > 400)  # rent day learnt even though it is 1 day in 30
    assert np.all(exp[~on_first] < 150)
    nwe = ((nxt // D + 3) % 7) >= 5
    assert np.all(np.abs(exp[~on_first & nwe] - 130) < 8) and np.all(np.abs(exp[~on_first & ~nwe] - 100) < 8)


def test_first_business_day_settlement():
    ts = np.arange(430) * D + D * 19_500
    bday = calendar.business_day_of_month(ts)
    x = np.where(bday == 0, 1_000.0, 50.0) + np.where(bday == 23, -50.0, 0.0) + RNG.normal(scale=5, size=len(ts))
    b = baseline.fit(x[None, :, None], ts, D)
    assert _kept(b, "bday")
    nxt = ts[-1] + D * np.arange(1, 60)
    exp = b.expected(nxt)[0, :, 0]
    np.testing.assert_array_less(800, exp[calendar.business_day_of_month(nxt) == 0])


def test_business_day_of_month_skips_weekends_and_holidays():
    ts = (np.arange(np.datetime64("2025-05-28"), np.datetime64("2025-06-10"))
          .astype("datetime64[s]").astype(np.int64))
    got = calendar.business_day_of_month(ts)
    # 2025-05-31 and 06-01 are a weekend; 06-02 is the first business day of June
    assert list(got[:8]) == [19, 20, 21, 23, 23, 0, 1, 2]
    hol = np.zeros(len(ts), bool)
    hol[5] = True  # 06-02 a holiday: 06-03 becomes the first business day
    assert list(calendar.business_day_of_month(ts, hol)[5:8]) == [23, 0, 1]


def test_a_fault_in_few_cycles_does_not_move_the_profile():
    ts = np.arange(24 * 28) * H
    cycle = 10 * np.sin(2 * np.pi * ts / D)
    x = cycle + RNG.normal(scale=0.5, size=len(ts))
    faulty = x.copy()
    faulty[24 * 10 + 12: 24 * 13 + 12] += 50  # three days far off
    clean = baseline.fit(x[None, :, None], ts, H)
    hit = baseline.fit(faulty[None, :, None], ts, H)
    assert _kept(hit, "day")
    np.testing.assert_allclose(hit.effects["day"], clean.effects["day"], atol=0.6)


def test_level_ignores_left_out_points_and_restarts_at_a_new_normal():
    ts = np.arange(300) * H
    x = np.full(300, 10.0) + RNG.normal(scale=0.1, size=300)
    x[200:] += 5.0  # a drop... up, lasting
    left = np.zeros((1, 300, 1), bool)
    left[0, 200:, 0] = True
    b = baseline.fit(x[None, :, None], ts, H, left_out=left, components=())
    assert abs(b.level[0, 0] - 10.0) < 0.1  # measured against the level before it
    b2 = baseline.fit(x[None, :, None], ts, H, components=(), level_from=np.array([[200]]))
    assert abs(b2.level[0, 0] - 15.0) < 0.1


def test_non_negative_series_never_expects_below_zero():
    ts = np.arange(24 * 14) * H
    x = np.clip(3 * np.sin(2 * np.pi * ts / D) + 1 + RNG.normal(scale=0.2, size=len(ts)), 0, None)
    b = baseline.fit(x[None, :, None], ts, H)
    assert b.nonnegative[0, 0]
    assert (b.expected(ts + 14 * D) >= 0).all()
    neg = baseline.fit((x - 5)[None, :, None], ts, H)
    assert not neg.nonnegative[0, 0] and (neg.expected(ts) < 0).any()


def test_entities_of_a_batch_are_fitted_independently():
    ts = np.arange(24 * 21) * H
    xs = np.stack([3 * np.sin(2 * np.pi * ts / D) + RNG.normal(size=len(ts)), RNG.normal(size=len(ts)) * 4], 0)[..., None]
    both = baseline.fit(xs, ts, H)
    for e in range(2):
        one = baseline.fit(xs[e:e + 1], ts, H)
        np.testing.assert_allclose(both.expected(ts)[e], one.expected(ts)[0], rtol=1e-12, atol=1e-12)
        assert (both.kept[:, e] == one.kept[:, 0]).all()


def test_a_series_keeping_one_of_two_overlapping_components_is_fitted_as_alone():
    # the business day of the month holds the weekend (its bin 23) as the day of the week does:
    # a batch where one series keeps `bday` and another `week` must not split the weekend between them
    ts = np.arange(430) * D + D * 19_500
    bday = calendar.business_day_of_month(ts)
    weekday = (ts // D + 3) % 7
    settle = np.where(bday == 0, 1_000.0, 50.0) + np.where(bday == 23, -40.0, 0.0) + RNG.normal(scale=5, size=len(ts))
    weekly = 100.0 + 12.0 * weekday + RNG.normal(scale=2, size=len(ts))
    xs = np.stack([settle, weekly])[..., None]
    both = baseline.fit(xs, ts, D)
    assert _kept(both, "bday", e=0) and not _kept(both, "week", e=0)
    assert _kept(both, "week", e=1)
    for e in range(2):
        one = baseline.fit(xs[e:e + 1], ts, D)
        assert (both.kept[:, e] == one.kept[:, 0]).all()
        np.testing.assert_allclose(both.expected(ts)[e], one.expected(ts)[0], rtol=1e-9, atol=1e-9)


def test_working_hours_on_weekdays_only_get_their_own_weekend_profile():
    ts = np.arange(24 * 35) * H + D * 20_000
    hour = (ts % D) // H
    weekend = (ts // D + 3) % 7 >= 5
    shift = ((hour >= 8) & (hour < 18)) & ~weekend  # a plant that works weekdays 8-18
    x = 20.0 + 30.0 * shift + RNG.normal(scale=1.0, size=len(ts))
    b = baseline.fit(x[None, :, None], ts, H)
    assert _kept(b, "day") and _kept(b, "weekend_day")
    nxt = ts[-1] + H * np.arange(1, 24 * 7 + 1)
    nh, nw = (nxt % D) // H, (nxt // D + 3) % 7 >= 5
    want = 20.0 + 30.0 * (((nh >= 8) & (nh < 18)) & ~nw)
    # day + day of week alone would put a third of a shift on every weekend noon and night
    np.testing.assert_allclose(b.expected(nxt)[0, :, 0], want, atol=1.5)
