"""ml.model_versions, scoring.anomaly_scores and scoring.explanations."""


import dataclasses
import datetime as dt
import json
from functools import partial

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DetectorParams, days_in, fit_days, score_days
from anomaly_assets.defs.metadata import ChunkedWrite, column_schema, markdown_preview, table_metadata, time_window
from anomaly_assets.defs.partitions import CHUNK_ROWS, WRITER_POOL, daily_partitions, daily_table_asset
from anomaly_assets.defs.resources import MetricCatalog, ModelStore
from anomaly_assets.defs.workers import MIN_PART_ROWS, map_chunks, worker_count

# Earlier points read only to prime the temporal smoothing of the first points of a day.
WARMUP = pd.Timedelta(days=2)


class DetectorConfig(dg.Config):
    """Tuning knobs, editable in the Launchpad. Probabilities are per point under normal behaviour."""

    training_days: int = DetectorParams.training_days
    min_training_days: float = DetectorParams.min_training_days
    smoothing_alphas: list[float] = list(DetectorParams.smoothing_alphas)
    residual_weight: float = DetectorParams.residual_weight
    if_weight: float = DetectorParams.if_weight
    tail_quantile: float = DetectorParams.tail_quantile
    spike_quantile: float = DetectorParams.spike_quantile
    warning_p: float = DetectorParams.warning_p
    critical_p: float = DetectorParams.critical_p

    def params(self) -> DetectorParams:
        return DetectorParams(**{**self.model_dump(), "smoothing_alphas": tuple(self.smoothing_alphas)})


@daily_table_asset(wh.MODEL_VERSIONS, group="scoring", deps=[["features", "decomposition"]],
                   kinds=("duckdb", "scikitlearn"),
                   description=wh.MODEL_VERSIONS.doc + " One fleet model per day, trained strictly before it.")
def model_versions(context: dg.AssetExecutionContext, config: DetectorConfig, duckdb: DuckDBResource,
                   models: ModelStore) -> dg.MaterializeResult:
    start, end = time_window(context)
    params = config.params()
    days = days_in(start, end)
    lo = start - pd.Timedelta(days=params.training_days)
    fitted = {}
    with duckdb.get_connection() as con:
        # a chunk of entities at a time (all days of the run from one layout of its features),
        # fitted in worker processes; entities with rows on a day are scored on it
        ranges = wh.EntityChunks.of(con, wh.DECOMPOSITION, lo, end, CHUNK_ROWS, worker_count(), MIN_PART_ROWS)

        def reads():
            for features in ranges.read(con, ["ts", "value", "residual_z"]):
                yield features, days, params

        for part in map_chunks(partial(fit_days, scored_on_day=True), reads(), len(ranges)):
            for day, model in part.items():
                fitted[day] = fitted[day].absorb(model) if day in fitted else model
    records = []
    for day in days:
        model = fitted.get(day) or fit_days(pd.DataFrame(columns=["entity_id", "metric", "ts", "value", "residual_z"]),
                                            [day], params)[day]
        path = models.save(model, str(day.date()), model.version)
        records.append({
            "model_version": model.version, "day": day.date(), "model": "EntityDetector",
            "train_start": model.train_start, "train_end": day, "entities": model.entities,
            "cold_start_entities": len(model.cold_start), "training_rows": model.training_rows,
            "params": json.dumps(dataclasses.asdict(params)), "artifact_path": str(path),
            "trained_at": dt.datetime.now(dt.timezone.utc),
        })
    rows = pd.DataFrame(records, columns=wh.MODEL_VERSIONS.column_names)
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con)
        wh.replace_keyed(con, wh.MODEL_VERSIONS, rows, "day", [str(d.date()) for d in days])
    return dg.MaterializeResult(metadata={
        **table_metadata(wh.MODEL_VERSIONS, rows, start, end),
        "entities_modelled": int(rows["entities"].sum()) if len(rows) else 0,
        "cold_start_entities": int(rows["cold_start_entities"].sum()) if len(rows) else 0,
    })


