"""A fleet's rows through the detector: the same numbers in a batch, alone, nightly or in a backfill."""

import numpy as np
import pandas as pd
import pytest

from anomaly_assets.core.detector import DetectorParams
from anomaly_assets.core.replay import replay
from anomaly_assets.core.fleet import DECOMPOSITION_COLUMNS, SCORE_COLUMNS, days_in, detect_days

P = DetectorParams()
START = pd.Timestamp("2026-03-01", tz="UTC")


def _rows(n_entities=4, days=20, freq="1h", metrics=("temp", "load"), seed=0, fault=None):
    rng = np.random.default_rng(seed)
    ts = pd.date_range(START, periods=int(pd.Timedelta(days=days) / pd.Timedelta(freq)), freq=freq)
    hours = ts.hour.to_numpy()
    out = []
    for e in range(n_entities):
        for j, m in enumerate(metrics):
            v = 50 + 10 * j + 5 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(ts))
            if fault and fault[0] == e and fault[1] == m:
                v[fault[2]:fault[3]] += 25
            out.append(pd.DataFrame({"entity_id": f"e{e:02d}", "metric": m, "ts": ts, "value": v}))
    return pd.concat(out, ignore_index=True)


def _all_days(rows):
    return days_in(rows.ts.min().floor("D"), rows.ts.max().floor("D") + pd.Timedelta(days=1))


def test_frames_have_the_warehouse_columns_and_one_row_per_point():
    rows = _rows()
    out = detect_days(rows, _all_days(rows), P)
    assert list(out.decomposition.columns) == DECOMPOSITION_COLUMNS and list(out.scores.columns) == SCORE_COLUMNS
    assert len(out.decomposition) == len(rows)
    assert len(out.scores) == rows[["entity_id", "ts"]].drop_duplicates().shape[0]
    assert not out.decomposition.duplicated(["entity_id", "metric", "ts"]).any()
    assert set(out.scores.severity) <= {"cold_start", "normal", "warning", "critical"}
    assert len(out.models) == 20 and out.models[_all_days(rows)[-1]].entities == 4


def test_the_fleet_path_equals_the_per_entity_replay():
    rows = _rows(n_entities=3, fault=(1, "load", 24 * 15, 24 * 15 + 6))
    out = detect_days(rows, _all_days(rows), P)
    for e, g in rows.groupby("entity_id"):
        w = g.pivot(index="ts", columns="metric", values="value").sort_index()
        r = replay(w.index.as_unit("s").asi8, w.to_numpy()[None], P, names=[e])
        s = out.scores[out.scores.entity_id == e].sort_values("ts")
        want = np.where(np.isnan(r.p[0]), np.nan, r.p[0])
        got = 10 ** (-s.anomaly_score / (1 - s.anomaly_score)).to_numpy()
        np.testing.assert_allclose(got, want, rtol=1e-9, equal_nan=True)
    flagged = out.scores[out.scores.is_anomaly]
    assert (flagged.entity_id == "e01").any() and flagged.why.str.contains("load").any()


def test_a_nightly_run_from_stored_history_equals_the_backfill():
    rows = _rows(n_entities=3, fault=(2, "temp", 24 * 17, 24 * 19))
    days = _all_days(rows)
    full = detect_days(rows, days, P)
    for last in days[-3:]:
        stored = full.decomposition[full.decomposition.ts < last][["entity_id", "metric", "ts", "residual", "excluded"]]
        hist = rows.merge(stored, on=["entity_id", "metric", "ts"], how="left")
        night = detect_days(hist, [last], P)
        want = full.scores[(full.scores.ts >= last) & (full.scores.ts < last + pd.Timedelta(days=1))]
        key = ["entity_id", "ts"]
        a = want.sort_values(key).reset_index(drop=True)
        b = night.scores.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a.drop(columns="model_version"), b.drop(columns="model_version"))


def test_entities_with_their_own_timeline_or_metrics_are_their_own_batch():
    rows = _rows(n_entities=3)
    late = _rows(n_entities=1, metrics=("temp", "load", "vib"), seed=5)
    late["entity_id"] = "late"
    late = late[late.ts >= START + pd.Timedelta(days=12)]  # joins the fleet later, with a third metric
    gappy = _rows(n_entities=1, seed=6)
    gappy["entity_id"] = "gappy"
    gappy = gappy[~gappy.ts.dt.hour.isin([3, 4])]  # never reports at 3 and 4 o'clock
    rows = pd.concat([rows, late, gappy], ignore_index=True)
    out = detect_days(rows, _all_days(rows), P)
    s = out.scores
    late_s = s[s.entity_id == "late"].sort_values("ts")
    assert (late_s.severity.iloc[:P.min_points] == "cold_start").all()
    assert (late_s.severity.iloc[P.min_points:] != "cold_start").all()
    assert set(out.decomposition[out.decomposition.entity_id == "late"].metric) == {"temp", "load", "vib"}
    gap = s[s.entity_id == "gappy"]
    assert len(gap) == rows[rows.entity_id == "gappy"].ts.nunique() and (gap.severity != "cold_start").sum() > 400


