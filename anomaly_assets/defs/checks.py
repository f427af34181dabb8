"""Asset checks: Great Expectations suites on the slice of each table that a run wrote.

One ``@multi_asset_check`` per checked table (raw.observations, features.decomposition,
scoring.anomaly_scores): each reads its slice from DuckDB once, a chunk of whole entities at a
time (``CHUNK_ROWS``), runs its row-wise expectations on every chunk and adds the results up
exactly (:class:`anomaly_assets.expectations.ChunkedValidation`; memory follows the chunk;
features.decomposition reads only its checked columns, and a chunk's whole rows again when
something fails in it, for the failing rows shown), the others (schema, volume, median, rates per day) through
:func:`anomaly_assets.expectations.validate` on small frames, and reports one result per check,
with GX's statistics, what each expectation observed and up to 10 failing rows as metadata. The
GX-to-Dagster translation they share is :mod:`anomaly_assets.defs.check_reporting`; the sections
below follow the chain.

Checks are partitioned like their assets. A run of one day records its results against that day;
a run over a range (a backfill, ``anomaly-assets backfill``) checks the whole range's slice at once
and records the result on every day of it (``check_reporting.selected_results``; the volume and
the flagged share are judged per day), so each partition has a status and the UI's list and detail
agree.

Blocking checks (``blocking=True``) guard what downstream assets read: when one fails, the run
stops before the next asset. The others warn (or, for a rejected landing file, fail without
stopping the run).

Where their time goes (1,000 entities, 2 cores): in a one-day run, observations_checks is mostly
the GX import (2.5-3 s; the first check to run pays it) and each check's own work is 0.2-0.6 s,
GX's fixed cost per suite and expectation included; over 35 days (3.4M observations) it is the
read, GX's compound uniqueness (pandas ``duplicated`` on entity, metric and ts, ~0.35 s per 2M-row
chunk) and GX's per-expectation overhead. GX runs with the BASIC result format and again with
SUMMARY only for what failed (``expectations._run_suite``).
"""

import sys

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DAY, days_in
from anomaly_assets.defs.check_reporting import (EXAMPLES, check_result, check_specs, entity_slices,
                                                 range_text, read_chunks, selected_results)
from anomaly_assets.defs.detection import DetectorConfig
from anomaly_assets.defs.metadata import markdown_preview, time_window
from anomaly_assets.defs.partitions import WRITER_POOL, open_day_start
from anomaly_assets.defs.resources import DataExpectations
from anomaly_assets.expectations import ChunkedValidation, Validation, validate

OBSERVATIONS = dg.AssetKey([wh.OBSERVATIONS.schema, wh.OBSERVATIONS.name])
DECOMPOSITION = dg.AssetKey([wh.DECOMPOSITION.schema, wh.DECOMPOSITION.name])
ANOMALY_SCORES = dg.AssetKey([wh.ANOMALY_SCORES.schema, wh.ANOMALY_SCORES.name])

# Row-wise expectations run on the slice a chunk of entities at a time (read through Arrow) and
# are combined exactly (expectations.ChunkedValidation): memory follows the
# chunk, not the fleet.
CHUNK_ROWS = 2_000_000
_FLOAT_MAX = sys.float_info.max
_DUCKDB_TYPES = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
# The UTC day of ``ts`` (TIMESTAMPTZ) as a DATE, from its epoch microseconds (floored, also before
# 1970): the same as CAST(ts AT TIME ZONE 'UTC' AS DATE) whatever the session's time zone, about 7x
# cheaper (no time zone conversion per row; 0.48 s -> 0.07 s on 2.7M rows).
UTC_DAY = ("(DATE '1970-01-01' + CAST((epoch_us(ts) - CASE WHEN epoch_us(ts) < 0 THEN 86399999999 ELSE 0 END) "
           "// 86400000000 AS INTEGER))")
# severity, anomaly_score, is_anomaly: the combinations a score row may have
STATES = ["normal, score set, not flagged", "warning, score set, flagged", "critical, score set, flagged",
          "cold_start, score NULL, not flagged"]


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
    # page operators about "silent" machines that are only a broken file. It blocks every run until
    # the file is fixed (read again), removed, or released (`anomaly-assets release <file>`).
    "no_rejected_files": ("No landing file is refused as a whole (raw.rejected_files): a refused file blocks every run "
                          "until it is fixed, removed from the landing folder or released with "
                          "`anomaly-assets release <file>`.", True),
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


