"""The same chain sharded by entity: one warehouse file per shard, steps in parallel processes.

When a fleet outgrows one process (or one machine), its entities are split into shards (here:
the landing folder's ``shard=<k>/`` subfolders, e.g. one per group of sites) and every shard runs
the chain's own assets (ingest, then detection: decomposition, models, scores and explanations) on its own
DuckDB file. Shards share nothing, so their steps run at the same time in different processes
(the multiprocess executor here; the Kubernetes or Celery executor, one pod or worker per step,
on a cluster) without ever contending for a file lock: DuckDB allows one writer per file, and
each file has one. The fleet marts are then rebuilt from all shards: ``fleet/marts`` attaches
every shard file read-only and runs the marts' SQL (``dbt_like_sql/``) over their union into
the fleet warehouse.

Partitions are (day, shard): days are the daily partitions, shards a static fan-out in the
asset graph (``shard_<k>/...`` keys), so one run does a day range for every shard and the
executor decides where each shard's steps run. Each shard's steps are in the shard's own writer
pool (``duckdb_writer_shard_<k>``), so concurrent runs serialize per shard, not fleet-wide.

    ANOMALY_SHARDS=2 dagster job execute -m anomaly_assets.defs.sharded -j sharded_chain

Files (beside ``ANOMALY_WAREHOUSE``): ``shard_<k>.duckdb`` per shard, ``fleet.duckdb`` for the
merged marts; landing: ``<ANOMALY_LANDING_DIR>/shard=<k>/``; models: ``models/shard_<k>/``.
"""

import dataclasses
import os
from pathlib import Path

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.defs import detection as detection_defs
from anomaly_assets.defs import ingest
from anomaly_assets.defs.alerts import alert_rulebook
from anomaly_assets.defs.detection import DetectorConfig
from anomaly_assets.defs.metadata import time_window
from anomaly_assets.defs.partitions import daily_partitions
from anomaly_assets.defs.resources import LandingFolder, MetricCatalog, ModelStore
from anomaly_assets.defs.sql_models import load_sql_models, rebuild
from anomaly_assets.settings import load_settings

# dbt_like_sql/marts/*.sql rebuilt over all shards, in this order (entity_health reads the first two)
MARTS = ("entity_day_health", "entity_day_families", "entity_health", "fleet_health")


def shard_count(env=None) -> int:
    return max(1, int((os.environ if env is None else env).get("ANOMALY_SHARDS", "2")))


def _run(asset_def: dg.AssetsDefinition):
    """The chain asset's own function (the sharded assets call it with their shard's resources)."""
    return asset_def.op.compute_fn.decorated_fn


def shard_chain(k: int) -> list[dg.AssetsDefinition]:
    """The chain's assets for shard ``k``: same code, keys under ``shard_<k>/``, the shard's resources."""
    p = f"shard_{k}"
    r_db, r_landing, r_models = f"duckdb_{p}", f"landing_{p}", f"models_{p}"
    common = dict(partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(),
                  group_name=p, pool=f"duckdb_writer_{p}")

    def res(context, key):
        return getattr(context.resources, key)

    @dg.asset(key=[p, "raw", "observations"], required_resource_keys={r_db, r_landing}, kinds={"duckdb", "python"},
              description=f"raw.observations of shard {k}", **common)
    def observations(context: dg.AssetExecutionContext):
        return _run(ingest.observations)(context, duckdb=res(context, r_db), landing=res(context, r_landing))

    @dg.multi_asset(
        specs=[dg.AssetSpec([p, schema, name], deps=[[p, "raw", "observations"]],
                            description=f"{schema}.{name} of shard {k}", kinds={"duckdb", "python"})
               for schema, name in (("features", "decomposition"), ("ml", "model_versions"),
                                    ("scoring", "anomaly_scores"), ("scoring", "explanations"))],
        required_resource_keys={r_db, r_models, "catalog", "alert_rules"}, name=f"{p}__detection", **common)
    def detection(context: dg.AssetExecutionContext, config: DetectorConfig):
        for result in _run(detection_defs.detection)(context, config, duckdb=res(context, r_db),
                                                     models=res(context, r_models), catalog=res(context, "catalog"),
                                                     alert_rules=res(context, "alert_rules")):
            yield dg.MaterializeResult(asset_key=[p, *result.asset_key.path], metadata=result.metadata)

    return [observations, detection]


