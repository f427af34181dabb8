"""Known events other than holidays (promotions): the detector expects their lift, keeps them out
of the reference, still flags a fault on one, and carries what it learnt of them losslessly."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from anomaly_assets.core.detector import DetectorParams
from anomaly_assets.core.fleet import days_in, detect_days
from anomaly_assets.core.state import FleetState

P = DetectorParams()
START = pd.Timestamp("2025-01-01", tz="UTC")
N_DAYS = 300
EPOCH_DAY = START.value // 86_400_000_000_000


def _fleet(seed=3, stockout=(), every=35, length=5, lifts=(2.0, 2.4), level=40):
    """Two SKUs of daily units sold (weekly cycle, Poisson noise); SKU-A runs a ``length``-day
    promotion every ``every`` days, each at a lift drawn from ``lifts``. ``stockout``: day
    indices where SKU-A sells nothing."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=N_DAYS, freq="D")
    weekly = np.array([0.9, 0.85, 0.9, 1.0, 1.1, 1.3, 1.2])[ts.dayofweek]
    promo = np.zeros(N_DAYS, bool)
    lift = np.ones(N_DAYS)
    for a in range(20, N_DAYS, every):
        promo[a:a + length] = True
        lift[a:a + length] = rng.uniform(*lifts)
    rows = []
    for e in ("SKU-A", "SKU-B"):
        v = rng.poisson(level * weekly * (lift if e == "SKU-A" else 1.0)).astype(float)
        if e == "SKU-A":
            v[list(stockout)] = 0.0
        rows.append(pd.DataFrame({"entity_id": e, "metric": "units_sold", "ts": ts, "value": v}))
    events = {"SKU-A": EPOCH_DAY + np.flatnonzero(promo).astype(np.int64)}
    return pd.concat(rows, ignore_index=True), events, ts[promo]


def _days(rows):
    return days_in(rows.ts.min().floor("D"), rows.ts.max().floor("D") + pd.Timedelta(days=1))


def _of(frame, entity, ts):
    return frame[(frame.entity_id == entity) & frame.ts.isin(ts)].sort_values("ts")


