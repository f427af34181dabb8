"""raw.observations: the landing folder, parsed, quarantined and stored per day.

Nothing read is lost: every observation of a landing file ends up either stored in
raw.observations (by the run of its day) or quarantined in raw.rejected_rows with its line and
reason, so for every file ``rows_read = stored + rejected`` once its days have run
(raw.landing_files keeps both counts). Rows are quarantined when

* the line is malformed (landing.py: bad timestamp or number, missing key, wrong field count,
  not UTF-8, a duplicate inside the file, ...);
* the timestamp is outside every partition: before the first day (``ANOMALY_PARTITION_START``)
  or in the future when the file is read. Rows of other days are not rejected: they belong to
  those days' partitions and are stored when those run. Rows of today are stored by tomorrow's
  run (the last partition is yesterday);
* another file (earlier by path) holds the same entity, metric and time: the first file wins.

A file that cannot be used at all goes to raw.rejected_files with a message naming the file, what
was expected and what was found. Fixing a file (its size or modification time changes) makes the
next run read it again and replace what it left.
"""


import datetime as dt
import os

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.defs.metadata import markdown_preview, table_metadata, time_window
from anomaly_assets.defs.partitions import daily_partitions, daily_table_asset
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.landing import discover_files
from anomaly_assets.landing import read_files as read_landing_files

# Rejections that depend on the other files read for a day (not on the file alone) start so.
ACROSS_FILES = "duplicate across files: "
_REJECTED = ["source_file", "line_number", "raw", "reason"]


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