def volume_frame(daily: pd.DataFrame, days: list[pd.Timestamp], history: int,
                 open_from: pd.Timestamp | None = None) -> pd.DataFrame:
    """Per day of the run: rows, the median of the ``history`` latest earlier days with rows, ratio.

    ``daily`` has ``day`` (UTC midnight) and ``rows`` for days with rows. The median and ratio
    are NaN when fewer than ``history`` earlier days have rows, and for days from ``open_from``
    on (today, still filling up with micro-batches: judged when it has ended).
    """
    counts = daily.set_index(pd.DatetimeIndex(daily["day"]))["rows"].sort_index()
    out = []
    for day in days:
        earlier = counts[counts.index < day].tail(history)
        rows = int(counts.get(day, 0))
        is_open = open_from is not None and day >= open_from
        median = float(earlier.median()) if len(earlier) >= history and not is_open else np.nan
        out.append({"day": str(day.date()), "rows": rows, "earlier_days": len(earlier),
                    "trailing_median": median, "ratio": rows / median if median > 0 else np.nan})
    return pd.DataFrame(out, columns=["day", "rows", "earlier_days", "trailing_median", "ratio"])


def ranged_frame(obs: pd.DataFrame, rules) -> pd.DataFrame:
    """The rows with the ``lower`` and ``upper`` bound of their metric (the default range for an
    unlisted or missing metric): one lookup per distinct metric, then by code."""
    codes, names = pd.factorize(obs["metric"])
    bounds = [rules.range_of(str(m)) for m in names] + [rules.default_range]  # code -1 (NULL): the last
    lower = np.array([b.lower for b in bounds], dtype=float)
    upper = np.array([b.upper for b in bounds], dtype=float)
    return obs[["entity_id", "metric", "ts", "value", "source_file"]].assign(lower=lower[codes], upper=upper[codes])


