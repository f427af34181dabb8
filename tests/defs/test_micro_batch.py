"""Micro-batches: today's partition is open, so a file that lands during the day is ingested,
scored, explained and run through the alert rules at once. When the rest of the day lands, the
day's run scores the new points and gives the earlier ones the scores they already had: the same
as one run over the whole day. Real ingest, detection and alerts materializations on DuckDB.

The day is yesterday, whose hours have all passed (the ingest quarantines timestamps in the
future), run first with its morning only, as today's is while it fills up (detection is told
that it is still open, so its later runs score with the models the first one fitted)."""

import datetime as dt

import dagster as dg
import duckdb
import numpy as np
import pandas as pd

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.defs.alerts import alert_rulebook
from anomaly_assets.settings import load_settings

TODAY = pd.Timestamp(dt.datetime.now(dt.timezone.utc).date(), tz="UTC") - pd.Timedelta(days=1)  # see above
FIRST = TODAY - pd.Timedelta(days=16)
CHAIN = [dg.AssetKey(k) for k in (["raw", "observations"], ["features", "decomposition"], ["ml", "model_versions"],
                                    ["scoring", "anomaly_scores"], ["scoring", "explanations"], ["alerts", "alerts"])]


PROMO_DAYS = pd.date_range(TODAY - pd.Timedelta(days=12), TODAY, freq="4D")  # pump-1's, today's included


