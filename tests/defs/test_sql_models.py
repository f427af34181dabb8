"""Tests for the plain-SQL model factory and the two marts.

Everything runs against a real DuckDB file in ``tmp_path`` with small hand-built
``scoring.anomaly_scores`` / ``scoring.explanations`` tables.
"""

import sys
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster_duckdb import DuckDBResource

from anomaly_assets.defs import sql_models
from anomaly_assets.warehouse import ALERT_EVENTS, ALERTS, ANOMALY_SCORES, DECOMPOSITION, ENTITIES
from anomaly_assets.warehouse import EXPLANATIONS as EXPLANATIONS_TABLE
from anomaly_assets.warehouse import ensure_tables
from anomaly_assets.defs.sql_models import (
    SqlModel,
    build_sql_model_assets,
    load_sql_models,
)

REPO_SQL_DIR = Path(__file__).resolve().parents[2] / "dbt_like_sql"
ENTITY_HEALTH = dg.AssetKey(["marts", "entity_health"])
FLEET_HEALTH = dg.AssetKey(["marts", "fleet_health"])
CURRENT_HEALTH = dg.AssetKey(["marts", "current_health"])
OPEN_ALERTS = dg.AssetKey(["marts", "open_alerts"])
CYCLE_COUNTS = dg.AssetKey(["marts", "cycle_counts"])
BUSINESS_KPIS = dg.AssetKey(["marts", "business_kpis"])
SITE_DAY_TOTALS = dg.AssetKey(["marts", "site_day_totals"])
ENTITY_DAYS = {dg.AssetKey(["marts", "entity_day_health"]), dg.AssetKey(["marts", "entity_day_families"])}
VIEWS = {CURRENT_HEALTH, OPEN_ALERTS, CYCLE_COUNTS}  # the analysts' views of now: they read alerts and entities too
SCORES = dg.AssetKey(["scoring", "anomaly_scores"])
EXPLANATIONS = dg.AssetKey(["scoring", "explanations"])


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=timezone.utc)


# (entity_id, ts, anomaly_score, is_anomaly, severity, why)
SCORES_ROWS = [
    # pump-a: 2 cold-start-free events (02-03 run, then 05 alone), worst critical.
    ("pump-a", utc(1, 0), None, False, "cold_start", None),
    ("pump-a", utc(1, 1), 0.10, False, "normal", None),
    ("pump-a", utc(1, 2), 0.70, True, "warning", "temp high"),
    ("pump-a", utc(1, 3), 0.95, True, "critical", "temp very high"),
    ("pump-a", utc(1, 4), 0.20, False, "normal", None),
    ("pump-a", utc(2, 5), 0.80, True, "warning", "vibration"),
    ("pump-a", utc(2, 6), 0.30, False, "normal", None),
    # pump-b: flagged at 01 and 03; no row at 02, but 03 is the next *scored*
    # point of pump-b, so both belong to one event.
    ("pump-b", utc(1, 0), 0.05, False, "normal", None),
    ("pump-b", utc(1, 1), 0.99, True, "critical", "pressure spike"),
    ("pump-b", utc(1, 3), 0.97, True, "critical", "pressure drop"),
    ("pump-b", utc(1, 4), 0.10, False, "normal", None),
    # pump-c: cold start then healthy; 2024-01-01 19:00 -05:00 is 2024-01-02 UTC.
    ("pump-c", utc(1, 0), None, False, "cold_start", None),
    ("pump-c", utc(1, 1), None, False, "cold_start", None),
    ("pump-c", utc(1, 2), 0.20, False, "normal", None),
    ("pump-c", datetime(2024, 1, 2, 0, 0, tzinfo=timezone.utc), 0.40, False, "normal", None),
    # pump-d: only cold start.
    ("pump-d", utc(2, 0), None, False, "cold_start", None),
    # pump-e: one critical point with the highest score of the fleet.
    ("pump-e", utc(2, 10), 0.99, True, "critical", "current surge"),
]