@dg.multi_asset_check(specs=check_specs(OBSERVATIONS, OBSERVATION_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="observations_checks")
def observations_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                        expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().observations
    start, end = time_window(context)
    days = days_in(start, end)
    lookback = start - DAY * (4 * rules.volume.history_partitions)
    now = pd.Timestamp.now(tz="UTC")
    keys = ChunkedValidation([
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("entity_id", "metric", "ts", "value", "source_file")],
        gxe.ExpectColumnValueLengthsToBeBetween(column="entity_id", min_value=1),
        gxe.ExpectColumnValueLengthsToBeBetween(column="metric", min_value=1),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX),
    ], examples=EXAMPLES)
    # chunks are cut between entities, so every (entity_id, metric, ts) group is inside one chunk
    dups = ChunkedValidation([gxe.ExpectCompoundColumnsToBeUnique(column_list=["entity_id", "metric", "ts"])],
                             examples=EXAMPLES)
    in_window = ChunkedValidation([
        gxe.ExpectColumnValuesToBeBetween(column="ts", min_value=start, max_value=end, strict_max=True),
        gxe.ExpectColumnValuesToBeBetween(column="ts", max_value=now),
    ], examples=EXAMPLES)
    ranges = ChunkedValidation([
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="value", column_B="lower", or_equal=True),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="upper", column_B="value", or_equal=True),
    ], examples=EXAMPLES)
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        schema = schema_frame(con, wh.OBSERVATIONS)
        columns = con.sql(f"SELECT * FROM {wh.OBSERVATIONS.qualified} LIMIT 0").to_arrow_table().to_pandas()
        slices = entity_slices(con, wh.OBSERVATIONS, start, end, CHUNK_ROWS)
        for obs in read_chunks(con, f"SELECT * FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ? AND {{where}}",
                               [start, end], slices):
            keys.add(obs)
            dups.add(obs)
            in_window.add(obs)
            ranges.add(ranged_frame(obs, rules))
            del obs
        # rows per day: counted per timestamp first (few distinct), then the days of those
        daily = con.execute(
            f"SELECT date_trunc('day', ts AT TIME ZONE 'UTC') AS day, sum(n)::BIGINT AS rows FROM ("
            f"SELECT ts, count(*) AS n FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ? GROUP BY ts) "
            "GROUP BY 1 ORDER BY 1",
            [lookback, end],
        ).df()
        rejected = con.execute(
            f"SELECT source_file, reason, ingested_at FROM {wh.REJECTED_FILES.qualified} ORDER BY source_file"
        ).df()
    daily["day"] = pd.to_datetime(daily["day"]).dt.tz_localize("UTC")
    window = range_text(start, end)

    v = validate(schema, [gxe.ExpectColumnPairValuesToBeEqual(column_A="declared", column_B="found",
                                                               ignore_row_if="both_values_are_missing")])
    # the table's columns in order: a frame with no rows has them
    v += validate(columns, [gxe.ExpectTableColumnsToMatchOrderedList(column_list=wh.OBSERVATIONS.column_names)])
    schema_result = check_result(OBSERVATIONS, "schema", v, examples=schema[schema["declared"] != schema["found"]],
                                table_schema=markdown_preview(schema, n=len(schema)))
    keys, dups, in_window, ranges = keys.result, dups.result, in_window.result, ranges.result
    configured = {m: r.model_dump() for m, r in rules.ranges.items()}

    vol = volume_frame(daily, days, rules.volume.history_partitions,
                       open_from=open_day_start())
    checked = vol[vol["ratio"].notna()]
    volume = validate(vol, [gxe.ExpectColumnValuesToBeBetween(
        column="ratio", min_value=rules.volume.min_ratio, max_value=rules.volume.max_ratio)])
    short = vol[vol["ratio"].isna()]
    if volume.success and len(checked) == 0:
        volume_note = (f"not enough history: {', '.join(short['day'])} had fewer than "
                       f"{rules.volume.history_partitions} earlier days with rows (or is today, still open)")
    elif volume.success:
        volume_note = (f"{len(checked)} day(s) within {rules.volume.min_ratio}..{rules.volume.max_ratio} × the median of "
                       f"the {rules.volume.history_partitions} earlier days with rows"
                       + (f"; {len(short)} day(s) without enough history or still open" if len(short) else ""))
    else:
        bad = checked[(checked["ratio"] < rules.volume.min_ratio) | (checked["ratio"] > rules.volume.max_ratio)]
        volume_note = "; ".join(
            f"{r.day}: {r.rows} rows, {r.ratio:.2f} × the trailing median {r.trailing_median:g}" for r in bad.itertuples()
        ) + f" (expected {rules.volume.min_ratio}..{rules.volume.max_ratio} ×)"

    volume_days = {r.day: (bool(pd.isna(r.ratio) or rules.volume.min_ratio <= r.ratio <= rules.volume.max_ratio),
                           {"rows": int(r.rows), **({"ratio": float(r.ratio)} if pd.notna(r.ratio) else {})})
                   for r in vol.itertuples()}
    files = validate(rejected, [gxe.ExpectTableRowCountToEqual(value=0)])
    files_note = ("no landing file is refused" if files.success else
                  "; ".join(rejected["reason"].head(EXAMPLES))
                  + " (fix or remove the file, or release it: anomaly-assets release <file>)")

    yield from selected_results(context, [
        schema_result,
        check_result(OBSERVATIONS, "keys_present", keys, partition_range=window),
        check_result(OBSERVATIONS, "no_duplicates", dups, partition_range=window),
        check_result(OBSERVATIONS, "in_partition_window", in_window, severity=dg.AssetCheckSeverity.WARN,
                     partition_range=window, now=str(now)),
        check_result(OBSERVATIONS, "value_ranges", ranges, severity=dg.AssetCheckSeverity.WARN, partition_range=window,
                     configured_ranges=dg.MetadataValue.json(configured),
                     default_range=dg.MetadataValue.json(rules.default_range.model_dump())),
        check_result(OBSERVATIONS, "volume", volume, severity=dg.AssetCheckSeverity.WARN, description=volume_note,
                     examples=checked[~checked["ratio"].between(rules.volume.min_ratio, rules.volume.max_ratio)],
                     days=markdown_preview(vol, n=len(vol)), partition_range=window),
        check_result(OBSERVATIONS, "no_rejected_files", files, description=files_note, examples=rejected,
                     files_rejected=len(rejected)),
    ], per_day={"volume": volume_days})


# --------------------------------------------------------------------------------------------
# features.decomposition
# --------------------------------------------------------------------------------------------

