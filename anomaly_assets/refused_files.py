"""Refused landing files: list them, and release one so that the runs go on without it.

A landing file the ingest cannot use at all (unknown shape, not UTF-8, a symbolic link out of the
folder, ...) is recorded in ``raw.rejected_files``, and the blocking check ``no_rejected_files``
stops every run before anything downstream reads the day, until the file is

* fixed: a new version (size or modification time) is read again by the next run;
* removed from the landing folder: the next run clears its row; or
* released here (``anomaly-assets release <file>``): its row is removed, and who released it,
  when and why is recorded as an observation of ``raw/observations`` in the Dagster instance
  (shown on the asset's page). The file is not read, and it is refused again only if it changes.

Why block rather than warn: a whole file missing means whole entities or days missing, and
scoring the rest would page people about "silent" machines that are only a broken file.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import pandas as pd

from anomaly_assets import warehouse as wh
from anomaly_assets.warehouse_lock import connect


class ReleaseError(ValueError):
    """A file cannot be released; the message says which files can."""


def list_refused(warehouse: Path) -> pd.DataFrame:
    """``source_file``, ``reason``, ``ingested_at`` of every refused file, by path."""
    con = connect(warehouse, read_only=True, wait_s=10)
    try:
        wh_tables = {r[0] for r in con.execute("SELECT schema_name || '.' || table_name FROM duckdb_tables()").fetchall()}
        if wh.REJECTED_FILES.qualified not in wh_tables:
            return pd.DataFrame(columns=wh.REJECTED_FILES.column_names)
        return con.execute(f"SELECT * FROM {wh.REJECTED_FILES.qualified} ORDER BY source_file").df()
    finally:
        con.close()


def release(warehouse: Path, files: list[str], *, note: str, actor: str | None = None, instance=None) -> pd.DataFrame:
    """Release refused files: remove their rows from ``raw.rejected_files`` in one transaction and
    record each release in the Dagster instance (when one is given).

    Parameters
    ----------
    warehouse : Path
        The DuckDB warehouse.
    files : list of str
        Paths relative to the landing folder, as ``raw.rejected_files`` names them.
    note : str
        Why (recorded with the release).
    actor : str, optional
        Who; default ``$ANOMALY_ACTOR`` or the login name.
    instance : dagster.DagsterInstance, optional
        Where the release is recorded, as an ``AssetObservation`` of ``raw/observations``.

    Returns
    -------
    pandas.DataFrame
        The rows released.

    Raises
    ------
    ReleaseError
        When a file is not refused (naming the ones that are); nothing is released then.
    """
    actor = actor or os.environ.get("ANOMALY_ACTOR") or getpass.getuser()
    con = connect(warehouse, wait_s=30)
    try:
        wh.ensure_tables(con, (wh.REJECTED_FILES,))
        with wh.transaction(con):
            rows = con.execute(f"SELECT * FROM {wh.REJECTED_FILES.qualified} WHERE source_file IN "
                               "(SELECT UNNEST(?::VARCHAR[])) ORDER BY source_file", [list(files)]).df()
            unknown = sorted(set(files) - set(rows["source_file"]))
            if unknown:
                refused = con.execute(f"SELECT source_file FROM {wh.REJECTED_FILES.qualified} ORDER BY 1").fetchall()
                listed = ", ".join(r[0] for r in refused[:20]) or "none"
                raise ReleaseError(f"not refused: {', '.join(unknown)} (refused files: {listed})")
            wh.replace_keyed(con, wh.REJECTED_FILES, None, "source_file", list(files))
    finally:
        con.close()
    if instance is not None:
        import dagster as dg

        for r in rows.itertuples():
            instance.report_runless_asset_event(dg.AssetObservation(
                asset_key=dg.AssetKey([wh.OBSERVATIONS.schema, wh.OBSERVATIONS.name]),
                description=f"refused landing file released by {actor}: {r.source_file}",
                metadata={"released_file": r.source_file, "refused_because": r.reason, "released_by": actor,
                          "note": note},
            ))
    return rows
