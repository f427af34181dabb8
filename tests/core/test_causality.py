"""Causal scoring as a property: appending later data never changes earlier scores."""

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.fleet import DAY, DecompositionParams, DetectorParams, days_in, decompose_days, fit_fleet, score_day
from anomaly_assets.demo.fleet import METRICS, simulate_fleet


def _obs(n_entities=4, days=15, seed=3):
    d = simulate_fleet(entities=n_entities, days=days, freq="1h", seed=seed)
    e, m, t = np.meshgrid(np.arange(len(d.entity_ids)), np.arange(d.values.shape[1]), np.arange(len(d.timestamps)), indexing="ij")
    metrics = np.asarray(METRICS)
    return pd.DataFrame({"entity_id": d.entity_ids[e.ravel()], "metric": metrics[m.ravel()],
                         "ts": d.timestamps[t.ravel()], "value": d.values.ravel()})


def _chain(obs, days):
    dp, mp = DecompositionParams(history_days=14, min_history_days=3), DetectorParams(min_training_days=2)
    dec = decompose_days(obs, days, dp)
    out = []
    for d in days:
        model = fit_fleet(dec, d, mp, entities=sorted(obs.entity_id.unique()))
        s, _ = score_day(dec[(dec.ts >= d - 2 * DAY) & (dec.ts < d + DAY)], model)
        out.append(s)
    return dec, pd.concat(out, ignore_index=True).sort_values(["entity_id", "ts"]).reset_index(drop=True)


@pytest.mark.parametrize("cut_hours", [0, 7])
def test_appending_later_data_never_changes_earlier_scores(cut_hours):
    obs = _obs()
    obs = obs.assign(ts=pd.to_datetime(obs.ts, utc=True))
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    cut = days[-2] + pd.Timedelta(hours=cut_hours)
    dec_short, short = _chain(obs[obs.ts < cut], [d for d in days if d < cut])
    _, full = _chain(obs, days)
    full_before = full[full.ts < cut].reset_index(drop=True)
    assert len(short) == len(full_before) > 0
    assert (short.severity == full_before.severity).all()
    scored = short.anomaly_score.notna()
    assert scored.sum() > 0, "the window must contain scored (not cold-start) points"
    np.testing.assert_allclose(short.anomaly_score[scored], full_before.anomaly_score[scored], rtol=0, atol=1e-12)


def test_cold_start_entities_get_a_state_not_a_score():
    obs = _obs(days=15).pipe(lambda o: o[o.ts < o.ts.min() + 3 * DAY])
    obs = obs.assign(ts=pd.to_datetime(obs.ts, utc=True))
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    _, scores = _chain(obs, days)
    assert (scores.severity == "cold_start").all()
    assert scores.anomaly_score.isna().all()
    assert not scores.is_anomaly.any()
