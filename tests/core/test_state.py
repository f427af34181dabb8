"""Models carried from day to day: lossless as data, the same scores nightly or in a backfill,
refits only when due."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from anomaly_assets.core import model as md
from anomaly_assets.core.detector import DetectorParams
from anomaly_assets.core.fleet import days_in, detect_days
from anomaly_assets.core.state import FleetState

P = DetectorParams(refit_days=7)
START = pd.Timestamp("2026-03-01", tz="UTC")
KEY = ["entity_id", "ts"]


def _rows(n_entities=6, days=24, freq="1h", shift=None, seed=0):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=int(pd.Timedelta(days=days) / pd.Timedelta(freq)), freq=freq)
    hours = ts.hour.to_numpy()
    out = []
    for e in range(n_entities):
        for j, m in enumerate(("temp", "load", "flow")):
            v = 50 + 10 * j + 5 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(ts))
            if shift and shift[0] == e and j == 0:
                v[shift[1]:] += 30  # a sustained shift from this hour on
            out.append(pd.DataFrame({"entity_id": f"e{e:02d}", "metric": m, "ts": ts, "value": v}))
    return pd.concat(out, ignore_index=True)


def _days(rows):
    return days_in(rows.ts.min().floor("D"), rows.ts.max().floor("D") + pd.Timedelta(days=1))


def _day(frame, day):
    return frame[(frame.ts >= day) & (frame.ts < day + pd.Timedelta(days=1))].sort_values(
        [c for c in ("entity_id", "metric", "ts") if c in frame]).reset_index(drop=True)


def _with_stored(rows, detected):
    """``rows`` with the residuals and exclusions ``detected`` stored for them, as a night reads them."""
    stored = detected.decomposition[["entity_id", "metric", "ts", "residual", "excluded"]]
    return rows.merge(stored, on=["entity_id", "metric", "ts"], how="left")


def _assert_day_equal(whole, later, day):
    """The day's scores and decomposition from a run that carried models equal a refit's."""
    pd.testing.assert_frame_equal(whole.scores.sort_values(KEY).reset_index(drop=True),
                                  later.scores.sort_values(KEY).reset_index(drop=True))
    pd.testing.assert_frame_equal(_day(whole.decomposition, day), _day(later.decomposition, day))


def test_a_model_survives_parquet_unchanged(tmp_path):
    rows = _rows(days=10)
    out = detect_days(rows, _days(rows), P)
    table = out.state.to_table()
    assert table.num_rows == 6 and set(table["entity_id"].to_pylist()) == {f"e{e:02d}" for e in range(6)}
    pq.write_table(table, tmp_path / "state.parquet")
    back = FleetState.from_table(pq.read_table(tmp_path / "state.parquet"))
    names = np.array(sorted(back.entities()))
    [(_, a)], [(_, b)] = out.state.gather(names), back.gather(names)
    for f in dataclasses.fields(md.Model):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
    for c, eff in a.baseline.effects.items():
        np.testing.assert_array_equal(eff, b.baseline.effects[c], err_msg=c)
    np.testing.assert_array_equal(a.evidence.pca_residual, b.evidence.pca_residual)
    np.testing.assert_array_equal(a.gammas[1].k, b.gammas[1].k)


@pytest.mark.parametrize("refit_days", [1, 2, 7])
def test_nightly_runs_from_the_stored_state_equal_the_backfill(tmp_path, refit_days):
    params = dataclasses.replace(P, refit_days=refit_days)
    rows = _rows(shift=(2, 24 * 17 + 5))
    days = _days(rows)
    full = detect_days(rows, days, params)
    state, carried = None, 0
    stored = rows.iloc[:0][["entity_id", "metric", "ts"]].assign(residual=np.nan, excluded=False)
    for day in days:
        hist = rows[rows.ts < day + pd.Timedelta(days=1)].merge(stored, on=["entity_id", "metric", "ts"], how="left")
        night = detect_days(hist, [day], params, state=state)
        carried += night.models[day].carried
        if refit_days > 1:
            pq.write_table(night.state.to_table(), tmp_path / f"{day.date()}.parquet")
            state = FleetState.from_table(pq.read_table(tmp_path / f"{day.date()}.parquet"))
        else:
            assert night.state is None  # refitted daily: nothing is carried
        stored = pd.concat([stored, night.decomposition[list(stored.columns)]], ignore_index=True)
        pd.testing.assert_frame_equal(_day(full.scores, day).drop(columns="model_version"),
                                      _day(night.scores, day).drop(columns="model_version"))
        pd.testing.assert_frame_equal(_day(full.decomposition, day), _day(night.decomposition, day))
    assert full.scores[full.scores.entity_id == "e02"].is_anomaly.any()
    assert (carried > 0) == (refit_days > 1)  # the nights did carry models, not refit them all


def test_carried_entities_need_only_the_days_points():
    rows = _rows()
    days = _days(rows)
    full = detect_days(rows, days[:-1], P)
    last = days[-1]
    names = np.array([f"e{e:02d}" for e in range(6)])
    [(pos, model)] = full.state.gather(names)
    reasons = md.refit_reasons(model, 6, last.value // 10**9, full.state.slots(names[pos], 7), 7)
    due = set(names[pos][reasons > 0])
    assert 0 < len(due) < 6  # some refit tonight, the others carry their model
    hist = _with_stored(rows, full)
    state = FleetState.from_table(full.state.to_table())
    lean = hist[hist.entity_id.isin(due) | (hist.ts >= last)]  # no history for the carried ones
    a = detect_days(hist, [last], P, state=FleetState.from_table(full.state.to_table()))
    b = detect_days(lean, [last], P, state=state)
    pd.testing.assert_frame_equal(a.scores.sort_values(KEY).reset_index(drop=True),
                                  b.scores.sort_values(KEY).reset_index(drop=True))
    assert b.models[last].carried == 6 - len(due)


def test_a_metric_silent_all_day_does_not_change_how_a_carried_entity_is_scored():
    rows = _rows()
    days = _days(rows)
    full = detect_days(rows, days[:-1], P)
    last = days[-1]
    hist = _with_stored(rows, full)
    # today every entity's flow meter is silent: in the chunk's rows it exists only in the history
    hist = hist[~((hist.ts >= last) & (hist.metric == "flow"))]
    names = np.array([f"e{e:02d}" for e in range(6)])
    [(pos, model)] = full.state.gather(names)
    carried = set(names[pos][md.refit_reasons(model, 6, last.value // 10**9, full.state.slots(names[pos], 7), 7) == 0])
    lean = hist[~hist.entity_id.isin(carried) | (hist.ts >= last)]
    a = detect_days(hist, [last], P, state=FleetState.from_table(full.state.to_table()))
    b = detect_days(lean, [last], P, state=FleetState.from_table(full.state.to_table()))
    pd.testing.assert_frame_equal(a.scores.sort_values(KEY).reset_index(drop=True),
                                  b.scores.sort_values(KEY).reset_index(drop=True))
    assert b.models[last].carried == len(carried) > 0
    assert set(b.decomposition.metric) == {"temp", "load"}


def test_a_new_metric_refits_its_entity():
    rows = _rows(days=12)
    days = _days(rows)
    out = detect_days(rows[rows.ts < days[-1]], days[:-1], P)
    extra = rows[rows.metric == "temp"].assign(metric="vibration")  # every entity gains a metric
    night = detect_days(pd.concat([rows, extra]), [days[-1]], P, state=out.state)
    m = night.models[days[-1]]
    assert m.carried == 0 and sum(m.refits.values()) == 6 and m.refits.get("new", 0) >= 1
    assert out.state.metrics_of("e01") == ("flow", "load", "temp", "vibration")


def test_refits_are_spread_over_the_cycle_and_say_why():
    rows = _rows(n_entities=40, days=30, shift=(3, 24 * 20 + 2))
    out = detect_days(rows, _days(rows), P)
    per_day = [m.refits for m in out.models.values()]
    assert per_day[0] == {"new": 40}
    late = per_day[-7:]  # past the warm-up: about a seventh of the fleet a night
    cadence = [r.get("cadence", 0) for r in late]
    assert sum(cadence) >= 30 and max(cadence) <= 15
    assert sum(r.get("drift", 0) for r in per_day[20:23]) >= 1  # the shifted entity is refitted early
    assert out.models[_days(rows)[-1]].carried >= 25


def test_refit_every_day_when_asked():
    rows = _rows(days=12)
    out = detect_days(rows, _days(rows), dataclasses.replace(P, refit_days=1))
    assert all(m.carried == 0 and m.refits == {"cadence": 6} for m in out.models.values())


def test_other_backends_refit_daily():
    rows = _rows(days=5)
    out = detect_days(rows, _days(rows), dataclasses.replace(P, detector="hbos"))
    assert all(m.carried == 0 for m in out.models.values())
    assert out.state.to_table().num_rows == 0  # nothing that is not plain data is stored


def test_a_days_micro_batches_fit_its_models_once():
    """Refitted daily: the first micro-batch of a day keeps the models it fitted before the day's
    first point; later batches of the day score with them (through Parquet) and give the numbers
    a refit gives, the young entity (a newcomer, still in its warm-up) refitted each time."""
    params = dataclasses.replace(P, refit_days=1)
    rows = _rows(days=20, shift=(2, 24 * 19 + 3))
    young = _rows(n_entities=1, days=2, seed=5).assign(entity_id="new")
    young["ts"] += pd.Timedelta(days=18)
    rows = pd.concat([rows, young], ignore_index=True)
    days = _days(rows)
    day = days[-1]
    past = detect_days(rows[rows.ts < day], days[:-1], params)
    hist = _with_stored(rows, past)
    morning = hist[hist.ts < day + pd.Timedelta(hours=9)]
    first = detect_days(morning, [day], params, keep_opened=True)
    assert first.opened is not None and sorted(first.opened.entities()) == [f"e{e:02d}" for e in range(6)]
    opened = FleetState.from_table(first.opened.to_table())
    lean = hist[(hist.entity_id == "new") | (hist.ts >= day)]  # the opened ones need no history
    later = detect_days(lean, [day], params, opened=opened, keep_opened=True)
    whole = detect_days(hist, [day], params)
    _assert_day_equal(whole, later, day)
    assert later.models[day].carried == 6 and later.models[day].refits == {"new": 1}  # no model for the day yet
    assert sorted(later.opened.entities()) == sorted(first.opened.entities())
    assert whole.scores[whole.scores.entity_id == "e02"].is_anomaly.any()
    # they carry through their own day only: the next day every entity is refitted
    names = np.array(sorted(first.opened.entities()), dtype=object)
    [(pos, model)] = first.opened.gather(names)
    for when, reason in ((day, 0), (day + pd.Timedelta(days=1), md.REASONS.index("cadence"))):
        assert (md.refit_reasons(model, 6, when.value // 10**9, opened.slots(names, 1), 1) == reason).all()


def test_a_point_landing_before_the_days_first_batch_refits_its_entity():
    """A day's model is fitted before the entity's first point; when an earlier point of the day
    lands after the first micro-batch, that model's reference ends in the wrong place (history
    longer than the reference here, so its start moves too): the entity is refitted, and the day
    scores as the night scores it."""
    params = dataclasses.replace(P, refit_days=1)
    rows = _rows(days=31)
    days = _days(rows)
    day = days[-1]
    past = detect_days(rows[rows.ts < day], days[:-1], params)
    hist = _with_stored(rows, past)
    late = (hist.entity_id == "e01") & (hist.ts >= day) & (hist.ts < day + pd.Timedelta(hours=3))
    morning = hist[~late & (hist.ts < day + pd.Timedelta(hours=9))]
    first = detect_days(morning, [day], params, keep_opened=True)
    opened = FleetState.from_table(first.opened.to_table())
    later = detect_days(hist, [day], params, opened=opened)
    whole = detect_days(hist, [day], params)
    _assert_day_equal(whole, later, day)
    assert later.models[day].carried == 5 and later.models[day].refits == {"cadence": 1}


def test_the_night_prefits_the_next_days_models_that_its_runs_then_carry():
    """Refitted daily: the run that scores a day can fit the next day's models before each
    entity's predicted first point (the next step of its grid). The next day's runs then score
    with them, reading only that day's rows, and give the numbers a refit gives; an entity whose
    first point is elsewhere (its first hour missing) is refitted."""
    params = dataclasses.replace(P, refit_days=1)
    rows = _rows(days=31, shift=(2, 24 * 30 + 3))
    days = _days(rows)
    day = days[-1]
    night = detect_days(rows[rows.ts < day], days[:-1], params, prefit_next=True)
    assert sorted(night.next_opened.entities()) == [f"e{e:02d}" for e in range(6)]
    hist = _with_stored(rows, night)
    hist = hist[~((hist.entity_id == "e04") & (hist.ts == day))]  # e04's first point of the day is late
    opened = FleetState.from_table(night.next_opened.to_table())
    lean = hist[(hist.ts >= day) | (hist.entity_id == "e04")]
    later = detect_days(lean, [day], params, opened=opened)
    whole = detect_days(hist, [day], params)
    _assert_day_equal(whole, later, day)
    assert later.models[day].carried == 5 and later.models[day].refits == {"cadence": 1}
    assert whole.scores[whole.scores.entity_id == "e02"].is_anomaly.any()
    # without it, nothing is fitted ahead
    assert detect_days(rows[rows.ts < day], days[-2:-1], params).next_opened is None


def test_a_days_models_do_not_depend_on_its_own_timestamps():
    """A series sampled every 2 hours that turns to every minute today: the model fitted before
    today's first point is the same whether the run holds today's first hour (a micro-batch) or
    all of today (the night), so both score the day alike. The sampling interval that fit uses
    comes from the history alone."""
    params = dataclasses.replace(P, refit_days=1)
    slow = _rows(n_entities=2, days=20, freq="2h")
    day = START + pd.Timedelta(days=20)
    fast = _rows(n_entities=2, days=1, freq="1min", seed=4)
    fast["ts"] += pd.Timedelta(days=20)
    rows = pd.concat([slow, fast], ignore_index=True)
    past = detect_days(slow, _days(slow), params)
    hist = _with_stored(rows, past)
    first = detect_days(hist[hist.ts < day + pd.Timedelta(hours=1)], [day], params, keep_opened=True)
    later = detect_days(hist, [day], params, opened=FleetState.from_table(first.opened.to_table()))
    whole = detect_days(hist, [day], params)
    assert later.models[day].carried == 2
    _assert_day_equal(whole, later, day)


@pytest.mark.parametrize("start_hour", [0, 12])
def test_a_young_series_misses_of_a_cycle_it_could_not_keep_stay_out_of_its_tails(start_hour):
    # a model fitted too early to keep the daily cycle scores on to the next day's start (and,
    # carried, until its history has doubled). Read as a later model's errors, its misses of the
    # cycle would widen the tails for the whole reference, and a clear fault on day 10 would go
    # unflagged: with daily refits for a series that starts at noon, carried for one that starts
    # at midnight (seven names: for some, a cadence refit comes early enough to hide it)
    rng = np.random.default_rng(5)
    ts = pd.date_range(START + pd.Timedelta(hours=start_hour), periods=12 * 288, freq="5min")
    working = np.asarray((ts.hour >= 8) & (ts.hour < 18))
    fault = working & np.asarray(ts.floor("D") == START + pd.Timedelta(days=10))
    rows = []
    for e in range(7):
        value = np.where(working, 80.0, 20.0) + rng.normal(0, 2, len(ts))
        value[fault] -= 40
        rows.append(pd.DataFrame({"entity_id": f"e{e:02d}", "metric": "flow", "ts": ts, "value": value}))
    rows = pd.concat(rows, ignore_index=True)
    for params in (DetectorParams(), P):
        scores = detect_days(rows, _days(rows), params).scores
        for e, s in scores.sort_values("ts").groupby("entity_id"):
            assert s.is_anomaly.to_numpy()[fault].mean() > 0.9, (params.refit_days, e)


@pytest.mark.parametrize("freq, refit_days", [("15s", 1), ("30s", 7)])
def test_a_reference_cut_at_its_point_cap_is_not_read_as_young_throughout(freq, refit_days):
    # a reference cut at max_reference_points (3.5 days of 15 s points) passes the started-inside
    # test of a young series; read as young up to the day after its first young_days, it would
    # lose every out-of-sample residual and stay in the warm-up and probation, flagging half of a
    # clear fault
    rng = np.random.default_rng(5)
    ts = pd.date_range(START, periods=int(pd.Timedelta(days=8) / pd.Timedelta(freq)), freq=freq)
    working = np.asarray((ts.hour >= 8) & (ts.hour < 18))
    value = np.where(working, 80.0, 20.0) + rng.normal(0, 2, len(ts))
    fault = working & np.asarray(ts.floor("D") == START + pd.Timedelta(days=7)) & np.asarray(ts.hour < 12)
    value[fault] -= 10
    rows = pd.DataFrame({"entity_id": "e00", "metric": "flow", "ts": ts, "value": value})
    scores = detect_days(rows, _days(rows), DetectorParams(refit_days=refit_days)).scores.sort_values("ts")
    assert scores.is_anomaly.to_numpy()[fault].mean() > 0.9


def test_models_stored_before_a_column_was_added_still_load_and_join():
    """A state or opened file written before ``settled`` existed (CODE_VERSION unchanged, so it is
    read again): it joins this run's models and reads as not settled."""
    from anomaly_assets.defs.detection import _carried_on

    out = detect_days(_rows(days=10), _days(_rows(days=10)), P)
    table = out.state.to_table()
    old = table.filter(pc.is_in(table["entity_id"], value_set=pa.array(["e00", "e01"]))).drop_columns(["settled"])
    new = table.filter(pc.invert(pc.is_in(table["entity_id"], value_set=pa.array(["e00", "e01"]))))
    back = FleetState.from_table(_carried_on(old, [new]))
    assert sorted(back.entities()) == sorted(out.state.entities())
    for pos, model in back.gather(np.array(["e00", "e01"], dtype=object)):
        assert not model.settled.any()
    [(_, a)], [(_, b)] = back.gather(np.array(["e03"], dtype=object)), out.state.gather(np.array(["e03"], dtype=object))
    np.testing.assert_array_equal(a.settled, b.settled)
    np.testing.assert_array_equal(a.scale, b.scale)
