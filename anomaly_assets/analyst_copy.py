"""The analysts' copy of the warehouse: one read-only DuckDB file, replaced atomically.

Why a copy. DuckDB lets one process hold a database file for writing, and while any other process
has the file open (even read-only) no process can write it. An analyst with a notebook open on the
warehouse would make the next nightly run fail. Analysts therefore query ``analytics.duckdb``
(``ANOMALY_ANALYST_COPY``), a copy the pipeline publishes at the end of every run of the chain; the warehouse
itself is only ever opened by the pipeline.

How. An in-memory DuckDB attaches the warehouse ``READ_ONLY`` and a temporary file in the
target's folder, and fills the file in one read transaction of the warehouse (a refresh, below, or
``COPY FROM DATABASE`` of every schema, table, view and macro), so the copy is a consistent snapshot
by construction, whatever is in the WAL. A copy from scratch is compact (slices deleted by re-runs
leave no free blocks behind); a refreshed one keeps the rows it deleted in their row groups. The temporary
file is detached (checkpointed and closed), made read-only (mode 0444, so nobody opens it for
writing by mistake and locks other readers out) and moved over the target with ``os.replace``,
atomic on one filesystem: a reader sees the old copy or the new one, never half a file, and a
reader that already has the old file open keeps reading it (the replaced inode lives until it is
closed).

Why not ``CHECKPOINT`` then a byte copy of the warehouse: that is consistent only if no writer starts
during the copy and the WAL is empty, and nothing enforces either; a byte copy would also need a lock
held just as long. The warehouse is locked only while it is read, and the publishing asset runs in
the ``duckdb_writer`` pool, so it never competes with the pipeline's own writers.

Refreshing, not rewriting. Every write of the pipeline that replaces a slice of a table (a time
range, or a whole SQL model) records it in ``meta.slice_changes`` in the writing transaction
(``warehouse.record_change``), and the copy holds that table as it was when the copy was made. A
publish therefore starts from a byte copy of the last published file (the analysts' file is never
written in place: readers keep their snapshot) and, in one transaction that reads the warehouse,
replaces the slices the copy's log lacks, and copies whole every table the log never names (those
written by key or appended: alerts and their events, entities, evaluation, rejected rows, landed
files, model versions). It then checks that every table holds as many rows as the warehouse's.
The copy is made from scratch instead when there is none, when it cannot be opened, when either
side has no change log, when it holds a change the warehouse does not (another warehouse, or one
restored from a backup), when a table, column, view or macro differs, when the counts differ after
the refresh, or when asked (``full=True``, ``anomaly-assets publish --full``, which also compacts: a
refreshed file keeps some of the space its replaced slices held). A write that bypasses the
pipeline's functions and keeps a table's row count (a manual ``UPDATE``) is not seen until such a
copy.

Cost. A copy from scratch rewrites the whole warehouse, in proportion to the history kept. A
refresh costs the byte copy (at disk speed), the slices changed since and the tables copied whole
(benchmarks/RESULTS.md, "The analysts' copy refreshed").
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote."""

    target: Path
    tables: int
    rows: int
    bytes: int
    seconds: float
    refreshed: bool = False  # True: the last copy refreshed with the changed slices; False: from scratch
    reason: str = ""  # why the copy was made from scratch
    slices: int = 0  # slices refreshed


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


# A copy in the making: '.<target name>.<pid>-<random>.tmp' (and DuckDB's '.wal' beside it, and the
# '.spill' folder of what did not fit its memory limit). The pid tells a later run whether its
# writer is still alive.
_TMP = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-)?[0-9a-f]{12}\.tmp(?:\.wal|\.spill)?$")
# A temp file without a pid (written before it had one) is left alone this long after its last write.
LEGACY_TMP_AGE_S = 600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(target: Path) -> list[Path]:
    """Remove the temp copies of ``target`` that a killed publish left beside it (full-size files).

    A temp file is left by a process that died before ``os.replace``; it is removed when the
    process named in its name is gone (or, for one without a pid, when it has not been written for
    ``LEGACY_TMP_AGE_S``). A copy being written by a live process is left alone.

    Returns
    -------
    list of Path
        The files removed.
    """
    target = Path(target)
    removed = []
    try:
        entries = list(target.parent.iterdir())
    except FileNotFoundError:
        return removed
    for path in entries:
        m = _TMP.match(path.name)
        if m is None or m["name"] != target.name:
            continue
        try:
            if m["pid"] is not None:
                if _alive(int(m["pid"])):
                    continue
            elif time.time() - path.stat().st_mtime < LEGACY_TMP_AGE_S:
                continue
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
        except FileNotFoundError:
            continue
    return removed


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def document(con: duckdb.DuckDBPyConnection, docs: Iterable[tuple[str, str, str, Mapping[str, str]]]) -> int:
    """``COMMENT ON`` the tables and views of ``con``'s current database, and their columns, from
    ``docs`` ((schema, name, doc, {column: doc})); objects or columns that do not exist are skipped.
    Returns the number of comments set."""
    kinds = {(s, n): k for s, n, k in con.execute(
        "SELECT schema_name, table_name, 'TABLE' FROM duckdb_tables() WHERE database_name = current_database() "
        "UNION ALL SELECT schema_name, view_name, 'VIEW' FROM duckdb_views() "
        "WHERE database_name = current_database() AND NOT internal").fetchall()}
    columns = {(s, t, c) for s, t, c in con.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
    ).fetchall()}
    n = 0
    for schema, name, doc, column_docs in docs:
        kind = kinds.get((schema, name))
        if kind is None:
            continue
        relation = f'"{schema}"."{name}"'
        if doc:
            con.execute(f"COMMENT ON {kind} {relation} IS {_literal(doc)}")
            n += 1
        for column, text in column_docs.items():
            if (schema, name, column) in columns and text:
                con.execute(f'COMMENT ON COLUMN {relation}."{column}" IS {_literal(text)}')
                n += 1
    return n


