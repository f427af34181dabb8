"""Asset checks: Great Expectations suites on the slice of each table that a run wrote.

One ``@multi_asset_check`` per checked table (raw.observations, features.decomposition,
scoring.anomaly_scores): each reads its slice from DuckDB once, runs its expectations through
:func:`anomaly_assets.expectations.validate` and reports one result per check, with GX's
statistics, what each expectation observed and up to 10 failing rows as metadata. They live in one
module because they share that shape, the rules file and the GX-to-Dagster translation; the
sections below follow the chain.

Checks are partitioned like their assets. A run of one day records its results against that day;
a run over a range (a backfill, ``anomaly-assets backfill``) checks the whole range's slice at once
and records one result for the run (Dagster 1.13 keeps no partition on the evaluation of a range).

Blocking checks (``blocking=True``) guard what downstream assets read: when one fails, the run
stops before the next asset. The others warn (or, for a rejected landing file, fail without
stopping the run).
"""

import datetime as dt
import sys
import warnings

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DAY, days_in
from anomaly_assets.defs.decomposition import DecompositionConfig
from anomaly_assets.defs.metadata import markdown_preview, time_window
from anomaly_assets.defs.partitions import WRITER_POOL, daily_partitions
from anomaly_assets.defs.resources import DataExpectations
from anomaly_assets.expectations import Validation, validate

OBSERVATIONS = dg.AssetKey([wh.OBSERVATIONS.schema, wh.OBSERVATIONS.name])
DECOMPOSITION = dg.AssetKey([wh.DECOMPOSITION.schema, wh.DECOMPOSITION.name])
ANOMALY_SCORES = dg.AssetKey([wh.ANOMALY_SCORES.schema, wh.ANOMALY_SCORES.name])

EXAMPLES = 10
_FLOAT_MAX = sys.float_info.max
_DUCKDB_TYPES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
# severity, anomaly_score, is_anomaly: the combinations a score row may have
STATES = ["normal, score set, not flagged", "warning, score set, flagged", "critical, score set, flagged",
          "cold_start, score NULL, not flagged"]


def _specs(asset: dg.AssetKey, checks: dict[str, tuple[str, bool]]) -> list[dg.AssetCheckSpec]:
    """Partitioned check specs; ``checks`` maps name -> (description, blocking)."""
    with warnings.catch_warnings():  # partitions_def on a check spec is 'preview' in 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(name, asset=asset, description=doc, blocking=blocking, partitions_def=daily_partitions)
            for name, (doc, blocking) in checks.items()
        ]


def _result(asset: dg.AssetKey, name: str, v: Validation, *, severity=dg.AssetCheckSeverity.ERROR,
            description: str | None = None, examples: pd.DataFrame | None = None, **extra) -> dg.AssetCheckResult:
    expectations = [
        {"expectation": o.expectation, "success": o.success, **o.observed, **({"error": o.error} if o.error else {})}
        for o in v.outcomes
    ]
    rows = v.failing_examples(EXAMPLES) if examples is None else examples.head(EXAMPLES)
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=v.success, severity=severity,
        description=description or v.summary(),
        metadata={
            "gx_statistics": dg.MetadataValue.json(v.statistics),
            "expectations": dg.MetadataValue.json(expectations),
            "failing_examples": markdown_preview(rows, n=EXAMPLES),
            **extra,
        },
    )


def _selected(context: dg.AssetCheckExecutionContext, results):
    """Only the results of the checks this run selected (checks can be run one by one in the UI)."""
    keys = context.selected_asset_check_keys
    for r in results:
        if dg.AssetCheckKey(r.asset_key, r.check_name) in keys:
            yield r


def _range_md(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start.date()} .. {(end - DAY).date()}"


# --------------------------------------------------------------------------------------------
# raw.observations
# --------------------------------------------------------------------------------------------