DECOMPOSITION_CHECKS = {
    "finite_past_cold_start": (
        "Rows past cold start (with an expected value) have finite expected, residual and residual_z.", True),
    "cold_start_only_when_history_is_short": (
        "A series is left unfitted (cold start) only when raw.observations holds too little history for it.", False),
    "residual_z_scale": ("Median |residual_z| of fitted rows inside the configured band.", False),
}

# A series counts as having plenty of history when it has this many times the rows the
# decomposition needs (sampling irregularities make the exact count differ slightly).
HISTORY_MARGIN = 1.5


def _detection_params(context: dg.AssetCheckExecutionContext):
    """The detector's parameters in this run (Launchpad config), else the defaults."""
    ops = (context.run.run_config or {}).get("ops", {})
    config = ops.get("detection", {}).get("config", {})
    return DetectorConfig(**config).params()


def _history_before(con, unfitted: pd.DataFrame, start, end, history: int) -> pd.DataFrame:
    """Per unfitted series and day (``unfitted``: entity_id, metric, day as DuckDB gave it): rows
    in the ``history`` days before it, and the entity's most timestamps in one of those days (its
    samples per day); entity_id, metric, day (UTC midnight), history_rows, per_day. Only the
    entities left unfitted are read."""
    sql = f"""
        WITH obs AS (
            SELECT entity_id, metric, ts, {UTC_DAY} AS day
            FROM {wh.OBSERVATIONS.qualified} WHERE ts >= ? AND ts < ?
              AND entity_id IN (SELECT unnest(?::VARCHAR[]))),
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
    """
    # the windows look back only: observations after the last unfitted day change nothing
    hist_end = min(end, pd.Timestamp(unfitted["day"].max(), tz="UTC") + DAY)
    hist = con.execute(sql, [start - DAY * history, hist_end, unfitted["entity_id"].dropna().unique().tolist(),
                             start.date()]).df()
    hist["day"] = pd.to_datetime(hist["day"]).dt.tz_localize("UTC")
    return hist


