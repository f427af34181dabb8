"""Plain-SQL models as Dagster assets.

``dbt_like_sql/<schema>/<table>.sql`` holds exactly one SELECT (or WITH ...
SELECT) statement that builds the DuckDB table ``<schema>.<table>``.  Every
file becomes its own asset:

* key ``AssetKey([schema, table])``, group ``schema``, kinds ``{"duckdb", "sql"}``;
* description = the file's leading ``-- `` comment block;
* dependencies = every ``schema.table`` the SELECT reads (inferred with
  ``duckdb.get_table_names(sql, qualified=True)``), mapped with the same key
  convention the Python assets use (table ``scoring.anomaly_scores`` <->
  ``AssetKey(["scoring", "anomaly_scores"])``), so SQL models depend on each
  other and on Python assets without any extra declaration;
* materialization = ``CREATE OR REPLACE TABLE schema.table AS <sql>`` (a VIEW when
  the comment block has a line ``materialized: view``) in one
  transaction through the ``duckdb`` resource (``DuckDBResource``), followed by
  row count, column schema (with column docs from the comment block) and a
  10-row markdown preview as materialization metadata.

The models are deliberately *unpartitioned*, and full rebuilds except one kind: a model whose
comment block has a line ``incremental: <column>`` keys its rows by the DATE ``<column>`` (the
UTC day of the rows it summarizes) and reads its sources between the parameters ``$since`` and
``$until`` (``where ts >= $since and ts < $until``). A run of partitions (the nightly run of the
day it closes, a micro-batch of today, a backfill of a range) rebuilds only the days of those
partitions: it DELETEs their rows and INSERTs the query's with the window set to them. A run
without a partition (a model materialized alone from the UI) rebuilds the whole table. So a night
costs a day of data, not the history. What must reach older days every run (feedback given today
on an old alert) belongs in a view over the incremental table (``marts.business_kpis`` over
``marts.site_day_totals``).

Column documentation convention inside the leading comment block: a line
``--   column_name: description`` documents ``column_name``; following lines
indented deeper than the column name continue its description.
"""

import datetime as dt
import graphlib
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import duckdb as duckdb_module  # `duckdb` is shadowed by the resource parameter below
import pandas as pd
from dagster_duckdb import DuckDBResource

from anomaly_assets import warehouse as wh
from anomaly_assets.defs.partitions import WRITER_POOL

__all__ = [
    "SqlModel",
    "build_sql_model_assets",
    "load_sql_models",
    "rebuild",
]

