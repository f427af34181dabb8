"""An entity's calendar components kept for a week once chosen on a settled reference
(``select_days``): when they are chosen anew, that a kept choice is what the refit uses, and the
same numbers nightly (micro-batches and the models fitted ahead included), in a backfill, in a
rerun of one of its days and in the per-entity replay."""

import dataclasses
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from anomaly_assets.core import calendar
from anomaly_assets.core.detector import DetectorParams
from anomaly_assets.core.fleet import days_in, detect_days
from anomaly_assets.core.replay import replay
from anomaly_assets.core.selection import Selections, day_ends
from anomaly_assets.core.state import FleetState

# a week's reference (100 hourly points are less): settled from the seventh day on
P = DetectorParams(reference_days=7.0, reference_points=100, select_days=7)
START = pd.Timestamp("2026-03-02", tz="UTC")
KEY = ["entity_id", "ts"]
DAY = 1 << np.arange(len(calendar.COMPONENTS)) == 1  # only "day" kept


def _rows(n_entities=4, days=16, shift=None, seed=1, cycle_from=None):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=24 * days, freq="1h")
    out = []
    for e in range(n_entities):
        for j, m in enumerate(("temp", "load")):
            cycle = 6 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24) if m == "temp" else 0.0
            v = 40 + 10 * j + cycle + rng.normal(size=len(ts))
            if shift and shift[0] == e and m == "temp":
                v[shift[1]:] += 25
            if cycle_from and cycle_from[0] == e and m == "load":  # a daily cycle that starts late
                v[cycle_from[1]:] += 8 * np.sin(2 * np.pi * ts.hour.to_numpy()[cycle_from[1]:] / 24)
            out.append(pd.DataFrame({"entity_id": f"e{e:02d}", "metric": m, "ts": ts, "value": v}))
    return pd.concat(out, ignore_index=True)


def _days(rows):
    return days_in(rows.ts.min().floor("D"), rows.ts.max().floor("D") + pd.Timedelta(days=1))


def _made(name: str, day: int) -> Selections:
    s = Selections(7)
    s.record([name], ["x"], DAY[:, None, None], np.array([False]), np.array([True]), day)
    return s


def test_a_selection_is_kept_until_its_entitys_day_of_the_week():
    s = _made("pump-1", 100)
    due = [d for d in range(100, 115) if s.due("pump-1", d)]
    slot = next(d for d in range(101, 108) if (d + zlib.crc32(b"select:pump-1")) % 7 == 0)
    assert due[0] == slot and not s.due("pump-1", 100)
    assert s.due("pump-1", 99)  # never used before it was made
    # a fleet that selected on one day spreads its next selections over the week
    firsts = {next(d for d in range(101, 120) if _made(f"e{k}", 100).due(f"e{k}", d)) for k in range(200)}
    assert firsts == set(range(101, 108))
    one = Selections(1)
    one.record(["pump-1"], ["x"], DAY[:, None, None], np.array([False]), np.array([True]), 100)
    assert one.due("pump-1", 100)  # select_days=1: every refit selects


def test_only_a_settled_reference_and_known_metrics_keep_a_selection(tmp_path):
    s = Selections(7)
    kept = np.zeros((len(calendar.COMPONENTS), 2, 1), bool)
    kept[calendar.COMPONENTS.index("week"), 0, 0] = True
    s.record(["a", "b"], ["x"], kept, np.array([False, False]), np.array([True, False]), 200)
    assert len(s) == 1  # b's reference was short: it selects again at its next refit
    got, given = s.prior(["a", "b"], ["x"], 200)
    assert list(given) == [True, False] and got[:, 0, 0].tolist() == kept[:, 0, 0].tolist()
    assert not s.prior(["a"], ["x", "y"], 200)[1][0]  # a metric it never selected for
    two = Selections(7)  # metrics in another order than the batch's: each keeps its own components
    k2 = np.zeros((len(calendar.COMPONENTS), 1, 2), bool)
    k2[calendar.COMPONENTS.index("week"), 0, 1] = True
    two.record(["a"], ["x", "y"], k2, np.array([False]), np.array([True]), 200)
    got, _ = two.prior(["a"], ["y", "x"], 201)
    assert got[calendar.COMPONENTS.index("week"), 0].tolist() == [True, False]
    pq.write_table(s.to_table(), tmp_path / "sel.parquet")
    back = Selections.from_table(pq.read_table(tmp_path / "sel.parquet"), 7)
    np.testing.assert_array_equal(back.prior(["a", "b"], ["x"], 201)[0], s.prior(["a", "b"], ["x"], 201)[0])
    t = s.to_table()
    bad = t.set_column(t.column_names.index("kept"), "kept", pa.array([["week|fortnight"]], pa.list_(pa.string())))
    with pytest.raises(ValueError, match="'a'.*'fortnight'"):
        Selections.from_table(bad, 7)