def test_a_promotion_is_expected_not_flagged():
    rows, events, promo = _fleet()
    last = promo[-5:]  # the last promotion, with seven before it in the reference
    days = _days(rows)
    knows = detect_days(rows, days, P, events=events)
    blind = detect_days(rows, days, P)
    dec = _of(knows.decomposition, "SKU-A", last)
    before = _of(knows.decomposition, "SKU-A", last - pd.Timedelta(days=7))  # the same weekdays, no promotion
    ratio = dec.expected.to_numpy() / before.expected.to_numpy()
    assert ((ratio > 1.7) & (ratio < 2.8)).all(), ratio
    assert _of(knows.scores, "SKU-A", last).is_anomaly.sum() <= 1
    # without the calendar the same days are expected as any other (and absorbed by a wider scale)
    blind_ratio = _of(blind.decomposition, "SKU-A", last).expected.to_numpy() / \
        _of(blind.decomposition, "SKU-A", last - pd.Timedelta(days=7)).expected.to_numpy()
    assert (blind_ratio < 1.3).all(), blind_ratio
    # an entity without events is scored exactly as before
    b = lambda d: d.scores[d.scores.entity_id == "SKU-B"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(b(knows), b(blind))


def test_promotions_stay_out_of_the_scale():
    rows, events, promo = _fleet()
    days = _days(rows)
    normal = pd.date_range(promo[-1] + pd.Timedelta(days=3), periods=20, freq="D")
    width = {}
    for name, ev in (("knows", events), ("blind", None)):
        dec = _of(detect_days(rows, days, P, events=ev).decomposition, "SKU-A", normal)
        width[name] = float(np.median((dec.upper - dec.lower) / dec.expected))
    # seven promotions at x2.2 in the reference widen the band of every normal day when left in
    assert width["knows"] < 0.8 * width["blind"], width


def test_a_stockout_on_a_promotion_is_still_flagged():
    _, _, promo = _fleet()
    days = promo[-4:-1]  # three days of the last promotion sell nothing
    rows, events, _ = _fleet(stockout=[int((d - START) / pd.Timedelta(days=1)) for d in days])
    out = detect_days(rows, _days(rows), P, events=events)
    hit = _of(out.scores, "SKU-A", days)
    assert hit.is_anomaly.sum() >= 2, hit[["ts", "anomaly_score", "why"]]
    assert (_of(out.decomposition, "SKU-A", days).residual_z < -3).all()


def test_one_day_events_are_learnt_though_the_first_ones_were_flagged():
    # the first events are scored without an effect and flagged for their lift: they still count
    rows, events, promo = _fleet(every=8, length=1)
    out = detect_days(rows, _days(rows), P, events=events)
    late = promo[promo > START + pd.Timedelta(days=120)]
    ratio = _of(out.decomposition, "SKU-A", late).expected.to_numpy() / \
        _of(out.decomposition, "SKU-A", late - pd.Timedelta(days=7)).expected.to_numpy()
    assert np.median(ratio) > 1.7, ratio
    assert _of(out.scores, "SKU-A", late).is_anomaly.mean() < 0.2


def test_lifts_that_differ_are_judged_against_their_own_spread():
    # promotions anywhere from x1.4 to x3.2 on a SKU that sells hundreds a day: a lift far from
    # the median one is still a promotion, though far off against the SKU's day-to-day noise
    rows, events, promo = _fleet(lifts=(1.4, 3.2), level=400)
    out = detect_days(rows, _days(rows), P, events=events)
    late = promo[promo > START + pd.Timedelta(days=150)]
    # against the day-to-day scale alone these read -4.7 to +3.7 sigma
    assert (_of(out.decomposition, "SKU-A", late).residual_z.abs() < 2).all()
    assert not _of(out.scores, "SKU-A", late).is_anomaly.any()


def test_the_days_after_a_promotion_score_like_any_other_day():
    # the reference reads its event points on the event spread, as scoring does: on the plain
    # scale a lift far from the usual one is a surprise the smoothed scales carry into the days
    # after it (their scores' median 0.2-0.3 instead of 0)
    for level in (400, 40):
        rows, events, promo = _fleet(lifts=(1.4, 3.2), level=level)
        s = detect_days(rows, _days(rows), P, events=events).scores
        s = s[(s.entity_id == "SKU-A") & (s.ts > START + pd.Timedelta(days=150)) & ~s.ts.isin(promo)]
        after = s.ts.isin(set(promo + pd.Timedelta(days=1)) | set(promo + pd.Timedelta(days=2)))
        assert after.sum() >= 8
        assert s.anomaly_score[after].median() <= s.anomaly_score[~after].median() + 0.1, level
        assert not s.is_anomaly.any()


def test_carried_models_keep_the_event_effect_and_equal_the_backfill(tmp_path):
    params = dataclasses.replace(P, refit_days=3)
    rows, events, promo = _fleet()
    days = _days(rows)[-60:]
    hist0 = rows[rows.ts < days[0]]
    first = detect_days(hist0, _days(hist0), params, events=events)
    stored = first.decomposition[["entity_id", "metric", "ts", "residual", "excluded"]]
    full = detect_days(rows.merge(stored, on=["entity_id", "metric", "ts"], how="left"), days, params,
                       state=FleetState.from_table(first.state.to_table()), events=events)
    state = FleetState.from_table(first.state.to_table())
    carried = 0
    for day in days:
        hist = rows[rows.ts < day + pd.Timedelta(days=1)].merge(stored, on=["entity_id", "metric", "ts"], how="left")
        night = detect_days(hist, [day], params, state=state, events=events)
        carried += night.models[day].carried
        pq.write_table(night.state.to_table(), tmp_path / "state.parquet")
        state = FleetState.from_table(pq.read_table(tmp_path / "state.parquet"))
        stored = pd.concat([stored, night.decomposition[list(stored.columns)]], ignore_index=True)
        key = ["entity_id", "ts"]
        day_of = lambda f: f[(f.ts >= day) & (f.ts < day + pd.Timedelta(days=1))].sort_values(key)  # noqa: E731
        pd.testing.assert_frame_equal(day_of(full.scores).drop(columns="model_version").reset_index(drop=True),
                                      day_of(night.scores).drop(columns="model_version").reset_index(drop=True))
    assert carried > 0
    # the carried models add the lift on promotion days (a run without the calendar does not)
    blind = detect_days(rows.merge(stored, on=["entity_id", "metric", "ts"], how="left"), days, params,
                        state=FleetState.from_table(first.state.to_table()))
    on = promo[promo >= days[0]]
    ratio = _of(full.decomposition, "SKU-A", on).expected.to_numpy() / \
        _of(blind.decomposition, "SKU-A", on).expected.to_numpy()
    assert (ratio > 1.6).all(), ratio
    [(_, model)] = state.gather(np.array(["SKU-A"]))
    assert model.baseline.event[0, 0] > 0.5  # a lift learnt (log scale), carried through Parquet
    assert model.baseline.event_spread[0, 0] > 0