# (entity_id, ts, metric, rank, contribution, family, expected, actual)
EXPLANATION_ROWS = [
    # pump-a: thermal is rank 1 twice, but mechanical has the larger *sum* (1.6 vs 1.4).
    ("pump-a", utc(1, 2), "temp", 1, 0.6, "thermal", 50.0, 70.0),
    ("pump-a", utc(1, 2), "vib", 2, 0.4, "mechanical", 1.0, 1.5),
    ("pump-a", utc(1, 3), "temp", 1, 0.7, "thermal", 50.0, 80.0),
    ("pump-a", utc(1, 3), "vib", 2, 0.3, "mechanical", 1.0, 1.4),
    ("pump-a", utc(2, 5), "vib", 1, 0.9, "mechanical", 1.0, 3.0),
    ("pump-a", utc(2, 5), "temp", 2, 0.1, "thermal", 50.0, 52.0),
    # stale explanation of a point that is not flagged: must be ignored.
    ("pump-a", utc(1, 1), "amps", 1, 5.0, "electrical", 10.0, 10.5),
    ("pump-b", utc(1, 1), "pressure", 1, 0.8, "hydraulic", 3.0, 9.0),
    ("pump-b", utc(1, 1), "temp", 2, 0.2, "thermal", 50.0, 51.0),
    ("pump-b", utc(1, 3), "pressure", 1, 0.5, "hydraulic", 3.0, 0.5),
    ("pump-b", utc(1, 3), "temp", 2, 0.5, "thermal", 50.0, 55.0),
    # pump-e: tie 0.5 / 0.5 -> the family name that sorts first.
    ("pump-e", utc(2, 10), "temp", 1, 0.5, "thermal", 50.0, 60.0),
    ("pump-e", utc(2, 10), "amps", 2, 0.5, "electrical", 10.0, 30.0),
]


def create_scoring_tables(db_path: Path, scores=SCORES_ROWS, explanations=EXPLANATION_ROWS):
    """Create the two input tables from the warehouse contract and fill them (and the views' other
    inputs, empty)."""
    with duckdb.connect(str(db_path)) as con:
        ensure_tables(con, (ANOMALY_SCORES, EXPLANATIONS_TABLE, ALERTS, ENTITIES, DECOMPOSITION, ALERT_EVENTS))
        con.execute("DELETE FROM scoring.anomaly_scores")
        con.execute("DELETE FROM scoring.explanations")
        if scores:
            con.executemany(
                "INSERT INTO scoring.anomaly_scores VALUES (?, ?, ?, ?, ?, ?, 'v1')", list(scores)
            )
        if explanations:
            con.executemany(
                "INSERT INTO scoring.explanations VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                list(explanations),
            )


def query(db_path: Path, sql: str) -> list[dict]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


class NewYorkDuckDBResource(DuckDBResource):
    """DuckDBResource whose sessions use a non-UTC time zone (set after connecting:
    TimeZone in connection_config fails because ICU is not loaded yet at that point)."""

    @contextmanager
    def get_connection(self):
        with super().get_connection() as con:
            con.execute("SET TimeZone = 'America/New_York'")
            yield con


def materialize_marts(db_path: Path, resource_cls=DuckDBResource) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        build_sql_model_assets(REPO_SQL_DIR),
        resources={"duckdb": resource_cls(database=str(db_path))},
    )
    assert result.success
    return result


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.duckdb"
    create_scoring_tables(path)
    return path


def write_sql(sql_dir: Path, rel: str, text: str) -> Path:
    path = sql_dir / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def spec_of(assets: list[dg.AssetsDefinition], key: dg.AssetKey) -> dg.AssetSpec:
    return next(spec for a in assets for spec in a.specs if spec.key == key)


# --------------------------------------------------------------------------- factory