def publish(warehouse: Path, target: Path, docs: Iterable[tuple[str, str, str, Mapping[str, str]]] = (),
            memory_limit: str | None = None, full: bool = False) -> Published:
    """Copy ``warehouse`` to ``target`` as one consistent snapshot, replacing ``target`` atomically.

    The last published ``target`` is refreshed with the slices changed since it was made, or the
    copy is made from scratch (``full``, or when a refresh cannot be trusted: the module's doc).
    ``docs`` (schema, name, doc, {column: doc}) become the copy's table, view and column comments
    (:func:`document`), so analysts read the contract with the data (``duckdb_columns()``).
    ``memory_limit`` (DuckDB's, e.g. ``"1GB"``) bounds the copy's memory: without one DuckDB takes
    up to 80 % of the machine's, and a 12 GB warehouse's copy held 20 GB.

    Raises
    ------
    FileNotFoundError
        If ``warehouse`` does not exist (nothing has been materialized yet).
    """
    warehouse, target = Path(warehouse).resolve(), Path(target).resolve()
    if not warehouse.exists():
        raise FileNotFoundError(
            f"warehouse {warehouse} does not exist: nothing to publish to {target} "
            "(materialize the chain first, e.g. `anomaly-assets backfill`)"
        )
    if target == warehouse:
        raise ValueError(f"ANOMALY_ANALYST_COPY {target} is the warehouse itself; expected another file")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(target)  # a killed publish's full-size temp copies
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.tmp")
    spill = tmp.with_name(tmp.name + ".spill")  # what does not fit the memory limit, beside the copy
    t0 = time.perf_counter()
    refreshed, reason, slices = False, "asked for (full)" if full else "no copy yet", 0
    try:
        if not full and target.exists():
            reason, slices = _refreshed(warehouse, target, tmp, spill, memory_limit)
            refreshed = not reason
        if not refreshed:
            with _connection(spill, memory_limit) as con:
                con.execute(f"ATTACH {_sql_path(warehouse)} AS src (READ_ONLY)")
                con.execute(f"ATTACH {_sql_path(tmp)} AS dst")
                con.execute("COPY FROM DATABASE src TO dst")
        with _connection(spill, memory_limit) as con:  # the warehouse is free again from here on
            con.execute(f"ATTACH {_sql_path(tmp)} AS dst")
            con.execute("USE dst")
            document(con, docs)
            con.execute("USE memory")
            counts = _counts(con, "dst")
            size = con.execute("SELECT total_blocks * block_size FROM pragma_database_size() "
                               "WHERE database_name = 'dst'").fetchone()[0]
            con.execute("DETACH dst")
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
        shutil.rmtree(spill, ignore_errors=True)
    return Published(target, len(counts), sum(counts.values()), int(size or 0), time.perf_counter() - t0,
                     refreshed, reason, slices)


@contextmanager
def _connection(spill: Path, memory_limit: str | None):
    """An in-memory DuckDB (only its ATTACHes touch files), in UTC, under ``memory_limit``."""
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")  # no bar drawn into the run's output
        con.execute("SET TimeZone = 'UTC'")
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
            con.execute("SET temp_directory = ?", [str(spill)])  # not the working directory
        yield con
    finally:
        con.close()