def shard_paths(s, n: int) -> list[Path]:
    return [s.warehouse.parent / f"shard_{k}.duckdb" for k in range(n)]


class ShardFiles(dg.ConfigurableResource):
    """The shards' warehouse files, read by the fleet marts."""

    paths: list[str]

    def files(self) -> list[str]:
        return list(self.paths)


def fleet_marts(n: int, sql_dir: Path) -> dg.AssetsDefinition:
    """The marts over every shard: shard files attached read-only, the marts' SQL over their union."""

    @dg.asset(key=["fleet", "marts"], deps=[[f"shard_{k}", "scoring", t] for k in range(n)
                                              for t in ("anomaly_scores", "explanations")],
              partitions_def=daily_partitions, backfill_policy=dg.BackfillPolicy.single_run(), group_name="fleet",
              pool="duckdb_writer_fleet", kinds={"duckdb", "sql"},
              description="marts.entity_health and marts.fleet_health of the whole fleet, from every shard's scores")
    def marts(context: dg.AssetExecutionContext, fleet: DuckDBResource, shards: ShardFiles) -> dg.MaterializeResult:
        start, end = time_window(context)
        files = shards.files()
        models = {m.qualified_name: m for m in load_sql_models(sql_dir)}
        counts = {}
        with fleet.get_connection() as con:
            for k, path in enumerate(files):
                con.execute(f"ATTACH '{path}' AS s{k} (READ_ONLY)")
            try:
                for schema in ("scoring", "marts"):
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                for table in ("anomaly_scores", "explanations"):
                    union = " UNION ALL ".join(f"SELECT * FROM s{k}.scoring.{table}" for k in range(len(files)))
                    con.execute(f"CREATE OR REPLACE TEMP VIEW {table}_all AS {union}")
                with wh.transaction(con):
                    for name in MARTS:
                        model = models[f"marts.{name}"]
                        sql = model.sql.replace("scoring.anomaly_scores", "anomaly_scores_all").replace(
                            "scoring.explanations", "explanations_all")
                        # the day tables rebuild the run's days only, as the unsharded marts do
                        rebuild(con, dataclasses.replace(model, sql=sql), (start, end))
                        counts[name] = con.execute(f"SELECT count(*) FROM marts.{name}").fetchone()[0]
            finally:
                for k in range(len(files)):
                    con.execute(f"DETACH s{k}")
        return dg.MaterializeResult(metadata={
            "shards": len(files), "partition_range": f"{start.date()} .. {(end - pd.Timedelta(days=1)).date()}",
            **{f"{k}_rows": v for k, v in counts.items()}})

    return marts


def build(env=None) -> dg.Definitions:
    s = load_settings(env)
    n = shard_count(env)
    paths = shard_paths(s, n)
    resources = {"catalog": MetricCatalog(path=str(s.families) if s.families else None),
                 # the entity register and calendar: holidays for the detector
                 "alert_rules": alert_rulebook(s.families, env),
                 "fleet": DuckDBResource(database=str(s.warehouse.parent / "fleet.duckdb")),
                 "shards": ShardFiles(paths=[str(p) for p in paths])}
    assets = []
    for k in range(n):
        assets += shard_chain(k)
        resources[f"duckdb_shard_{k}"] = DuckDBResource(database=str(paths[k]))
        resources[f"landing_shard_{k}"] = LandingFolder(path=str(s.landing_dir / f"shard={k}"))
        resources[f"models_shard_{k}"] = ModelStore(path=str(s.model_dir / f"shard_{k}"))
    assets.append(fleet_marts(n, s.sql_dir))
    job = dg.define_asset_job(
        "sharded_chain", selection=dg.AssetSelection.all(),
        description="Every shard's chain in parallel processes, then the fleet marts over all shards.",
        executor_def=dg.multiprocess_executor.configured({"max_concurrent": int(os.environ.get("ANOMALY_PROCESSES", "2"))}),
    )
    return dg.Definitions(assets=assets, jobs=[job], resources=resources)


defs = build()


def sharded_chain_job():
    """The job, reconstructable from this module (the multiprocess executor loads it in each step's process)."""
    return defs.resolve_job_def("sharded_chain")