def test_repo_models_and_inferred_deps():
    models = {m.qualified_name: m for m in load_sql_models(REPO_SQL_DIR)}
    assert set(models) == {"marts.entity_health", "marts.fleet_health", "marts.current_health", "marts.open_alerts",
                           "marts.cycle_counts", "marts.business_kpis", "marts.site_day_totals",
                           "marts.entity_day_health", "marts.entity_day_families"}
    assert models["marts.cycle_counts"].reads == frozenset({"alerts.alerts", "marts.entities"})
    assert models["marts.cycle_counts"].materialized == "view"
    assert models["marts.site_day_totals"].reads == frozenset(
        {"features.decomposition", "marts.entities", "scoring.anomaly_scores"})
    assert models["marts.business_kpis"].reads == frozenset(
        {"marts.site_day_totals", "marts.entities", "alerts.alerts", "alerts.alert_events"})
    assert models["marts.business_kpis"].materialized == "view"
    assert {n for n, m in models.items() if m.incremental} == {"marts.fleet_health", "marts.site_day_totals",
                                                               "marts.entity_day_health", "marts.entity_day_families"}
    assert models["marts.current_health"].reads == frozenset({"scoring.anomaly_scores", "alerts.alerts"})
    assert models["marts.open_alerts"].reads == frozenset({"alerts.alerts", "marts.entities"})
    assert {m.materialized for m in models.values()} == {"table", "view"}
    assert models["marts.open_alerts"].materialized == "view" == models["marts.current_health"].materialized
    assert models["marts.entity_health"].reads == frozenset(
        {"marts.entity_day_health", "marts.entity_day_families", "scoring.anomaly_scores"}
    )
    assert models["marts.entity_day_families"].reads == frozenset({"scoring.anomaly_scores", "scoring.explanations"})
    assert models["marts.fleet_health"].reads == frozenset({"scoring.anomaly_scores"})
    for model in models.values():
        assert isinstance(model, SqlModel)
        assert model.description and "Columns:" in model.description
        assert not model.sql.lstrip().startswith("--")  # comment block split off

    assets = build_sql_model_assets(REPO_SQL_DIR)
    assert {k for a in assets for k in a.keys} == \
        {ENTITY_HEALTH, FLEET_HEALTH, BUSINESS_KPIS, SITE_DAY_TOTALS} | ENTITY_DAYS | VIEWS
    eh = spec_of(assets, ENTITY_HEALTH)
    assert {d.asset_key for d in eh.deps} == {SCORES} | ENTITY_DAYS
    assert {d.asset_key for d in spec_of(assets, FLEET_HEALTH).deps} == {SCORES}
    assert eh.group_name == "marts"
    assert eh.kinds == {"duckdb", "sql"}
    assert eh.description.startswith("Per-entity health summary")
    assert eh.metadata["sql"].value.startswith("```sql\n")
    assert "from scoring.anomaly_scores" in eh.metadata["sql"].value
    assert eh.metadata["sql_path"].value.endswith("marts/entity_health.sql")
    assert eh.code_version
    assert all(a.partitions_def is None for a in assets)  # full rebuilds
    assert all("duckdb" in a.required_resource_keys for a in assets)


def test_every_output_column_is_documented(db_path: Path):
    materialize_marts(db_path)
    for model in load_sql_models(REPO_SQL_DIR):
        cols = [r["column_name"] for r in query(db_path, f"DESCRIBE {model.qualified_name}")]
        assert set(cols) == set(model.column_descriptions), model.qualified_name


def test_deps_between_models_and_ordering(tmp_path: Path):
    sql_dir = tmp_path / "sql"
    write_sql(sql_dir, "marts/b.sql", "-- B\nselect * from staging.a join scoring.anomaly_scores s on true")
    write_sql(sql_dir, "staging/a.sql", "-- A\nselect 1 as x from scoring.anomaly_scores")
    models = load_sql_models(sql_dir)
    assert [m.qualified_name for m in models] == ["staging.a", "marts.b"]  # upstream first
    assets = build_sql_model_assets(sql_dir)
    assert {d.asset_key for d in spec_of(assets, dg.AssetKey(["marts", "b"])).deps} == {
        dg.AssetKey(["staging", "a"]),
        SCORES,
    }
    assert spec_of(assets, dg.AssetKey(["staging", "a"])).group_name == "staging"
    # Definitions resolve the graph (SQL model -> SQL model edge).
    defs = dg.Definitions(assets=assets, resources={"duckdb": DuckDBResource(database=":memory:")})
    graph = defs.resolve_asset_graph()
    assert dg.AssetKey(["staging", "a"]) in graph.get(dg.AssetKey(["marts", "b"])).parent_keys