def _iso(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.removesuffix(".000000") + "Z"


def outside_partitions(o: pd.DataFrame, first: pd.Timestamp, now: pd.Timestamp) -> tuple[np.ndarray, pd.Series]:
    """Mask of observations no partition can hold, and the reason for each (index of ``o``)."""
    early = (o["ts"] < first).to_numpy()
    late = (o["ts"] > now).to_numpy()
    reason = pd.Series(None, index=o.index, dtype=object)
    if early.any():
        reason[early] = ("timestamp " + _iso(o["ts"][early]) + f" is before the first partition {first.date()} "
                         "(ANOMALY_PARTITION_START); set it earlier and touch the file to load this row")
    if late.any():
        reason[late] = ("timestamp " + _iso(o["ts"][late])
                        + f" is in the future (the file was read at {now.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    return early | late, reason


def collect(reads, start, end, now, first=None) -> dict[str, pd.DataFrame]:
    """Combine file reads into the rows to write for [start, end).

    Returns observations (the window's rows to store), rejected_rows (every row of the files read
    that is quarantined for a reason of its own, plus this window's duplicates across files),
    rejected_files, landing_files (the manifest, ``rows_rejected`` still without the rejections
    across files of other windows: see :func:`merge_rejections`) and window_lines (source_file and
    line_number of every accepted row inside the window).

    The files' rows are concatenated once and handled as one frame (a backfill reads thousands
    of files: nothing below is per file but the manifest's scalars).
    """
    now = pd.Timestamp(now)
    first = pd.Timestamp(first) if first is not None else pd.Timestamp.min.tz_localize("UTC")
    rels = [rel for (_, rel, _), _ in reads]
    # source_file as a categorical over the files' names in string order: sorts like the strings
    names = sorted(set(rels))
    code_of = {n: i for i, n in enumerate(names)}
    frames = [fr.observations for _, fr in reads]
    sizes = np.array([len(f) for f in frames], dtype=np.int64)
    file_of_row = np.repeat(np.arange(len(reads)), sizes)
    if sizes.sum():
        big = pd.concat([f for f in frames if len(f)], ignore_index=True)
        # names repeat on every row: as categoricals they take a fraction of the memory and hash as ints
        big = big.assign(entity_id=big["entity_id"].astype("category"), metric=big["metric"].astype("category"))
    else:
        big = pd.DataFrame({"entity_id": pd.Series([], dtype="str"), "metric": pd.Series([], dtype="str"),
                            "ts": pd.Series([], dtype="datetime64[us, UTC]"), "value": pd.Series([], dtype=float),
                            "line_number": pd.Series([], dtype=np.int64)})
    out, reason = outside_partitions(big, first, now)
    rejected = []
    if out.any():
        rejected.append(pd.DataFrame({"source_file": np.asarray(rels, dtype=object)[file_of_row[out]],
                                      "line_number": big["line_number"].to_numpy()[out], "raw": None,
                                      "reason": reason.to_numpy()[out]}))
    kept = ~out
    ts = big["ts"]
    k_ts = ts[kept]
    k_file = file_of_row[kept]
    first_ts = k_ts.groupby(k_file).min()
    last_ts = k_ts.groupby(k_file).max()
    n_out = np.bincount(file_of_row[out], minlength=len(reads))
    manifest, rejected_files = [], []
    for i, ((f, rel, st), fr) in enumerate(reads):
        manifest.append({
            "source_file": rel, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "shape": fr.shape,
            "first_ts": first_ts.get(i, pd.NaT), "last_ts": last_ts.get(i, pd.NaT),
            "rows_read": fr.rows_read, "rows_rejected": len(fr.rejected_rows) + int(n_out[i]), "read_at": now,
        })
        if fr.file_error:
            rejected_files.append({"source_file": rel, "reason": fr.file_error, "ingested_at": now})
    usable = np.array([fr.file_error is None for _, fr in reads], dtype=bool)
    rejected += [fr.rejected_rows.assign(source_file=rel) for (_, rel, _), fr in reads
                 if fr.file_error is None and len(fr.rejected_rows)]
    in_window = kept & (ts >= start).to_numpy() & (ts < end).to_numpy() & usable[file_of_row]
    o = big.copy(deep=False) if in_window.all() else big[in_window].reset_index(drop=True)
    o["source_file"] = pd.Categorical.from_codes(
        np.array([code_of[r] for r in rels], dtype=np.int64)[file_of_row[in_window]],
        categories=pd.Index(names, dtype="str")) if len(names) else pd.Series([], dtype="str")
    window_lines = o[["source_file", "line_number"]].drop_duplicates()
    # The same (entity, metric, ts) from two files: the first file (by path) wins, the rest are
    # quarantined with a pointer to the kept row.
    file_code = o["source_file"].cat.codes.to_numpy() if len(o) else np.zeros(0, np.int64)
    line = o["line_number"].to_numpy()
    ordered = len(o) < 2 or bool(np.all((np.diff(file_code) > 0) | ((np.diff(file_code) == 0) & (np.diff(line) >= 0))))
    if not ordered:
        o = o.iloc[np.lexsort((line, file_code))].reset_index(drop=True)  # stable: (source_file, line_number)
    key = ["entity_id", "metric", "ts"]
    dup = o.duplicated(key, keep="first").to_numpy()
    if dup.any():
        first_seen = o[~dup].set_index(key)[["source_file", "line_number"]]
        d = o[dup].join(first_seen, on=key, rsuffix="_kept")
        rejected.append(pd.DataFrame({
            "source_file": d["source_file"].astype(str), "line_number": d["line_number"], "raw": None,
            "reason": ACROSS_FILES + "same entity_id, metric and ts as " + d["source_file_kept"].astype(str) + " line "
                      + d["line_number_kept"].astype(str) + " (the first file by path is kept)",
        }))
    rej = pd.concat([r[_REJECTED] for r in rejected if len(r)], ignore_index=True) if any(
        len(r) for r in rejected) else pd.DataFrame(columns=_REJECTED)
    rej = rej.sort_values(["source_file", "line_number"], kind="stable", ignore_index=True)
    landing = pd.DataFrame(manifest, columns=wh.LANDING_FILES.column_names)
    across = rej[rej["reason"].str.startswith(ACROSS_FILES)].groupby("source_file").size()
    landing["rows_rejected"] = landing["rows_rejected"] + landing["source_file"].map(across).fillna(0).astype(int)
    return {
        "observations": (o[~dup] if dup.any() else o).assign(ingested_at=now),
        "rejected_rows": rej.assign(ingested_at=now),
        "rejected_files": pd.DataFrame(rejected_files, columns=["source_file", "reason", "ingested_at"]),
        "landing_files": landing,
        "window_lines": window_lines.astype({"source_file": str}),
    }


def merge_rejections(fresh: pd.DataFrame, previous: pd.DataFrame, window_lines: pd.DataFrame,
                     landing: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep the duplicates-across-files of *other* windows when a file is read again.

    ``previous`` are the stored rejections across files of the files read now. Those of lines
    inside this window were decided again (``fresh``); those of lines rejected now for a reason of
    their own are gone. The rest belong to days this run does not touch and stay, so the file's
    accounting still holds. Returns the rejected rows to write and the manifest with
    ``rows_rejected`` counting them.
    """
    if len(previous):
        line = ["source_file", "line_number"]
        redone = pd.concat([window_lines[line], fresh[line]], ignore_index=True).drop_duplicates()
        keep = previous.merge(redone.assign(_redone=True), on=line, how="left")["_redone"].isna().to_numpy()
        fresh = pd.concat([fresh, previous[keep]], ignore_index=True)
        kept = previous[keep].groupby("source_file").size()
        landing = landing.assign(rows_rejected=landing["rows_rejected"]
                                 + landing["source_file"].map(kept).fillna(0).astype(int))
    return fresh, landing


@daily_table_asset(wh.OBSERVATIONS, group="ingest")
def observations(context: dg.AssetExecutionContext, duckdb: DuckDBResource, landing: LandingFolder) -> dg.MaterializeResult:
    start, end = time_window(context)
    now = dt.datetime.now(dt.timezone.utc)
    first = pd.Timestamp(daily_partitions.start).tz_convert("UTC")
    skip = landing.sidecars()
    files = [f for f in discover_files(landing.root) if f.resolve() not in skip]
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        manifest = _manifest(con)
    todo = _needs_reading(files, landing.root, manifest, start, end)
    reads = list(zip(todo, read_landing_files([t[0] for t in todo], root=landing.root)))  # many files: in worker processes
    rows = collect(reads, start, end, now, first)
    read_files = [rel for (_, rel, _), _ in reads]
    with duckdb.get_connection() as con, wh.transaction(con):
        previous = con.execute(
            f"SELECT {', '.join(wh.REJECTED_ROWS.column_names)} FROM {wh.REJECTED_ROWS.qualified} "
            "WHERE source_file IN (SELECT UNNEST(?::VARCHAR[])) AND starts_with(reason, ?)",
            [read_files, ACROSS_FILES],
        ).df()
        rejected, manifest_rows = merge_rejections(rows["rejected_rows"], previous, rows["window_lines"],
                                                   rows["landing_files"])
        wh.replace_time_slice(con, wh.OBSERVATIONS, rows["observations"], start, end)
        wh.replace_keyed(con, wh.REJECTED_ROWS, rejected, "source_file", read_files)
        wh.replace_keyed(con, wh.REJECTED_FILES, rows["rejected_files"], "source_file", read_files)
        wh.replace_keyed(con, wh.LANDING_FILES, manifest_rows, "source_file", read_files)
    for r in rows["rejected_files"].itertuples():
        context.log.warning(r.reason)
    new = rows["rejected_rows"]
    if len(new):
        context.log.warning(f"{len(new)} row(s) quarantined in {wh.REJECTED_ROWS.qualified}, e.g. "
                            + "; ".join(f"{r.source_file} line {r.line_number}: {r.reason}" for r in new.head(3).itertuples()))
    o = rows["observations"]
    rows_read = int(manifest_rows["rows_read"].sum())
    rows_rejected = int(manifest_rows["rows_rejected"].sum())
    return dg.MaterializeResult(metadata={
        **table_metadata(wh.OBSERVATIONS, o, start, end),
        "files_in_landing": len(files),
        "files_read": len(read_files),
        "files_rejected": len(rows["rejected_files"]),
        # rows_read = rows_stored + rows_rejected + rows_of_other_days
        "rows_read": rows_read,
        "rows_stored": len(o),
        "rows_rejected": rows_rejected,
        "rows_of_other_days": rows_read - len(o) - rows_rejected,
        "rejected_reasons": markdown_preview(
            new.assign(reason=new["reason"].str.replace(r"'[^']*'", "'…'", regex=True))
            .groupby("reason", as_index=False).size().sort_values("size", ascending=False)
            if len(new) else new, n=10),
        "entities": int(o["entity_id"].nunique()) if len(o) else 0,
        "metrics": int(o["metric"].nunique()) if len(o) else 0,
    })
