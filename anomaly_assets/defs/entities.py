"""marts.entities: the entity dimension analysts join to (site, tags, team, what each reports).

From the entity register (``entities.csv`` in the data folder, ``ANOMALY_ENTITIES``, or
``configs/entities.yaml``) for the entities listed there; every other entity seen in
raw.observations gets the site the alert rules infer for it (its id without the number) and no
tags. Rebuilt whole after every run (a few rows per entity).
"""

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.alert_config import infer_group
from anomaly_assets.defs.alerts import AlertRulebook
from anomaly_assets.defs.metadata import column_schema, table_metadata
from anomaly_assets.defs.partitions import WRITER_POOL


def entity_dimension(seen: pd.DataFrame, register: pd.DataFrame) -> pd.DataFrame:
    """One row per entity seen, with the register's site, tags and team where it lists the entity.

    Parameters
    ----------
    seen : DataFrame
        entity_id, metrics, observations, first_ts, last_ts (one row per entity in raw.observations).
    register : DataFrame
        entity_id, site, tags (list of str), team, as :meth:`AlertRulebook.entity_frame` gives it.

    Returns
    -------
    DataFrame with the columns of ``warehouse.ENTITIES``, sorted by entity_id.
    """
    reg = register.drop_duplicates("entity_id").set_index("entity_id")
    out = seen.copy()
    listed = out["entity_id"].isin(reg.index)
    site = out["entity_id"].map(reg["site"]) if len(reg) else pd.Series(None, index=out.index, dtype=object)
    out["site"] = [s if isinstance(s, str) and s else infer_group(e) for e, s in zip(out["entity_id"], site)]
    out["tags"] = [",".join(reg.at[e, "tags"]) if ok else "" for e, ok in zip(out["entity_id"], listed)]
    out["team"] = [reg.at[e, "team"] if ok and isinstance(reg.at[e, "team"], str) else None
                   for e, ok in zip(out["entity_id"], listed)]
    out["registered"] = listed.to_numpy()
    return out.sort_values("entity_id", kind="stable")[wh.ENTITIES.column_names].reset_index(drop=True)


@dg.asset(
    key=["marts", "entities"],
    deps=[dg.AssetKey(["raw", "observations"])],
    group_name="marts",
    kinds={"duckdb", "python"},
    pool=WRITER_POOL,
    description=wh.ENTITIES.doc,
    metadata={"dagster/column_schema": column_schema(wh.ENTITIES), "dagster/table_name": wh.ENTITIES.qualified},
)
def entities(duckdb: DuckDBResource, alert_rules: AlertRulebook) -> dg.MaterializeResult:
    with duckdb.get_connection() as con:
        wh.ensure_tables(con, (wh.OBSERVATIONS,))
        seen = con.execute(
            "SELECT entity_id, count(DISTINCT metric) AS metrics, count(*) AS observations, min(ts) AS first_ts, "
            "max(ts) AS last_ts FROM raw.observations GROUP BY entity_id").df()
    rows = entity_dimension(seen, alert_rules.entity_frame())
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.ensure_tables(con, (wh.ENTITIES,))
        wh.replace_all(con, wh.ENTITIES, rows)
    return dg.MaterializeResult(metadata={
        **table_metadata(wh.ENTITIES, rows),
        "registered": int(rows["registered"].sum()),
        "inferred": int((~rows["registered"]).sum()),
    })