def test_dependency_parsing_edge_cases(tmp_path: Path):
    sql_dir = tmp_path / "sql"
    # aliases (get_table_names renders them as 'scoring.x AS e'), CTE names, case,
    # a JOIN ... USING (get_table_names cannot bind it -> parse-tree fallback),
    # a trailing semicolon followed by a comment.
    write_sql(
        sql_dir,
        "marts/m.sql",
        """-- doc line 1
--   x: the x column
with recent as (select * from Scoring.Anomaly_Scores as s)
select r.entity_id, e.metric
from recent as r
join scoring.explanations as e using (entity_id, ts)
join "marts"."other" o on o.entity_id = r.entity_id; -- done
""",
    )
    write_sql(sql_dir, "marts/other.sql", "select 'a' as entity_id")
    models = {m.qualified_name: m for m in load_sql_models(sql_dir)}
    m = models["marts.m"]
    assert m.reads == frozenset({"scoring.anomaly_scores", "scoring.explanations", "marts.other"})
    assert m.description == "doc line 1\n  x: the x column"
    assert m.column_descriptions == {"x": "the x column"}
    assert not m.sql.rstrip().endswith("done")
    assert models["marts.other"].description is None
    assert models["marts.other"].reads == frozenset()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("insert into scoring.x select 1", "SELECT/WITH"),
        ("-- doc\ncreate table marts.bad as select 1", "SELECT/WITH"),
        ("select 1; select 2", "exactly one"),
        ("-- only a comment\n", "exactly one"),
        ("select * from anomaly_scores", "unqualified table"),
        ("with t as (select 1 x) select * from t join raw_table r on true", "unqualified table"),
        ("select * from marts.bad", "cycle"),
        ("select * from", "does not parse"),
        ("-- incremental: day\nselect current_date as day", "needs a table"),
        ("-- incremental: day\n-- materialized: view\nselect ts as day from scoring.anomaly_scores "
         "where ts >= $since and ts < $until", "needs a table"),
        ("-- incremental: day\nselect ts as day from scoring.anomaly_scores where ts >= $since", "between"),
    ],
)
def test_invalid_model_files_raise(tmp_path: Path, text: str, match: str):
    sql_dir = tmp_path / "sql"
    path = write_sql(sql_dir, "marts/bad.sql", text)
    with pytest.raises(ValueError, match=match) as excinfo:
        load_sql_models(sql_dir)
    assert str(path) in str(excinfo.value)  # the message names the file
    with pytest.raises(ValueError):
        build_sql_model_assets(sql_dir)


def test_cycle_between_models_raises(tmp_path: Path):
    sql_dir = tmp_path / "sql"
    a = write_sql(sql_dir, "marts/a.sql", "select * from staging.c")
    b = write_sql(sql_dir, "marts/b.sql", "select * from marts.a")
    c = write_sql(sql_dir, "staging/c.sql", "select * from marts.b")
    write_sql(sql_dir, "marts/ok.sql", "select * from scoring.anomaly_scores")
    with pytest.raises(ValueError, match="cycle") as excinfo:
        load_sql_models(sql_dir)
    for path in (a, b, c):
        assert str(path) in str(excinfo.value)


def test_bad_layout_raises(tmp_path: Path):
    sql_dir = tmp_path / "sql"
    write_sql(sql_dir, "toplevel.sql", "select 1")
    with pytest.raises(ValueError, match="<schema>/<table>.sql"):
        load_sql_models(sql_dir)
    (sql_dir / "toplevel.sql").unlink()
    write_sql(sql_dir, "marts/Bad-Name.sql", "select 1")
    with pytest.raises(ValueError, match="not a valid schema/table name"):
        load_sql_models(sql_dir)


def test_entity_health_values(db_path: Path):
    materialize_marts(db_path)
    rows = {r["entity_id"]: r for r in query(db_path, "SELECT * FROM marts.entity_health")}
    assert set(rows) == {"pump-a", "pump-b", "pump-c", "pump-d", "pump-e"}

    a = rows["pump-a"]
    assert a["first_ts"] == utc(1, 0) and a["last_ts"] == utc(2, 6)
    assert (a["points_scored"], a["cold_start_points"], a["anomalies"], a["events"]) == (6, 1, 3, 2)
    assert (a["warning_points"], a["critical_points"], a["worst_severity"]) == (2, 1, "critical")
    # scored scores: .10 .20 .30 .70 .80 .95 (cold start NULL excluded), interpolated
    assert a["score_p50"] == pytest.approx(0.5)
    assert a["score_p95"] == pytest.approx(0.8 + 0.75 * 0.15)
    assert a["score_p99"] == pytest.approx(0.8 + 0.95 * 0.15)
    assert a["max_score"] == pytest.approx(0.95)
    assert a["dominant_family"] == "mechanical"  # 1.6 summed vs thermal 1.4
    assert a["last_anomaly_ts"] == utc(2, 5)
    assert a["last_anomaly_why"] == "vibration"

    b = rows["pump-b"]
    assert (b["points_scored"], b["anomalies"], b["events"], b["critical_points"]) == (4, 2, 1, 2)
    assert b["dominant_family"] == "hydraulic"
    assert b["last_anomaly_why"] == "pressure drop"

    c = rows["pump-c"]
    assert (c["points_scored"], c["cold_start_points"], c["anomalies"], c["events"]) == (2, 2, 0, 0)
    assert c["worst_severity"] == "normal"
    assert c["score_p50"] == pytest.approx(0.3)
    assert c["max_score"] == pytest.approx(0.4)
    assert c["dominant_family"] is None
    assert c["last_anomaly_ts"] is None and c["last_anomaly_why"] is None

    d = rows["pump-d"]
    assert (d["points_scored"], d["cold_start_points"], d["anomalies"], d["events"]) == (0, 1, 0, 0)
    assert d["worst_severity"] == "cold_start"
    assert d["score_p50"] is None and d["max_score"] is None
    assert d["first_ts"] == d["last_ts"] == utc(2, 0)

    e = rows["pump-e"]
    assert (e["anomalies"], e["events"], e["critical_points"]) == (1, 1, 1)
    assert e["dominant_family"] == "electrical"  # 0.5 / 0.5 tie -> alphabetical

    # critical desc (b=2, then a=1 vs e=1 broken by anomalies 3 > 1 although e has the
    # higher max_score), then c (max .4) before d (max NULL -> last).
    ranked = query(db_path, "SELECT entity_id, health_rank FROM marts.entity_health ORDER BY health_rank")
    assert [(r["entity_id"], r["health_rank"]) for r in ranked] == [
        ("pump-b", 1),
        ("pump-a", 2),
        ("pump-e", 3),
        ("pump-c", 4),
        ("pump-d", 5),
    ]