@dg.multi_asset(
    specs=[
        dg.AssetSpec(["scoring", "anomaly_scores"], deps=[["ml", "model_versions"], ["features", "decomposition"]],
                     description=wh.ANOMALY_SCORES.doc, kinds={"duckdb", "python"},
                     metadata={"dagster/column_schema": column_schema(wh.ANOMALY_SCORES)}),
        dg.AssetSpec(["scoring", "explanations"], deps=[["ml", "model_versions"], ["features", "decomposition"]],
                     description=wh.EXPLANATIONS.doc, kinds={"duckdb", "python"},
                     metadata={"dagster/column_schema": column_schema(wh.EXPLANATIONS)}),
    ],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="scoring",
    pool=WRITER_POOL,
)
def anomaly_scores(context: dg.AssetExecutionContext, duckdb: DuckDBResource, models: ModelStore,
                   catalog: MetricCatalog):
    """Score each day with that day's model; explain every flagged point in the same pass."""
    start, end = time_window(context)
    fam = catalog.load()
    written, explanations, tops = ChunkedWrite(), [], []
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        versions = con.execute(
            "SELECT day, artifact_path FROM ml.model_versions WHERE day >= ? AND day < ?", [start.date(), end.date()]
        ).df()
        artifacts = {pd.Timestamp(d).date(): p for d, p in zip(versions["day"], versions["artifact_path"])}
        fitted = {}
        for day in days_in(start, end):
            if day.date() not in artifacts:
                raise dg.Failure(f"no model for {day.date()} in ml.model_versions: materialize ml/model_versions for it first")
            fitted[day] = models.load(artifacts[day.date()])
        ranges = wh.EntityChunks.of(con, wh.DECOMPOSITION, start - WARMUP, end, CHUNK_ROWS, worker_count(), MIN_PART_ROWS)
        reader = con.cursor()  # reads while `con` runs the INSERT that pulls the chunks (below)

        def reads():  # a chunk of entities at a time; every day from one layout: D from [D - WARMUP, D + 1)
            for features in ranges.read(reader, ["ts", "value", "residual", "residual_z"]):
                yield features, fitted, fam.families, fam.units

        def chunks():  # scored in worker processes, written here as they come back
            for s, e in map_chunks(partial(score_days, warmup=WARMUP), reads(), len(ranges)):
                flagged = s[s["is_anomaly"]]
                written.add(s, flagged=len(flagged), critical=int((s["severity"] == "critical").sum()),
                            cold_start_points=int((s["severity"] == "cold_start").sum()))
                tops.append(flagged.sort_values("anomaly_score", ascending=False).drop_duplicates("entity_id").head(10))
                explanations.append(e)
                yield s

        with wh.transaction(con), reader:
            wh.replace_time_slice_streamed(con, wh.ANOMALY_SCORES, chunks(), start, end)
            wh.replace_time_slice(con, wh.EXPLANATIONS, explanations, start, end)
    e_rows = ChunkedWrite()
    for e in explanations:
        e_rows.add(e)
    top = pd.concat(tops, ignore_index=True) if tops else pd.DataFrame()
    if len(top):
        top = top.sort_values("anomaly_score", ascending=False).drop_duplicates("entity_id").head(10)
    yield dg.MaterializeResult(asset_key=["scoring", "anomaly_scores"], metadata={
        **written.metadata(wh.ANOMALY_SCORES, start, end, context),
        "flagged": written.counts.get("flagged", 0),
        "critical": written.counts.get("critical", 0),
        "cold_start_points": written.counts.get("cold_start_points", 0),
        "top_anomalies": markdown_preview(top[["entity_id", "ts", "anomaly_score", "severity", "why"]] if len(top) else top),
    })
    yield dg.MaterializeResult(asset_key=["scoring", "explanations"], metadata=e_rows.metadata(wh.EXPLANATIONS, start, end))
