"""From Great Expectations to Dagster: the checks' specs and results, and how they read a slice.

Shared by the three multi-asset checks of :mod:`anomaly_assets.defs.checks`: partitioned check
specs, a validation turned into an ``AssetCheckResult`` (GX's statistics, what each expectation
observed and up to ``EXAMPLES`` failing rows as metadata), a range's result recorded on every day
of it, and the slice read a chunk of whole entities at a time through Arrow.
"""

import warnings

import dagster as dg
import pandas as pd

from anomaly_assets import warehouse as wh
from anomaly_assets.core.fleet import DAY
from anomaly_assets.defs.metadata import markdown_preview
from anomaly_assets.defs.partitions import daily_partitions
from anomaly_assets.expectations import Validation

EXAMPLES = 10


def check_specs(asset: dg.AssetKey, checks: dict[str, tuple[str, bool]]) -> list[dg.AssetCheckSpec]:
    """Partitioned check specs; ``checks`` maps name -> (description, blocking)."""
    with warnings.catch_warnings():  # partitions_def on a check spec is 'preview' in 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(name, asset=asset, description=doc, blocking=blocking, partitions_def=daily_partitions)
            for name, (doc, blocking) in checks.items()
        ]


def _numbers(v: Validation) -> dict[str, int]:
    """Numeric metadata of a validation (the UI plots numbers over time): expectations that
    failed, rows checked and values that broke an expectation (summed over expectations)."""
    out = {"failed_expectations": int(v.statistics.get("unsuccessful_expectations") or 0)}
    elements = [o.observed["element_count"] for o in v.outcomes if isinstance(o.observed.get("element_count"), (int, float))]
    unexpected = [o.observed["unexpected_count"] for o in v.outcomes
                  if isinstance(o.observed.get("unexpected_count"), (int, float))]
    if elements:
        out["rows_checked"] = int(max(elements))
    if unexpected:
        out["unexpected_values"] = int(sum(unexpected))
    return out


def check_result(asset: dg.AssetKey, name: str, v: Validation, *, severity=dg.AssetCheckSeverity.ERROR,
                 description: str | None = None, examples: pd.DataFrame | None = None,
                 **extra) -> dg.AssetCheckResult:
    """One check's result: passed as ``v``, its summary (or ``description``), GX's statistics,
    each expectation's observations and up to ``EXAMPLES`` failing rows (or ``examples``)."""
    expectations = [
        {"expectation": o.expectation, "success": o.success, **o.observed, **({"error": o.error} if o.error else {})}
        for o in v.outcomes
    ]
    rows = v.failing_examples(EXAMPLES) if examples is None else examples.head(EXAMPLES)
    return dg.AssetCheckResult(
        asset_key=asset, check_name=name, passed=v.success, severity=severity,
        description=description or v.summary(),
        metadata={
            **_numbers(v),
            "gx_statistics": dg.MetadataValue.json(v.statistics),
            "expectations": dg.MetadataValue.json(expectations),
            "failing_examples": markdown_preview(rows, n=EXAMPLES),
            **extra,
        },
    )


def selected_results(context: dg.AssetCheckExecutionContext, results, per_day: dict[str, dict[str, tuple[bool, dict]]] | None = None):
    """Only the results of the checks this run selected (checks can be run one by one in the UI).

    A run over a range records each check once per day of the range, so that every partition
    of the check has its own status (a result without a partition would leave the days of the
    range unevaluated, which the UI lists as skipped). A day's verdict is the range's, or its own
    where the check judges days (``per_day``: check name -> day -> (passed, numeric metadata)).
    The full metadata goes with the last day; the others carry the numbers.
    """
    keys = context.selected_asset_check_keys
    chosen = [r for r in results if dg.AssetCheckKey(r.asset_key, r.check_name) in keys]
    days = list(context.partition_keys) if context.has_partition_key_range else []
    if len(days) <= 1:
        yield from chosen
        return
    from dagster._core.definitions.asset_checks.asset_check_evaluation import (
        AssetCheckEvaluationTargetMaterializationData,
    )

    targets = {}  # (asset, day) -> the run's materialization the day's evaluation checks
    for rec in context.instance.get_records_for_run(context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        ev = rec.event_log_entry.dagster_event
        targets[(ev.asset_key, ev.partition)] = AssetCheckEvaluationTargetMaterializationData(
            storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp)
    assets_def = context.op_execution_context.assets_def
    numeric = (int, float, dg.IntMetadataValue, dg.FloatMetadataValue, dg.TextMetadataValue)
    for r in chosen:
        key = dg.AssetCheckKey(r.asset_key, r.check_name)
        spec = assets_def.get_spec_for_check_key(key)
        own = (per_day or {}).get(r.check_name, {})
        light = {k: v for k, v in r.metadata.items() if isinstance(v, numeric)}
        for day in days:
            passed, md = own.get(day, (r.passed, {}))
            yield dg.AssetCheckEvaluation(
                asset_key=r.asset_key, check_name=r.check_name, passed=passed,
                metadata={**(r.metadata if day == days[-1] else light), **md},
                severity=r.severity, description=r.description, blocking=spec.blocking, partition=day,
                target_materialization_data=targets.get((r.asset_key, day)))
        yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(key))


def range_text(start: pd.Timestamp, end: pd.Timestamp) -> str:
    return f"{start.date()} .. {(end - DAY).date()}"


def entity_slices(con, table: wh.Table, start, end, max_rows: int) -> list[tuple[str, list]]:
    """SQL predicates (and their parameters) cutting ``table``'s [start, end) rows into consecutive
    entity ranges of about ``max_rows`` rows; a NULL entity_id (NULLs sort last) goes with the
    last range. One predicate matching every row when they fit in one read (no rows included: a
    check always runs GX on a frame with the table's columns)."""
    rows = con.execute(f"SELECT count(*) FROM {table.qualified} WHERE {table.time_column} >= ? AND "
                       f"{table.time_column} < ?", [start, end]).fetchall()[0][0]
    if rows <= max_rows:  # one read (no need to count the rows of every entity)
        return [("true", [])]
    out = []
    for first, last in wh.entity_ranges(con, table, start, end, max_rows):
        if first is None:
            out.append(("entity_id IS NULL", []))
        elif last is None:
            out.append(("(entity_id >= ? OR entity_id IS NULL)", [first]))
        else:
            out.append(("entity_id BETWEEN ? AND ?", [first, last]))
    return out or [("false", [])]


def read_chunks(con, sql: str, params: list, slices: list[tuple[str, list]], parts: int = 1):
    """``sql`` (with ``{where}`` for the entity predicate) read one slice at a time, through Arrow.
    ``parts``: a UNION of that many selects, each taking ``params`` then the predicate's.

    Text stays Arrow-backed (pandas ``str``, no copy). Measured on 6.7M observations against
    categoricals (pyarrow dictionary encoding): half the read time, GX's value-length expectation (its
    ``astype(str)``) 4x faster, its null checks slower; about 20% less in all."""
    for where, extra in slices:
        yield con.sql(sql.format(where=where), params=[*params, *extra] * parts).to_arrow_table().to_pandas()
