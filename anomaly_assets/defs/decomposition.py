"""features.decomposition: each day's expectation, forecast from the days before it."""


from typing import Optional

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DecompositionParams, days_in, decompose_days
from anomaly_assets.defs.metadata import column_schema, table_metadata, time_window
from anomaly_assets.defs.partitions import daily_partitions


class DecompositionConfig(dg.Config):
    """Tuning knobs, editable in the Launchpad."""

    history_days: int = 14
    periods: Optional[list[int]] = None  # samples per cycle; default: daily from the sampling interval
    robust: bool = True
    min_history_days: float = 7.0

    def params(self) -> DecompositionParams:
        return DecompositionParams(history_days=self.history_days, periods=tuple(self.periods) if self.periods else None,
                                   robust=self.robust, min_history_days=self.min_history_days)


@dg.asset(
    key=["features", "decomposition"],
    deps=[dg.AssetKey(["raw", "observations"])],
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="features",
    kinds={"duckdb", "python"},
    pool="duckdb_writer",
    description=wh.DECOMPOSITION.doc,
    metadata={"dagster/column_schema": column_schema(wh.DECOMPOSITION)},
)
def decomposition(context: dg.AssetExecutionContext, config: DecompositionConfig, duckdb: DuckDBResource) -> dg.MaterializeResult:
    start, end = time_window(context)
    params = config.params()
    with duckdb.get_connection() as con:
        obs = con.execute(
            "SELECT entity_id, metric, ts, value FROM raw.observations WHERE ts >= ? AND ts < ? ORDER BY entity_id, metric, ts",
            [start - pd.Timedelta(days=params.history_days), end],
        ).df()
    rows = decompose_days(obs, days_in(start, end), params)
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con)
        wh.replace_time_slice(con, wh.DECOMPOSITION, rows, start, end)
    cold = int(rows["expected"].isna().sum()) if len(rows) else 0
    return dg.MaterializeResult(metadata={
        **table_metadata(wh.DECOMPOSITION, rows, start, end),
        "series": int(rows[["entity_id", "metric"]].drop_duplicates().shape[0]) if len(rows) else 0,
        "cold_start_rows": cold,
        "params": dg.MetadataValue.json(params.__dict__ | {"periods": list(params.periods or [])}),
    })