def test_fleet_health_values(db_path: Path):
    # A non-UTC session time zone must not move points between days.
    materialize_marts(db_path, resource_cls=NewYorkDuckDBResource)
    rows = query(db_path, "SELECT * FROM marts.fleet_health ORDER BY day")
    assert [r["day"] for r in rows] == [date(2024, 1, 1), date(2024, 1, 2)]
    day1, day2 = rows
    assert {k: v for k, v in day1.items() if k != "anomaly_rate"} == {
        "day": date(2024, 1, 1),
        "entities_scored": 3,  # a, b, c (c's cold-start rows do not count)
        "points_scored": 9,
        "anomalies": 4,
        "entities_with_anomalies": 2,
        "warning_points": 1,
        "critical_points": 3,
        "top_entities": "pump-a (2), pump-b (2)",
    }
    assert day1["anomaly_rate"] == pytest.approx(4 / 9)
    assert {k: v for k, v in day2.items() if k != "anomaly_rate"} == {
        "day": date(2024, 1, 2),
        "entities_scored": 3,  # a, c (00:00 UTC point), e; d is cold start only
        "points_scored": 4,
        "anomalies": 2,
        "entities_with_anomalies": 2,
        "warning_points": 1,
        "critical_points": 1,
        "top_entities": "pump-a (1), pump-e (1)",
    }
    assert day2["anomaly_rate"] == pytest.approx(0.5)


def test_fleet_health_top_entities_limit_and_order(tmp_path: Path):
    db_path = tmp_path / "top.duckdb"
    scores = []
    counts = {"pump-0007": 12, "pump-0031": 4, "pump-0001": 1, "pump-0002": 1, "pump-0003": 1,
              "pump-0004": 1, "pump-0005": 1}
    for entity, n in counts.items():
        for i in range(n):
            scores.append((entity, utc(3, i), 0.9, True, "warning", "x"))
        scores.append((entity, utc(3, 23), 0.1, False, "normal", None))
    scores.append(("pump-0007", utc(4, 1), 0.1, False, "normal", None))  # quiet day
    create_scoring_tables(db_path, scores=scores, explanations=[])
    materialize_marts(db_path)
    rows = query(db_path, "SELECT day, anomalies, top_entities, anomaly_rate FROM marts.fleet_health ORDER BY day")
    assert rows[0]["top_entities"] == (
        "pump-0007 (12), pump-0031 (4), pump-0001 (1), pump-0002 (1), pump-0003 (1)"
    )
    assert rows[0]["anomalies"] == 21
    assert rows[1] == {"day": date(2024, 1, 4), "anomalies": 0, "top_entities": None, "anomaly_rate": 0.0}
    # no explanations at all -> dominant_family NULL everywhere
    eh = query(db_path, "SELECT count(*) AS n FROM marts.entity_health WHERE dominant_family IS NOT NULL")
    assert eh == [{"n": 0}]


