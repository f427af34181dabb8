"""The warehouse contract: every table the Python assets write, and the only code that writes them.

Each table is declared once here (columns, types, one-line docs). The docs feed docs/warehouse.md, the
asset metadata (column schema), the analysts' column comments and the DDL, so they cannot drift apart.

Writes replace a *slice* (a time range, optionally restricted to some keys) inside one
transaction: delete the slice, insert the new rows, commit. Re-running a partition, or running over
a failed run, therefore never duplicates or drops rows. Each slice replaced is also recorded in
``meta.slice_changes`` in the same transaction, so the analysts' copy refreshes only those slices.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    doc: str
    columns: tuple[Column, ...]
    time_column: str | None = "ts"

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def ddl(self) -> str:
        cols = ",\n  ".join(f'"{c.name}" {c.type}' for c in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.qualified} (\n  {cols}\n)"


def _t(schema: str, name: str, doc: str, *cols: tuple[str, str, str], time_column="ts") -> Table:
    return Table(schema, name, doc, tuple(Column(*c) for c in cols), time_column)


OBSERVATIONS = _t(
    "raw", "observations", "Every accepted observation from the landing folder, one row per entity, metric and time.",
    ("entity_id", "VARCHAR NOT NULL", "Entity (machine, sensor, server, store) as written in the file"),
    ("metric", "VARCHAR NOT NULL", "Metric name (column name in wide files, `value` for single series)"),
    ("ts", "TIMESTAMPTZ NOT NULL", "Observation time, UTC"),
    ("value", "DOUBLE NOT NULL", "Observed value (finite)"),
    ("source_file", "VARCHAR NOT NULL", "Landing file the row came from, relative to the landing folder"),
    ("ingested_at", "TIMESTAMPTZ NOT NULL", "When this row was written"),
)
REJECTED_ROWS = _t(
    "raw", "rejected_rows", "Quarantined observations: malformed rows with the file, line and reason.",
    ("source_file", "VARCHAR NOT NULL", "Landing file, relative to the landing folder"),
    ("line_number", "BIGINT NOT NULL", "1-based physical line in the file (header = line 1)"),
    ("raw", "VARCHAR", "The original line text (NULL when the line is well-formed: a duplicate across files, or a time outside every partition)"),
    ("reason", "VARCHAR NOT NULL", "Why the row was rejected"),
    ("ingested_at", "TIMESTAMPTZ NOT NULL", "When the rejection was recorded"),
    time_column=None,
)
REJECTED_FILES = _t(
    "raw", "rejected_files", "Landing files that could not be used at all, with the reason.",
    ("source_file", "VARCHAR NOT NULL", "Landing file, relative to the landing folder"),
    ("reason", "VARCHAR NOT NULL", "What was expected and what was found"),
    ("ingested_at", "TIMESTAMPTZ NOT NULL", "When the rejection was recorded"),
    time_column=None,
)
LANDING_FILES = _t(
    "raw", "landing_files", "Manifest of landing file versions read: lets a nightly run skip files outside its days.",
    ("source_file", "VARCHAR NOT NULL", "Landing file, relative to the landing folder"),
    ("size_bytes", "BIGINT NOT NULL", "File size when read"),
    ("mtime_ns", "BIGINT NOT NULL", "File modification time (ns) when read"),
    ("shape", "VARCHAR", "long, wide or single (NULL when the file was rejected)"),
    ("first_ts", "TIMESTAMPTZ", "Earliest accepted timestamp in the file"),
    ("last_ts", "TIMESTAMPTZ", "Latest accepted timestamp in the file"),
    ("rows_read", "BIGINT NOT NULL", "Observations read (= stored + rejected once the file's days have run)"),
    ("rows_rejected", "BIGINT NOT NULL", "Observations quarantined"),
    ("read_at", "TIMESTAMPTZ NOT NULL", "When the file was read"),
    time_column=None,
)
DECOMPOSITION = _t(
    "features", "decomposition",
    "Expected value, band and residual of every observation, from a robust calendar baseline fitted on the series' history before it.",
    ("entity_id", "VARCHAR NOT NULL", "Entity"),
    ("metric", "VARCHAR NOT NULL", "Metric"),
    ("ts", "TIMESTAMPTZ NOT NULL", "Observation time, UTC"),
    ("value", "DOUBLE NOT NULL", "Observed value"),
    ("expected", "DOUBLE", "trend + seasonal: what the series' reference said this point should be (NULL in cold start)"),
    ("trend", "DOUBLE", "Level of the reference: median of its points not judged anomalous (from a new normal's start once one is accepted)"),
    ("seasonal", "DOUBLE", "Calendar effects the series shows (time of day, day of week, weekend hours, day of month, business day, holiday) at this point"),
    ("residual", "DOUBLE", "value - expected"),
    ("residual_z", "DOUBLE", "The residual in σ-equivalents: as rare, under the metric's own out-of-sample residuals, as this many σ of a normal"),
    ("lower", "DOUBLE", "Lower edge of the expected band: outside it the point is flagged on this metric alone (NULL in cold start, and where it lies past 1,000 x (abs(expected) + 1σ): no plausible value alone would flag)"),
    ("upper", "DOUBLE", "Upper edge of the expected band: outside it the point is flagged on this metric alone (NULL in cold start, and where it lies past 1,000 x (abs(expected) + 1σ): no plausible value alone would flag)"),
    ("excluded", "BOOLEAN", "Kept out of later references: this metric deviated on a flagged point (until a lasting change is accepted)"),
)
MODEL_VERSIONS = _t(
    "ml", "model_versions", "Every model trained: what, when, on which window, with which parameters, where stored.",
    ("model_version", "VARCHAR NOT NULL", "Content hash of the parameters, training window and code version"),
    ("day", "DATE NOT NULL", "The partition day this model scores (trained strictly before it)"),
    ("model", "VARCHAR NOT NULL", "Detector: robust calendar baseline + evidence backend"),
    ("train_start", "TIMESTAMPTZ NOT NULL", "First timestamp of the earliest reference window used that day"),
    ("train_end", "TIMESTAMPTZ NOT NULL", "End of the reference windows (exclusive; = start of day, or a warm-up refit's point)"),
    ("entities", "BIGINT NOT NULL", "Entities with a fitted model"),
    ("cold_start_entities", "BIGINT NOT NULL", "Entities with too few points to score yet (fewer than min_points)"),
    ("training_rows", "BIGINT NOT NULL", "Reference points (entity x timestamp) the day's refits used"),
    ("params", "JSON NOT NULL", "Estimator parameters"),
    ("artifact_path", "VARCHAR NOT NULL", "Parquet file of every series' fitted level, scale, band and calendar components"),
    ("trained_at", "TIMESTAMPTZ NOT NULL", "Wall-clock time of training"),
    ("refits", "JSON", "Series refitted that day, by reason: new, warm-up, drift, cadence, backend (docs/detection.md)"),
    ("carried", "BIGINT", "Entities scored with a model carried from an earlier day or run of the day (no refit)"),
    time_column=None,
)
ANOMALY_SCORES = _t(
    "scoring", "anomaly_scores", "One row per entity and timestamp: how anomalous, how severe, and why.",
    ("entity_id", "VARCHAR NOT NULL", "Entity"),
    ("ts", "TIMESTAMPTZ NOT NULL", "Observation time, UTC"),
    ("anomaly_score", "DOUBLE", "In [0, 1], higher = more anomalous: L/(1+L), L = -log10 P(normal this unusual); 0.75 = 1e-3; past 3e-6 it ranks, tempered (docs/detection.md). NULL in cold start"),
    ("is_anomaly", "BOOLEAN NOT NULL", "severity is warning or critical: P(normal this unusual) <= warning_p (1e-3), i.e. anomaly_score >= 0.75; in a new series' probation 1,000 times stronger evidence is needed"),
    ("severity", "VARCHAR NOT NULL", "normal, warning, critical, or cold_start (not enough history to score)"),
    ("why", "VARCHAR", "One line for flagged rows: top metric (its recent RMS σ first when it leads by that) actual vs expected, σ, dominant family share; says so when metrics together or a stretch flagged it"),
    ("model_version", "VARCHAR", "ml.model_versions row that scored this point"),
)
EXPLANATIONS = _t(
    "scoring", "explanations", "For every flagged point, every metric ranked by its share of the deviation.",
    ("entity_id", "VARCHAR NOT NULL", "Entity"),
    ("ts", "TIMESTAMPTZ NOT NULL", "Observation time, UTC"),
    ("metric", "VARCHAR NOT NULL", "Metric"),
    ("rank", "INTEGER NOT NULL", "1 = strongest contributor"),
    ("contribution", "DOUBLE NOT NULL", "Share of the deviation; sums to 1 per entity and ts"),
    ("family", "VARCHAR NOT NULL", "Metric family (temperature, vibration, voltage, ...)"),
    ("expected", "DOUBLE", "Expected value from the decomposition"),
    ("actual", "DOUBLE", "Observed value"),
)
EVALUATION_METRICS = _t(
    "evaluation", "metrics", "Detection quality against the labels file, per entity and overall (entity_id = '*').",
    ("entity_id", "VARCHAR NOT NULL", "Entity, or '*' for the mean over entities"),
    ("points", "BIGINT NOT NULL", "Scored points evaluated"),
    ("labeled_points", "BIGINT NOT NULL", "Points inside a label window"),
    ("precision", "DOUBLE", "Point-wise precision of is_anomaly"),
    ("recall", "DOUBLE", "Point-wise recall of is_anomaly"),
    ("f1", "DOUBLE", "Point-wise F1 of is_anomaly"),
    ("best_f1", "DOUBLE", "Point-wise F1 at the best threshold on anomaly_score (threshold-free quality; no point-adjust)"),
    ("auc_pr", "DOUBLE", "Average precision of anomaly_score"),
    ("event_recall", "DOUBLE", "Share of labeled windows with at least one flagged point"),
    ("event_precision", "DOUBLE", "Share of flagged runs that overlap a labeled window"),
    ("evaluated_from", "TIMESTAMPTZ", "First timestamp evaluated (the test split when one is given)"),
    ("evaluated_at", "TIMESTAMPTZ NOT NULL", "When the evaluation ran"),
    time_column=None,
)

ALERTS = _t(
    "alerts", "alerts", "Alerts people act on: one per rule and entity while it lasts, routed to a team, with the evidence.",
    ("alert_id", "VARCHAR NOT NULL", "hash(rule, entity, opened_at): re-running the same data updates, never duplicates"),
    ("rule", "VARCHAR NOT NULL", "Rule in configs/alert_rules.yaml that fired"),
    ("entity_id", "VARCHAR NOT NULL", "Entity"),
    ("opened_at", "TIMESTAMPTZ NOT NULL", "First hit (data time)"),
    ("last_seen_at", "TIMESTAMPTZ NOT NULL", "Latest hit (data time)"),
    ("status", "VARCHAR NOT NULL", "open, acknowledged, resolved (by a person, or quiet for resolve_after); pending/expired: below min_hits"),
    ("severity", "VARCHAR NOT NULL", "info, warning or critical: the worst seen (a rise is an escalation)"),
    ("team", "VARCHAR NOT NULL", "Whose job it is (routing by fault kind, family, tag or site; else the default team)"),
    ("confidence", "DOUBLE NOT NULL", "0-1: rule precision from feedback x how clearly the evidence cleared the rule"),
    ("title", "VARCHAR NOT NULL", "Short headline: what and where"),
    ("why", "VARCHAR NOT NULL", "One paragraph a person can act on: what deviates, by how much, since when, what to do"),
    ("evidence", "JSON NOT NULL", "Expected vs actual, σ, top metrics with contributions, family shares, peer comparison"),
    ("fault_kind", "VARCHAR", "Diagnosis (the rule's, or a diagnosing rule's on the same entity)"),
    ("family", "VARCHAR", "Dominant metric family at the peak hit"),
    ("hits", "BIGINT NOT NULL", "Rule hits folded into this alert"),
    ("resolved_at", "TIMESTAMPTZ", "When it resolved (data time when automatic, wall time when by a person)"),
    ("value_at_risk", "DOUBLE", "Money at stake (business rules): the gap in currency, or units x price; NULL otherwise"),
    time_column=None,
)
ALERT_EVENTS = _t(
    "alerts", "alert_events", "What happened to alerts: acknowledgements, resolutions, feedback and webhook deliveries.",
    ("alert_id", "VARCHAR NOT NULL", "Alert"),
    ("at", "TIMESTAMPTZ NOT NULL", "Wall-clock time of the event"),
    ("action", "VARCHAR NOT NULL", "ack, resolve, feedback, delivered or delivery_failed"),
    ("actor", "VARCHAR", "Who (user name, or 'sensor' for deliveries)"),
    ("note", "VARCHAR", "Free text from the person, or the delivery outcome"),
    ("verdict", "VARCHAR", "feedback only: true_positive or false_positive"),
    ("severity", "VARCHAR", "deliveries: the severity that was sent (a later rise is sent again once)"),
    ("channel", "VARCHAR", "deliveries: the environment variable naming the webhook (never the URL)"),
    ("outcome", "VARCHAR", "feedback: what was found, in words ('counted: 38 units missing')"),
    ("value_recovered", "DOUBLE", "feedback: money recovered or saved thanks to the alert"),
    time_column=None,
)
ALERT_PRECISION = _t(
    "evaluation", "alert_precision", "Alert precision per rule and team, from people's feedback and, when labels exist, from the labels.",
    ("rule", "VARCHAR NOT NULL", "Rule, or '*' for all rules"),
    ("team", "VARCHAR NOT NULL", "Team, or '*' for all teams"),
    ("alerts", "BIGINT NOT NULL", "Alerts raised"),
    ("with_feedback", "BIGINT NOT NULL", "Alerts with a feedback verdict (the latest counts)"),
    ("true_positives", "BIGINT NOT NULL", "Verdict true_positive"),
    ("false_positives", "BIGINT NOT NULL", "Verdict false_positive"),
    ("feedback_precision", "DOUBLE", "true / (true + false) positives; NULL without feedback"),
    ("label_precision", "DOUBLE", "Share of alerts overlapping a labeled window of their entity; NULL without labels"),
    ("value_at_risk", "DOUBLE", "Money at stake over the alerts (business rules); NULL when none says"),
    ("value_recovered", "DOUBLE", "Money recovered, from feedback outcomes; NULL when none was reported"),
    ("evaluated_at", "TIMESTAMPTZ NOT NULL", "When the evaluation ran"),
    time_column=None,
)

ENTITIES = _t(
    "marts", "entities", "Every entity seen: where it is, whose it is, and what it reports (the entity register, or inferred).",
    ("entity_id", "VARCHAR NOT NULL", "Entity"),
    ("site", "VARCHAR NOT NULL", "Site or peer group (from the register; else the id without its number: pump-0007 -> pump)"),
    ("tags", "VARCHAR NOT NULL", "Tags from the register, comma-separated (empty when not registered)"),
    ("team", "VARCHAR", "Owning team from the register (NULL: alert routing decides)"),
    ("registered", "BOOLEAN NOT NULL", "Listed in the entity register (entities.csv or configs/entities.yaml)"),
    ("metrics", "BIGINT NOT NULL", "Distinct metrics observed"),
    ("observations", "BIGINT NOT NULL", "Observations stored in raw.observations"),
    ("first_ts", "TIMESTAMPTZ", "First observation"),
    ("last_ts", "TIMESTAMPTZ", "Latest observation"),
    time_column=None,
)

SLICE_CHANGES = _t(
    "meta", "slice_changes", "Every slice of a table replaced (a time range, or the whole table), recorded in the "
    "transaction that replaced it: what the analysts' copy refreshes (docs/warehouse.md).",
    ("change_id", "VARCHAR NOT NULL", "Random id of the change"),
    ("table_name", "VARCHAR NOT NULL", "The table, as schema.table"),
    ("time_column", "VARCHAR", "The column the slice is a range of (NULL: the whole table was rebuilt)"),
    ("lo", "VARCHAR", "The range's start, inclusive, as text of the column's type (NULL: the whole table)"),
    ("hi", "VARCHAR", "The range's end, exclusive (NULL: the whole table)"),
    ("changed_at", "TIMESTAMPTZ NOT NULL", "When the transaction that wrote it started"),
    time_column=None,
)

TABLES: tuple[Table, ...] = (
    OBSERVATIONS, REJECTED_ROWS, REJECTED_FILES, LANDING_FILES, DECOMPOSITION, MODEL_VERSIONS,
    ANOMALY_SCORES, EXPLANATIONS, EVALUATION_METRICS, ALERTS, ALERT_EVENTS, ALERT_PRECISION, ENTITIES,
    SLICE_CHANGES,
)


def ensure_tables(con: duckdb.DuckDBPyConnection, tables: tuple[Table, ...] = TABLES) -> None:
    """Create the schemas and tables that do not exist yet, and add to existing tables the
    columns the contract gained since they were created (NULL in their old rows)."""
    for schema in sorted({t.schema for t in tables}):
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    for t in tables:
        con.execute(t.ddl())
    found = {(s, t, c) for s, t, c in con.execute(
        "SELECT schema_name, table_name, column_name FROM duckdb_columns() WHERE database_name = current_database()"
    ).fetchall()}
    for t in tables:
        for c in t.columns:
            # nullable columns only: an added column holds NULL in the rows written before it
            if (t.schema, t.name, c.name) not in found and "NOT NULL" not in c.type:
                con.execute(f'ALTER TABLE {t.qualified} ADD COLUMN IF NOT EXISTS "{c.name}" {c.type}')


def entity_chunks(con: duckdb.DuckDBPyConnection, table: Table, start, end, max_rows: int,
                  parts: int = 1, min_part_rows: int = 0) -> list[list[str]]:
    """The entity_ids of ``table`` in [start, end), sorted, cut into consecutive chunks of at most
    ~``max_rows`` rows each (an entity with more rows is a chunk of its own).

    Lets an asset read, compute and write a fleet a chunk of entities at a time, so memory follows
    the chunk, not the fleet. With ``parts`` > 1 there are at least that many chunks of
    ``min_part_rows`` or more (when there are enough rows and entities), so that that many
    processes can share the work. A NULL entity_id (sorted last) is None in the last chunk, or a
    chunk of its own when it does not fit there; the tables' contract forbids it, but the checks
    read tables that break it.
    """
    counts = con.execute(
        f"SELECT entity_id, count(*) FROM {table.qualified} WHERE {table.time_column} >= ? AND "
        f"{table.time_column} < ? GROUP BY entity_id ORDER BY entity_id", [start, end]).fetchall()
    if parts > 1:
        max_rows = min(max_rows, max(-(-sum(k for _, k in counts) // parts), min_part_rows))
    out: list[list[str]] = []
    n = 0  # rows in the last chunk
    for entity, k in counts:
        if out and n + k <= max_rows:  # the entity fits in the last chunk
            out[-1].append(entity)
            n += k
        else:  # a chunk of its own
            out.append([entity])
            n = k
    return out


def entity_ranges(con: duckdb.DuckDBPyConnection, table: Table, start, end, max_rows: int,
                  parts: int = 1, min_part_rows: int = 0) -> list[tuple[str, str]]:
    """:func:`entity_chunks` as (first, last) entity_id ranges (``entity_id BETWEEN first AND last``)."""
    return [(c[0], c[-1]) for c in entity_chunks(con, table, start, end, max_rows, parts, min_part_rows)]


def distinct_metrics(con: duckdb.DuckDBPyConnection, table: Table, start, end) -> list[str]:
    """The metric names of ``table`` in [start, end), sorted."""
    return [r[0] for r in con.execute(
        f"SELECT DISTINCT metric FROM {table.qualified} WHERE {table.time_column} >= ? AND "
        f"{table.time_column} < ? AND metric IS NOT NULL ORDER BY 1", [start, end]).fetchall()]


def _decoded(tab, entities: list[str], metrics: list[str], source: str, reader: str) -> pd.DataFrame:
    """A chunk read as codes, with entity_id and metric as categoricals of ``entities`` and
    ``metrics``; a name missing from them (NULL code) is an error naming ``source``."""
    for name, names in (("entity_id", entities), ("metric", metrics)):
        if tab.column(name).null_count:
            raise ValueError(f"{source.format(name)} that are not among the {len(names)} names given to {reader}: "
                             "a NULL, or lists not from this table and window")
    # one block per column: consolidating the float columns into one 2D block copies them all
    # (~40 ms of a 2M-row chunk, against ~5 ms without)
    frame = tab.to_pandas(split_blocks=True)
    for name, names in (("entity_id", entities), ("metric", metrics)):
        frame[name] = pd.Categorical.from_codes(frame[name].to_numpy(), dtype=pd.CategoricalDtype(names))
    return frame


def read_history_chunk(con: duckdb.DuckDBPyConnection, entities: list[str], metrics: list[str], start, end,
                       short_start, long_start, recent_start, min_recent_points: int) -> pd.DataFrame:
    """The observations of ``entities`` that detection needs to score [start, end), with what
    earlier runs stored for those before ``start``: entity_id, metric (categoricals whose
    categories are ``entities`` and ``metrics``), ts, value, residual and excluded (NULL for
    points not yet scored).

    An entity with at least ``min_recent_points`` timestamps in [recent_start, start) is read
    from ``short_start``; one with fewer (daily data, or a newcomer) from ``long_start``, so a
    daily series finds its longer reference without every hourly series reading as far back.

    The two tables are joined on their names and the names coded afterwards in Arrow
    (``pc.index_in``): coding each side in DuckDB first doubled a 100k night's read
    (benchmarks/RESULTS.md). Both sides keep only the listed entities before the join, so a few
    entities spread over a wide range (the refits of a night that carries models) read as few
    rows. A metric not in ``metrics`` is an error.
    """
    if entities[-1] is None:
        raise ValueError(f"{OBSERVATIONS.qualified} has rows with a NULL entity_id, which its contract forbids")
    tab = con.sql(
        f"""WITH recent AS (
                SELECT entity_id, count(DISTINCT ts) AS n FROM {OBSERVATIONS.qualified}
                WHERE ts >= $5 AND ts < $3 AND entity_id BETWEEN $1 AND $2 GROUP BY entity_id),
            o AS (
                SELECT o.entity_id, o.metric, o.ts, o.value FROM {OBSERVATIONS.qualified} o
                LEFT JOIN recent r ON r.entity_id = o.entity_id
                WHERE o.entity_id BETWEEN $1 AND $2 AND o.entity_id IN (SELECT unnest($9::VARCHAR[]))
                  AND o.ts < $4 AND o.ts >= CASE WHEN coalesce(r.n, 0) >= $8 THEN $6 ELSE $7 END),
            d AS (
                SELECT entity_id, metric, ts, residual, excluded FROM {DECOMPOSITION.qualified}
                WHERE entity_id BETWEEN $1 AND $2 AND entity_id IN (SELECT unnest($9::VARCHAR[]))
                  AND ts >= $7 AND ts < $3)
            SELECT o.entity_id, o.metric, o.ts, o.value, d.residual, d.excluded
            FROM o LEFT JOIN d ON d.entity_id = o.entity_id AND d.metric = o.metric AND d.ts = o.ts""",
        params=[entities[0], entities[-1], start, end, recent_start, short_start, long_start,
                min_recent_points, entities]).to_arrow_table()
    tab = _coded_in_arrow(tab, entities, metrics)
    return _decoded(tab, entities, metrics, f"{OBSERVATIONS.qualified} has {{}} values", "read_history_chunk")


def _coded_in_arrow(tab, entities: list[str], metrics: list[str]):
    """entity_id and metric of ``tab`` as their positions in ``entities`` and ``metrics`` (NULL
    where absent: :func:`_decoded` names it)."""
    for name, names in (("entity_id", entities), ("metric", metrics)):
        i = tab.schema.get_field_index(name)
        col = tab.column(i)
        tab = tab.set_column(i, name, pc.index_in(col, value_set=pa.array(names, type=col.type)))
    return tab


def _insert(con: duckdb.DuckDBPyConnection, table: Table, rows: pd.DataFrame) -> None:
    if rows is None or len(rows) == 0:
        return
    _require_columns(table, rows)
    _insert_registered(con, table, "_rows", rows[table.column_names])


def _require_columns(table: Table, rows: pd.DataFrame) -> None:
    missing = [c for c in table.column_names if c not in rows.columns]
    if missing:
        raise ValueError(f"{table.qualified}: rows to write lack columns {missing}")


def _insert_registered(con: duckdb.DuckDBPyConnection, table: Table, name: str, source) -> None:
    """INSERT every column of ``table`` from ``source`` (a frame or an Arrow stream), registered as ``name``."""
    cols = ", ".join(f'"{c}"' for c in table.column_names)
    con.register(name, source)
    try:
        con.execute(f"INSERT INTO {table.qualified} ({cols}) SELECT {cols} FROM {name}")
    finally:
        try:
            con.unregister(name)
        except duckdb.Error:  # the failed INSERT aborted the transaction: its own error is the one to raise
            pass


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection):
    """All writes of one asset run commit together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def replace_time_slice(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    rows: pd.DataFrame | Iterable[pd.DataFrame],
    start: dt.datetime,
    end: dt.datetime,
) -> None:
    """Replace the rows of ``table`` with ``start <= ts < end`` by ``rows`` (call inside ``transaction``).

    ``rows`` is one frame, or an iterable of frames (e.g. one per chunk of entities, computed
    while they are written: memory holds one chunk, the transaction still covers them all).
    """
    _delete_slice(con, table, start, end)
    for chunk in [rows] if isinstance(rows, pd.DataFrame) else rows:
        if len(chunk):
            _check_slice(table, chunk, start, end)
        _insert(con, table, chunk)