def test_a_large_group_cut_into_batches_scores_as_one(monkeypatch):
    from anomaly_assets.core import fleet

    rows = _rows(n_entities=7, days=12, fault=(3, "load", 24 * 9, 24 * 9 + 5))
    days = _all_days(rows)
    whole = detect_days(rows, days, P)
    sizes = []
    real = fleet._score_batch

    def spy(lay, batch, *a, **k):
        sizes.append(len(batch.entities) * (batch.hist.shape[1] + batch.new.shape[1]) * len(batch.metrics))
        return real(lay, batch, *a, **k)

    # two entities' worth of the last day's window (12 days x 24 points x 2 metrics): the later
    # days' group of 7 is cut into up to 4 batches
    monkeypatch.setattr(fleet, "_BATCH_VALUES", 2 * 12 * 24 * 2)
    monkeypatch.setattr(fleet, "_score_batch", spy)
    cut = detect_days(rows, days, P)
    assert max(sizes) <= fleet._BATCH_VALUES and len(sizes) > 2 * len(days)
    assert (cut.scores.is_anomaly & (cut.scores.entity_id == "e03")).any()
    for name in ("decomposition", "scores", "explanations"):
        a, b = (getattr(o, name).sort_values(["entity_id", "ts"], kind="stable").reset_index(drop=True)
                for o in (whole, cut))
        pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12)


def test_kept_choices_do_not_depend_on_the_batch(monkeypatch):
    """An entity with too few usable points makes no calendar choice, whether its batch-mates can
    be fitted (one batch) or not (the entity alone)."""
    import dataclasses

    from anomaly_assets.core import fleet

    p = dataclasses.replace(P, select_days=3)
    rows = _rows(n_entities=3, days=32)
    sparse = (rows.entity_id == "e02") & (rows.ts >= START + pd.Timedelta(hours=3))
    rows.loc[sparse, "value"] = np.nan  # e02: three points per metric, the same timeline
    days = _all_days(rows)
    whole = detect_days(rows, days, p)
    monkeypatch.setattr(fleet, "_BATCH_VALUES", 1)  # every entity a batch of its own
    alone = detect_days(rows, days, p)
    for out in (whole, alone):
        assert "e02" not in set(out.selections.to_table().column("entity_id").to_pylist())
        assert {"e00", "e01"} <= set(out.selections.to_table().column("entity_id").to_pylist())
    assert whole.selections.to_table().equals(alone.selections.to_table())
    assert whole.selections.changes_table().equals(alone.selections.changes_table())


def test_holidays_are_part_of_the_batch_key():
    rows = _rows(n_entities=2, days=40, freq="1D")
    hol = {"e00": np.array([int(START.value // 86_400e9) + 10], dtype=np.int64)}
    out = detect_days(rows, _all_days(rows), P, holidays=hol)
    assert out.scores.groupby("entity_id").size().to_dict() == {"e00": 40, "e01": 40}


def test_no_rows_no_output():
    out = detect_days(_rows().iloc[:0], [START], P)
    assert out.scores.empty and out.decomposition.empty and out.models[START].entities == 0


def test_names_as_categoricals_give_the_codes_of_names_as_strings():
    """The warehouse reads names as categoricals (unused, unsorted categories included)."""
    from anomaly_assets.core.fleet import _codes

    rng = np.random.default_rng(0)
    names = np.array(["pump-10", "pump-2", "Zeta", "alpha", "é-x"], dtype=object)
    col = pd.Series(names[rng.integers(0, len(names), 500)]).astype(str)
    cats = pd.Series(pd.Categorical(col, categories=["unused", *reversed(sorted(set(names)))]))
    want, got = _codes(col), _codes(cats)
    np.testing.assert_array_equal(got[0], want[0])
    assert list(got[1]) == list(want[1]) == sorted(set(names))


def test_a_flag_from_a_stretch_says_so_and_how_rare_the_stretch_is():
    # a 5-hour excursion: its first points flag on their own; once it ends, the smoothed
    # evidence still flags for a while, and the why must not read as if the point itself were off
    rows = _rows(n_entities=2, days=24, fault=(1, "load", 24 * 22 + 3, 24 * 22 + 8))
    out = detect_days(rows, _all_days(rows), P)
    f = out.scores[out.scores.is_anomaly & (out.scores.entity_id == "e01")].sort_values("ts")
    start = START + pd.Timedelta(hours=24 * 22 + 3)
    own = f[f.ts < start + pd.Timedelta(hours=2)]
    assert len(own) == 2 and not own.why.str.contains("stretch").any()
    after = f[f.ts >= start + pd.Timedelta(hours=5)]
    assert len(after) >= 1
    said = after.why.str.extract(r"^load (?:[\d.]+σ off \(rms\) over about the last 10 points, now )?[\d.]+ vs [\d.]+ expected \(([+-][\d.]+)σ\).*; flagged for the recent stretch "
                                 r"\(about the last (\d+) points together\), as rare as ([\d.]+)σ$").astype(float)
    assert said.notna().all().all()
    assert (said[0].abs() < 3).all() and (said[2] > 3).all() and said[1].isin([10, 50]).all()
    # load leads for its recent deviation, not the point's: the why gives that one first
    recent = after.why.str.extract(r"^load ([\d.]+)σ off \(rms\) over about the last 10 points, now ")[0].astype(float)
    assert recent.notna().any() and (recent.dropna() > said[0].abs()[recent.notna()] + 1).all()
    assert not after.why.str.contains("relation broken|metrics off together").any()


def test_a_metric_that_starts_late_does_not_flag_its_entity():
    # a sensor added to a running entity: until it is there for most of the reference it stays
    # out of the entity's correlation model, whose fit would read its absence as no deviation
    rows = _rows(n_entities=2, days=24, metrics=("temp", "load", "flow"), seed=3)
    late = (rows.entity_id == "e01") & (rows.metric == "flow") & (rows.ts < START + pd.Timedelta(days=20))
    out = detect_days(rows[~late], _all_days(rows), P)
    after = out.scores[(out.scores.entity_id == "e01") & (out.scores.ts >= START + pd.Timedelta(days=20))]
    assert len(after) == 4 * 24 and (after.severity != "cold_start").all()
    assert not after.is_anomaly.any()
