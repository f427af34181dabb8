"""evaluation.metrics: detection quality against the labels file, when one is configured."""


import datetime as dt
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core import evaluate
from anomaly_assets.defs.metadata import column_schema, markdown_preview
from anomaly_assets.defs.partitions import WRITER_POOL
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.landing import LandingError, read_labels


def read_splits(path: Path | None) -> dict[str, pd.Timestamp]:
    if path is None or not Path(path).exists():
        return {}
    df = pd.read_csv(path)
    missing = {"entity_id", "test_start"} - set(df.columns)
    if missing:
        raise LandingError(f"{path}: missing columns {sorted(missing)} (expected entity_id,test_start)")
    return {str(e): pd.Timestamp(t, tz="UTC") if pd.Timestamp(t).tzinfo is None else pd.Timestamp(t).tz_convert("UTC")
            for e, t in zip(df["entity_id"], df["test_start"])}


def evaluate_scores(scores: pd.DataFrame, labels: pd.DataFrame, splits: dict[str, pd.Timestamp], now) -> pd.DataFrame:
    """Per-entity and overall (mean over entities) quality of the stored scores."""
    rows = []
    for entity, s in scores.groupby("entity_id", sort=True):
        start = splits.get(entity)
        if start is not None:
            s = s[s["ts"] >= start]
        s = s[s["severity"] != "cold_start"].sort_values("ts")
        if s.empty:
            continue
        lab = labels[labels["entity_id"] == entity]
        ts = s["ts"].dt.tz_convert("UTC").dt.tz_localize(None).to_numpy()
        windows = [(a.tz_convert("UTC").tz_localize(None), b.tz_convert("UTC").tz_localize(None))
                   for a, b in zip(lab["start"], lab["end"])]
        y = evaluate.label_mask(ts, windows)
        pred = s["is_anomaly"].to_numpy(bool)
        score = s["anomaly_score"].to_numpy(float)
        pw = evaluate.pointwise(y, pred)
        ev = evaluate.event_metrics(y, pred)
        rows.append({
            "entity_id": entity, "points": len(s), "labeled_points": int(y.sum()),
            "precision": pw.precision, "recall": pw.recall, "f1": pw.f1,
            "best_f1": evaluate.best_f1(y, score).f1 if y.any() else np.nan,
            "auc_pr": evaluate.average_precision(y, score) if y.any() else np.nan,
            "event_recall": ev.event_recall, "event_precision": ev.event_precision,
            "evaluated_from": s["ts"].min(), "evaluated_at": now,
        })
    df = pd.DataFrame(rows, columns=wh.EVALUATION_METRICS.column_names)
    if len(df):
        labeled = df[df["labeled_points"] > 0]
        overall = {c: labeled[c].mean() for c in ["precision", "recall", "f1", "best_f1", "auc_pr", "event_recall", "event_precision"]}
        overall.update(entity_id="*", points=int(df["points"].sum()), labeled_points=int(df["labeled_points"].sum()),
                       evaluated_from=df["evaluated_from"].min(), evaluated_at=now)
        df = pd.concat([df, pd.DataFrame([overall])], ignore_index=True)[wh.EVALUATION_METRICS.column_names]
    return df


@dg.asset(
    key=["evaluation", "metrics"],
    deps=[dg.AssetKey(["scoring", "anomaly_scores"])],
    group_name="evaluation",
    kinds={"duckdb", "python"},
    pool=WRITER_POOL,
    description=wh.EVALUATION_METRICS.doc + " Mean over entities that have labels; SMD/ASD count only the test split.",
    metadata={"dagster/column_schema": column_schema(wh.EVALUATION_METRICS)},
)
def evaluation_metrics(context: dg.AssetExecutionContext, duckdb: DuckDBResource, landing: LandingFolder) -> dg.MaterializeResult:
    if not landing.labels:
        context.log.info("no labels file configured (ANOMALY_LABELS): nothing to evaluate")
        return dg.MaterializeResult(metadata={"dagster/row_count": 0, "labels": "none configured"})
    labels = read_labels(Path(landing.labels))
    splits = read_splits(Path(landing.splits) if landing.splits else None)
    with duckdb.get_connection() as con:
        scores = con.execute("SELECT entity_id, ts, anomaly_score, is_anomaly, severity FROM scoring.anomaly_scores").df()
    rows = evaluate_scores(scores, labels, splits, dt.datetime.now(dt.timezone.utc))
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con)
        wh.replace_all(con, wh.EVALUATION_METRICS, rows)
    overall = rows[rows["entity_id"] == "*"]
    md = {"dagster/row_count": len(rows), "labels": landing.labels, "per_entity": markdown_preview(rows, 50)}
    if len(overall):
        for c in ["best_f1", "f1", "precision", "recall", "auc_pr", "event_recall", "event_precision"]:
            v = overall[c].iloc[0]
            md[c] = float(v) if pd.notna(v) else None
    return dg.MaterializeResult(metadata=md)