PREVIEW_ROWS = 10
_IDENT_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_MATERIALIZED_RE = re.compile(r"^\s*materialized:\s*(table|view)\s*$", re.MULTILINE)
_INCREMENTAL_RE = re.compile(r"^\s*incremental:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_COLUMN_DOC_RE = re.compile(r"^(?P<indent>\s*)(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*:\s+(?P<doc>\S.*)$")
# Schemas DuckDB provides itself; reading them is not a dependency on an asset.
_SYSTEM_SCHEMAS = frozenset({"information_schema", "pg_catalog"})
# Tables no asset materializes, and the asset that creates them: alert_events is appended to by
# people (`anomaly-assets alerts ...`) and the delivery sensor; a model reading it depends on alerts.
_WRITTEN_BESIDE = {"alerts.alert_events": "alerts.alerts"}


@dataclass(frozen=True)
class SqlModel:
    """One ``<schema>/<table>.sql`` file: a SELECT that builds ``schema.table``."""

    schema: str
    table: str
    sql: str  # the executable SELECT (leading comment block and trailing ';' removed)
    path: Path
    reads: frozenset[str]  # qualified 'schema.table' names the SELECT reads
    description: str | None = None

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.schema, self.table])

    @property
    def dep_keys(self) -> list[dg.AssetKey]:
        names = {_WRITTEN_BESIDE.get(name, name) for name in self.reads}
        return [dg.AssetKey(name.split(".")) for name in sorted(names)]

    @property
    def code_version(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    @property
    def column_descriptions(self) -> dict[str, str]:
        """Column docs parsed from ``name: text`` lines of the comment block."""
        docs = _parse_column_docs(self.description or "")
        docs.pop("materialized", None)
        docs.pop("incremental", None)
        return docs

    @property
    def incremental(self) -> str | None:
        """The day column of a model rebuilt a day at a time (``incremental: day``), else None."""
        m = _INCREMENTAL_RE.search(self.description or "")
        return m.group(1) if m else None

    def parameters(self, since=None, until=None) -> dict | None:
        """The query's parameters for an incremental model: the window ``[$since, $until)`` of
        source times it reads (default: all history)."""
        if not self.incremental:
            return None
        return {"since": "-infinity" if since is None else since, "until": "infinity" if until is None else until}

    @property
    def materialized(self) -> str:
        """``view`` when the comment block says ``materialized: view``; else ``table``."""
        m = _MATERIALIZED_RE.search(self.description or "")
        return m.group(1) if m else "table"

    @property
    def summary(self) -> str:
        """The comment block's first paragraph: what the model is (its table comment)."""
        return " ".join((self.description or "").split("\n\n")[0].split())


# --------------------------------------------------------------------------- parsing


def _split_leading_comment(text: str) -> tuple[str | None, str]:
    """Split the leading block of ``--`` lines (blank lines before it are skipped)."""
    lines = text.splitlines()
    i = 0
    while i < len(lines) and not lines[i].strip():
        i += 1
    comment: list[str] = []
    while i < len(lines) and lines[i].lstrip().startswith("--"):
        line = lines[i].lstrip()[2:]
        comment.append(line[1:] if line.startswith(" ") else line)
        i += 1
    while comment and not comment[-1].strip():
        comment.pop()
    description = "\n".join(comment).strip("\n") or None
    return description, "\n".join(lines[i:])


def _parse_column_docs(description: str) -> dict[str, str]:
    docs: dict[str, str] = {}
    current: str | None = None
    current_indent = 0
    for line in description.splitlines():
        m = _COLUMN_DOC_RE.match(line)
        if m:
            current = m.group("name")
            current_indent = len(m.group("indent"))
            docs[current] = m.group("doc").strip()
            continue
        indent = len(line) - len(line.lstrip())
        if current is not None and line.strip() and indent > current_indent:
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _strip_trailing_semicolons(sql: str) -> str:
    """Drop trailing ``;`` (and anything after it that is only comments)."""
    tokens = duckdb.tokenize(sql)
    while True:
        code = [off for off, kind in tokens if kind != duckdb.token_type.comment]
        if not code or sql[code[-1] :].lstrip()[:1] != ";":
            return sql.strip()
        sql = sql[: code[-1]]
        tokens = [(off, kind) for off, kind in tokens if off < code[-1]]


def _split_qualified_name(name: str) -> list[str]:
    """Parse a name returned by ``get_table_names(..., qualified=True)``.

    DuckDB renders it like SQL: ``scoring.b``, ``Sc."b.c"``, and -- when the
    query aliases the table -- ``scoring.b AS e`` / ``scoring.b AS e(x, y)``.
    Returns the identifier parts (unquoted, lower-cased because DuckDB resolves
    identifiers case-insensitively) up to the first whitespace outside quotes.
    """
    parts: list[str] = []
    buf: list[str] = []
    in_quotes = False
    i = 0
    while i < len(name):
        ch = name[i]
        if in_quotes:
            if ch == '"':
                if name[i + 1 : i + 2] == '"':
                    buf.append('"')
                    i += 1
                else:
                    in_quotes = False
            else:
                buf.append(ch)
        elif ch == '"':
            in_quotes = True
        elif ch == ".":
            parts.append("".join(buf))
            buf = []
        elif ch.isspace() or ch == "(":
            break
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return [p.lower() for p in parts]


def _table_names_from_ast(sql: str) -> set[str]:
    """Fallback for ``get_table_names``: walk DuckDB's parse tree (no binding).

    ``duckdb.get_table_names`` binds the query against dummy tables, so it fails on
    e.g. ``JOIN ... USING (col)``, ``NATURAL JOIN`` or ``read_parquet('missing')``.
    The parser-only ``json_serialize_sql`` has none of these problems; CTE names
    (``cte_map`` keys) are excluded from the unqualified references.
    """
    with duckdb.connect() as con:
        row = con.execute("SELECT json_serialize_sql(?::VARCHAR)", [sql]).fetchone()
    tree = json.loads(row[0])
    if tree.get("error"):
        raise ValueError(tree.get("error_message", "could not parse SQL"))
    refs: list[tuple[str, str, str]] = []
    ctes: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                refs.append(
                    (node.get("catalog_name", ""), node.get("schema_name", ""), node["table_name"])
                )
            cte_map = node.get("cte_map")
            if isinstance(cte_map, dict):
                ctes.update(entry["key"].lower() for entry in cte_map.get("map", []))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    names = set()
    for catalog, schema, table in refs:
        if not schema and not catalog and table.lower() in ctes:
            continue
        parts = [p for p in (catalog, schema, table) if p]
        names.add(".".join('"' + p.replace('"', '""') + '"' for p in parts))
    return names


def _referenced_tables(sql: str, path: Path) -> frozenset[str]:
    try:
        raw = duckdb.get_table_names(sql, qualified=True)
    except duckdb.Error:
        try:
            raw = _table_names_from_ast(sql)
        except (duckdb.Error, ValueError) as exc:
            raise ValueError(f"{path}: cannot determine the tables this SQL reads: {exc}") from exc
    reads: set[str] = set()
    for name in raw:
        parts = _split_qualified_name(name)
        if len(parts) == 1:
            raise ValueError(
                f"{path}: reads unqualified table {name!r}; qualify every table as "
                "'schema.table' so its upstream asset can be inferred"
            )
        if len(parts) > 2:
            raise ValueError(
                f"{path}: reads {name!r}; catalog-qualified names are not supported, "
                "use 'schema.table'"
            )
        if parts[0] in _SYSTEM_SCHEMAS:
            continue
        if not all(_IDENT_RE.match(p) for p in parts):
            raise ValueError(
                f"{path}: reads {name!r}; only plain snake_case schema/table names are "
                "supported (they become the parts of the upstream AssetKey)"
            )
        reads.add(".".join(parts))
    return frozenset(reads)


def _parse_model(path: Path, sql_dir: Path) -> SqlModel:
    rel = path.relative_to(sql_dir)
    if len(rel.parts) != 2:
        raise ValueError(
            f"{path}: SQL models must live at <schema>/<table>.sql directly under {sql_dir}"
        )
    schema, table = rel.parts[0], path.stem
    for ident in (schema, table):
        if not _IDENT_RE.match(ident):
            raise ValueError(
                f"{path}: {ident!r} is not a valid schema/table name "
                "(lower-case letters, digits and '_', not starting with a digit)"
            )
    text = path.read_text(encoding="utf-8")
    description, body = _split_leading_comment(text)
    try:
        statements = duckdb.extract_statements(body)
    except duckdb.Error as exc:
        raise ValueError(f"{path}: SQL does not parse: {exc}") from exc
    if len(statements) != 1:
        raise ValueError(
            f"{path}: expected exactly one SELECT/WITH statement, found {len(statements)}"
        )
    if statements[0].type != duckdb.StatementType.SELECT:
        raise ValueError(
            f"{path}: expected a single SELECT/WITH statement, found a "
            f"{statements[0].type.name} statement"
        )
    sql = _strip_trailing_semicolons(body)
    reads = _referenced_tables(sql, path)
    if f"{schema}.{table}" in reads:
        raise ValueError(f"{path}: dependency cycle: {schema}.{table} reads itself")
    model = SqlModel(
        schema=schema, table=table, sql=sql, path=path, reads=reads, description=description
    )
    if model.incremental and ("$since" not in sql or "$until" not in sql or model.materialized == "view"):
        raise ValueError(f"{path}: 'incremental: {model.incremental}' needs a table whose SELECT reads its "
                         "sources between $since and $until (e.g. where ts >= $since and ts < $until)")
    return model


def load_sql_models(sql_dir: Path) -> list[SqlModel]:
    """Parse and validate every ``<schema>/<table>.sql`` under ``sql_dir``.

    Raises ``ValueError`` (naming the file) for a file that is not a single
    SELECT/WITH statement, reads an unqualified table, or takes part in a
    dependency cycle among the models.  Returns the models in dependency order
    (upstream first; ties by path).
    """
    sql_dir = Path(sql_dir)
    if not sql_dir.is_dir():
        raise ValueError(f"SQL model directory {sql_dir} does not exist")
    models = [_parse_model(p, sql_dir) for p in sorted(sql_dir.rglob("*.sql"))]
    by_name = {m.qualified_name: m for m in models}

    sorter = graphlib.TopologicalSorter(
        {m.qualified_name: sorted(r for r in m.reads if r in by_name) for m in models}
    )
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        files = ", ".join(str(by_name[n].path) for n in dict.fromkeys(cycle))
        raise ValueError(
            f"dependency cycle between SQL models {' -> '.join(cycle)} (files: {files})"
        ) from exc
    position = {name: i for i, name in enumerate(order)}
    return sorted(models, key=lambda m: (position[m.qualified_name], str(m.path)))


# --------------------------------------------------------------------------- assets


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _sql_markdown(sql: str) -> str:
    return f"```sql\n{sql.strip()}\n```"


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        text = "NULL" if value is None else str(value)
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(c) for c in columns) + " |",
        "| " + " | ".join("---" for _ in columns) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _preview_markdown(con: duckdb.DuckDBPyConnection, relation: str) -> str:
    try:
        import tabulate  # noqa: F401  (pandas.DataFrame.to_markdown needs it)
    except ImportError:
        cursor = con.execute(f"SELECT * FROM {relation} LIMIT {PREVIEW_ROWS}")
        columns = [d[0] for d in cursor.description]
        return _markdown_table(columns, cursor.fetchall())
    df = con.execute(f"SELECT * FROM {relation} LIMIT {PREVIEW_ROWS}").df()
    return df.to_markdown(index=False)