def _frames(promotions=False):
    """History, today's morning and the rest of today. With ``promotions``, pump-1's load runs
    x1.5 on ``PROMO_DAYS``."""
    rng = np.random.default_rng(11)
    ts = pd.date_range(FIRST, TODAY + pd.Timedelta(hours=23), freq="1h")
    rows = []
    for e in range(4):
        for j, m in enumerate(("temp", "load")):
            v = 30 + 10 * j + 3 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24) + rng.normal(0, 0.5, len(ts))
            if e == 2 and m == "load":
                v[-24 + 5:-24 + 9] += 15  # an excursion from 05:00 today, in the first micro-batch
            if promotions and e == 1 and m == "load":
                v = np.where(ts.floor("D").isin(PROMO_DAYS), 1.5 * v, v)
            rows.append(pd.DataFrame({"entity_id": f"pump-{e}", "ts": ts, "metric": m, "value": v.round(3)}))
    df = pd.concat(rows, ignore_index=True)
    df["timestamp"] = df["ts"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    morning = TODAY + pd.Timedelta(hours=10)
    cols = ["entity_id", "timestamp", "metric", "value"]
    return df[df.ts < TODAY][cols], df[(df.ts >= TODAY) & (df.ts < morning)][cols], df[df.ts >= morning][cols]


def _env(root, calendar=False):
    (root / "landing").mkdir(parents=True)
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb")}
    if not calendar:
        return resources(load_settings(env)), dg.DagsterInstance.ephemeral()
    pd.DataFrame({"start": PROMO_DAYS.strftime("%Y-%m-%d"), "end": PROMO_DAYS.strftime("%Y-%m-%d"),
                  "kind": "promotion", "scope": "entity:pump-1", "name": "push"}).to_csv(root / "calendar.csv", index=False)
    env["ANOMALY_CALENDAR"] = str(root / "calendar.csv")
    return {**resources(load_settings(env)), "alert_rules": alert_rulebook(environ=env)}, dg.DagsterInstance.ephemeral()


def _run(res, inst, first, last=None):
    tags = {} if last is None else {"dagster/asset_partition_range_start": str(first.date()),
                                    "dagster/asset_partition_range_end": str(last.date())}
    result = dg.materialize([*python_assets, *sql_assets], resources=res, instance=inst, selection=CHAIN,
                            partition_key=str(first.date()) if last is None else None, tags=tags)
    assert result.success


def _today(root):
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        scores = con.execute("SELECT entity_id, ts, anomaly_score, severity, why FROM scoring.anomaly_scores "
                             "WHERE ts >= ? ORDER BY entity_id, ts", [TODAY]).df()
        alerts = con.execute("SELECT count(*) FROM alerts.alerts WHERE opened_at >= ?", [TODAY]).fetchone()[0]
    return scores, alerts


def _backfilled(root, history, calendar=False):
    """A warehouse backfilled through the day before TODAY: its resources, instance and landing."""
    res, inst = _env(root, calendar)
    history.to_csv(root / "landing" / "history.csv", index=False)
    _run(res, inst, FIRST, TODAY - pd.Timedelta(days=1))
    return res, inst, root / "landing"


def _whole_day(root, history, morning, rest, calendar=False):
    """Today's scores from one run over the history and the whole day, on another warehouse."""
    res, inst = _env(root, calendar)
    for name, frame in (("history", history), ("morning", morning), ("rest", rest)):
        frame.to_csv(root / "landing" / f"{name}.csv", index=False)
    _run(res, inst, FIRST, TODAY)
    return _today(root)[0]


def _assert_day_as_one_run(tmp_path, history, morning, rest, calendar=False):
    """The micro-batched warehouse's day equals one run over the whole day on another."""
    day, _ = _today(tmp_path / "micro")
    assert len(day) == 4 * 24
    pd.testing.assert_frame_equal(day, _whole_day(tmp_path / "whole", history, morning, rest, calendar),
                                  check_exact=False, rtol=1e-9)


def test_todays_partition_is_open():
    from anomaly_assets.defs.partitions import daily_partitions

    assert daily_partitions.get_last_partition_key() == str(dt.datetime.now(dt.timezone.utc).date())


def _carried(root) -> int:
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        return con.execute("SELECT carried FROM ml.model_versions WHERE day = ?", [TODAY.date()]).fetchone()[0]


def test_a_micro_batch_scores_the_day_so_far_and_the_day_keeps_those_scores(tmp_path, monkeypatch):
    from anomaly_assets.defs import detection

    history, morning, rest = _frames()
    res, inst, land = _backfilled(tmp_path / "micro", history)  # before today opened: nothing fitted ahead
    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY)
    morning.to_csv(land / "today_morning.csv", index=False)
    _run(res, inst, TODAY)  # what the landing sensor requests for today's file
    early, early_alerts = _today(tmp_path / "micro")
    assert len(early) == 4 * 10 and (early.severity != "cold_start").all()
    assert early.loc[early.entity_id == "pump-2", "severity"].isin(["warning", "critical"]).any()
    assert early_alerts >= 1  # the alert rules ran on the micro-batch
    assert _carried(tmp_path / "micro") == 0 and list((tmp_path / "micro" / "models" / "state").glob("*-opened_*"))
    rest.to_csv(land / "today_rest.csv", index=False)
    _run(res, inst, TODAY)  # the rest of the day (the nightly run completes it the same way)
    assert _carried(tmp_path / "micro") == 4  # with the models the morning's run fitted for the day
    day, _ = _today(tmp_path / "micro")
    assert len(day) == 4 * 24 and not day.duplicated(["entity_id", "ts"]).any()
    again = day.merge(early, on=["entity_id", "ts"], suffixes=("", "_early"))
    assert len(again) == len(early)
    np.testing.assert_allclose(again.anomaly_score, again.anomaly_score_early, rtol=1e-9)
    assert (again.severity == again.severity_early).all() and (again.why.fillna("") == again.why_early.fillna("")).all()
    # one run over the whole day, on another warehouse: the same scores
    whole = _whole_day(tmp_path / "whole", history, morning, rest)
    pd.testing.assert_frame_equal(day, whole, check_exact=False, rtol=1e-9)
    # an earlier day run again: the history changed, so today's models are fitted again
    _run(res, inst, TODAY - pd.Timedelta(days=2))
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 0
    again, _ = _today(tmp_path / "micro")
    pd.testing.assert_frame_equal(again, whole, check_exact=False, rtol=1e-9)