OBSERVATION_CHECKS = {
    "schema": ("Table columns, types and NOT NULL match the warehouse contract (warehouse.py).", True),
    "keys_present": ("entity_id, metric, ts and a finite value on every row; names not empty.", True),
    "no_duplicates": ("At most one row per entity_id, metric and ts.", True),
    "in_partition_window": ("Every ts inside the run's partition window and not in the future.", False),
    "value_ranges": ("Values inside the per-metric ranges of configs/expectations.yaml.", False),
    "volume": ("Rows per day within the configured band around the median of earlier days.", False),
    # Blocking: a whole file missing means whole entities or days missing; scoring the rest would
    # page operators about "silent" machines that are only a broken file. Fix the file, re-run.
    "no_rejected_files": ("No landing file read by this run was rejected as a whole (raw.rejected_files).", True),
}


def schema_frame(con, table: wh.Table) -> pd.DataFrame:
    """One row per column of the contract or of the table: the declared and the found type."""
    found = con.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
        [table.schema, table.name],
    ).df()
    found_type = {
        r.column_name: r.data_type + (" NOT NULL" if r.is_nullable == "NO" else "") for r in found.itertuples()
    }
    declared = {}
    for c in table.columns:
        base = c.type.replace(" NOT NULL", "")
        declared[c.name] = _DUCKDB_TYPES.get(base, base) + (" NOT NULL" if "NOT NULL" in c.type else "")
    names = list(declared) + [n for n in found_type if n not in declared]
    return pd.DataFrame({
        "column": names,
        "declared": [declared.get(n) for n in names],
        "found": [found_type.get(n) for n in names],
    })


def volume_frame(daily: pd.DataFrame, days: list[pd.Timestamp], history: int) -> pd.DataFrame:
    """Per day of the run: rows, the median of the ``history`` latest earlier days with rows, ratio.

    ``daily`` has ``day`` (UTC midnight) and ``rows`` for days with rows. The median and ratio
    are NaN when fewer than ``history`` earlier days have rows.
    """
    counts = daily.set_index(pd.DatetimeIndex(daily["day"]))["rows"].sort_index()
    out = []
    for day in days:
        earlier = counts[counts.index < day].tail(history)
        rows = int(counts.get(day, 0))
        median = float(earlier.median()) if len(earlier) >= history else np.nan
        out.append({"day": str(day.date()), "rows": rows, "earlier_days": len(earlier),
                    "trailing_median": median, "ratio": rows / median if median > 0 else np.nan})
    return pd.DataFrame(out, columns=["day", "rows", "earlier_days", "trailing_median", "ratio"])