def _build_asset(model: SqlModel) -> dg.AssetsDefinition:
    relation = f"{_quote(model.schema)}.{_quote(model.table)}"
    column_docs = model.column_descriptions

    @dg.asset(
        key=model.asset_key,
        deps=model.dep_keys,
        group_name=model.schema,
        kinds={"duckdb", "sql"},
        pool=WRITER_POOL,  # CREATE OR REPLACE writes the warehouse: one writer at a time
        description=model.description,
        code_version=model.code_version,
        metadata={
            "sql": dg.MetadataValue.md(_sql_markdown(model.sql)),
            "sql_path": dg.MetadataValue.path(str(model.path)),
            "dagster/table_name": model.qualified_name,
        },
    )
    def _sql_model(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        # NB: the parameter must be named `duckdb` (resource key); it shadows the module here.
        with duckdb.get_connection() as con:
            # DuckDBResource.get_connection() only closes the connection on normal exit;
            # close it on errors too, or the traceback keeps it (and the DB file) open.
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(model.schema)}")
                    scope = rebuild(con, model, _run_days(context))
                    con.execute("COMMIT")
                except BaseException:
                    try:
                        con.execute("ROLLBACK")
                    except duckdb_module.Error:
                        pass  # the failed statement may already have ended the transaction
                    raise
                row_count = con.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
                described = con.execute(f"DESCRIBE {relation}").fetchall()
                preview = _preview_markdown(con, relation)
            except BaseException:
                con.close()
                raise
        context.log.info("Built %s (%s): %d rows", model.qualified_name, scope, row_count)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(int(row_count)),
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn(
                            name=name, type=str(col_type), description=column_docs.get(name)
                        )
                        for name, col_type, *_ in described
                    ]
                ),
                "preview": dg.MetadataValue.md(preview),
                "sql": dg.MetadataValue.md(_sql_markdown(model.sql)),
            }
        )

    return _sql_model


