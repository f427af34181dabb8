"""features.decomposition: each day's expectation, forecast from the days before it."""


from typing import Literal, Optional

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DecompositionParams, days_in, decompose_days, refit_day
from anomaly_assets.defs.metadata import ChunkedWrite, time_window
from anomaly_assets.defs.partitions import CHUNK_ROWS, daily_table_asset
from anomaly_assets.defs.workers import MIN_PART_ROWS, map_chunks, worker_count, workers_for


class DecompositionConfig(dg.Config):
    """Tuning knobs, editable in the Launchpad."""

    history_days: int = DecompositionParams.history_days
    periods: Optional[list[int]] = None  # samples per cycle; default: daily from the sampling interval
    robust: bool = DecompositionParams.robust
    min_history_days: float = DecompositionParams.min_history_days
    refit_days: int = DecompositionParams.refit_days  # sub-daily series: STL refit every this many days
    cycle_points: Optional[int] = DecompositionParams.cycle_points  # finer data: decomposed on block means
    precision: Literal["float32", "float64"] = DecompositionParams.precision  # of the STL sums

    def params(self) -> DecompositionParams:
        return DecompositionParams(history_days=self.history_days, periods=tuple(self.periods) if self.periods else None,
                                   robust=self.robust, min_history_days=self.min_history_days,
                                   refit_days=self.refit_days, cycle_points=self.cycle_points,
                                   precision=self.precision)


def series_count(rows: pd.DataFrame) -> int:
    """Distinct (entity_id, metric) pairs of ``rows``: a bincount of the categorical codes that
    ``decompose_days`` returns (on a 2M-row chunk ~5x faster than ``drop_duplicates``, which the
    run's one writing process would otherwise spend on every chunk)."""
    e, m = rows["entity_id"], rows["metric"]
    if isinstance(e.dtype, pd.CategoricalDtype) and isinstance(m.dtype, pd.CategoricalDtype):
        ec, mc = e.cat.codes.to_numpy(np.int64), m.cat.codes.to_numpy(np.int64)
        if len(ec) and ec.min() >= 0 and mc.min() >= 0:
            return int(np.count_nonzero(np.bincount(ec * len(m.cat.categories) + mc)))
    return rows[["entity_id", "metric"]].drop_duplicates().shape[0]


@daily_table_asset(wh.DECOMPOSITION, group="features", deps=[["raw", "observations"]])
def decomposition(context: dg.AssetExecutionContext, config: DecompositionConfig, duckdb: DuckDBResource) -> dg.MaterializeResult:
    start, end = time_window(context)
    params = config.params()
    days = days_in(start, end)
    lo = refit_day(start, params.refit_days) - pd.Timedelta(days=params.history_days)
    written = ChunkedWrite()
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        # Whether the fleet has any rows in [D - history, D): decided for the fleet, not the chunk.
        have = {r[0] for r in con.execute(
            "SELECT DISTINCT epoch_us(ts) // 86400000000 FROM raw.observations WHERE ts >= ? AND ts < ?", [lo, end]).fetchall()}
        use_past = {d: any(d.value // 86_400_000_000_000 - k in have for k in range(1, params.history_days + 1))
                    for d in days}
        ranges = wh.EntityChunks.of(con, wh.OBSERVATIONS, lo, end, CHUNK_ROWS, worker_count(), MIN_PART_ROWS)
        reader = con.cursor()  # reads while `con` runs the INSERT that pulls the chunks (below)

        def reads():  # a chunk of entities at a time, read when a worker is about to need it
            for obs in ranges.read(reader, ["ts", "value"]):
                yield obs, days, params, None, use_past

        def chunks():  # decomposed in worker processes, written here as they come back
            for rows in map_chunks(decompose_days, reads(), len(ranges)):
                rows = rows.reindex(columns=wh.DECOMPOSITION.column_names)  # band columns NULL until the core gives them
                written.add(rows, series=series_count(rows),
                            cold_start_rows=int(rows["expected"].isna().sum()) if len(rows) else 0)
                yield rows

        with wh.transaction(con), reader:
            wh.replace_time_slice_streamed(con, wh.DECOMPOSITION, chunks(), start, end)
    return dg.MaterializeResult(metadata={
        **written.metadata(wh.DECOMPOSITION, start, end, context),
        "series": written.counts.get("series", 0),
        "cold_start_rows": written.counts.get("cold_start_rows", 0),
        "chunks": len(ranges),
        "workers": workers_for(len(ranges)),
        "params": dg.MetadataValue.json(params.__dict__ | {"periods": list(params.periods or [])}),
    })
