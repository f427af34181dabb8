"""features.decomposition: each day's expectation, forecast from the days before it."""


from typing import Optional

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DecompositionParams, days_in, decompose_days
from anomaly_assets.defs.metadata import table_metadata, time_window
from anomaly_assets.defs.partitions import daily_table_asset


class DecompositionConfig(dg.Config):
    """Tuning knobs, editable in the Launchpad."""

    history_days: int = DecompositionParams.history_days
    periods: Optional[list[int]] = None  # samples per cycle; default: daily from the sampling interval
    robust: bool = DecompositionParams.robust
    min_history_days: float = DecompositionParams.min_history_days

    def params(self) -> DecompositionParams:
        return DecompositionParams(history_days=self.history_days, periods=tuple(self.periods) if self.periods else None,
                                   robust=self.robust, min_history_days=self.min_history_days)


@daily_table_asset(wh.DECOMPOSITION, group="features", deps=[["raw", "observations"]])
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