@dg.multi_asset_check(specs=check_specs(DECOMPOSITION, DECOMPOSITION_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="decomposition_checks")
def decomposition_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                         expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().decomposition
    params = _detection_params(context)
    start, end = time_window(context)
    history = int(np.ceil(params.reference_days))
    finite = ChunkedValidation([
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("expected", "residual", "residual_z")],
        *[gxe.ExpectColumnValuesToBeBetween(column=c, min_value=-_FLOAT_MAX, max_value=_FLOAT_MAX)
          for c in ("expected", "residual", "residual_z")],
    ], examples=EXAMPLES)
    series_day = ["entity_id", "metric", "day"]
    day_sql = UTC_DAY
    with duckdb.get_connection() as con:
        # series-days with cold-start rows (no expected value: the series' first points); only
        # entities with such a row are looked at (none in a night past cold start)
        unfitted = con.execute(
            f"SELECT entity_id, metric, {day_sql} AS day, count(*) FILTER (WHERE expected IS NULL) AS rows "
            f"FROM {wh.DECOMPOSITION.qualified} "
            f"WHERE ts >= ? AND ts < ? AND entity_id IN (SELECT entity_id FROM {wh.DECOMPOSITION.qualified} "
            "WHERE ts >= ? AND ts < ? AND expected IS NULL) "
            "GROUP BY entity_id, metric, day HAVING bool_or(expected IS NULL) "
            "ORDER BY entity_id, metric, day", [start, end, start, end],
        ).df()
        cold = unfitted[series_day].assign(day=pd.to_datetime(unfitted["day"]).dt.tz_localize("UTC"))
        # the rows past cold start (an expected value), a chunk of entities at a time; the median
        # of |residual_z| needs them all: one float column is kept.
        cols = "entity_id, metric, ts, value, expected, residual, residual_z"

        if len(unfitted):
            cold = cold.merge(_history_before(con, unfitted, start, end, history), on=series_day, how="left")
        else:  # nothing unfitted: nothing to explain
            cold = cold.assign(history_rows=pd.Series(dtype=float), per_day=pd.Series(dtype=float))
        cold["history_rows"] = cold["history_rows"].fillna(0)
        cold["needed_rows"] = params.min_points * HISTORY_MARGIN
        # a row without an expected value in a series-day with plenty of history is not cold start:
        # it is checked with the fitted rows (and fails there)
        unexplained = cold[cold["history_rows"] >= cold["needed_rows"]][series_day].assign(
            day=lambda f: f["day"].dt.tz_convert("UTC").dt.date)

        def past_sql(select: str) -> str:
            sql = (f"SELECT {select} FROM {wh.DECOMPOSITION.qualified} WHERE ts >= ? AND ts < ? AND {{where}} "
                   "AND expected IS NOT NULL")
            if not len(unexplained):
                return sql
            return (f"{sql} UNION ALL SELECT {select} FROM (SELECT {cols}, {day_sql} AS day "
                    f"FROM {wh.DECOMPOSITION.qualified} WHERE ts >= ? AND ts < ? AND {{where}} AND expected IS NULL) "
                    "SEMI JOIN _unexplained USING (entity_id, metric, day)")

        fitted_rows, abs_z = 0, []
        parts = 2 if len(unexplained) else 1
        if len(unexplained):
            con.register("_unexplained", unexplained)
        try:
            # GX and the median read the three checked columns; a chunk's whole rows (the failing
            # rows shown) are read only when an expectation fails on it (entity and metric names
            # were most of the read)
            whole_sql = past_sql(cols)
            columns = next(read_chunks(con, whole_sql, [start, end], [("false", [])], parts))
            for piece in entity_slices(con, wh.DECOMPOSITION, start, end, CHUNK_ROWS):
                past = next(read_chunks(con, past_sql("expected, residual, residual_z"), [start, end], [piece], parts))
                finite.add(past, columns=columns,
                           whole=lambda piece=piece: next(read_chunks(con, whole_sql, [start, end], [piece], parts)))
                fitted_rows += int(past["expected"].notna().sum())
                abs_z.append(np.abs(past["residual_z"].dropna().to_numpy(dtype=float)))
                del past
        finally:
            if len(unexplained):
                con.unregister("_unexplained")
    window = range_text(start, end)
    cold_start_rows = int(unfitted["rows"].sum())
    cold = cold.assign(day=cold["day"].dt.strftime("%Y-%m-%d"))
    explained = validate(cold, [gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="needed_rows", column_B="history_rows")])
    finite = finite.result

    abs_z = pd.DataFrame({"abs_residual_z": np.concatenate(abs_z)})
    band = rules.median_abs_residual_z
    scale = validate(abs_z, [gxe.ExpectColumnMedianToBeBetween(
        column="abs_residual_z", min_value=band.min, max_value=band.max)]) if len(abs_z) else Validation(True, {}, [])
    median = float(abs_z["abs_residual_z"].median()) if len(abs_z) else None
    scale_note = ("no fitted rows in the range (all cold start): nothing to measure" if median is None else
                  f"median |residual_z| {median:.3g} (expected {band.min}..{band.max})")

    yield from selected_results(context, [
        check_result(DECOMPOSITION, "finite_past_cold_start", finite, partition_range=window,
                     fitted_rows=fitted_rows, cold_start_rows=cold_start_rows),
        check_result(DECOMPOSITION, "cold_start_only_when_history_is_short", explained, severity=dg.AssetCheckSeverity.WARN,
                     partition_range=window, cold_start_series_days=len(cold),
                     params=dg.MetadataValue.json({"reference_days": params.reference_days,
                                                   "min_points": params.min_points})),
        check_result(DECOMPOSITION, "residual_z_scale", scale, severity=dg.AssetCheckSeverity.WARN,
                     description=scale_note, partition_range=window,
                     **({"median_abs_residual_z": median} if median is not None else {})),
    ])


# --------------------------------------------------------------------------------------------
# scoring.anomaly_scores
# --------------------------------------------------------------------------------------------

SCORE_CHECKS = {
    "score_in_unit_interval": (
        "anomaly_score in [0, 1]; NULL exactly when severity is cold_start; severity and is_anomaly agree.", True),
    "anomaly_rate": ("Share of scored points flagged, per day, inside the configured band.", False),
}


