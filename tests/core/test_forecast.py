"""Causal forecasts from the decomposition: daily cycle, and the weekday effect on top of it."""

import numpy as np
import pytest

from anomaly_assets.core.forecast import forecast, seasonal_periods


def _fleet(days, weekend_drop, seed=0):
    """Hourly series starting on a Monday: daily cycle, Saturday/Sunday lower by ``weekend_drop``."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24)
    dow = (t // 24) % 7
    level = 10 + 3 * np.sin(2 * np.pi * t / 24) - weekend_drop * (dow >= 5)
    return level + rng.normal(0, 0.2, size=(5, len(t)))


def test_periods_follow_the_sampling_interval_and_need_two_cycles():
    assert seasonal_periods(3600, 14 * 24) == (24, 168)
    assert seasonal_periods(3600, 13 * 24) == (24,)  # not two weeks yet
    assert seasonal_periods(60, 3 * 1440) == (1440,)
    assert seasonal_periods(86_400, 30) == (7,)
    assert seasonal_periods(3600, 14 * 24, override=(12,)) == (12,)


@pytest.mark.parametrize("forecast_dow", [5, 6, 0, 2])  # Saturday, Sunday, Monday, Wednesday
def test_weekday_effect_is_forecast_from_two_weeks_of_history(forecast_dow):
    data = _fleet(14 + forecast_dow + 1, weekend_drop=4.0)
    history, day = data[:, : (14 + forecast_dow) * 24], data[:, (14 + forecast_dow) * 24:]
    weekly = forecast(history[:, -14 * 24:], 24, (24, 168))
    daily = forecast(history[:, -14 * 24:], 24, (24,))
    err_weekly = np.abs(day - weekly.expected).mean()
    err_daily = np.abs(day - daily.expected).mean()
    assert err_weekly < 0.5  # noise is 0.2: the weekday level is right
    if forecast_dow in (5, 0):  # the day the level changes: the daily-only forecast is off by ~the drop
        assert err_daily > 2.0


def test_no_weekday_effect_leaves_the_daily_forecast_alone():
    data = _fleet(15, weekend_drop=0.0, seed=1)
    history, day = data[:, : 14 * 24], data[:, 14 * 24:]
    weekly = forecast(history, 24, (24, 168))
    daily = forecast(history, 24, (24,))
    err_weekly, err_daily = np.abs(day - weekly.expected).mean(), np.abs(day - daily.expected).mean()
    assert err_weekly < 0.3 and err_weekly < 1.2 * err_daily  # noise is 0.2


@pytest.mark.parametrize("n", [1, 2, 3, 101, 336, 337, 4032])
def test_row_quantiles_are_numpys(n):
    from anomaly_assets.core.quantiles import row_quantiles

    rng = np.random.default_rng(n)
    x = rng.normal(size=(40, n)) * 10.0 ** rng.integers(-3, 6, size=(40, 1))
    x[0] = 5.0  # a flat row
    x[1, : n // 2] = -7.0  # ties
    qs = (0.0, 0.01, 0.5, 0.98, 0.999, 1.0)
    want = np.quantile(x, qs, axis=1)
    got = row_quantiles(x, qs)
    assert all(np.array_equal(w, g) for w, g in zip(want, got))
    # a leading axis too (entities x time), as the detector's tails use it
    x3 = x.reshape(4, 10, n)
    assert np.array_equal(np.quantile(x3, 0.98, axis=-1), row_quantiles(x3, (0.98,))[0])