def test_materialization_metadata_and_idempotence(db_path: Path):
    result = materialize_marts(db_path)
    mats = {
        e.event_specific_data.materialization.asset_key: e.event_specific_data.materialization
        for e in result.get_asset_materialization_events()
    }
    assert set(mats) == {ENTITY_HEALTH, FLEET_HEALTH, BUSINESS_KPIS, SITE_DAY_TOTALS} | ENTITY_DAYS | VIEWS
    assert query(db_path, "SELECT count(*) AS n FROM duckdb_views() WHERE schema_name = 'marts'") == [{"n": 4}]
    md = mats[ENTITY_HEALTH].metadata
    assert md["dagster/row_count"].value == 5
    schema = md["dagster/column_schema"].schema
    assert [c.name for c in schema.columns][:3] == ["entity_id", "first_ts", "last_ts"]
    types = {c.name: c.type for c in schema.columns}
    assert types["points_scored"] == "BIGINT" and types["score_p50"] == "DOUBLE"
    assert {c.name: c.description for c in schema.columns}["events"].startswith("number of anomaly events")
    preview = md["preview"].value
    assert preview.splitlines()[0].startswith("| entity_id")
    assert len(preview.splitlines()) == 2 + 5  # header + separator + 5 rows
    assert md["sql"].value.startswith("```sql")
    assert mats[FLEET_HEALTH].metadata["dagster/row_count"].value == 2

    before = {t: query(db_path, f"SELECT * FROM marts.{t} ORDER BY ALL") for t in ("entity_health", "fleet_health")}
    materialize_marts(db_path)
    after = {t: query(db_path, f"SELECT * FROM marts.{t} ORDER BY ALL") for t in ("entity_health", "fleet_health")}
    assert after == before  # CREATE OR REPLACE: no duplication


def test_a_run_of_flags_over_midnight_is_one_event_whatever_lies_between(tmp_path: Path):
    def row(e, day, hour, flagged, cold=False):
        sev = "cold_start" if cold else ("warning" if flagged else "normal")
        return (e, utc(day, hour), None if cold else (0.8 if flagged else 0.1), flagged, sev, "w" if flagged else None)

    scores = [
        # one run over midnight: one event
        row("over", 1, 22, False), row("over", 1, 23, True), row("over", 2, 0, True), row("over", 2, 1, False),
        # a day of cold-start points only between two flagged points: still one run of scored points
        row("gap", 1, 23, True), row("gap", 2, 12, False, cold=True), row("gap", 3, 0, True),
        # a normal point at midnight ends the run: two events
        row("two", 1, 23, True), row("two", 2, 0, False), row("two", 2, 1, True),
        # flags days apart with nothing between
        row("far", 1, 23, True), row("far", 5, 0, True), row("far", 5, 1, False), row("far", 6, 0, True),
    ]
    db = tmp_path / "fleet.duckdb"
    create_scoring_tables(db, scores=scores, explanations=())
    materialize_marts(db)
    events = {r["entity_id"]: r["events"] for r in query(db, "SELECT entity_id, events FROM marts.entity_health")}
    assert events == {"over": 1, "gap": 1, "two": 2, "far": 2}


def test_failed_rebuild_keeps_previous_table(db_path: Path):
    materialize_marts(db_path)
    with duckdb.connect(str(db_path)) as con:
        con.execute("DROP TABLE scoring.explanations")
    result = dg.materialize(
        build_sql_model_assets(REPO_SQL_DIR),
        resources={"duckdb": DuckDBResource(database=str(db_path))},
        raise_on_error=False,
    )
    assert not result.success
    # entity_day_families failed and was rolled back, so entity_health, which reads it, kept its rows;
    # fleet_health and the views do not need explanations.
    assert query(db_path, "SELECT count(*) AS n FROM marts.entity_health") == [{"n": 5}]
    assert {
        e.event_specific_data.materialization.asset_key
        for e in result.get_asset_materialization_events()
    } == {FLEET_HEALTH, BUSINESS_KPIS, SITE_DAY_TOTALS, dg.AssetKey(["marts", "entity_day_health"])} | VIEWS


def test_preview_markdown_without_tabulate(monkeypatch):
    monkeypatch.setitem(sys.modules, "tabulate", None)  # makes `import tabulate` fail
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t AS SELECT * FROM (VALUES (1, 'a|b'), (2, NULL)) v(n, s)")
        md = sql_models._preview_markdown(con, "t")
    assert md == "| n | s |\n| --- | --- |\n| 1 | a\\|b |\n| 2 | NULL |"


