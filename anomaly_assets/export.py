"""`anomaly-assets export TABLE --format csv|parquet [--where ...]`: a table of the analysts' copy to a file.

The table must be one the warehouse contract or the SQL models declare; ``--where`` takes
``column OP value`` filters (OP one of ``= != < <= > >=``; several are ANDed) whose column must
be one of the table's and whose value is passed to DuckDB as a bound parameter, so no text from
the command line is ever spliced into the SQL. Reads the analysts' copy: an export never blocks
a run.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|!=|=|<|>)\s*(.*?)\s*$")


class ExportError(ValueError):
    """A table, column, filter or format the export cannot take; the message says what is allowed."""


@dataclass(frozen=True)
class Filter:
    column: str
    op: str
    value: str


def exportable(sql_dir: Path | None) -> list[str]:
    """Qualified names of the tables and views that may be exported: the contract's and the SQL models'."""
    from anomaly_assets.warehouse import TABLES

    names = [t.qualified for t in TABLES]
    if sql_dir is not None and Path(sql_dir).is_dir():
        from anomaly_assets.defs.sql_models import load_sql_models

        names += [m.qualified_name for m in load_sql_models(Path(sql_dir))]
    return sorted(set(names))


def parse_where(text: str) -> Filter:
    """``column OP value`` -> Filter; an ExportError naming the text otherwise."""
    m = _WHERE.match(text)
    if not m or m.group(3) == "":
        raise ExportError(f"--where {text!r}: expected 'column OP value' with OP one of = != < <= > >= "
                          "(e.g. --where \"entity_id=pump-0003\" --where \"ts>=2026-10-01\")")
    value = m.group(3)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return Filter(m.group(1), m.group(2), value)


def export(con, table: str, out: Path, fmt: str, filters: list[Filter], allowed: list[str]) -> int:
    """Write ``table`` (rows matching every filter) to ``out`` as csv or parquet; returns the rows written.

    Raises
    ------
    ExportError
        Unknown table, column or format.
    """
    if table not in allowed:
        raise ExportError(f"unknown table {table!r}; one of: {', '.join(allowed)}")
    if fmt not in ("csv", "parquet"):
        raise ExportError(f"--format {fmt!r}: expected csv or parquet")
    schema, name = table.split(".")
    cols = [r[0] for r in con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, name]).fetchall()]
    if not cols:
        raise ExportError(f"{table} is not in the analysts' copy yet (run the chain, or `anomaly-assets publish`)")
    where, params = [], []
    for f in filters:
        if f.column not in cols:
            raise ExportError(f"--where {f.column}{f.op}{f.value}: {table} has no column {f.column!r}; "
                              f"its columns: {', '.join(cols)}")
        # the value is bound, and cast to the column's type by DuckDB (a bad value is DuckDB's conversion error)
        where.append(f'"{f.column}" {f.op} ?')
        params.append(f.value)
    sql = f'SELECT * FROM "{schema}"."{name}"' + (" WHERE " + " AND ".join(where) if where else "")
    n = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = "'" + str(out).replace("'", "''") + "'"
    options = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
    con.execute(f"COPY ({sql}) TO {target} ({options})", params)
    return int(n)


def add_cli(sub) -> None:
    e = sub.add_parser("export", help="write a table of the analysts' copy to CSV or Parquet")
    e.add_argument("table", help="schema.table, e.g. marts.entity_health")
    e.add_argument("--format", dest="fmt", choices=["csv", "parquet"], default="csv")
    e.add_argument("--where", action="append", default=[], metavar="'COLUMN OP VALUE'",
                   help="keep rows where COLUMN OP VALUE (OP: = != < <= > >=); repeat to AND them")
    e.add_argument("--out", type=Path, help="file to write (default: exports/TABLE.FORMAT beside the warehouse)")


def run_cli(a) -> int:
    import duckdb

    from anomaly_assets.settings import load_settings

    s = load_settings()
    try:
        filters = [parse_where(w) for w in a.where]
        allowed = exportable(s.sql_dir)
        if a.table not in allowed:
            raise ExportError(f"unknown table {a.table!r}; one of: {', '.join(allowed)}")
        if not s.analyst_copy.exists():
            raise ExportError(f"no analysts' copy at {s.analyst_copy}: run the chain (e.g. `anomaly-assets demo`) "
                              "or `anomaly-assets publish` first")
        out = a.out or s.warehouse.parent / "exports" / f"{a.table}.{a.fmt}"
        con = duckdb.connect(str(s.analyst_copy), read_only=True)
        try:
            n = export(con, a.table, out, a.fmt, filters, allowed)
        finally:
            con.close()
    except (ExportError, duckdb.ConversionException, duckdb.BinderException) as e:
        print(f"export: {e}", file=sys.stderr)
        return 2
    print(f"exported {n:,} rows of {a.table} to {out}")
    return 0
