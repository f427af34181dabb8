"""Explanations rank metrics by their recent deviation (the evidence the detector accumulated)."""

import numpy as np
import pandas as pd

from anomaly_assets.core.explain import explain, smoothed_deviation


def test_recent_deviation_is_causal_and_remembers_a_spike():
    d = np.zeros((6, 2))
    d[2, 0] = 8.0  # metric a spikes at t=2
    d[3, 1] = 2.0  # metric b is mildly off at t=3
    r = smoothed_deviation(d, 0.5)
    assert r[3, 0] > r[3, 1]  # at t=3 the spike still outweighs b's small step
    assert np.allclose(r[:2], 0) and (r >= 0).all()
    later = d.copy()
    later[5] = 50.0
    assert np.allclose(smoothed_deviation(later, 0.5)[:5], r[:5])  # no look-ahead


def test_explain_ranks_and_shares_by_rank_by_but_shows_the_point_deviation():
    dev = np.array([[0.5, 2.0]])  # this point: b is further off
    recent = np.array([[6.0, 2.0]])  # recently: a carried the evidence
    frame, why = explain("e", pd.to_datetime(["2026-01-01"], utc=True).to_numpy(), ["a_temp", "b_volt"], dev,
                         np.array([[10.0, 400.0]]), np.array([[9.0, 398.0]]), rank_by=recent)
    assert frame["metric"].tolist() == ["a_temp", "b_volt"]
    assert np.isclose(frame["contribution"].sum(), 1.0) and np.isclose(frame["contribution"].iloc[0], 36 / 40)
    assert why[0].startswith("a_temp 10 vs 9 expected (+0.5σ)")
    plain, _ = explain("e", pd.to_datetime(["2026-01-01"], utc=True).to_numpy(), ["a_temp", "b_volt"], dev,
                       np.array([[10.0, 400.0]]), np.array([[9.0, 398.0]]))
    assert plain["metric"].tolist() == ["b_volt", "a_temp"]  # without rank_by: the point's own |deviation|


def test_a_metric_that_leads_for_its_recent_deviation_says_so_before_the_point():
    ts = pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True).to_numpy()
    dev = np.array([[0.0, 0.4], [0.0, 2.9]])
    _, why = explain("e", ts, ["a_temp", "b_volt"], dev, np.array([[10.0, 400.0]] * 2),
                     np.array([[10.0, 399.0]] * 2), rank_by=np.array([[1.0, 3.5], [1.0, 3.5]]), memory=10)
    assert why[0].startswith("b_volt 3.5σ off (rms) over about the last 10 points, now 400 vs 399 expected (+0.4σ);")
    assert why[1].startswith("b_volt 400 vs 399 expected (+2.9σ);")  # within 1σ of the point's own: the point's


def test_a_lead_metric_missing_at_the_point_says_so():
    ts = pd.to_datetime(["2026-01-01"], utc=True).to_numpy()
    _, why = explain("e", ts, ["a_temp", "b_volt"], np.array([[0.0, 0.3]]), np.array([[np.nan, 400.0]]),
                     np.array([[3.0, 399.0]]), rank_by=np.array([[4.2, 0.3]]), memory=10)
    assert why[0].startswith("a_temp 4.2σ off (rms) over about the last 10 points, now missing (3 expected);")