def test_a_kept_selection_is_what_the_refit_uses():
    slot = -zlib.crc32(b"select:e00") % 7  # e00 chooses anew on the days d with d % 7 == slot
    n = next(n for n in (10, 11) if (START.value // 10**9 // 86_400 + n - 1) % 7 != slot)
    rows = _rows(days=n)
    last = _days(rows)[-1]
    day = last.value // 10**9 // 86_400
    # e00 kept "no components" yesterday, on a day that is not its day of the cycle
    none = Selections(7)
    none.record(["e00"], ["load", "temp"], np.zeros((len(calendar.COMPONENTS), 1, 2), bool),
                np.array([False]), np.array([True]), day - 1)
    assert not none.due("e00", day)
    out = detect_days(rows, [last], P, selections=none)
    dec = out.decomposition[out.decomposition.metric == "temp"]
    seasonal = dec.groupby("entity_id").seasonal.apply(lambda s: s.abs().max())
    assert seasonal["e00"] == 0 and (seasonal.drop("e00") > 3).all()  # the others select their daily cycle
    assert out.models[last].kept_selection == 1
    fresh = detect_days(rows, [last], P)
    assert fresh.models[last].kept_selection == 0
    row = fresh.selections.to_table().to_pylist()[0]  # ... which records the selection it made
    assert row["entity_id"] == "e00" and row["kept"][row["metrics"].index("temp")] == "day" and row["day"] == day


def test_kept_selections_give_the_scores_of_daily_selection_when_the_choice_holds():
    rows = _rows()
    days = _days(rows)
    kept = detect_days(rows, days, P)
    daily = detect_days(rows, days, dataclasses.replace(P, select_days=1))
    assert sum(m.kept_selection for m in kept.models.values()) > 20
    assert sum(m.kept_selection for m in daily.models.values()) == 0
    pd.testing.assert_frame_equal(kept.scores.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"),
                                  daily.scores.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"))


def test_nightly_runs_from_stored_selections_equal_the_backfill(tmp_path):
    rows = _rows(shift=(2, 24 * 12 + 5), cycle_from=(3, 24 * 8))
    days = _days(rows)
    full = detect_days(rows, days, P)
    # e03's load takes a daily cycle on day 8: a kept selection learns it later than daily selection
    daily = detect_days(rows, days, dataclasses.replace(P, select_days=1)).scores
    assert not np.allclose(full.scores.sort_values(KEY).anomaly_score, daily.sort_values(KEY).anomaly_score,
                           equal_nan=True)
    stored = rows.iloc[:0][["entity_id", "metric", "ts"]].assign(residual=np.nan, excluded=False)
    selections, kept = None, 0
    for day in days:
        hist = rows[rows.ts < day + pd.Timedelta(days=1)].merge(stored, on=["entity_id", "metric", "ts"], how="left")
        night = detect_days(hist, [day], P, selections=selections)
        kept += night.models[day].kept_selection
        pq.write_table(night.selections.to_table(), tmp_path / f"{day.date()}.parquet")
        selections = Selections.from_table(pq.read_table(tmp_path / f"{day.date()}.parquet"), P.select_days)
        stored = pd.concat([stored, night.decomposition[list(stored.columns)]], ignore_index=True)
        want = full.scores[(full.scores.ts >= day) & (full.scores.ts < day + pd.Timedelta(days=1))]
        pd.testing.assert_frame_equal(want.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"),
                                      night.scores.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"))
    assert kept > 20 and kept == sum(m.kept_selection for m in full.models.values())
    assert full.scores[full.scores.entity_id == "e02"].is_anomaly.any()


def test_the_fleet_path_keeps_selections_as_the_per_entity_replay_does():
    rows = _rows(n_entities=3, shift=(1, 24 * 11))
    out = detect_days(rows, _days(rows), P)
    for e, g in rows.groupby("entity_id"):
        w = g.pivot(index="ts", columns="metric", values="value").sort_index()
        r = replay(w.index.as_unit("s").asi8, w.to_numpy()[None], P, names=[e])
        s = out.scores[out.scores.entity_id == e].sort_values("ts")
        got = 10 ** (-s.anomaly_score / (1 - s.anomaly_score)).to_numpy()
        np.testing.assert_allclose(got, r.p[0], rtol=1e-9, equal_nan=True)


def test_a_runs_changes_give_the_selections_at_each_days_end():
    start = _made("a", 98)
    run = Selections.from_table(start.to_table(), 7)
    every = lambda n: np.ones(n, bool)  # noqa: E731
    run.record(["b", "c"], ["x"], np.repeat(DAY[:, None, None], 2, axis=1), ~every(2), every(2), 100)
    run.record(["a"], ["x"], np.zeros((len(calendar.COMPONENTS), 1, 1), bool), ~every(1), ~every(1), 101)  # dropped
    run.record(["b"], ["x"], np.zeros((len(calendar.COMPONENTS), 1, 1), bool), ~every(1), every(1), 103)
    ends = dict(day_ends(start.to_table(), [run.changes_table()], [100, 101, 102, 103, 105, 106], 7))
    rows = {d: {r["entity_id"]: (r["kept"], r["day"]) for r in t.to_pylist()} for d, t in ends.items()}
    assert rows[100] == {"a": (["day"], 98), "b": (["day"], 100), "c": (["day"], 100)}
    assert rows[101] == rows[102] == {"b": (["day"], 100), "c": (["day"], 100)}
    assert rows[103] == rows[105] == {"b": ([""], 103), "c": (["day"], 100)}
    assert rows[106] == {"b": ([""], 103)}  # c's choice of day 100 cannot be kept on day 107


def _n(day) -> int:
    return day.value // 10**9 // 86_400


def test_micro_batches_and_the_days_fitted_ahead_make_the_backfills_choices():
    """The asset's daily flow: the morning's micro-batch fits the day's models (keeping them), the
    night scores the day with them and fits the next day's ahead; each run starts from the day
    before's choices. The choices at each day's end and every score equal one backfill's, with an
    entity whose choice changes (e03's daily cycle starts on day 8), one whose first point of a day
    is not where it was predicted (e01, day 11), one silent on the day it would choose anew (e02)
    and a newcomer no night fitted ahead (e04)."""
    rows = _rows(cycle_from=(3, 24 * 8))
    rows = rows[~((rows.entity_id == "e01") & (rows.ts == START + pd.Timedelta(days=11)))]
    # e02 sends nothing on its day of the week: the model fitted ahead for it, and its choice, never score
    off = next(k for k in range(8, 15) if (_n(START) + k + zlib.crc32(b"select:e02")) % 7 == 0)
    rows = rows[~((rows.entity_id == "e02") & (rows.ts.dt.floor("D") == START + pd.Timedelta(days=off)))]
    late = _rows(n_entities=1, seed=9).assign(entity_id="e04")
    rows = pd.concat([rows, late[late.ts >= START + pd.Timedelta(days=9, hours=5)]], ignore_index=True)
    days = _days(rows)
    full = detect_days(rows, days, P)
    want = dict(day_ends(None, [full.selections.changes_table()], [_n(d) for d in days], 7))
    stored = rows.iloc[:0][["entity_id", "metric", "ts"]].assign(residual=np.nan, excluded=False)
    selected, ahead, kept = None, None, 0
    for day in days:
        hist = rows[rows.ts < day + pd.Timedelta(days=1)].merge(stored, on=["entity_id", "metric", "ts"], how="left")
        morning = hist[hist.ts < day + pd.Timedelta(hours=9)]
        first = detect_days(morning, [day], P, opened=ahead, keep_opened=True,
                            selections=Selections.from_table(selected, 7))
        night = detect_days(hist, [day], P, opened=FleetState.from_table(first.opened.to_table()), prefit_next=True,
                            selections=Selections.from_table(selected, 7))
        kept += night.models[day].carried
        [(_, selected)] = day_ends(selected, [night.selections.changes_table()], [_n(day)], 7)
        assert sorted(selected.to_pylist(), key=str) == sorted(want[_n(day)].to_pylist(), key=str), day
        ahead = FleetState.from_table(night.next_opened.to_table())
        stored = pd.concat([stored, night.decomposition[list(stored.columns)]], ignore_index=True)
        got = full.scores[(full.scores.ts >= day) & (full.scores.ts < day + pd.Timedelta(days=1))]
        pd.testing.assert_frame_equal(got.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"),
                                      night.scores.sort_values(KEY).reset_index(drop=True).drop(columns="model_version"))
    assert kept > 40 and sum(m.kept_selection for m in full.models.values()) > 20
