"""raw.observations: the landing folder, parsed, quarantined and stored per day.

Nothing read is lost: every observation of a landing file ends up either stored in
raw.observations (by the run of its day) or quarantined in raw.rejected_rows with its line and
reason, so for every file ``rows_read = stored + rejected`` once its days have run
(raw.landing_files keeps both counts). Rows are quarantined when

* the line is malformed (anomaly_assets.landing: bad timestamp or number, missing key, wrong field count,
  not UTF-8, a duplicate inside the file, ...);
* the timestamp is outside every partition: before the first day (``ANOMALY_PARTITION_START``)
  or in the future when the file is read. Rows of other days are not rejected: they belong to
  those days' partitions and are stored when those run. Rows of today are stored by tomorrow's
  run (the last partition is yesterday);
* another file (earlier by path) holds the same entity, metric and time: the first file wins.

A file that cannot be used at all goes to raw.rejected_files with a message naming the file, what
was expected and what was found, and so does a path discovery refuses without reading it (a
symbolic link out of the landing folder, a FIFO), once per version of the link. Fixing a file (its
size or modification time changes) makes the next run read it again and replace what it left; a
refused file removed from the folder is cleared by the next run; one released with
``anomaly-assets release`` stays out until it changes (``anomaly_assets.refused_files``).

Files are read in batches by worker processes and each batch's rows are written as it comes back
(:class:`IngestRun`; one INSERT that DuckDB pulls batch by batch, inside the run's one
transaction): memory holds a few batches, the run's bookkeeping and its rejected rows, not the
backfill.
"""


import datetime as dt
import os
import queue
import threading
from collections import Counter

import dagster as dg
import numpy as np
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.defs.metadata import ChunkedWrite, markdown_preview, time_window
from anomaly_assets.defs.partitions import daily_partitions, daily_table_asset
from anomaly_assets.defs.resources import LandingFolder
from anomaly_assets.defs.workers import map_chunks
from anomaly_assets.landing import discover, iter_batches
from anomaly_assets.landing import read_file as read_landing_file

# Rejections that depend on the other files read for a day (not on the file alone) start so.
ACROSS_FILES = "duplicate across files: "


def _manifest(con) -> pd.DataFrame:
    return con.execute(
        "SELECT source_file, size_bytes, mtime_ns, first_ts, last_ts FROM raw.landing_files"
    ).df()


def _needs_reading(files, root, manifest: pd.DataFrame, start, end) -> tuple[list, set[str]]:
    """Files that are new, changed, or known to hold rows in [start, end) (path, relative path,
    stat), and the relative paths of those among them unchanged since they were last read (same
    size and modification time)."""
    known = {m[0]: m[1:] for m in manifest.itertuples(index=False)}
    out, unchanged = [], set()
    for f in files:
        rel = f.relative_to(root).as_posix()
        st = os.stat(f)
        size, mtime, first_ts, last_ts = known.get(rel, (None, None, None, None))
        same = size is not None and int(size) == st.st_size and int(mtime) == st.st_mtime_ns
        if same and (pd.isna(first_ts) or last_ts < start or first_ts >= end):
            continue
        out.append((f, rel, st))
        if same:
            unchanged.add(rel)
    return out, unchanged


