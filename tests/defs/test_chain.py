"""The whole chain materialized for real: demo landing folder -> DuckDB tables."""

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets.definitions import python_assets, resources, sql_assets
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

RANGE = ("2026-09-07", "2026-09-22")  # 16 days of the demo fleet


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    generate_fleet(root / "landing", entities=8, days=16, labels_path=root / "labels.csv", entities_path=root / "entities.csv")
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "ANOMALY_LABELS": str(root / "labels.csv")}
    res = resources(load_settings(env))
    result = _run(res, *RANGE)
    assert result.success
    return root, res


def _run(res, start, end):
    return dg.materialize(
        [*python_assets, *sql_assets], resources=res, instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end},
    )


def _q(root, sql):
    con = duckdb.connect(str(root / "wh.duckdb"), read_only=True)
    try:
        return con.execute(sql).df()
    finally:
        con.close()


def test_every_table_is_filled(warehouse):
    root, _ = warehouse
    counts = _q(root, """
        SELECT (SELECT count(*) FROM raw.observations) obs, (SELECT count(*) FROM features.decomposition) dec,
               (SELECT count(*) FROM scoring.anomaly_scores) sc, (SELECT count(*) FROM ml.model_versions) mv,
               (SELECT count(*) FROM marts.entity_health) eh, (SELECT count(*) FROM marts.fleet_health) fh,
               (SELECT count(*) FROM evaluation.metrics) ev""").iloc[0]
    assert counts.obs == 8 * 4 * 16 * 24
    assert counts.dec == counts.obs
    assert counts.sc == 8 * 16 * 24  # one row per entity and timestamp
    assert counts.mv == 16 and counts.eh == 8 and counts.fh == 16 and counts.ev == 9  # 8 entities + overall


def test_scores_are_valid_and_cold_start_is_explicit(warehouse):
    root, _ = warehouse
    s = _q(root, "SELECT * FROM scoring.anomaly_scores")
    assert not s.duplicated(["entity_id", "ts"]).any()
    scored = s[s.severity != "cold_start"]
    assert scored.anomaly_score.between(0, 1).all() and len(scored) > 0
    cold = s[s.severity == "cold_start"]
    assert cold.anomaly_score.isna().all() and not cold.is_anomaly.any()
    # each series' first points have no history to say anything from: cold start, never a fake
    # score; from its 8th point (min_points) on it is scored
    first = pd.Timestamp(RANGE[0], tz="UTC")
    assert (s[s.ts < first + pd.Timedelta(hours=8)].severity == "cold_start").all()
    assert (s[s.ts >= first + pd.Timedelta(hours=8)].severity != "cold_start").all()
    flagged = s[s.is_anomaly]
    assert flagged.why.notna().all() and flagged.severity.isin(["warning", "critical"]).all()


def test_explanations_rank_every_metric_and_sum_to_one(warehouse):
    root, _ = warehouse
    e = _q(root, "SELECT entity_id, ts, count(*) n, sum(contribution) total, min(rank) r0, max(rank) r1 "
                 "FROM scoring.explanations GROUP BY ALL")
    flagged = _q(root, "SELECT count(*) n FROM scoring.anomaly_scores WHERE is_anomaly").n[0]
    assert len(e) == flagged
    if len(e):
        assert (e.n == 4).all() and (e.r0 == 1).all() and (e.r1 == 4).all()
        assert (e.total - 1).abs().max() < 1e-9


def test_rematerializing_a_partition_neither_duplicates_nor_drops(warehouse):
    root, res = warehouse
    before = _q(root, "SELECT * FROM scoring.anomaly_scores ORDER BY entity_id, ts")
    obs_before = _q(root, "SELECT count(*) n FROM raw.observations").n[0]
    assert _run(res, "2026-09-20", "2026-09-20").success
    after = _q(root, "SELECT * FROM scoring.anomaly_scores ORDER BY entity_id, ts")
    assert _q(root, "SELECT count(*) n FROM raw.observations").n[0] == obs_before
    pd.testing.assert_frame_equal(before.drop(columns="model_version"), after.drop(columns="model_version"))
