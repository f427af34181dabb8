"""What analysts get: the analysts' copy documents every table and column, has the entity
dimension and the views of now, and exports a table to CSV or Parquet safely."""

import subprocess
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets import export as ex
from anomaly_assets import warehouse as wh
from anomaly_assets.definitions import analyst_copy, python_assets, resources, sql_assets
from anomaly_assets.defs.entities import entity_dimension
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysts")
    generate_fleet(root / "landing", entities=6, days=16, labels_path=root / "labels.csv",
                   entities_path=root / "entities.csv")
    # the register lists 4 of the 6 pumps: the other two are inferred
    ent = pd.read_csv(root / "entities.csv")
    ent.head(4).to_csv(root / "register.csv", index=False)
    env = {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "ANOMALY_ENTITIES": str(root / "register.csv"), "ANOMALY_DATA_DIR": str(root)}
    res = resources(load_settings(env))  # the rulebook's register from env, not os.environ
    result = dg.materialize([*python_assets, *sql_assets, analyst_copy], resources=res,
                            instance=dg.DagsterInstance.ephemeral(),
                            tags={"dagster/asset_partition_range_start": "2026-09-07",
                                  "dagster/asset_partition_range_end": "2026-09-22"})
    assert result.success
    return root, root / "analytics.duckdb", ent


def _q(path, sql, params=()):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, list(params)).df()
    finally:
        con.close()


def test_every_table_view_and_column_is_documented(copy):
    _, path, _ = copy
    rel = _q(path, "SELECT schema_name, table_name AS name, comment FROM duckdb_tables() UNION ALL "
                   "SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal")
    assert rel["comment"].notna().all() and (rel["comment"].str.len() > 20).all(), rel[rel["comment"].isna()]
    assert {"marts.current_health", "marts.open_alerts", "marts.entities", "raw.observations"} <= set(
        rel["schema_name"] + "." + rel["name"])
    cols = _q(path, "SELECT schema_name, table_name, column_name, comment FROM duckdb_columns() "
                    "WHERE schema_name NOT IN ('main', 'information_schema', 'pg_catalog')")
    assert cols["comment"].notna().all(), cols[cols["comment"].isna()]
    obs = cols[(cols.schema_name == "raw") & (cols.table_name == "observations")].set_index("column_name")["comment"]
    assert obs.to_dict() == {c.name: c.doc for c in wh.OBSERVATIONS.columns}


def test_the_entity_dimension_takes_the_register_and_infers_the_rest(copy):
    root, path, register = copy
    e = _q(path, "SELECT * FROM marts.entities ORDER BY entity_id")
    obs = _q(path, "SELECT entity_id, count(*) n, count(DISTINCT metric) m FROM raw.observations GROUP BY 1 ORDER BY 1")
    assert list(e.entity_id) == list(obs.entity_id) and list(e.observations) == list(obs.n) and (e.metrics == obs.m).all()
    listed = register.head(4).set_index("entity_id")
    for r in e.itertuples():
        if r.entity_id in listed.index:
            assert r.registered and r.site == listed.at[r.entity_id, "site"]
        else:
            assert not r.registered and r.site == "pump" and r.tags == ""
    assert e.registered.sum() == 4


def test_entity_dimension_without_a_register():
    seen = pd.DataFrame({"entity_id": ["b-2", "a-1"], "metrics": [1, 2], "observations": [3, 4],
                         "first_ts": pd.Timestamp("2026-01-01", tz="UTC"), "last_ts": pd.Timestamp("2026-01-02", tz="UTC")})
    out = entity_dimension(seen, pd.DataFrame(columns=["entity_id", "site", "tags", "team"]))
    assert list(out.entity_id) == ["a-1", "b-2"] and list(out.site) == ["a", "b"] and not out.registered.any()
    assert list(out.columns) == wh.ENTITIES.column_names


