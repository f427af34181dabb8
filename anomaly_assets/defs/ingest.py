"""raw.observations: the landing folder, parsed, quarantined and stored per day."""


import datetime as dt
import os

import dagster as dg
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.defs.metadata import table_metadata, time_window
from anomaly_assets.defs.partitions import daily_table_asset
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.landing import discover_files, read_file


def _manifest(con) -> pd.DataFrame:
    return con.execute(
        "SELECT source_file, size_bytes, mtime_ns, first_ts, last_ts FROM raw.landing_files"
    ).df()


def _needs_reading(files, root, manifest: pd.DataFrame, start, end) -> list:
    """Files that are new, changed, or known to hold rows in [start, end)."""
    known = manifest.set_index("source_file") if len(manifest) else None
    out = []
    for f in files:
        rel = f.relative_to(root).as_posix()
        st = os.stat(f)
        if known is not None and rel in known.index:
            m = known.loc[rel]
            unchanged = int(m.size_bytes) == st.st_size and int(m.mtime_ns) == st.st_mtime_ns
            if unchanged and (pd.isna(m.first_ts) or m.last_ts < start or m.first_ts >= end):
                continue
        out.append((f, rel, st))
    return out


def collect(reads, start, end, now) -> dict[str, pd.DataFrame]:
    """Combine file reads into the rows to write for [start, end)."""
    obs, rejected, rejected_files, manifest = [], [], [], []
    for (f, rel, st), fr in reads:
        manifest.append({
            "source_file": rel, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "shape": fr.shape,
            "first_ts": fr.observations["ts"].min() if len(fr.observations) else pd.NaT,
            "last_ts": fr.observations["ts"].max() if len(fr.observations) else pd.NaT,
            "rows_read": fr.rows_read, "rows_rejected": len(fr.rejected_rows), "read_at": now,
        })
        if fr.file_error:
            rejected_files.append({"source_file": rel, "reason": fr.file_error, "ingested_at": now})
            continue
        o = fr.observations
        o = o[(o["ts"] >= start) & (o["ts"] < end)].assign(source_file=rel)
        obs.append(o)
        rejected.append(fr.rejected_rows.assign(source_file=rel))
    cols = ["entity_id", "metric", "ts", "value", "source_file", "line_number"]
    o = pd.concat(obs, ignore_index=True) if obs else pd.DataFrame(columns=cols)
    # The same (entity, metric, ts) from two files: the first file (by path) wins, the rest are
    # quarantined with a pointer to the kept row.
    o = o.sort_values(["source_file", "line_number"], kind="stable")
    key = ["entity_id", "metric", "ts"]
    dup = o.duplicated(key, keep="first")
    if dup.any():
        first = o[~dup].set_index(key)[["source_file", "line_number"]]
        d = o[dup].join(first, on=key, rsuffix="_kept")
        rejected.append(pd.DataFrame({
            "source_file": d["source_file"], "line_number": d["line_number"], "raw": None,
            "reason": "duplicate of " + d["source_file_kept"] + " line " + d["line_number_kept"].astype(str),
        }))
    rej = pd.concat(rejected, ignore_index=True) if rejected else pd.DataFrame(
        columns=["source_file", "line_number", "raw", "reason"])
    return {
        "observations": o[~dup].assign(ingested_at=now),
        "rejected_rows": rej.assign(ingested_at=now),
        "rejected_files": pd.DataFrame(rejected_files, columns=["source_file", "reason", "ingested_at"]),
        "landing_files": pd.DataFrame(manifest, columns=wh.LANDING_FILES.column_names),
    }


@daily_table_asset(wh.OBSERVATIONS, group="ingest")
def observations(context: dg.AssetExecutionContext, duckdb: DuckDBResource, landing: LandingFolder) -> dg.MaterializeResult:
    start, end = time_window(context)
    now = dt.datetime.now(dt.timezone.utc)
    skip = landing.sidecars()
    files = [f for f in discover_files(landing.root) if f.resolve() not in skip]
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        manifest = _manifest(con)
    todo = _needs_reading(files, landing.root, manifest, start, end)
    reads = [(t, read_file(t[0], root=landing.root)) for t in todo]
    rows = collect(reads, start, end, now)
    read_files = [rel for (_, rel, _), _ in reads]
    with duckdb.get_connection() as con, wh.transaction(con):
        wh.replace_time_slice(con, wh.OBSERVATIONS, rows["observations"], start, end)
        wh.replace_keyed(con, wh.REJECTED_ROWS, rows["rejected_rows"], "source_file", read_files)
        wh.replace_keyed(con, wh.REJECTED_FILES, rows["rejected_files"], "source_file", read_files)
        wh.replace_keyed(con, wh.LANDING_FILES, rows["landing_files"], "source_file", read_files)
    for r in rows["rejected_files"].itertuples():
        context.log.warning(r.reason)
    o = rows["observations"]
    return dg.MaterializeResult(metadata={
        **table_metadata(wh.OBSERVATIONS, o, start, end),
        "files_in_landing": len(files),
        "files_read": len(read_files),
        "files_rejected": len(rows["rejected_files"]),
        "rows_read": int(rows["landing_files"]["rows_read"].sum()) if len(read_files) else 0,
        "rows_rejected": len(rows["rejected_rows"]),
        "entities": int(o["entity_id"].nunique()) if len(o) else 0,
        "metrics": int(o["metric"].nunique()) if len(o) else 0,
    })