@dg.multi_asset_check(specs=_specs(OBSERVATIONS, OBSERVATION_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="observations_checks")
def observations_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                        expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().observations
    start, end = time_window(context)
    days = days_in(start, end)
    lookback = start - DAY * (4 * rules.volume.history_partitions)
    run = context.instance.get_run_record_by_id(context.run.run_id)
    run_started = dt.datetime.fromtimestamp(run.start_time or run.create_timestamp.timestamp(), dt.timezone.utc)
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        schema = schema_frame(con, wh.OBSERVATIONS)
        obs = con.execute(f"SELECT * FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ?", [start, end]).df()
        daily = con.execute(
            f"SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day, count(*) AS rows "
            f"FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ? GROUP BY 1 ORDER BY 1",
            [lookback, end],
        ).df()
        rejected = con.execute(
            f"SELECT source_file, reason, ingested_at FROM {wh.REJECTED_FILES.qualified} "
            "WHERE ingested_at >= ? ORDER BY source_file",
            [run_started],
        ).df()
    daily["day"] = pd.to_datetime(daily["day"]).dt.tz_localize("UTC")
    now = pd.Timestamp.now(tz="UTC")
    window = _range_md(start, end)

    v = validate(schema, [gxe.ExpectColumnPairValuesToBeEqual(column_A="declared", column_B="found",
                                                               ignore_row_if="both_values_are_missing")])
    v += validate(obs, [gxe.ExpectTableColumnsToMatchOrderedList(column_list=wh.OBSERVATIONS.column_names)])
    schema_result = _result(OBSERVATIONS, "schema", v, examples=schema[schema["declared"] != schema["found"]],
                           table_schema=markdown_preview(schema, n=len(schema)))

    keys = validate(obs, [
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("entity_id", "metric", "ts", "value", "source_file")],
        gxe.ExpectColumnValueLengthsToBeBetween(column="entity_id", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="metric", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX),
    ])

    dups = validate(obs, [gxe.ExpectCompoundColumnsToBeUnique(column_list=["entity_id", "metric", "ts"])])

    in_window = validate(obs, [
        gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=start, max_value=end, strict_max=True),
        gxe.ExpectColumnValuesToBeBetween(column="ts", max_value=now),
    ])

    metrics = obs["metric"].astype(object)
    ranged = obs[["entity_id", "metric", "ts", "value", "source_file"]].assign(
        lower=metrics.map({m: r.lower for m, r in rules.ranges.items()}).fillna(rules.default_range.lower).astype(float),
        upper=metrics.map({m: r.upper for m, r in rules.ranges.items()}).fillna(rules.default_range.upper).astype(float),
    )
    ranges = validate(ranged, [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="lower", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="upper", column_B="value", or_equal=True),
    ])
    configured = {m: r.model_dump() for m, r in rules.ranges.items()}

    vol = volume_frame(daily, days, rules.volume.history_partitions)
    checked = vol[vol["ratio"].notna()]
    volume = validate(vol, [gxe.ExpectColumnValuesToBeBetween(
        column="ratio", min_value=rules.volume.min_ratio, max_value=rules.volume.max_ratio)])
    short = vol[vol["ratio"].isna()]
    if volume.success and len(checked) == 0:
        volume_note = (f"not enough history: {', '.join(short['day'])} had fewer than "
                       f"{rules.volume.history_partitions} earlier days with rows; nothing to compare")
    elif volume.success:
        volume_note = (f"{len(checked)} day(s) within {rules.volume.min_ratio}..{rules.volume.max_ratio} × the median of "
                       f"the {rules.volume.history_partitions} earlier days with rows"
                       + (f"; {len(short)} day(s) without enough history" if len(short) else ""))
    else:
        bad = checked[(checked["ratio"] < rules.volume.min_ratio) | (checked["ratio"] > rules.volume.max_ratio)]
        volume_note = "; ".join(
            f"{r.day}: {r.rows} rows, {r.ratio:.2f} × the trailing median {r.trailing_median:g}" for r in bad.itertuples()
        ) + f" (expected {rules.volume.min_ratio}..{rules.volume.max_ratio} ×)"

    files = validate(rejected, [gxe.ExpectTableRowCountToEqual(value=0)])
    files_note = ("no landing file read by this run was rejected" if files.success else
                  "; ".join(rejected["reason"].head(EXAMPLES)))

    yield from _selected(context, [
        schema_result,
        _result(OBSERVATIONS, "keys_present", keys, partition_range=window),
        _result(OBSERVATIONS, "no_duplicates", dups, partition_range=window),
        _result(OBSERVATIONS, "in_partition_window", in_window, severity=dg.AssetCheckSeverity.WARN,
                partition_range=window, now=str(now)),
        _result(OBSERVATIONS, "value_ranges", ranges, severity=dg.AssetCheckSeverity.WARN, partition_range=window,
                configured_ranges=dg.MetadataValue.json(configured),
                default_range=dg.MetadataValue.json(rules.default_range.model_dump())),
        _result(OBSERVATIONS, "volume", volume, severity=dg.AssetCheckSeverity.WARN, description=volume_note,
                examples=checked[~checked["ratio"].between(rules.volume.min_ratio, rules.volume.max_ratio)],
                days=markdown_preview(vol, n=len(vol)), partition_range=window),
        _result(OBSERVATIONS, "no_rejected_files", files, description=files_note, examples=rejected,
                files_rejected=len(rejected)),
    ])


# --------------------------------------------------------------------------------------------
# features.decomposition
# --------------------------------------------------------------------------------------------