def _counts(con: duckdb.DuckDBPyConnection, db: str) -> dict[str, int]:
    """Every table of ``db`` and its rows (counted: DuckDB's estimate holds deleted rows too)."""
    names = [f"{s}.{t}" for s, t in con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = ? ORDER BY ALL", [db]).fetchall()]
    return {t: con.execute(f"SELECT count(*) FROM {_rel(db, t)}").fetchone()[0] for t in names}


def _refreshed(warehouse: Path, target: Path, tmp: Path, spill: Path, memory_limit: str | None) -> tuple[str, int]:
    """:func:`refresh` a byte copy of ``target`` into ``tmp``; ``tmp`` is removed when it is not
    refreshed (the reason is returned, with the slices replaced)."""
    try:
        shutil.copyfile(target, tmp)  # the analysts' file itself is never opened for writing
        os.chmod(tmp, 0o644)
        with _connection(spill, memory_limit) as con:
            con.execute(f"ATTACH {_sql_path(warehouse)} AS src (READ_ONLY)")
            con.execute(f"ATTACH {_sql_path(tmp)} AS dst")
            reason, slices = refresh(con)
    except (duckdb.Error, OSError, KeyError) as exc:  # a damaged or foreign last copy: start anew
        reason, slices = f"the last copy could not be refreshed ({type(exc).__name__}: {str(exc)[:200]})", 0
    if reason:
        for leftover in (tmp, tmp.with_name(tmp.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return reason, slices


_LOG = "meta.slice_changes"


def _rel(db: str, name: str) -> str:
    """``db."schema"."table"`` for a change log's ``schema.table``."""
    schema, table = name.split(".", 1)
    return f'{db}."{schema}"."{table}"'


def _catalog(con: duckdb.DuckDBPyConnection, db: str) -> set[tuple]:
    """What a refresh must find equal in both databases: every column (with its type and place),
    view and macro."""
    return set(con.execute(
        "SELECT 'column', schema_name, table_name, column_name || ' ' || data_type || ' ' || column_index "
        "|| ' ' || is_nullable FROM duckdb_columns() WHERE database_name = $1 "
        "UNION ALL SELECT 'view', schema_name, view_name, sql FROM duckdb_views() "
        "WHERE database_name = $1 AND NOT internal "
        "UNION ALL SELECT 'macro', schema_name, function_name, coalesce(macro_definition, '') FROM duckdb_functions() "
        "WHERE database_name = $1 AND function_type IN ('macro', 'table_macro') AND NOT internal",
        [db]).fetchall())


def refresh(con: duckdb.DuckDBPyConnection) -> tuple[str, int]:
    """Bring the copy attached as ``dst`` up to the warehouse attached as ``src``, in one transaction.

    Replaces the slices of ``src``'s change log that ``dst``'s does not hold, and every table the
    log never names in full; then checks every table's row count.

    Returns
    -------
    (reason, slices) : (str, int)
        Why the copy must be made from scratch instead ('' when refreshed: ``dst`` was changed and
        committed), and how many slices were replaced.
    """
    logs = {db for (db,) in con.execute(
        "SELECT database_name FROM duckdb_tables() WHERE schema_name = 'meta' AND table_name = 'slice_changes'").fetchall()}
    if logs != {"src", "dst"}:
        return ("the copy has no change log" if "src" in logs else "the warehouse has no change log"), 0
    src, dst = _catalog(con, "src"), _catalog(con, "dst")
    if src != dst:
        changed = sorted({f"{kind} {schema}.{name}" for kind, schema, name, _ in src ^ dst})
        return f"a table, column, view or macro changed: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}", 0
    con.execute("BEGIN TRANSACTION")
    done = False
    try:
        reason, slices = _apply(con)
        if not reason:
            con.execute("COMMIT")
            done = True
        return reason, slices
    finally:
        if not done:
            con.execute("ROLLBACK")


def _apply(con: duckdb.DuckDBPyConnection) -> tuple[str, int]:
    """:func:`refresh`'s work inside its transaction; a reason to copy from scratch stops it."""
    unknown = con.execute(f"SELECT count(*) FROM dst.{_LOG} WHERE change_id NOT IN (SELECT change_id FROM src.{_LOG})"
                          ).fetchone()[0]
    if unknown:
        return f"the copy holds {unknown} changes the warehouse does not (another warehouse, or a restored one)", 0
    pending = con.execute(
        f"SELECT DISTINCT table_name, time_column, lo, hi FROM src.{_LOG} "
        f"WHERE change_id NOT IN (SELECT change_id FROM dst.{_LOG}) ORDER BY ALL").fetchall()
    named = {t for (t,) in con.execute(f"SELECT DISTINCT table_name FROM src.{_LOG}").fetchall()}
    counts = _counts(con, "src")  # the warehouse is only read: its counts hold for the transaction
    tables = list(counts)
    # a table the log never names is written some other way (replaced, keyed, appended): copied whole
    whole = [t for t in tables if t not in named or any(p[0] == t and p[1] is None for p in pending)]
    for t in whole:
        con.execute(f"DELETE FROM {_rel('dst', t)}")
        con.execute(f"INSERT INTO {_rel('dst', t)} BY NAME SELECT * FROM {_rel('src', t)}")
    types = {(f"{s}.{t}", c): d for s, t, c, d in con.execute(
        "SELECT schema_name, table_name, column_name, data_type FROM duckdb_columns() WHERE database_name = 'src'"
    ).fetchall()}
    slices = [p for p in pending if p[0] not in whole]
    for t, column, lo, hi in slices:
        kind = types[(t, column)]
        where = f'"{column}" >= CAST(? AS {kind}) AND "{column}" < CAST(? AS {kind})'
        con.execute(f"DELETE FROM {_rel('dst', t)} WHERE {where}", [lo, hi])
        con.execute(f"INSERT INTO {_rel('dst', t)} BY NAME SELECT * FROM {_rel('src', t)} WHERE {where}", [lo, hi])
    copied = _counts(con, "dst")
    differ = [t for t in tables if copied.get(t) != counts[t]]
    if differ:
        return f"row counts differ after the refresh in {', '.join(differ)} (a write the change log missed)", 0
    return "", len(slices)