def _run_days(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The UTC window ``[first day, day after the last)`` of the run's partitions (a key or a
    single-run range), or None for a run without a partition."""
    tags = context.run.tags
    first = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_start")
    last = tags.get("dagster/partition") or tags.get("dagster/asset_partition_range_end")
    try:  # a key that is not a day (another partitioning) rebuilds whole: slower, never wrong
        first, last = dt.date.fromisoformat(first or ""), dt.date.fromisoformat(last or "")
    except ValueError:
        return None
    return pd.Timestamp(first, tz="UTC"), pd.Timestamp(last, tz="UTC") + pd.Timedelta(days=1)


def rebuild(con, model: SqlModel, window: tuple[pd.Timestamp, pd.Timestamp] | None) -> str:
    """Build ``model`` on ``con`` (inside the caller's transaction).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
    model : SqlModel
    window : (start, end) or None
        UTC midnights ``[start, end)``: an incremental model whose table already has the query's
        columns rebuilds only those days' rows. None, or any other model: the whole table (or view).

    Returns
    -------
    str
        What was rebuilt, for the log.
    """
    relation = f"{_quote(model.schema)}.{_quote(model.table)}"
    exists = con.execute("SELECT table_type FROM information_schema.tables WHERE table_schema = ? AND table_name = ?",
                         [model.schema, model.table]).fetchone()
    if model.incremental and window is not None and exists and exists[0] == "BASE TABLE":
        params = model.parameters(*(w.to_pydatetime() for w in window))
        query = con.execute(f"SELECT * FROM ({model.sql}) LIMIT 0", params).description
        if [c[:2] for c in con.execute(f"SELECT * FROM {relation} LIMIT 0").description] == [c[:2] for c in query]:
            con.execute(f"DELETE FROM {relation} WHERE {_quote(model.incremental)} >= ? AND {_quote(model.incremental)} < ?",
                        [w.date() for w in window])
            con.execute(f"INSERT INTO {relation} BY NAME SELECT * FROM ({model.sql})", params)
            wh.record_change(con, f"{model.schema}.{model.table}", model.incremental, *(w.date() for w in window))
            return f"{window[0].date()} to {(window[1] - pd.Timedelta(days=1)).date()}"
    kind = model.materialized.upper()
    if exists and (exists[0] == "VIEW") != (kind == "VIEW"):  # a model that changed kind since the last build
        con.execute(f"DROP {'VIEW' if exists[0] == 'VIEW' else 'TABLE'} {relation}")
    con.execute(f"CREATE OR REPLACE {kind} {relation} AS (\n{model.sql}\n)", model.parameters())
    if kind != "VIEW":
        wh.record_change(con, f"{model.schema}.{model.table}")
    return "whole"


def build_sql_model_assets(sql_dir: Path) -> list[dg.AssetsDefinition]:
    """One unpartitioned asset per SQL model under ``sql_dir`` (needs resource ``duckdb``)."""
    return [_build_asset(m) for m in load_sql_models(sql_dir)]
