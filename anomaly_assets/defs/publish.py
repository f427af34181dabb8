"""analyst_copy: the warehouse, published as a read-only copy for analysts at the end of every chain run.

A final asset rather than a sensor reacting to finished runs, because:

* it runs in the ``duckdb_writer`` pool, so the moment it reads the warehouse no run of the chain
  is writing it (a sensor copying on its own schedule would hold a read lock that makes a
  concurrent writer fail);
* it depends on every leaf of the graph, so it runs only when everything upstream succeeded and
  its blocking checks passed: analysts never see a half-updated or rejected day, they keep the
  last good copy;
* it is part of ``anomaly_chain``, so schedule, sensor, UI and shell runs all publish, with the
  copy's size and timing recorded as materialization metadata. Today's micro-batches
  (``anomaly_intraday``) do not: the copy costs at least a byte copy of the whole warehouse, the
  batch an hour of data.

Each publish refreshes the last copy with the slices the warehouse changed since (a copy from
scratch when that cannot be trusted, or when asked: ``full`` in the Launchpad,
``anomaly-assets publish --full``). ``anomaly-assets publish`` does the same by hand. See
:mod:`anomaly_assets.analyst_copy` for how the copy is made.
"""

from pathlib import Path

import dagster as dg
from dagster_duckdb import DuckDBResource

from anomaly_assets.analyst_copy import publish
from anomaly_assets.defs.partitions import WRITER_POOL
from anomaly_assets.defs.resources import AnalystCopy


def leaf_keys(assets) -> list[dg.AssetKey]:
    """Keys of the assets nothing else depends on: the end of every path through the graph."""
    keys, upstream = set(), set()
    for a in assets:
        keys |= set(a.keys)
        upstream |= {d for d in a.dependency_keys}
    return sorted(keys - upstream, key=lambda k: k.to_user_string())


def contract_docs(sql_dir: Path | None = None) -> list[tuple[str, str, str, dict[str, str]]]:
    """What every table, view and column means: the warehouse contract (warehouse.py) and each
    SQL model's comment block, as (schema, name, doc, {column: doc}) for the copy's comments."""
    from anomaly_assets.defs.sql_models import load_sql_models
    from anomaly_assets.warehouse import TABLES

    docs = [(t.schema, t.name, t.doc, {c.name: c.doc for c in t.columns}) for t in TABLES]
    if sql_dir is not None and Path(sql_dir).is_dir():
        docs += [(m.schema, m.table, m.summary, m.column_descriptions) for m in load_sql_models(Path(sql_dir))]
    return docs


class CopyConfig(dg.Config):
    """How the analysts' copy is made."""

    full: bool = False  # copy from scratch instead of refreshing the last copy (also compacts it)


def build_analyst_copy(assets, sql_dir: Path | None = None) -> dg.AssetsDefinition:
    """The publishing asset, downstream of every leaf of ``assets``; the copy's tables and columns
    carry the contract's docs as comments (``sql_dir``: the SQL models documented too)."""
    docs = contract_docs(sql_dir)

    @dg.asset(
        key="analyst_copy",
        deps=leaf_keys(assets),
        group_name="publish",
        kinds={"duckdb"},
        pool=WRITER_POOL,
        description="Read-only copy of the whole warehouse for analysts (ANOMALY_ANALYST_COPY), "
                    "replaced atomically when every upstream asset succeeded.",
    )
    def analyst_copy(context: dg.AssetExecutionContext, config: CopyConfig, duckdb: DuckDBResource,
                     analyst: AnalystCopy) -> dg.MaterializeResult:
        # the warehouse connections' memory limit: unbounded, DuckDB takes 80 % of the machine's
        p = publish(Path(duckdb.database), analyst.target, docs, (duckdb.connection_config or {}).get("memory_limit"),
                    full=config.full)
        how = f"refreshed {p.slices} changed slices" if p.refreshed else f"copied from scratch ({p.reason})"
        context.log.info(f"published {p.tables} tables ({p.rows:,} rows) to {p.target} in {p.seconds:.2f} s: {how}")
        return dg.MaterializeResult(metadata={
            "path": dg.MetadataValue.path(str(p.target)),
            "tables": p.tables,
            "dagster/row_count": p.rows,
            "bytes": p.bytes,
            "seconds": round(p.seconds, 3),
            "refreshed": p.refreshed,
            "slices_refreshed": p.slices,
            "copied_from_scratch_because": p.reason,
        })

    return analyst_copy