DECOMPOSITION_CHECKS = {
    "finite_past_cold_start": (
        "Series fitted for a day (past cold start) have finite expected, residual and residual_z on every row.", True),
    "cold_start_only_when_history_is_short": (
        "A series is left unfitted (cold start) only when raw.observations holds too little history for it.", False),
    "residual_z_scale": ("Median |residual_z| of fitted rows inside the configured band.", False),
}

# A series counts as having plenty of history when it has this many times the rows the
# decomposition needs (sampling irregularities make the exact count differ slightly).
HISTORY_MARGIN = 1.5


def _decomposition_params(context: dg.AssetCheckExecutionContext):
    """The decomposition's parameters in this run (Launchpad config), else the defaults."""
    ops = (context.run.run_config or {}).get("ops", {})
    config = ops.get("features__decomposition", {}).get("config", {})
    return DecompositionConfig(**config).params()


@dg.multi_asset_check(specs=_specs(DECOMPOSITION, DECOMPOSITION_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="decomposition_checks")
def decomposition_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                         expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().decomposition
    params = _decomposition_params(context)
    start, end = time_window(context)
    history = int(np.ceil(params.history_days))
    with duckdb.get_connection() as con:
        rows = con.execute(
            f"SELECT entity_id, metric, ts, value, expected, residual, residual_z FROM {wh.DECOMPOSITION.qualified} "
            "WHERE ts >= ? AND ts < ?", [start, end],
        ).df()
        # per series and day of the run: rows in the history window before it, and the entity's
        # most timestamps in one of those days (its samples per day)
        hist = con.execute(f"""
            WITH obs AS (
                SELECT entity_id, metric, ts, CAST(ts AT TIME ZONE 'UTC' AS DATE) AS day
                FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ?),
            series AS (
                SELECT entity_id, metric, day, sum(count(*)) OVER (
                    PARTITION BY entity_id, metric ORDER BY day
                    RANGE BETWEEN INTERVAL {history} DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING) AS history_rows
                FROM obs GROUP BY entity_id, metric, day),
            entity AS (
                SELECT entity_id, day, max(count(DISTINCT ts)) OVER (
                    PARTITION BY entity_id ORDER BY day
                    RANGE BETWEEN INTERVAL {history} DAYS PRECEDING AND INTERVAL 1 DAY PRECEDING) AS per_day
                FROM obs GROUP BY entity_id, day)
            SELECT entity_id, metric, day, coalesce(history_rows, 0) AS history_rows, coalesce(per_day, 0) AS per_day
            FROM series JOIN entity USING (entity_id, day)
            WHERE day >= CAST(? AS DATE)
        """, [start - DAY * history, end, start.date()]).df()
    window = _range_md(start, end)
    series_day = ["entity_id", "metric", "day"]
    rows["day"] = rows["ts"].dt.tz_convert("UTC").dt.floor("D")
    rows["fitted"] = rows["expected"].notna()
    fitted = rows.groupby(series_day, as_index=False)["fitted"].any()
    rows = rows.drop(columns="fitted").merge(fitted, on=series_day, how="left")
    past = rows[rows["fitted"]].drop(columns=["day", "fitted"])

    finite = validate(past, [
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("expected", "residual", "residual_z")],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX)
          for c in ("expected", "residual", "residual_z")],
    ])

    hist["day"] = pd.to_datetime(hist["day"]).dt.tz_localize("UTC")
    cold = fitted[~fitted["fitted"]].merge(hist, on=series_day, how="left")
    cold["history_rows"] = cold["history_rows"].fillna(0)
    cold["needed_rows"] = np.maximum(params.min_history_days * cold["per_day"].fillna(0), 8) * HISTORY_MARGIN
    cold = cold.drop(columns="fitted").assign(day=cold["day"].dt.strftime("%Y-%m-%d"))
    explained = validate(cold, [gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="needed_rows", column_B="history_rows")])

    abs_z = past[["residual_z"]].abs().rename(columns={"residual_z": "abs_residual_z"})
    band = rules.median_abs_residual_z
    scale = validate(abs_z, [gxe.ExpectColumnMedianToBeBetween(
        column="abs_residual_z", min_value=band.min, max_value=band.max)]) if len(abs_z) else Validation(True, {}, [])
    median = float(abs_z["abs_residual_z"].median()) if len(abs_z) else None
    scale_note = ("no fitted rows in the range (all cold start): nothing to measure" if median is None else
                  f"median |residual_z| {median:.3g} (expected {band.min}..{band.max})")

    yield from _selected(context, [
        _result(DECOMPOSITION, "finite_past_cold_start", finite, partition_range=window,
                fitted_rows=len(past), cold_start_rows=int(len(rows) - len(past))),
        _result(DECOMPOSITION, "cold_start_only_when_history_is_short", explained, severity=dg.AssetCheckSeverity.WARN,
                partition_range=window, cold_start_series_days=len(cold),
                params=dg.MetadataValue.json({"history_days": params.history_days,
                                              "min_history_days": params.min_history_days})),
        _result(DECOMPOSITION, "residual_z_scale", scale, severity=dg.AssetCheckSeverity.WARN,
                description=scale_note, partition_range=window,
                median_abs_residual_z=median if median is not None else "n/a"),
    ])


