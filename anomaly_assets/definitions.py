"""The one place the pipeline is assembled.

landing folder -> raw.observations -> detection (features.decomposition, ml.model_versions,
  scoring.anomaly_scores, scoring.explanations: one step, days in order) -> alerts, marts.*
  (dbt_like_sql/), evaluation.metrics and reports
"""

from __future__ import annotations


import dagster as dg

from anomaly_assets.config import load_owners
from anomaly_assets.defs import automation, checks, detection, entities, evaluation, ingest, publish, reports, workers
from anomaly_assets.defs import alerts as alert_defs
from anomaly_assets.defs.resources import AnalystCopy, DataExpectations, LandingFolder, MetricCatalog, ModelStore, Warehouse
from anomaly_assets.defs.sql_models import build_sql_model_assets
from anomaly_assets.settings import REPO_ROOT, load_settings

settings = load_settings()

python_assets = dg.load_assets_from_modules([ingest, detection, evaluation, alert_defs, entities, reports])
sql_assets = build_sql_model_assets(settings.sql_dir)

# The whole chain for one day (or a range, in one run: every asset has BackfillPolicy.single_run()).
anomaly_chain = dg.define_asset_job(
    "anomaly_chain",
    selection=dg.AssetSelection.all(),
    description="Ingest, detect (baseline, score, explain), then alerts, marts, evaluation and reports.",
)

# Today's micro-batches (the landing sensor, today's partition alone): ingest, scores, explanations,
# alerts and marts at once. What costs the history waits for the run that closes the day: the
# daily report, the analysts' copy (a byte copy of the whole warehouse) and entity_health (a row per
# entity and day of history); the per-day marts rebuild only today's rows (defs/sql_models.py).
WAITS_FOR_THE_DAY = (dg.AssetKey(["reports", "daily"]), dg.AssetKey(["analyst_copy"]),
                     dg.AssetKey(["marts", "entity_health"]))
anomaly_intraday = dg.define_asset_job(
    "anomaly_intraday",
    selection=dg.AssetSelection.all() - dg.AssetSelection.assets(*WAITS_FOR_THE_DAY),
    description="Today's landed files: ingest, detect, alerts and marts; the report, the analysts' copy and entity_health wait for the night.",
)

# Last in every run of the chain: the read-only copy analysts query. Then the nightly schedule, the landing
# sensor and the failure alerts, all from the environment (defs/automation.py).
analyst_copy = publish.build_analyst_copy([*python_assets, *sql_assets], settings.sql_dir)
automation_settings = automation.load_automation_settings()
schedules, sensors = automation.build_automation(anomaly_chain, automation_settings, anomaly_intraday)


def resources(s=settings) -> dict:
    expectations = DataExpectations(path=str(s.expectations))
    expectations.load()  # a bad configs/expectations.yaml fails here, naming the file and field
    return {
        "duckdb": Warehouse(database=str(s.warehouse), connection_config={"memory_limit": s.duckdb_memory}),
        "landing": LandingFolder(path=str(s.landing_dir), labels=str(s.labels) if s.labels else None,
                                 splits=str(s.splits) if s.splits else None),
        "models": ModelStore(path=str(s.model_dir)),
        "catalog": MetricCatalog(path=str(s.families) if s.families else None),
        # a bad configs/alert_rules.yaml fails here, naming the rule, field and value
        "alert_rules": alert_defs.alert_rulebook(s.families, s.environ),
        "analyst": AnalystCopy(path=str(s.analyst_copy)),
        "expectations": expectations,
        "report_folder": reports.ReportFolder(path=str(s.report_dir)),
    }


defs = dg.Definitions(
    # one freshness policy for every asset, applied here once (windows from the environment)
    # and the owners of each group (configs/owners.yaml)
    assets=automation.with_owners(
        automation.with_freshness([*python_assets, *sql_assets, analyst_copy], automation_settings),
        load_owners(REPO_ROOT / "configs" / "owners.yaml").groups),
    # GX checks beside their tables (defs/checks.py); anomaly_chain's AssetSelection.all() runs them
    asset_checks=checks.CHECKS,
    jobs=[anomaly_chain, anomaly_intraday],
    # Every step is in the duckdb_writer pool (limit 1), so steps never run in parallel anyway:
    # one process per run instead of one per step saves a code load (2-4 s) per step. The run's
    # worker pool is shut down when its steps are done (defs/workers.py).
    executor=workers.run_executor,
    schedules=schedules,
    sensors=[*sensors, alert_defs.alert_delivery],
    resources=resources(),
)