def _delete_slice(con: duckdb.DuckDBPyConnection, table: Table, start, end) -> None:
    if table.time_column is None:
        raise ValueError(f"{table.qualified} has no time column to slice on")
    con.execute(
        f"DELETE FROM {table.qualified} WHERE {table.time_column} >= ? AND {table.time_column} < ?",
        [start, end],
    )
    record_change(con, table.qualified, table.time_column, start, end)


def record_change(con: duckdb.DuckDBPyConnection, relation: str, column: str | None = None,
                  start=None, end=None) -> None:
    """Record in ``meta.slice_changes`` that ``relation``'s rows with ``start <= column < end`` were
    replaced (no ``column``: the whole table), inside the transaction that replaced them.

    The bounds are cast to the column's type in this session, as the replacing ``DELETE`` compared
    them, and stored as DuckDB renders that (a time with its UTC offset, a date), so they cast back
    to the same bounds in any session.
    """
    schema, table = relation.split(".", 1)
    if not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                       "AND schema_name = ? AND table_name = ?", [SLICE_CHANGES.schema, SLICE_CHANGES.name]
                       ).fetchone()[0]:  # DDL only once: two transactions creating it would conflict
        ensure_tables(con, (SLICE_CHANGES,))
    bound = "CAST(? AS VARCHAR)"
    if column:
        kind = con.execute("SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() "
                           "AND schema_name = ? AND table_name = ? AND column_name = ?", [schema, table, column]
                           ).fetchone()[0]
        bound = f"CAST(CAST(? AS {kind}) AS VARCHAR)"
    con.execute(f"INSERT INTO {SLICE_CHANGES.qualified} SELECT ?, ?, ?, {bound}, {bound}, now()",
                [uuid.uuid4().hex, relation, column, start if column else None, end if column else None])


