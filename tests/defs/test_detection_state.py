"""Models carried between runs: with ``refit_days`` above 1 the detection asset keeps every
series' model beside the warehouse after each run and starts the next night from it. Nightly
runs give the scores of one backfill over the same days, and ``ml.model_versions`` says how many
series were refitted, why, and how many carried their model. Real ingest and detection
materializations on DuckDB."""

import json

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.settings import load_settings

DAYS = pd.date_range("2026-02-01", periods=12, freq="D", tz="UTC")
DETECTION = [dg.AssetKey(k) for k in (["features", "decomposition"], ["ml", "model_versions"],
                                        ["scoring", "anomaly_scores"], ["scoring", "explanations"])]
CONFIG = {"ops": {"detection": {"config": {"refit_days": 7}}}}


def _setup(root, late_cycle=False):
    rng = np.random.default_rng(3)
    ts = pd.date_range(DAYS[0], DAYS[-1] + pd.Timedelta(hours=23), freq="1h")
    rows = []
    for e in range(5):
        for j, m in enumerate(("temp", "load")):
            v = 40 + 10 * j + 4 * np.sin(2 * np.pi * ts.hour.to_numpy() / 24) + rng.normal(0, 1, len(ts))
            if e == 1 and m == "temp":
                v[24 * 9 + 6:] += 20  # a shift that lasts
            if late_cycle and e == 3 and m == "load":  # a daily cycle from day 6: a kept choice lags
                v[24 * 6:] += 8 * np.cos(2 * np.pi * ts.hour.to_numpy()[24 * 6:] / 24)
            rows.append(pd.DataFrame({"entity_id": f"pump-{e}", "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                      "metric": m, "value": v.round(3)}))
    (root / "landing").mkdir(parents=True)
    pd.concat(rows).to_csv(root / "landing" / "telemetry.csv", index=False)
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb")}
    res = resources(load_settings(env))
    inst = dg.DagsterInstance.ephemeral()
    assets = [*python_assets, *sql_assets]
    ingest = dg.materialize(assets, resources=res, instance=inst, selection=[dg.AssetKey(["raw", "observations"])],
                            tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                                  "dagster/asset_partition_range_end": str(DAYS[-1].date())})
    assert ingest.success
    return assets, res, inst


def _tables(root):
    with duckdb.connect(str(root / "wh.duckdb"), read_only=True) as con:
        scores = con.execute("SELECT entity_id, ts, anomaly_score, severity FROM scoring.anomaly_scores "
                             "ORDER BY entity_id, ts").df()
        versions = con.execute("SELECT day, refits, carried FROM ml.model_versions ORDER BY day").df()
    return scores, versions


def test_nightly_runs_carry_models_and_equal_the_backfill(tmp_path):
    assets, res, inst = _setup(tmp_path / "backfill")
    run = dg.materialize(assets, resources=res, instance=inst, selection=DETECTION, run_config=CONFIG,
                         tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                               "dagster/asset_partition_range_end": str(DAYS[-1].date())})
    assert run.success
    assets, res, inst = _setup(tmp_path / "nightly")
    lean = []
    for day in DAYS:
        night = dg.materialize(assets, resources=res, instance=inst, selection=DETECTION, run_config=CONFIG,
                               partition_key=str(day.date()))
        assert night.success
        assert list((tmp_path / "nightly" / "models" / "state").glob(f"{day.date()}_*.parquet"))
        meta = night.asset_materializations_for_node("detection")[0].metadata
        lean.append(meta["entities_read_for_the_day_only"].value)
    backfill, _ = _tables(tmp_path / "backfill")
    nightly, versions = _tables(tmp_path / "nightly")
    pd.testing.assert_frame_equal(backfill, nightly, check_exact=False, rtol=1e-9)
    refits = [json.loads(r) for r in versions["refits"]]
    assert refits[0] == {"new": 5}
    assert sum(versions["carried"].iloc[8:]) > 0  # past the warm-up most nights carry the models
    # ... and those nights read only the day for the entities that carry their model
    assert list(versions["carried"]) == lean
    assert any("drift" in r for r in refits[9:])  # the shifted pump is refitted early
    assert (backfill.loc[backfill.entity_id == "pump-1", "severity"].isin(["warning", "critical"])).any()


def test_refitted_daily_nights_keep_selections_and_equal_the_backfill(tmp_path):
    """With select_days: each run keeps every entity's calendar components at each day's end
    beside the warehouse, and the next run refits with those of the day before its first
    (core/selection.py): nightly runs, one backfill and a rerun of one of its days agree."""
    config = {"ops": {"detection": {"config": {"reference_days": 5.0, "reference_points": 100,
                                               "select_days": 7}}}}  # settled from day 5
    assets, res, inst = _setup(tmp_path / "backfill", late_cycle=True)
    run = dg.materialize(assets, resources=res, instance=inst, selection=DETECTION, run_config=config,
                         tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                               "dagster/asset_partition_range_end": str(DAYS[-1].date())})
    assert run.success
    in_backfill = run.asset_materializations_for_node("detection")[0].metadata["refits_with_a_kept_selection"].value
    # the backfill keeps every day's selections: a rerun of a day inside it makes the same choices
    state = tmp_path / "backfill" / "models" / "state"
    files = {d: pq.read_table(next(state.glob(f"{d.date()}-selected_*.parquet"))) for d in DAYS}
    for d, table in files.items():  # a day's file holds no choice made after it
        assert max(table["day"].to_pylist(), default=0) <= d.value // 86_400_000_000_000, d
    backfill, _ = _tables(tmp_path / "backfill")
    again = dg.materialize(assets, resources=res, instance=inst, selection=DETECTION, run_config=config,
                           partition_key=str(DAYS[8].date()))
    assert again.success and again.asset_materializations_for_node("detection")[0].metadata[
        "refits_with_a_kept_selection"].value > 0
    pd.testing.assert_frame_equal(_tables(tmp_path / "backfill")[0], backfill, check_exact=False, rtol=1e-9)
    assert pq.read_table(next(state.glob(f"{DAYS[8].date()}-selected_*.parquet"))).equals(files[DAYS[8]])
    assets, res, inst = _setup(tmp_path / "nightly", late_cycle=True)
    kept = 0
    for day in DAYS:
        night = dg.materialize(assets, resources=res, instance=inst, selection=DETECTION, run_config=config,
                               partition_key=str(day.date()))
        assert night.success
        assert list((tmp_path / "nightly" / "models" / "state").glob(f"{day.date()}-selected_*.parquet"))
        kept += night.asset_materializations_for_node("detection")[0].metadata["refits_with_a_kept_selection"].value
    assert kept == in_backfill > 10  # most series kept their selection on most nights past day 5
    nightly, _ = _tables(tmp_path / "nightly")
    pd.testing.assert_frame_equal(backfill, nightly, check_exact=False, rtol=1e-9)
    # without select_days nothing is kept, and the late cycle is learnt sooner: other scores
    assets, res, inst = _setup(tmp_path / "daily", late_cycle=True)
    assert dg.materialize(assets, resources=res, instance=inst, selection=DETECTION,
                          run_config={"ops": {"detection": {"config": {"reference_days": 5.0, "reference_points": 100}}}},
                          tags={"dagster/asset_partition_range_start": str(DAYS[0].date()),
                                "dagster/asset_partition_range_end": str(DAYS[-1].date())}).success
    assert not list((tmp_path / "daily" / "models").rglob("*-selected_*"))
    daily, _ = _tables(tmp_path / "daily")
    assert not np.allclose(daily["anomaly_score"], backfill["anomaly_score"], equal_nan=True)


def test_an_unreadable_state_file_is_named(tmp_path):
    import pytest

    from anomaly_assets.defs.resources import ModelStore

    store = ModelStore(path=str(tmp_path))
    path = store.state_path("2026-02-01", "v1")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 not really parquet")
    assert store.load_state("2026-01-31", "v1") is None  # none kept for that day: refit from history
    with pytest.raises(ValueError, match=r"model state .*2026-02-01_v1.parquet cannot be read.*delete it"):
        store.load_state("2026-02-01", "v1")
