"""Assets that work a chunk of entities at a time, in worker processes, write what one pass over the fleet writes."""

import dagster as dg
import duckdb
import pandas as pd

from anomaly_assets.defs import decomposition, ingest, scoring
from anomaly_assets.definitions import resources
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

TABLES = {
    "features.decomposition": ["entity_id", "metric", "ts"],
    "scoring.anomaly_scores": ["entity_id", "ts"],
    "scoring.explanations": ["entity_id", "ts", "rank"],
}


def _chain(root, landing, name):
    (root / name).mkdir()
    env = {"ANOMALY_LANDING_DIR": str(landing), "ANOMALY_WAREHOUSE": str(root / name / "wh.duckdb")}
    result = dg.materialize(
        [ingest.observations, decomposition.decomposition, scoring.model_versions, scoring.anomaly_scores],
        resources=resources(load_settings(env)), instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": "2026-09-07", "dagster/asset_partition_range_end": "2026-09-21"},
    )
    assert result.success
    con = duckdb.connect(str(root / name / "wh.duckdb"), read_only=True)
    try:
        out = {t: con.execute(f"SELECT * FROM {t} ORDER BY {', '.join(k)}").df() for t, k in TABLES.items()}
        out["versions"] = con.execute("SELECT day, entities, cold_start_entities, training_rows FROM ml.model_versions "
                                      "ORDER BY day").df()
    finally:
        con.close()
    return result, out


def test_chunks_of_entities_change_nothing(tmp_path, monkeypatch):
    generate_fleet(tmp_path / "landing", entities=7, days=15, seed=3)
    _, whole = _chain(tmp_path, tmp_path / "landing", "whole")
    # about one entity per chunk (an entity has 4 metrics x 24 h x ~15 days of rows)
    for module in (decomposition, scoring):
        monkeypatch.setattr(module, "CHUNK_ROWS", 1500)
    monkeypatch.setenv("ANOMALY_WORKERS", "2")  # computed in two worker processes
    result, chunked = _chain(tmp_path, tmp_path / "landing", "chunked")
    md = result.asset_materializations_for_node("features__decomposition")[0].metadata
    assert md["chunks"].value >= 5 and md["workers"].value == 2
    assert md["dagster/row_count"].value == len(whole["features.decomposition"]) > 0
    for name, df in whole.items():
        pd.testing.assert_frame_equal(chunked[name], df, check_exact=False, rtol=1e-12, obj=name)
    assert whole["scoring.anomaly_scores"]["is_anomaly"].any()