def _check_slice(table: Table, chunk: pd.DataFrame, start, end) -> None:
    ts = pd.to_datetime(chunk[table.time_column], utc=True)
    if ts.min() < pd.Timestamp(start) or ts.max() >= pd.Timestamp(end):
        raise ValueError(
            f"{table.qualified}: rows span {ts.min()}..{ts.max()}, outside the slice [{start}, {end})"
        )


def replace_time_slice_streamed(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    frames: Iterable[pd.DataFrame],
    start: dt.datetime,
    end: dt.datetime,
) -> None:
    """:func:`replace_time_slice` for many frames, written by ONE ``INSERT`` that DuckDB pulls from
    an Arrow stream of them (call inside ``transaction``).

    DuckDB then compresses and writes the rows as they come (its optimistic writes to the file)
    instead of keeping every appended chunk in the transaction's memory until the commit (~50
    bytes a row with one INSERT per frame), and inserts ~2x faster. The first non-empty frame
    sets the column types (widened for the rest: :func:`_stream_schema`); the frames are
    produced while the statement runs (possibly on one of DuckDB's threads), so producing them
    must not use ``con``. An exception raised while
    producing them is raised here as it was.
    """
    import itertools

    _delete_slice(con, table, start, end)
    names = table.column_names
    frames = iter(frames)
    first = next((f for f in frames if len(f)), None)
    if first is None:
        return
    _require_columns(table, first)
    schema = _stream_schema(con, table, first[names])
    raised: list[BaseException] = []

    def batches():
        try:
            for chunk in itertools.chain([first], frames):
                if len(chunk):
                    _check_slice(table, chunk, start, end)
                    # a Table: pandas' Arrow-backed text columns may be chunked, a RecordBatch takes one chunk
                    yield from pa.Table.from_pandas(chunk[names], schema=schema, preserve_index=False).to_batches()
        except BaseException as exc:
            raised.append(exc)
            raise

    try:
        _insert_registered(con, table, "_stream", pa.RecordBatchReader.from_batches(schema, batches()))
    except Exception:
        if raised:
            raise raised[0] from None
        raise