def _refusals(refused, manifest: pd.DataFrame, now) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows for raw.rejected_files and raw.landing_files of the paths discovery refused (links out
    of the folder, ...) that are new or changed since recorded (the link's own size and mtime):
    one that was released stays released until it changes."""
    known = {m[0]: m[1:3] for m in manifest.itertuples(index=False)}
    rejected, versions = [], []
    for r in refused:
        try:
            st = os.lstat(r.path)
        except FileNotFoundError:
            continue  # removed since it was listed
        size, mtime = known.get(r.source_file, (None, None))
        if size is not None and int(size) == st.st_size and int(mtime) == st.st_mtime_ns:
            continue
        rejected.append({"source_file": r.source_file, "reason": f"{r.source_file}: {r.reason}", "ingested_at": now})
        versions.append({"source_file": r.source_file, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
                         "shape": None, "first_ts": pd.NaT, "last_ts": pd.NaT, "rows_read": 0, "rows_rejected": 0,
                         "read_at": now})
    return (pd.DataFrame(rejected, columns=wh.REJECTED_FILES.column_names),
            pd.DataFrame(versions, columns=wh.LANDING_FILES.column_names))


def _iso(ts: pd.Series) -> pd.Series:
    return ts.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str.removesuffix(".000000") + "Z"


def outside_partitions(o: pd.DataFrame, first: pd.Timestamp, now: pd.Timestamp) -> tuple[np.ndarray, pd.Series]:
    """Mask of observations no partition can hold, and the reason for each (index of ``o``)."""
    early = (o["ts"] < first).to_numpy()
    late = (o["ts"] > now).to_numpy()
    reason = pd.Series(None, index=o.index, dtype=object)
    if early.any():
        reason[early] = ("timestamp " + _iso(o["ts"][early]) + f" is before the first partition {first.date()} "
                         "(ANOMALY_PARTITION_START); if the time is right, set it earlier and touch the file "
                         "to load this row")
    if late.any():
        reason[late] = ("timestamp " + _iso(o["ts"][late])
                        + f" is in the future (the file was read at {now.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    return early | late, reason


_DAY_US = 86_400_000_000


def _us(ts) -> int:
    """A timestamp as UTC microseconds since the epoch."""
    return int(pd.Timestamp(ts).as_unit("us").asm8.view(np.int64))


def _dictionary(codes: np.ndarray, names) -> pd.api.extensions.ExtensionArray:
    """Codes into distinct names as an Arrow dictionary column: each name stored once, and what
    DuckDB inserts fastest."""
    import pyarrow as pa

    arr = pa.DictionaryArray.from_arrays(pa.array(codes, type=pa.int32()), pa.array(list(names), type=pa.string()))
    return pd.array(arr, dtype=pd.ArrowDtype(arr.type))


class IngestRun:
    """One run's ingest, batch by batch of files read (:class:`anomaly_assets.landing.BatchRead`).

    :meth:`batch` turns a batch into the window's rows to store and the rows to quarantine,
    and keeps the rest (the manifest, refused files, counts) for the end of the run, so memory
    holds one batch and the run's bookkeeping, not every row read.

    Duplicates across files (the same entity, metric and ts in the window from two files: the
    first file by path wins) are found across batches without keeping the rows of earlier
    batches: the run remembers which files hold rows of each (entity, UTC day) of the window,
    and only when a batch brings an (entity, day) that an earlier file also holds are the rows
    of that key compared (the earlier batches' files involved are read again, to name the line
    kept). Files come in path order, so an earlier file always wins.

    ``previous`` are the stored rejections across files of the files read now: those of lines
    decided again by this run (inside the window, or rejected now for a reason of their own)
    are dropped, the others (other windows' duplicates) kept (:meth:`previous_kept`).
    """

    def __init__(self, todo: list, start, end, now, first=None, previous: pd.DataFrame | None = None,
                 reread=None):
        self.todo = todo
        self.rels = np.asarray([rel for _, rel, _ in todo], dtype=object)  # every file read, in path order
        self.now = pd.Timestamp(now)
        self.first = pd.Timestamp(first) if first is not None else pd.Timestamp.min.tz_localize("UTC")
        self.start_us, self.end_us, self.now_us = _us(start), _us(end), _us(self.now)
        self.first_us = _us(self.first) if first is not None else np.iinfo(np.int64).min
        self.reread = reread  # path -> FileRead, for the files of earlier batches a duplicate involves
        self.entity_ids: dict[str, int] = {}
        self.metric_ids: dict[str, int] = {}
        self.holders: dict[tuple[int, int], int | list[int]] = {}  # (entity, day) -> file(s) holding it
        self.offset = 0  # index of the next batch's first file in todo
        self.manifest: list[dict] = []
        self.rejected_files: list[dict] = []
        self.written = ChunkedWrite()
        self.stored_entities: set[int] = set()
        self.stored_metrics: set[int] = set()
        self.new_rejected = 0
        self.examples: list[tuple[str, int, str]] = []
        self.reasons: Counter = Counter()
        self.previous = previous if previous is not None else pd.DataFrame(columns=wh.REJECTED_ROWS.column_names)
        self.previous_keep = np.ones(len(self.previous), dtype=bool)
        self.previous_at = (self.previous.groupby("source_file").indices if len(self.previous) else {})

    # -- one batch ---------------------------------------------------------------------------
    def batch(self, b) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The batch's rows to store (window, first file wins) and its new rejected rows."""
        n = len(b.source_files)
        g0 = self.offset
        self.offset += n
        us, fcode = b.ts, b.file.astype(np.int64)
        out = (us < self.first_us) | (us > self.now_us)
        parts = []  # (file, line, part, raw, reason): rejections of the batch, merged at the end
        out_idx = np.flatnonzero(out)
        if len(out_idx):
            o = pd.DataFrame({"ts": pd.Series(us[out_idx].view("datetime64[us]")).dt.tz_localize("UTC")})
            _, reason = outside_partitions(o, self.first, self.now)
            parts.append((fcode[out_idx], b.line[out_idx], 0, None, reason.to_numpy(object)))
        if len(b.rej_file):
            parts.append((b.rej_file.astype(np.int64), b.rej_line, 1, b.rej_raw, b.rej_reason))
        kept = ~out
        # first and last accepted timestamp per file (rows are grouped by file)
        k_us, k_file = us[kept], fcode[kept]
        first_ts = np.full(n, np.iinfo(np.int64).max)
        last_ts = np.full(n, np.iinfo(np.int64).min)
        if len(k_us):
            starts = np.flatnonzero(np.r_[True, k_file[1:] != k_file[:-1]])
            first_ts[k_file[starts]] = np.minimum.reduceat(k_us, starts)
            last_ts[k_file[starts]] = np.maximum.reduceat(k_us, starts)
        w = np.flatnonzero(kept & (us >= self.start_us) & (us < self.end_us))
        entity_id = np.array([self.entity_ids.setdefault(x, len(self.entity_ids)) for x in b.entity_names],
                             dtype=np.int64)
        metric_id = np.array([self.metric_ids.setdefault(x, len(self.metric_ids)) for x in b.metric_names],
                             dtype=np.int64)
        dup = self._duplicates(b, g0, w, entity_id, metric_id)
        if dup is not None:
            pos, kept_file, kept_line = dup
            reason = _fmt_across(self.rels[kept_file], kept_line)
            parts.append((fcode[w[pos]], b.line[w[pos]], 2, None, reason))
        store = w if dup is None else np.delete(w, dup[0])
        rejected = self._rejected(parts, g0, n)
        self._bookkeeping(b, g0, first_ts, last_ts, w, rejected)
        rows = pd.DataFrame({
            "entity_id": _dictionary(b.entity[store], b.entity_names),
            "metric": _dictionary(b.metric[store], b.metric_names),
            "ts": pd.Series(us[store].view("datetime64[us]")).dt.tz_localize("UTC"),
            "value": b.value[store],
            "line_number": b.line[store],
            "source_file": _dictionary(b.file[store], b.source_files),
            "ingested_at": self.now,
        })
        self.written.add(rows)
        self.stored_entities.update(entity_id[np.bincount(b.entity[store], minlength=len(entity_id)) > 0].tolist())
        self.stored_metrics.update(metric_id[np.bincount(b.metric[store], minlength=len(metric_id)) > 0].tolist())
        return rows, rejected

    def _duplicates(self, b, g0: int, w: np.ndarray, entity_id: np.ndarray, metric_id: np.ndarray):
        """Window rows of the batch (positions in ``w``) that an earlier file (by path) already
        holds, with that file (index in todo) and line; None when there are none."""
        if not len(w):
            return None
        e = entity_id[b.entity[w]]
        day = b.ts[w] // _DAY_US
        f = b.file[w].astype(np.int64) + g0
        # distinct (file, entity, day), by file: packed into one int64 when they fit (they do for
        # any real fleet: < 2^23 files a batch, 2^22 entities, 2^18 days), else through pandas
        d0 = int(day.min())
        if len(self.entity_ids) < 2**22 and int(day.max()) - d0 < 2**18 and len(b.source_files) < 2**23:
            packed = np.sort(((f - g0) << 40) | (e << 18) | (day - d0))
            packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
            triples = zip(((packed >> 40) + g0).tolist(), ((packed >> 18) & (2**22 - 1)).tolist(),
                          ((packed & (2**18 - 1)) + d0).tolist())
        else:
            t = pd.DataFrame({"f": f, "e": e, "d": day}).drop_duplicates()
            triples = zip(t["f"].tolist(), t["e"].tolist(), t["d"].tolist())
        clash = set()
        for g, key_e, key_d in triples:
            key = (key_e, key_d)
            held = self.holders.get(key)
            if held is None:
                self.holders[key] = g
            elif isinstance(held, int):
                if held != g:
                    self.holders[key] = [held, g]
                    clash.add(key)
            elif held[-1] != g:
                held.append(g)
                clash.add(key)
        if not clash:
            return None
        clash_index = pd.MultiIndex.from_tuples(sorted(clash))
        mine = np.flatnonzero(pd.MultiIndex.from_arrays([e, day]).isin(clash_index))
        cand = [pd.DataFrame({"g": f[mine], "line": b.line[w[mine]], "e": e[mine],
                              "m": metric_id[b.metric[w[mine]]], "t": b.ts[w[mine]], "pos": mine})]
        earlier = sorted({g for key in clash for g in self.holders[key] if g < g0})
        for g in earlier:  # files of earlier batches holding a clashing key: read again
            fr = self.reread(self.todo[g][0])
            o = fr.observations
            t = o["ts"].dt.tz_convert(None).to_numpy("datetime64[us]").view(np.int64)
            ok = (t >= self.first_us) & (t <= self.now_us) & (t >= self.start_us) & (t < self.end_us)
            ent = np.array([self.entity_ids.get(x, -1) for x in o["entity_id"].tolist()], dtype=np.int64)
            met = np.array([self.metric_ids.get(x, -1) for x in o["metric"].tolist()], dtype=np.int64)
            sel = ok & pd.MultiIndex.from_arrays([ent, t // _DAY_US]).isin(clash_index)
            cand.append(pd.DataFrame({"g": g, "line": o["line_number"].to_numpy()[sel], "e": ent[sel],
                                      "m": met[sel], "t": t[sel], "pos": -1}))
        c = pd.concat(cand[1:] + cand[:1], ignore_index=True)
        c = c.iloc[np.lexsort((c["line"].to_numpy(), c["g"].to_numpy()))].reset_index(drop=True)
        key = ["e", "m", "t"]
        later = c.duplicated(key, keep="first").to_numpy()
        d = c[later & (c["pos"].to_numpy() >= 0)]
        if not len(d):
            return None
        d = d.join(c[~later].set_index(key)[["g", "line"]], on=key, rsuffix="_kept").sort_values("pos")
        return d["pos"].to_numpy(), d["g_kept"].to_numpy(), d["line_kept"].to_numpy()

    def _rejected(self, parts: list, g0: int, n: int) -> pd.DataFrame:
        """The batch's rejections in the order the table had them: by file and line; at one line,
        those outside every partition, then the file's own, then duplicates across files."""
        if not parts:
            return pd.DataFrame({"source_file": pd.Series([], dtype=object), "line_number": pd.Series([], dtype=np.int64),
                                 "raw": pd.Series([], dtype=object), "reason": pd.Series([], dtype=object),
                                 "ingested_at": pd.Series([], dtype="datetime64[us, UTC]")})
        file = np.concatenate([p[0] for p in parts])
        line = np.concatenate([p[1] for p in parts])
        part = np.concatenate([np.full(len(p[0]), p[2]) for p in parts])
        raw = np.concatenate([np.full(len(p[0]), None, dtype=object) if p[3] is None else p[3] for p in parts])
        reason = np.concatenate([p[4] for p in parts])
        order = np.lexsort((np.arange(len(file)), part, line, file))
        rels = self.rels[g0:g0 + n]
        return pd.DataFrame({"source_file": rels[file[order]], "line_number": line[order], "raw": raw[order],
                             "reason": reason[order], "ingested_at": self.now})

    def _bookkeeping(self, b, g0, first_ts, last_ts, w, rejected: pd.DataFrame) -> None:
        n = len(b.source_files)
        fcode = b.file
        n_rej = rejected["source_file"].value_counts() if len(rejected) else {}
        if len(rejected):
            self.new_rejected += len(rejected)
            if len(self.examples) < 3:
                self.examples += list(zip(rejected["source_file"].head(3 - len(self.examples)),
                                          rejected["line_number"].head(3), rejected["reason"].head(3)))
            self.reasons.update(pd.Series(rejected["reason"], dtype=object)
                                .str.replace(r"'[^']*'", "'…'", regex=True).value_counts().to_dict())
        for i in range(n):
            _, rel, st = self.todo[g0 + i]
            previous_kept = 0
            at = self.previous_at.get(rel)
            if at is not None:  # lines decided again now: in the window, or rejected now
                redone = np.concatenate([b.line[w[fcode[w] == i]],
                                         rejected["line_number"].to_numpy()[rejected["source_file"].to_numpy() == rel]])
                keep = ~np.isin(self.previous["line_number"].to_numpy()[at], redone)
                self.previous_keep[at] = keep
                previous_kept = int(keep.sum())
            self.manifest.append({
                "source_file": rel, "size_bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "shape": b.shapes[i],
                "first_ts": pd.Timestamp(int(first_ts[i]), unit="us", tz="UTC") if last_ts[i] >= first_ts[i] else pd.NaT,
                "last_ts": pd.Timestamp(int(last_ts[i]), unit="us", tz="UTC") if last_ts[i] >= first_ts[i] else pd.NaT,
                "rows_read": int(b.rows_read[i]), "rows_rejected": int(n_rej.get(rel, 0)) + previous_kept,
                "read_at": self.now,
            })
            if b.file_errors[i]:
                self.rejected_files.append({"source_file": rel, "reason": b.file_errors[i], "ingested_at": self.now})

    # -- the end of the run ------------------------------------------------------------------
    def previous_kept(self) -> pd.DataFrame:
        return self.previous[self.previous_keep]

    def landing_files(self) -> pd.DataFrame:
        return pd.DataFrame(self.manifest, columns=wh.LANDING_FILES.column_names)

    def rejected_files_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rejected_files, columns=["source_file", "reason", "ingested_at"])

    def reasons_frame(self) -> pd.DataFrame:
        """Rejections of this run per reason (quoted values elided), most frequent first."""
        keys = sorted(self.reasons)
        return (pd.DataFrame({"reason": keys, "size": [self.reasons[k] for k in keys]})
                .sort_values("size", ascending=False))


def ahead(items, depth: int = 2):
    """``items``, computed by a background thread up to ``depth`` ahead of the consumer.

    The ingest's Python work on a batch (receiving it, sorting out duplicates, building frames)
    then runs while DuckDB, which releases the GIL, writes the batch before: the two share the
    cores instead of taking turns. If the consumer stops early, the thread stops and closes
    ``items`` (so a pool of worker processes behind it shuts down).
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
            else:
                q.put((done, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            q.put((None, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="ingest-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, exc = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        thread.join()


def _concat(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    return b if not len(a) else a if not len(b) else pd.concat([a, b], ignore_index=True)


def _fmt_across(kept_file: np.ndarray, kept_line: np.ndarray) -> np.ndarray:
    return np.asarray([f"{ACROSS_FILES}same entity_id, metric and ts as {f} line {int(n)} (the first file by path is kept)"
                       for f, n in zip(kept_file.tolist(), kept_line.tolist())], dtype=object)


@daily_table_asset(wh.OBSERVATIONS, group="ingest")
def observations(context: dg.AssetExecutionContext, duckdb: DuckDBResource, landing: LandingFolder) -> dg.MaterializeResult:
    start, end = time_window(context)
    now = dt.datetime.now(dt.timezone.utc)
    first = pd.Timestamp(daily_partitions.start).tz_convert("UTC")
    skip = landing.sidecars()
    found = discover(landing.root)
    files = [f for f in found.files if f.resolve() not in skip]
    present = [f.relative_to(landing.root).as_posix() for f in files] + [r.source_file for r in found.refused]
    with duckdb.get_connection() as con:
        wh.ensure_tables(con)
        manifest = _manifest(con)
    todo, unchanged = _needs_reading(files, landing.root, manifest, start, end)
    read_files = [rel for _, rel, _ in todo]
    refused_files, refused_versions = _refusals(found.refused, manifest, pd.Timestamp(now))
    with duckdb.get_connection() as con, wh.transaction(con):
        previous = con.execute(
            f"SELECT {', '.join(wh.REJECTED_ROWS.column_names)} FROM {wh.REJECTED_ROWS.qualified} "
            "WHERE source_file IN (SELECT UNNEST(?::VARCHAR[])) AND starts_with(reason, ?)",
            [read_files, ACROSS_FILES],
        ).df()
        # a file changed since it was read: its old lines are gone, and so are their rejections
        previous = previous[previous["source_file"].isin(unchanged)].reset_index(drop=True)
        run = IngestRun(todo, start, end, now, first, previous,
                        reread=lambda path: read_landing_file(path, root=landing.root))
        wh.replace_keyed(con, wh.REJECTED_ROWS, None, "source_file", read_files)

        def prepared():  # batches of files read in worker processes, sorted out by the run
            batches = iter_batches([t[0] for t in todo], root=landing.root, map_chunks=map_chunks)
            try:
                for batch in batches:
                    yield run.batch(batch)
            finally:
                batches.close()

        quarantined = []  # written once the observations are: the connection is busy till then

        def stored():  # each batch prepared in a thread while DuckDB writes the one before
            items = ahead(prepared())
            try:
                for rows, rejected in items:
                    if len(rejected):
                        quarantined.append(rejected)
                    yield rows
            finally:
                items.close()

        wh.replace_time_slice_streamed(con, wh.OBSERVATIONS, stored(), start, end)
        for rejected in quarantined:
            wh.append(con, wh.REJECTED_ROWS, rejected)
        wh.append(con, wh.REJECTED_ROWS, run.previous_kept())
        rejected_files, manifest_rows = run.rejected_files_frame(), run.landing_files()
        recorded = read_files + refused_files["source_file"].tolist()
        wh.replace_keyed(con, wh.REJECTED_FILES, _concat(rejected_files, refused_files), "source_file", recorded)
        wh.replace_keyed(con, wh.LANDING_FILES, _concat(manifest_rows, refused_versions), "source_file", recorded)
        # a refused file blocks until it is fixed (read again), released, or gone from the folder
        gone = con.execute(
            f"DELETE FROM {wh.REJECTED_FILES.qualified} WHERE source_file NOT IN (SELECT UNNEST(?::VARCHAR[])) "
            "RETURNING source_file", [present]).fetchall()
        refused_now = con.execute(f"SELECT count(*) FROM {wh.REJECTED_FILES.qualified}").fetchone()[0]
    for r in rejected_files.itertuples():
        context.log.warning(r.reason)
    for r in refused_files.itertuples():
        context.log.warning(r.reason)
    for (rel,) in gone:
        context.log.info(f"{rel}: no longer in the landing folder, its refusal is cleared from {wh.REJECTED_FILES.qualified}")
    if run.new_rejected:
        context.log.warning(f"{run.new_rejected} row(s) quarantined in {wh.REJECTED_ROWS.qualified}, e.g. "
                            + "; ".join(f"{f} line {n}: {r}" for f, n, r in run.examples))
    n_stored = run.written.rows
    rows_read = int(manifest_rows["rows_read"].sum())
    rows_rejected = int(manifest_rows["rows_rejected"].sum())
    return dg.MaterializeResult(metadata={
        **run.written.metadata(wh.OBSERVATIONS, start, end, context),
        "files_in_landing": len(files),
        "files_read": len(read_files),
        "files_rejected": len(rejected_files) + len(refused_files),
        # every file refused and not fixed, removed or released: each blocks the run (no_rejected_files)
        "files_refused_in_landing": int(refused_now),
        # rows_read = rows_stored + rows_rejected + rows_of_other_days
        "rows_read": rows_read,
        "rows_stored": n_stored,
        "rows_rejected": rows_rejected,
        "rows_of_other_days": rows_read - n_stored - rows_rejected,
        "rejected_reasons": markdown_preview(run.reasons_frame() if run.new_rejected else None, n=10),
        "entities": len(run.stored_entities),
        "metrics": len(run.stored_metrics),
    })
