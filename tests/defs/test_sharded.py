"""The sharded layout for real: two shards' chains in two processes (multiprocess executor), one
DuckDB file each, no lock errors, and fleet marts equal to the unsharded chain's on the same data."""

import importlib
import shutil

import dagster as dg
import duckdb
import pandas as pd

from anomaly_assets.defs import detection, ingest
from anomaly_assets.defs.sql_models import build_sql_model_assets
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

RANGE = {"dagster/asset_partition_range_start": "2026-09-07", "dagster/asset_partition_range_end": "2026-09-21"}
MARTS = {"marts.fleet_health": "day", "marts.entity_health": "entity_id"}


def _read(path, tables):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY {k}").df() for t, k in tables.items()}
    finally:
        con.close()


def test_two_shards_run_in_two_processes_and_merge_to_the_fleet_answer(tmp_path, monkeypatch):
    generate_fleet(tmp_path / "landing", entities=40, days=15, seed=5)  # sites site-01, site-02
    for f in (tmp_path / "landing").rglob("*.csv"):  # the feed, split by site into two shards
        shard = 0 if f.name == "site-01.csv" else 1
        target = tmp_path / "sharded" / f"shard={shard}" / f.relative_to(tmp_path / "landing")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, target)
    (tmp_path / "wh").mkdir()
    for k, v in {"ANOMALY_LANDING_DIR": str(tmp_path / "sharded"), "ANOMALY_WAREHOUSE": str(tmp_path / "wh" / "w.duckdb"),
                 "ANOMALY_SHARDS": "2", "ANOMALY_PROCESSES": "2", "ANOMALY_WORKERS": "1"}.items():
        monkeypatch.setenv(k, v)
    from anomaly_assets.defs import sharded

    sharded = importlib.reload(sharded)  # definitions from this environment (step processes read it too)
    with dg.instance_for_test() as instance:
        result = dg.execute_job(dg.reconstructable(sharded.sharded_chain_job), instance=instance, tags=RANGE)
        assert result.success
        logs = instance.all_logs(result.run_id)
    # every shard step ran in a process of its own, and the two shards' steps overlapped in time
    spans, pids = {}, {}
    for entry in logs:
        ev = entry.dagster_event
        if ev is None or not ev.step_key or not ev.step_key.startswith("shard_"):
            continue
        if ev.event_type_value == "STEP_START":
            spans[ev.step_key] = [entry.timestamp, None]
            pids[ev.step_key] = ev.pid
        elif ev.event_type_value == "STEP_SUCCESS":
            spans[ev.step_key][1] = entry.timestamp
    assert len(spans) == 4 and len(set(pids.values())) == 4  # ingest and detection per shard
    s0 = [v for k, v in spans.items() if k.startswith("shard_0")]
    s1 = [v for k, v in spans.items() if k.startswith("shard_1")]
    assert any(a0 < b1 and a1 < b0 for a0, b0 in s0 for a1, b1 in s1), "the shards' steps never ran at the same time"
    text = " ".join(str(e.user_message) + str(e.dagster_event.event_specific_data if e.dagster_event else "") for e in logs)
    assert "lock" not in text.lower()
    assert (tmp_path / "wh" / "shard_0.duckdb").exists() and (tmp_path / "wh" / "shard_1.duckdb").exists()

    # the same data through the unsharded chain: the fleet marts agree
    whole_env = {"ANOMALY_LANDING_DIR": str(tmp_path / "landing"), "ANOMALY_WAREHOUSE": str(tmp_path / "whole.duckdb")}
    from anomaly_assets.definitions import resources

    s = load_settings(whole_env)
    assert dg.materialize(
        [ingest.observations, detection.detection, *build_sql_model_assets(s.sql_dir)],
        resources=resources(s), instance=dg.DagsterInstance.ephemeral(), tags=RANGE,
        selection=dg.AssetSelection.all() - dg.AssetSelection.groups("alerts", "evaluation")
        - dg.AssetSelection.assets(["marts", "current_health"], ["marts", "open_alerts"],  # they read alerts
                                   ["marts", "cycle_counts"], ["marts", "business_kpis"]),
    ).success
    fleet, whole = _read(tmp_path / "wh" / "fleet.duckdb", MARTS), _read(tmp_path / "whole.duckdb", MARTS)
    assert whole["marts.fleet_health"]["anomalies"].sum() > 0
    for t in MARTS:
        pd.testing.assert_frame_equal(fleet[t], whole[t], check_dtype=False, obj=t)

    # a re-run of the fleet marts for the last day rebuilds that day of the day tables: still the same
    with dg.instance_for_test() as instance:
        again = dg.execute_job(dg.reconstructable(sharded.sharded_chain_job), instance=instance,
                               tags={"dagster/partition": RANGE["dagster/asset_partition_range_end"]},
                               asset_selection=[dg.AssetKey(["fleet", "marts"])])
        assert again.success
    days = {"marts.entity_day_health": "day, entity_id", **MARTS}
    fleet, whole = _read(tmp_path / "wh" / "fleet.duckdb", days), _read(tmp_path / "whole.duckdb", days)
    assert fleet["marts.entity_day_health"]["day"].nunique() == 15
    for t in days:
        pd.testing.assert_frame_equal(fleet[t], whole[t], check_dtype=False, obj=t)