def test_a_point_landing_before_the_first_batch_refits_its_entity_from_its_history(tmp_path, monkeypatch):
    # pump-1's first hours of the day land after the morning's file: the model the morning fitted
    # for it started later, so the day's next run reads its history and refits it, as one run
    # over the whole day does; the others keep the morning's models
    from anomaly_assets.defs import detection

    history, morning, rest = _frames()
    late = (morning.entity_id == "pump-1") & (morning.timestamp < (TODAY + pd.Timedelta(hours=3)).strftime("%Y-%m-%dT%H"))
    res, inst, land = _backfilled(tmp_path / "micro", history)
    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY)
    morning[~late].to_csv(land / "today_morning.csv", index=False)
    _run(res, inst, TODAY)
    pd.concat([morning[late], rest]).to_csv(land / "today_rest.csv", index=False)
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 3
    _assert_day_as_one_run(tmp_path, history, morning, rest)


def test_the_run_that_closes_the_day_scores_with_the_models_its_micro_batches_fitted(tmp_path, monkeypatch):
    # the morning's micro-batch fitted the day's models; once the day has ended, its nightly run
    # carries them (reading the day's rows only) and gives the scores of one run over the whole day
    from anomaly_assets.defs import detection

    history, morning, rest = _frames()
    res, inst, land = _backfilled(tmp_path / "micro", history)
    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY)
    morning.to_csv(land / "today_morning.csv", index=False)
    _run(res, inst, TODAY)
    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY + pd.Timedelta(days=1))  # the day ended
    rest.to_csv(land / "today_rest.csv", index=False)
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 4
    _assert_day_as_one_run(tmp_path, history, morning, rest)


def test_the_night_fits_the_next_days_models_and_its_micro_batches_carry_them(tmp_path, monkeypatch):
    # the run that closes yesterday (here the backfill through it) also fits today's models, at
    # each series' next hour: today's first micro-batch carries them all, reading today's rows
    # only, and the day equals one run over it
    from anomaly_assets.defs import detection

    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY)
    history, morning, rest = _frames()
    res, inst, land = _backfilled(tmp_path / "micro", history)
    assert list((tmp_path / "micro" / "models" / "state").glob(f"{TODAY.date()}-opened_*"))
    morning.to_csv(land / "today_morning.csv", index=False)
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 4
    rest.to_csv(land / "today_rest.csv", index=False)
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 4
    # the registry still says what the day's models learnt, though the night fitted them
    with duckdb.connect(str(tmp_path / "micro" / "wh.duckdb"), read_only=True) as con:
        rows, start, path = con.execute("SELECT training_rows, train_start, artifact_path FROM ml.model_versions "
                                        "WHERE day = ?", [TODAY.date()]).fetchone()
    assert rows >= 4 * 14 * 24 and start <= TODAY - pd.Timedelta(days=14)
    assert len(pd.read_parquet(path)) == 4 * 2
    _assert_day_as_one_run(tmp_path, history, morning, rest)


def test_micro_batches_carry_what_the_day_learnt_of_its_calendar_events(tmp_path, monkeypatch):
    # pump-1's load runs x1.5 every fourth day, today too, and the calendar says so: the morning's
    # micro-batch fits the day's models with that lift, the rest of the day carries them, and the
    # day equals one run over it
    from anomaly_assets.defs import detection

    history, morning, rest = _frames(promotions=True)
    res, inst, land = _backfilled(tmp_path / "micro", history, calendar=True)
    monkeypatch.setattr(detection, "open_day_start", lambda: TODAY)
    morning.to_csv(land / "today_morning.csv", index=False)
    _run(res, inst, TODAY)
    rest.to_csv(land / "today_rest.csv", index=False)
    _run(res, inst, TODAY)
    assert _carried(tmp_path / "micro") == 4
    _assert_day_as_one_run(tmp_path, history, morning, rest, calendar=True)
    with duckdb.connect(str(tmp_path / "micro" / "wh.duckdb"), read_only=True) as con:
        lift = con.execute("SELECT avg(expected) FILTER (WHERE ts >= ?) / avg(expected) FILTER (WHERE ts < ?) "
                           "FROM features.decomposition WHERE entity_id = 'pump-1' AND metric = 'load' AND ts >= ?",
                           [TODAY, TODAY, TODAY - pd.Timedelta(days=1)]).fetchone()[0]
    assert 1.3 < lift < 1.7  # today's expected load carries the promotion's lift, yesterday's did not