def score_states(s: pd.DataFrame) -> pd.Series:
    """severity, whether the score is set and whether the point is flagged as one text per row
    ("normal, score set, not flagged"), categorical: the text is made once per combination.
    One column keeps the test vectorized (GX's column-pair set expectation walks the rows in Python)."""
    severity = s["severity"]
    if not (isinstance(severity.dtype, pd.StringDtype) and severity.dtype.na_value is np.nan):
        severity = severity.astype(object)
    # text with NaN for missing (pandas' str, what read_chunks gives) factorizes as it is: the same
    # codes and names as its Python strings give, without making them (0.26 s -> 0.04 s on 840k rows)
    codes, names = pd.factorize(severity, use_na_sentinel=False)
    combo = codes * 4 + 2 * s["anomaly_score"].notna().to_numpy() + s["is_anomaly"].astype(bool).to_numpy()
    texts = [f"{n}{score}{flag}" for n in map(str, names) for score in (", score NULL", ", score set")
             for flag in (", not flagged", ", flagged")]
    return pd.Series(pd.Categorical.from_codes(combo, categories=pd.Index(texts, dtype=object)), index=s.index)


@dg.multi_asset_check(specs=check_specs(ANOMALY_SCORES, SCORE_CHECKS), can_subset=True, pool=WRITER_POOL,
                      name="anomaly_scores_checks")
def anomaly_scores_checks(context: dg.AssetCheckExecutionContext, duckdb: DuckDBResource,
                          expectations: DataExpectations):
    import great_expectations.expectations as gxe

    rules = expectations.load().scores
    start, end = time_window(context)
    valid = ChunkedValidation([
        gxe.ExpectColumnValuesToBeBetween(column="anomaly_score", min_value=0.0, max_value=1.0),
        gxe.ExpectColumnValuesToBeInSet(column="state", value_set=STATES),
    ], examples=EXAMPLES)
    points = 0
    with duckdb.get_connection() as con:
        for s in read_chunks(
                con, f"SELECT entity_id, ts, anomaly_score, is_anomaly, severity FROM {wh.ANOMALY_SCORES.qualified} "
                     "WHERE ts >= ? AND ts < ? AND {where}",
                [start, end], entity_slices(con, wh.ANOMALY_SCORES, start, end, CHUNK_ROWS)):
            valid.add(s.assign(state=score_states(s)))
            points += len(s)
            del s
        # flagged share per day: counted by DuckDB, the band checked by GX on the days
        per_day = con.execute(
            f"SELECT strftime(day, '%Y-%m-%d') AS day, scored, flagged FROM ("
            f"SELECT {UTC_DAY} AS day, count(*) AS scored, count_if(is_anomaly) AS flagged "
            f"FROM {wh.ANOMALY_SCORES.qualified} WHERE ts >= ? AND ts < ? AND severity IS DISTINCT FROM 'cold_start' "
            "GROUP BY 1) ORDER BY 1",
            [start, end],
        ).df()
    window = range_text(start, end)
    valid = valid.result
    per_day = per_day.assign(rate=lambda d: d["flagged"] / d["scored"])
    scored = int(per_day["scored"].sum())
    band = rules.anomaly_rate
    rate = validate(per_day, [gxe.ExpectColumnValuesToBeBetween(column="rate", min_value=band.min, max_value=band.max)])
    rate_note = (f"no scored points in {window} (all cold start)" if per_day.empty else
                 f"flagged share per day {per_day['rate'].min():.3%} .. {per_day['rate'].max():.3%} "
                 f"(expected {band.lower:.3%} .. {band.upper:.3%})")

    yield from selected_results(context, [
        check_result(ANOMALY_SCORES, "score_in_unit_interval", valid, partition_range=window,
                     scored_points=scored, cold_start_points=points - scored),
        check_result(ANOMALY_SCORES, "anomaly_rate", rate, severity=dg.AssetCheckSeverity.WARN, description=rate_note,
                     partition_range=window, days=markdown_preview(per_day, n=len(per_day)),
                     **({"max_flagged_share": float(per_day["rate"].max()),
                         "mean_flagged_share": float(per_day["flagged"].sum() / per_day["scored"].sum())}
                        if len(per_day) else {})),
    ], per_day={"anomaly_rate": {
        # a day without scored points (cold start) has nothing to judge: it passes
        **{str(d.date()): (True, {"scored": 0, "flagged": 0}) for d in days_in(start, end)},
        **{r.day: (bool(band.lower <= r.rate <= band.upper),
                   {"flagged_share": float(r.rate), "scored": int(r.scored), "flagged": int(r.flagged)})
           for r in per_day.itertuples()}}})


CHECKS = [observations_checks, decomposition_checks, anomaly_scores_checks]