def _stream_schema(con: duckdb.DuckDBPyConnection, table: Table, first: pd.DataFrame):
    """The Arrow schema of a stream of frames like ``first``, wide enough for the frames after it.

    Categoricals get int32 codes (each frame has its own categories, maybe more than the first's);
    a column that is all NULL in ``first`` (an Arrow null type, which no later value casts to)
    gets the type DuckDB gives the table's column.
    """
    cols = ", ".join(f'"{c}"' for c in first.columns)
    declared = con.sql(f"SELECT {cols} FROM {table.qualified} LIMIT 0").to_arrow_table().schema
    fields = []
    for f in pa.Schema.from_pandas(first, preserve_index=False):
        if pa.types.is_dictionary(f.type):
            f = pa.field(f.name, pa.dictionary(pa.int32(), f.type.value_type))
        elif pa.types.is_null(f.type):
            f = pa.field(f.name, declared.field(f.name).type)
        fields.append(f)
    return pa.schema(fields)


def replace_keyed(
    con: duckdb.DuckDBPyConnection, table: Table, rows: pd.DataFrame, key: str, values: list
) -> None:
    """Replace every row of ``table`` whose ``key`` is in ``values`` by ``rows`` (call inside ``transaction``)."""
    if values:
        con.execute(
            f'DELETE FROM {table.qualified} WHERE CAST("{key}" AS VARCHAR) IN (SELECT UNNEST(?::VARCHAR[]))',
            [list(map(str, values))],
        )
    _insert(con, table, rows)


def append(con: duckdb.DuckDBPyConnection, table: Table, rows: pd.DataFrame) -> None:
    """Add rows to an append-only log table such as alerts.alert_events (call inside ``transaction``)."""
    _insert(con, table, rows)


def replace_all(con: duckdb.DuckDBPyConnection, table: Table, rows: pd.DataFrame) -> None:
    """Replace the whole table's contents (call inside ``transaction``)."""
    con.execute(f"DELETE FROM {table.qualified}")
    _insert(con, table, rows)


def readme_table_docs(tables: tuple[Table, ...] = TABLES) -> str:
    """The warehouse contract as markdown (pasted into docs/warehouse.md; tests/test_docs.py keeps them equal)."""
    out = []
    for t in tables:
        out.append(f"#### `{t.qualified}`\n\n{t.doc}\n\n| column | type | meaning |\n|---|---|---|")
        out += [f"| `{c.name}` | {c.type.replace(' NOT NULL', '')} | {c.doc} |" for c in t.columns]
        out.append("")
    return "\n".join(out)