def test_current_health_is_the_last_24_hours_and_7_days_of_data_time(copy):
    _, path, _ = copy
    now = _q(path, "SELECT * FROM marts.current_health ORDER BY rank_now")
    s = _q(path, "SELECT entity_id, ts, is_anomaly, severity FROM scoring.anomaly_scores WHERE severity <> 'cold_start'")
    as_of = s.ts.max()
    assert (now.as_of == as_of).all()
    day, week = s[s.ts > as_of - pd.Timedelta(hours=24)], s[s.ts > as_of - pd.Timedelta(days=7)]
    by = now.set_index("entity_id")
    for entity in week.entity_id.unique():
        assert by.at[entity, "points_24h"] == (day.entity_id == entity).sum()
        assert by.at[entity, "flagged_24h"] == (day.is_anomaly & (day.entity_id == entity)).sum()
        assert by.at[entity, "flagged_7d"] == (week.is_anomaly & (week.entity_id == entity)).sum()
    assert list(now.rank_now) == list(range(1, len(now) + 1))
    top = now.iloc[0]
    assert top.critical_24h == now.critical_24h.max()


def test_open_alerts_lists_exactly_the_open_and_acknowledged_ones(copy):
    _, path, _ = copy
    view = _q(path, "SELECT alert_id, site FROM marts.open_alerts")
    table = _q(path, "SELECT alert_id FROM alerts.alerts WHERE status IN ('open', 'acknowledged')")
    assert sorted(view.alert_id) == sorted(table.alert_id)


def test_export_writes_csv_and_parquet_with_bound_filters(copy, tmp_path):
    _, path, _ = copy
    allowed = ex.exportable(REPO / "dbt_like_sql")
    assert {"marts.entity_health", "marts.current_health", "scoring.anomaly_scores"} <= set(allowed)
    con = duckdb.connect(str(path), read_only=True)
    try:
        filters = [ex.parse_where("entity_id=pump-0002"), ex.parse_where("ts >= '2026-09-20'")]
        n = ex.export(con, "scoring.anomaly_scores", tmp_path / "s.csv", "csv", filters, allowed)
        m = ex.export(con, "marts.entities", tmp_path / "e.parquet", "parquet", [], allowed)
        # a value is a value: an injection attempt is a string that matches no entity
        k = ex.export(con, "scoring.anomaly_scores", tmp_path / "x.csv", "csv",
                      [ex.parse_where("entity_id=x' OR '1'='1")], allowed)
        with pytest.raises(ex.ExportError, match="unknown table 'main.secrets'"):
            ex.export(con, "main.secrets", tmp_path / "y.csv", "csv", [], allowed)
        with pytest.raises(ex.ExportError, match="has no column 'nope'"):
            ex.export(con, "marts.entities", tmp_path / "y.csv", "csv", [ex.parse_where("nope=1")], allowed)
    finally:
        con.close()
    csv = pd.read_csv(tmp_path / "s.csv")
    assert n == len(csv) == 3 * 24 and set(csv.entity_id) == {"pump-0002"}
    assert m == len(pd.read_parquet(tmp_path / "e.parquet")) == 6
    assert k == 0 and len(pd.read_csv(tmp_path / "x.csv")) == 0
    for bad in ("entity_id", "entity_id ~ x", "1=1; DROP TABLE x"):
        with pytest.raises(ex.ExportError, match="expected 'column OP value'"):
            ex.parse_where(bad)


def test_export_command(copy, tmp_path):
    root, path, _ = copy
    env = {"PATH": "/usr/bin:/bin", "ANOMALY_DATA_DIR": str(root), "ANOMALY_WAREHOUSE": str(root / "wh.duckdb"),
           "DAGSTER_HOME": str(tmp_path)}
    cli = str(REPO / ".venv" / "bin" / "anomaly-assets")
    p = subprocess.run([cli, "export", "marts.entity_health", "--format", "parquet", "--where", "critical_points>=0",
                        "--out", str(tmp_path / "h.parquet")], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("exported 6 rows of marts.entity_health") and len(pd.read_parquet(tmp_path / "h.parquet")) == 6
    p = subprocess.run([cli, "export", "raw.nope"], env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "unknown table 'raw.nope'" in p.stderr