# --------------------------------------------------------------------------------------------
# scoring.anomaly_scores
# --------------------------------------------------------------------------------------------

SCORE_CHECKS = {
    "score_in_unit_interval": (
        "anomaly_score in [0, 1]; NULL exactly when severity is cold_start; severity and is_anomaly agree.", True),
    "anomaly_rate": ("Share of scored points flagged, per day, inside the configured band.", False),
}


@dg.multi_asset_check(specs=_specs(ANOMALY_SCORES, SCORE_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="anomaly_scores_checks")
def anomaly_scores_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                          expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().scores
    start, end = time_window(context)
    with duckdb.get_connection() as con:
        s = con.execute(
            f"SELECT entity_id, ts, anomaly_score, is_anomaly, severity FROM {wh.ANOMALY_SCORES.qualified} "
            "WHERE ts >= ? AND ts < ?", [start, end],
        ).df()
    window = _range_md(start, end)
    # severity, score and flag must agree; one text column keeps the test vectorized (GX's
    # column-pair set expectation walks the rows in Python)
    s["state"] = (s["severity"].astype(str) + np.where(s["anomaly_score"].notna(), ", score set", ", score NULL")
                  + np.where(s["is_anomaly"].astype(bool), ", flagged", ", not flagged"))
    valid = validate(s, [
        gxe.ExpectColumnValuesToBeBetween(column="anomaly_score", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="state", value_set=STATES),
    ])

    scored = s[s["severity"] != "cold_start"]
    day = scored["ts"].dt.tz_convert("UTC").dt.floor("D")
    per_day = scored.groupby(day)["is_anomaly"].agg(["size", "sum"]).rename(columns={"size": "scored", "sum": "flagged"})
    per_day = per_day.reset_index(names="day").assign(rate=lambda d: d["flagged"] / d["scored"])
    per_day["day"] = per_day["day"].astype(str).str[:10]
    band = rules.anomaly_rate
    rate = validate(per_day, [gxe.ExpectColumnValuesToBeBetween(column="rate", min_value=band.min, max_value=band.max)])
    rate_note = (f"no scored points in {window} (all cold start)" if per_day.empty else
                 f"flagged share per day {per_day['rate'].min():.3%} .. {per_day['rate'].max():.3%} "
                 f"(expected {band.lower:.3%} .. {band.upper:.3%})")

    yield from _selected(context, [
        _result(ANOMALY_SCORES, "score_in_unit_interval", valid, partition_range=window,
                scored_points=len(scored), cold_start_points=int(len(s) - len(scored))),
        _result(ANOMALY_SCORES, "anomaly_rate", rate, severity=dg.AssetCheckSeverity.WARN, description=rate_note,
                partition_range=window, days=markdown_preview(per_day, n=len(per_day))),
    ])


CHECKS = [observations_checks, decomposition_checks, anomaly_scores_checks]
