"""Minute data is decomposed on 5-minute block means (``DecompositionParams.cycle_points``).

What must hold: the expectation is close to the point-by-point decomposition's, the residual scale
is measured on the minute points (so residual_z still reads as σ of a minute), a one-minute spike is
not averaged away, and hourly data is untouched.
"""

import numpy as np
import pandas as pd

from anomaly_assets.core.fleet import DAY, DecompositionParams, _upsample, days_in, decompose_days

KEY = ["entity_id", "metric", "ts"]


def _minute_series(days=16, seed=0, entity="m1"):
    ts = pd.date_range("2026-09-07", periods=days * 1440, freq="1min", tz="UTC")
    rng = np.random.default_rng(seed)
    minute = ts.hour * 60 + ts.minute
    truth = 40 + 6 * np.sin(2 * np.pi * minute / 1440) + 2 * (ts.hour == 9)
    return pd.DataFrame({"entity_id": entity, "metric": "cpu", "ts": ts, "value": truth + rng.normal(0, 0.5, len(ts)),
                         "truth": truth})


def _decompose(obs, days, **kw):
    return decompose_days(obs.drop(columns="truth", errors="ignore"), days, DecompositionParams(**kw)).sort_values(KEY, ignore_index=True)


def test_block_means_track_the_point_by_point_decomposition():
    obs = _minute_series()
    days = days_in(obs.ts.max().floor("D") - DAY, obs.ts.max().floor("D") + DAY)
    blocks, points = _decompose(obs, days), _decompose(obs, days, cycle_points=None)
    assert len(blocks) == len(points) == 2 * 1440
    # both expectations are far closer to the noise-free signal than the noise (sd 0.5), and the
    # block means' no further (they average the minute noise the point-by-point seasonal keeps)
    truth = obs.set_index("ts")["truth"].reindex(blocks["ts"]).to_numpy()
    err_b = np.median(np.abs(blocks["expected"] - truth))
    err_p = np.median(np.abs(points["expected"] - truth))
    assert err_b < 0.15 and err_b <= err_p, (err_b, err_p)
    # the scale is measured on the minute residuals (not the smoother block means): z reads as sigma
    # of a minute. It comes out nearer the true 0.5 than the point-by-point fit's, whose seasonal
    # soaks up part of the minute noise in sample.
    scale_b = (blocks["residual"] / blocks["residual_z"]).median()
    scale_p = (points["residual"] / points["residual_z"]).median()
    assert 0.42 < scale_b < 0.58 and abs(scale_b - 0.5) < abs(scale_p - 0.5), (scale_b, scale_p)


def test_a_one_minute_spike_stands_out():
    obs = _minute_series()
    day = obs.ts.max().floor("D")
    spike = day + pd.Timedelta(hours=14, minutes=7)
    obs.loc[obs.ts == spike, "value"] += 10.0  # 20 sigma, one minute
    out = _decompose(obs, [day])
    z = out.set_index("ts")["residual_z"]
    assert z[spike] > 12
    assert z.drop(spike).abs().quantile(0.999) < 6


def test_hourly_data_is_decomposed_point_by_point():
    ts = pd.date_range("2026-09-07", periods=20 * 24, freq="1h", tz="UTC")
    rng = np.random.default_rng(1)
    obs = pd.DataFrame({"entity_id": "h1", "metric": "load", "ts": ts,
                        "value": 10 + np.sin(2 * np.pi * ts.hour / 24) + rng.normal(0, 0.2, len(ts))})
    days = days_in(ts[-1].floor("D") - 2 * DAY, ts[-1].floor("D") + DAY)
    pd.testing.assert_frame_equal(_decompose(obs, days), _decompose(obs, days, cycle_points=None))


def test_upsampling_is_linear_between_block_centres_and_held_at_the_ends():
    out = _upsample(np.array([[0.0, 5.0, 10.0]]), 5)
    np.testing.assert_allclose(out[0], [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10])
    # block means of the upsampled blocks are the blocks (away from the held ends)
    np.testing.assert_allclose(out[0, 5:10].mean(), 5.0)