def test_unpartitioned_marts_run_with_daily_partitioned_upstream(tmp_path: Path):
    """A partitioned run (partition_key / single-run partition range) can include the marts."""
    db_path = tmp_path / "fleet.duckdb"
    daily = dg.DailyPartitionsDefinition(start_date="2024-01-01", end_date="2024-01-04")

    @dg.asset(key=SCORES, partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def anomaly_scores(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> None:
        days = {date.fromisoformat(k).day for k in context.partition_keys}
        rows = [r for r in SCORES_ROWS if r[1].day in days]
        with duckdb.get_connection() as con:
            ensure_tables(con, (ANOMALY_SCORES,))
            for day in days:
                con.execute(
                    "DELETE FROM scoring.anomaly_scores WHERE day(timezone('UTC', ts)) = ?", [day]
                )
            if rows:
                con.executemany(
                    "INSERT INTO scoring.anomaly_scores VALUES (?, ?, ?, ?, ?, ?, 'v1')", rows
                )

    @dg.asset(key=EXPLANATIONS, partitions_def=daily, backfill_policy=dg.BackfillPolicy.single_run())
    def explanations(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> None:
        with duckdb.get_connection() as con:
            ensure_tables(con, (EXPLANATIONS_TABLE,))

    marts = [a for a in build_sql_model_assets(REPO_SQL_DIR)
             if not set(a.keys) & (VIEWS | {BUSINESS_KPIS, SITE_DAY_TOTALS})]  # no alerts or decomposition here
    assets = [anomaly_scores, explanations, *marts]
    resources = {"duckdb": DuckDBResource(database=str(db_path))}

    def materialized(result):
        return sorted(
            (m.event_specific_data.materialization.asset_key.to_user_string(),
             m.event_specific_data.materialization.partition or "")
            for m in result.get_asset_materialization_events()
        )

    one_day = dg.materialize(assets, resources=resources, partition_key="2024-01-01")
    assert one_day.success
    assert ("marts/fleet_health", "") in materialized(one_day)
    assert [r["day"] for r in query(db_path, "SELECT day FROM marts.fleet_health")] == [date(2024, 1, 1)]

    # Single-run backfill of a partition range (what the backfill daemon launches for
    # BackfillPolicy.single_run()); the unpartitioned marts run once, after all days.
    ranged = dg.materialize(
        assets,
        resources=resources,
        tags={
            "dagster/asset_partition_range_start": "2024-01-01",
            "dagster/asset_partition_range_end": "2024-01-02",
        },
    )
    assert ranged.success
    assert ("marts/entity_health", "") in materialized(ranged)
    assert ("scoring/anomaly_scores", "2024-01-02") in materialized(ranged)
    days = [r["day"] for r in query(db_path, "SELECT day FROM marts.fleet_health ORDER BY day")]
    assert days == [date(2024, 1, 1), date(2024, 1, 2)]


def test_a_run_of_partitions_rebuilds_only_their_days_of_the_daily_marts(db_path: Path):
    daily = {"fleet_health": "day", "site_day_totals": "day", "entity_day_health": "day"}
    with duckdb.connect(str(db_path)) as con:
        con.executemany("INSERT INTO features.decomposition (entity_id, metric, ts, value, expected) VALUES (?, 'units', ?, ?, ?)",
                        [("pump-a", utc(d, h), 10.0 + h, 9.0) for d in (1, 2) for h in range(0, 24, 6)])
        # an alert opened before today and still open, with feedback and money: today's row reads it
        con.execute("INSERT INTO alerts.alerts (alert_id, rule, entity_id, opened_at, last_seen_at, status, severity, "
                    "team, confidence, title, why, evidence, hits, value_at_risk) VALUES ('a1', 'r', 'pump-a', ?, ?, "
                    "'open', 'warning', 'ops', 0.9, 't', 'w', '{}', 3, 120.0)", [utc(1, 3), utc(2, 6)])
        con.execute("INSERT INTO alerts.alert_events (alert_id, \"at\", action, verdict, value_recovered) "
                    "VALUES ('a1', ?, 'feedback', 'true_positive', 50.0)", [utc(2, 7)])
    materialize_marts(db_path)
    with duckdb.connect(str(db_path)) as con:  # both days change after the first build
        con.execute("UPDATE scoring.anomaly_scores SET is_anomaly = true, severity = 'critical' "
                    "WHERE ts IN (?, ?)", [utc(1, 1), utc(2, 6)])
    before = {t: query(db_path, f"SELECT * FROM marts.{t} ORDER BY ALL") for t in daily}

    def run(tags):  # in a session whose time zone is not UTC: days are UTC days all the same
        result = dg.materialize(build_sql_model_assets(REPO_SQL_DIR),
                                resources={"duckdb": NewYorkDuckDBResource(database=str(db_path))}, tags=tags)
        assert result.success
        return {t: query(db_path, f"SELECT * FROM marts.{t} ORDER BY ALL") for t in daily}

    batch = run({"dagster/partition": "2024-01-02"})  # the night of day 2, or a micro-batch of it
    whole = run({})  # a run without a partition: the whole table
    for t, col in daily.items():
        today = [r for r in batch[t] if r[col] == date(2024, 1, 2)]
        assert today and today == [r for r in whole[t] if r[col] == date(2024, 1, 2)], t  # its day is current
        earlier = [r for r in batch[t] if r[col] < date(2024, 1, 2)]
        assert earlier == [r for r in before[t] if r[col] < date(2024, 1, 2)], t  # other days are left as they were
        assert earlier != [r for r in whole[t] if r[col] < date(2024, 1, 2)], t
    day1 = lambda rows: next(r for r in rows if r["day"] == date(2024, 1, 1))["anomalies"]  # noqa: E731
    assert day1(whole["fleet_health"]) > day1(batch["fleet_health"]) == day1(before["fleet_health"])
    # a re-run of day 1 alone restates day 1 and leaves day 2; a range restates its days
    with duckdb.connect(str(db_path)) as con:
        con.execute("UPDATE scoring.anomaly_scores SET is_anomaly = false, severity = 'normal' WHERE ts IN (?, ?)",
                    [utc(1, 1), utc(2, 6)])
    day_1 = run({"dagster/partition": "2024-01-01"})
    restated = run({})
    on = lambda rows, d: [r for r in rows if r["day"] == date(2024, 1, d)]  # noqa: E731
    for t in daily:
        assert on(day_1[t], 1) == on(restated[t], 1) != on(whole[t], 1), t
        assert on(day_1[t], 2) == on(whole[t], 2), t
    assert on(day_1["fleet_health"], 2) != on(restated["fleet_health"], 2)
    with duckdb.connect(str(db_path)) as con:  # both days change again; a range of day 2 restates day 2 alone
        con.execute("UPDATE scoring.anomaly_scores SET is_anomaly = true, severity = 'critical' "
                    "WHERE ts IN (?, ?)", [utc(1, 1), utc(2, 6)])
    ranged = run({"dagster/asset_partition_range_start": "2024-01-02", "dagster/asset_partition_range_end": "2024-01-02"})
    again = run({})
    for t in daily:
        assert on(ranged[t], 2) == on(again[t], 2) and on(ranged[t], 1) == on(restated[t], 1) != on(again[t], 1), t
    both = run({"dagster/asset_partition_range_start": "2024-01-01", "dagster/asset_partition_range_end": "2024-01-02"})
    assert both == again

    # business_kpis is a view: the alerts' columns are read when it is queried
    kpi = lambda: {r["day"]: r for r in query(db_path, "SELECT * FROM marts.business_kpis")}  # noqa: E731
    assert (kpi()[date(2024, 1, 2)]["alerts_open"], kpi()[date(2024, 1, 2)]["money_at_risk"],
            kpi()[date(2024, 1, 2)]["value_recovered"], kpi()[date(2024, 1, 1)]["feedback_precision"]) == (1, 120.0, 50.0, 1.0)
    with duckdb.connect(str(db_path)) as con:  # feedback given now on the old alert reaches its days at once
        con.execute("INSERT INTO alerts.alert_events (alert_id, \"at\", action, verdict) "
                    "VALUES ('a1', ?, 'feedback', 'false_positive')", [utc(2, 8)])
        con.execute("UPDATE alerts.alerts SET status = 'resolved', resolved_at = ? WHERE alert_id = 'a1'", [utc(1, 20)])
    assert [(kpi()[d]["feedback_precision"], kpi()[d]["alerts_open"], kpi()[d]["money_at_risk"])
            for d in (date(2024, 1, 1), date(2024, 1, 2))] == [(0.0, 1, 120.0), (0.0, 0, 0.0)]
