"""Causal scoring as a property: appending later data never changes earlier scores."""

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.fleet import DAY, DecompositionParams, DetectorParams, days_in, decompose_days, fit_fleet, score_day
from anomaly_assets.demo.fleet import METRICS, simulate_fleet
from tests.tolerances import assert_close


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
    assert_close(short.anomaly_score[scored], full_before.anomaly_score[scored], "anomaly_score")


def test_cold_start_entities_get_a_state_not_a_score():
    obs = _obs(days=15).pipe(lambda o: o[o.ts < o.ts.min() + 3 * DAY])
    obs = obs.assign(ts=pd.to_datetime(obs.ts, utc=True))
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    _, scores = _chain(obs, days)
    assert (scores.severity == "cold_start").all()
    assert scores.anomaly_score.isna().all()
    assert not scores.is_anomaly.any()


def test_an_entity_joining_a_fleet_with_history_is_cold_start_on_its_first_day():
    """A machine added to a running fleet has no rows in the 14 days before its first day: it is
    neither dropped from that day nor scored, and a nightly run of that day says the same."""
    obs = _obs(n_entities=4, days=15)
    obs = obs.assign(ts=pd.to_datetime(obs.ts, utc=True))
    days = days_in(obs.ts.min().floor("D"), obs.ts.max().floor("D") + DAY)
    joins = days[10]
    newcomer = sorted(obs.entity_id.unique())[0]
    obs = obs[(obs.entity_id != newcomer) | (obs.ts >= joins)].reset_index(drop=True)
    first_day = (obs.ts >= joins) & (obs.ts < joins + DAY) & (obs.entity_id == newcomer)

    dec, scores = _chain(obs, days[8:])
    mine = dec[(dec.entity_id == newcomer) & (dec.ts >= joins) & (dec.ts < joins + DAY)]
    assert len(mine) == first_day.sum() == 24 * len(METRICS)  # every row of the day, none lost
    assert mine["expected"].isna().all() and mine["residual_z"].isna().all()
    np.testing.assert_array_equal(np.sort(mine["value"]), np.sort(obs.loc[first_day, "value"]))
    day_scores = scores[(scores.entity_id == newcomer) & (scores.ts >= joins) & (scores.ts < joins + DAY)]
    assert len(day_scores) == 24 and (day_scores.severity == "cold_start").all()
    # the others are decomposed as before that day
    others = dec[(dec.entity_id != newcomer) & (dec.ts >= joins) & (dec.ts < joins + DAY)]
    assert others["expected"].notna().all()
    # a nightly run of that day alone gives the same rows
    night = decompose_days(obs[obs.ts < joins + DAY], [joins], DecompositionParams(history_days=14, min_history_days=3))
    night_mine = night[night.entity_id == newcomer].sort_values(["metric", "ts"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(night_mine, mine.sort_values(["metric", "ts"]).reset_index(drop=True),
                                  check_categorical=False)
