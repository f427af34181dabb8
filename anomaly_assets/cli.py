"""`anomaly-assets`: backfill the landing folder, run the demo, summarize, report and export.

Quiet by default: a run prints one line per step (what it wrote or checked, and its seconds)
and a summary that names every failed check; ``--verbose`` prints Dagster's event log instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# what a demo run sets aside so that it looks only at its own data folder
_LOCATION_VARS = ("ANOMALY_LANDING_DIR", "ANOMALY_WAREHOUSE", "ANOMALY_LABELS", "ANOMALY_SPLITS", "ANOMALY_ENTITIES",
                  "ANOMALY_ANALYST_COPY", "ANOMALY_PARTITION_START")
DEMO_MARKER = ".demo"


def _instance():
    os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    return dg.DagsterInstance.get()


def _quiet_libraries() -> None:
    """No library warnings on a normal run: Dagster's beta/preview notices about APIs the project
    chose on purpose (they are for the developer reading the code, not the person running it)."""
    import logging

    import dagster as dg

    for category in (dg.BetaWarning, dg.PreviewWarning):
        warnings.filterwarnings("ignore", category=category)
    # a library's module-level logging.info() would otherwise install a stderr handler on the
    # root logger (logging.basicConfig), and every INFO line of GX after it would print
    logging.getLogger().addHandler(logging.NullHandler())


@contextmanager
def one_backfill_at_a_time(warehouse: Path):
    """Shell backfills of one warehouse run one after another (an advisory lock beside it).

    Correctness does not depend on it: every step that opens the warehouse is in the
    ``duckdb_writer`` pool, which Dagster enforces across processes. But two runs sharing a pool of
    one interleave step by step, and a blocked step polls with a growing back-off (up to 15 s), so
    three concurrent backfills took minutes; queued whole, they take the sum of their run times.
    The lock is released by the OS when the process ends, so a killed backfill leaves none behind.
    """
    import fcntl

    lock = warehouse.with_name(warehouse.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another backfill of {warehouse} to finish ({lock.name})", flush=True)
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


@dataclass
class BackfillDays:
    """What the landing folder's accepted rows cover, inside and outside the partitions.

    ``first`` / ``last``: the first and last day holding rows inside the partitions (None when
    none do); ``rows``: accepted rows read; ``outside``: rows no partition holds (before the
    first, or after the last: the ingest quarantines them), with a few ``examples``.
    """

    first: str | None
    last: str | None
    rows: int
    outside: int
    examples: list[str]


def backfill_days(landing_dir: Path, skip: set[Path], lo: str, hi: str) -> BackfillDays:
    """The days of ``lo..hi`` (partition keys) that the landing folder's accepted rows fall on.

    Rows outside the partitions never widen the range: a row dated 1900 or 2100 is quarantined by
    the run's ingest (with file, line and reason), it does not stop the backfill of the others.
    """
    import pandas as pd

    from anomaly_assets.landing import discover_files, read_file

    first = last = None
    rows = outside = 0
    examples: list[str] = []
    start, end = pd.Timestamp(lo, tz="UTC"), pd.Timestamp(hi, tz="UTC") + pd.Timedelta(days=1)
    for f in discover_files(landing_dir):
        if f.resolve() in skip:
            continue
        fr = read_file(f, root=landing_dir)
        obs = fr.observations
        rows += len(obs)
        out = (obs["ts"] < start) | (obs["ts"] >= end)
        outside += int(out.sum())
        for n, ts in zip(obs["line_number"][out].head(3 - len(examples)), obs["ts"][out].head(3 - len(examples))):
            when = "before the first partition" if ts < start else "after the last partition (yesterday)"
            examples.append(f"{fr.source_file} line {n}: {ts.isoformat()} ({when})")
        inside = obs["ts"][~out]
        if len(inside):
            a, b = str(inside.min().date()), str(inside.max().date())
            first = a if first is None or a < first else first
            last = b if last is None or b > last else last
    return BackfillDays(first, last, rows, outside, examples)


# With the partitions starting where the data starts, a time before this is no start of data but a
# mistake (a placeholder date such as 1900-01-01, a negative epoch): it is quarantined instead.
PLAUSIBLE_FIRST_DAY = "1970-01-01"


def _range_problem(date_from: str, date_to: str, lo: str, hi: str, start_fixed: bool = True) -> str | None:
    """Why a --from/--to range cannot run, with the advice that fits; None when it can."""
    if date_from > date_to:
        return f"--from {date_from} is after --to {date_to}"
    if date_from < lo:
        fix = (f"set ANOMALY_PARTITION_START to {date_from} or earlier, or unset it to start the partitions where "
               "the data starts" if start_fixed else f"the partitions start at {PLAUSIBLE_FIRST_DAY} at the earliest")
        return f"--from {date_from} is before the first partition {lo}: {fix}"
    if date_to > hi:
        return f"--to {date_to} is after the last partition {hi} (yesterday, UTC): a day runs once it has ended"
    return None


def _partitions_start_at(settings, first_day: str) -> None:
    """Make the daily partitions start at ``first_day`` when the data starts before them (or when
    nothing is recorded yet), unless ``ANOMALY_PARTITION_START`` fixes the start."""
    from anomaly_assets.settings import record_first_day, recorded_first_day

    if settings.partition_start_from_env:
        return
    recorded = recorded_first_day(settings.warehouse)
    if recorded is None or first_day < recorded:
        record_first_day(settings.warehouse, first_day)


def backfill(date_from: str | None = None, date_to: str | None = None, *, verbose: bool = False) -> bool:
    """Materialize every partition in range (default: what the landing folder covers) in one run."""
    import datetime as dt

    from anomaly_assets.defs.resources import LandingFolder
    from anomaly_assets.settings import load_settings

    settings = load_settings()
    landing = LandingFolder(path=str(settings.landing_dir), labels=str(settings.labels) if settings.labels else None,
                            splits=str(settings.splits) if settings.splits else None)
    if date_from is None or date_to is None:
        # the days partitions may hold: from ANOMALY_PARTITION_START when set, else from where the data
        # starts but not before PLAUSIBLE_FIRST_DAY; to yesterday (UTC)
        floor = settings.partition_start if settings.partition_start_from_env else PLAUSIBLE_FIRST_DAY
        yesterday = str(dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1))
        covered = backfill_days(settings.landing_dir, landing.sidecars(), floor, yesterday)
        if not covered.rows:
            print(f"no usable rows in {settings.landing_dir}: nothing to backfill", file=sys.stderr)
            return False
        if covered.outside:
            print(f"{covered.outside} row(s) have a time no partition holds ({floor}..{yesterday}), e.g. "
                  f"{'; '.join(covered.examples)}: the run quarantines them in raw.rejected_rows with file, "
                  "line and reason", file=sys.stderr)
        if covered.first is None:  # every row is outside: one run still reads and quarantines them
            covered.first = covered.last = yesterday
        date_from = date_from or covered.first
        date_to = date_to or covered.last
    _partitions_start_at(settings, date_from)  # before the definitions load: they read it
    from anomaly_assets.defs.automation import failed_checks
    from anomaly_assets.definitions import defs
    from anomaly_assets.definitions import settings as loaded
    from anomaly_assets.analyst_copy import remove_leftovers
    from anomaly_assets.progress import RunProgress
    from anomaly_assets.recovery import PID_TAG, release_dead_runs

    job = defs.resolve_job_def("anomaly_chain")
    keys = job.partitions_def.get_partition_keys()
    lo, hi = keys[0], keys[-1]
    problem = _range_problem(date_from, date_to, lo, hi, loaded.partition_start_from_env)
    if problem:
        print(f"cannot backfill {date_from}..{date_to}: {problem}", file=sys.stderr)
        return False
    days = len(keys[keys.index(date_from):keys.index(date_to) + 1])
    print(f"backfilling {date_from} .. {date_to} ({days} days) from {_short(settings.landing_dir)} "
          f"into {_short(settings.warehouse)}", flush=True)
    t0 = time.perf_counter()
    run_id = str(uuid.uuid4())
    quiet = {} if verbose else {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    with one_backfill_at_a_time(settings.warehouse):
        instance = _instance()
        for dead in release_dead_runs(instance):  # else they hold the duckdb_writer pool forever
            print(f"run {dead} died without ending (killed or crashed): marked failed, pool slot freed", file=sys.stderr)
        for path in remove_leftovers(settings.analyst_copy):
            print(f"removed {path.name}, a copy a killed run left half-written", file=sys.stderr)
        progress = RunProgress(run_id, out=sys.stdout) if not verbose else None
        with progress or _nothing():
            result = job.execute_in_process(
                instance=instance, run_id=run_id, run_config=quiet, raise_on_error=False,
                tags={"dagster/asset_partition_range_start": date_from, "dagster/asset_partition_range_end": date_to,
                      PID_TAG: str(os.getpid())},  # lets a later run tell this one dead if killed before it starts
            )
    seconds = time.perf_counter() - t0
    print(f"run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'} in {seconds:.1f} s")
    for line in _failed_steps(instance, result.run_id):
        print(f"  failed step {line}")
    failed = failed_checks(instance, result.run_id)
    checks = {(e.asset_key, e.check_name) for e in result.get_asset_check_evaluations()}
    print(f"checks: {len(checks) - len(failed)} passed, {len(failed)} failed" + (":" if failed else ""))
    for line in failed:
        print(f"  {line}")
    return result.success


@contextmanager
def _nothing():
    yield


def _failed_steps(instance, run_id: str) -> list[str]:
    import dagster as dg

    from anomaly_assets.defs.automation import _root_cause

    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    return [f"{r.event_log_entry.step_key}: {_root_cause(r.event_log_entry.dagster_event.event_specific_data.error)}"
            for r in records]


def _short(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it (shorter lines)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def publish(full: bool = False) -> bool:
    """Publish the analysts' read-only copy of the warehouse now (every chain run also does it);
    ``full``: copy from scratch instead of refreshing the last copy.

    Materializes the ``analyst_copy`` asset, so it waits for the ``duckdb_writer`` pool like any
    writer (copying while a run writes would make that run fail on DuckDB's file lock) and the
    copy is recorded in the instance.
    """
    import dagster as dg

    from anomaly_assets.definitions import analyst_copy, resources, settings

    if not settings.warehouse.exists():
        print(f"warehouse {settings.warehouse} does not exist: nothing to publish (run `anomaly-assets backfill` first)",
              file=sys.stderr)
        return False
    result = dg.materialize([analyst_copy], resources=resources(), instance=_instance(), raise_on_error=False,
                            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
                                        "ops": {analyst_copy.op.name: {"config": {"full": full}}}})
    if result.success:
        md = result.asset_materializations_for_node(analyst_copy.op.name)[0].metadata
        how = (f"refreshed {md['slices_refreshed'].value} changed slices" if md["refreshed"].value
               else f"copied from scratch: {md['copied_from_scratch_because'].value}")
        print(f"published {md['tables'].value} tables ({md['dagster/row_count'].value:,} rows) "
              f"to {_short(settings.analyst_copy)} in {md['seconds'].value:.2f} s ({how})")
    return result.success


def _summary_source(warehouse: Path, copy: Path):
    """(read-only connection, note): the warehouse, or the analysts' copy while a run holds it."""
    import datetime as dt

    from anomaly_assets.warehouse_lock import WarehouseBusy, connect

    try:
        return connect(warehouse, read_only=True, wait_s=0), None
    except WarehouseBusy as busy:
        if not copy.exists():
            raise
        who = busy.holder.describe() if busy.holder else "another process"
        published = dt.datetime.fromtimestamp(copy.stat().st_mtime).astimezone().strftime("%Y-%m-%d %H:%M %Z")
        return connect(copy, read_only=True, wait_s=10), (
            f"the warehouse is in use by {who}: this is the analysts' copy {copy}, published {published}")


def summary(limit: int = 5) -> str:
    """Tables, the top anomalies, evaluation and alerts of the warehouse, in about 25 lines."""
    from anomaly_assets.settings import load_settings

    settings = load_settings()
    if not settings.warehouse.exists():
        return (f"no warehouse at {settings.warehouse}: run `anomaly-assets demo` or `anomaly-assets backfill` "
                "(or set ANOMALY_DATA_DIR / ANOMALY_WAREHOUSE)")
    con, note = _summary_source(settings.warehouse, settings.analyst_copy)
    try:
        counts = []
        for schema, table in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY schema_name, table_name"
        ).fetchall():
            n = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
            counts.append(f"{schema}.{table} {n:,}")
        lines = ["", f"({note})"] if note else [""]
        lines.append("tables (rows):")
        for i in range(0, len(counts), 4):
            lines.append("  " + " · ".join(counts[i:i + 4]))
        top = con.execute(
            """SELECT entity_id, ts, severity, round(anomaly_score, 4), why FROM scoring.anomaly_scores
               WHERE is_anomaly QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY anomaly_score DESC, ts) = 1
               ORDER BY anomaly_score DESC, entity_id LIMIT ?""", [limit]).fetchall()
        lines += ["", "top anomalies:"] + [f"  {e}  {t:%Y-%m-%d %H:%M}  {s:<8} {sc}  {w}"[:160] for e, t, s, sc, w in top]
        ev = con.execute(
            "SELECT best_f1, f1, precision, recall, event_recall, event_precision FROM evaluation.metrics WHERE entity_id = '*'"
        ).fetchall()
        if ev:
            b, f, p, r, er, ep = ev[0]
            lines += ["", f"evaluation vs labels: best-F1 {b:.3f}, F1 {f:.3f} (precision {p:.3f}, recall {r:.3f}), "
                          f"event recall {er:.3f}, event precision {ep:.3f}"]
        from anomaly_assets.alert_lifecycle import summary_lines

        lines += summary_lines(con, 3)
        return "\n".join(lines)
    finally:
        con.close()


def demo(entities: int | None, days: int | None, freq: str | None, out: Path | None = None, kind: str = "industrial",
         *, verbose: bool = False) -> bool:
    """Generate a demo kind (``anomaly_assets.demo``) into the data folder (``data/``, or ``out``)
    and backfill it.

    Everything goes where every tool looks by default, so ``make ui``, ``anomaly-assets summary``
    and the analysts' copy find it with no setting. A folder that holds other data (no demo
    marker) is never replaced; a previous demo is.
    """
    from anomaly_assets.demo import generate
    from anomaly_assets.settings import load_settings

    default = load_settings().data_dir
    out = Path(out or default).resolve()
    marker = out / DEMO_MARKER
    if out.exists() and any(out.iterdir()) and not marker.exists():
        print(f"{_short(out)} holds data that is not a demo's (no {DEMO_MARKER} marker): the demo would replace it. "
              "Pass --out DIR to put the demo elsewhere.", file=sys.stderr)
        return False
    if out.exists():
        shutil.rmtree(out)  # the previous demo: a new one starts from an empty warehouse
    out.mkdir(parents=True)
    marker.write_text(f"written by `anomaly-assets demo --kind {kind}`: the next demo replaces this folder\n")
    overridden = [k for k in _LOCATION_VARS if os.environ.pop(k, None) is not None]
    os.environ["ANOMALY_DATA_DIR"] = str(out)
    try:
        s = generate(kind, out, entities=entities, days=days, freq=freq)
    except ValueError as e:  # arguments the generator cannot take: say which, no traceback
        print(f"demo: {e}", file=sys.stderr)
        return False
    print(f"demo {s.describe()}")
    ok = backfill(verbose=verbose)
    if not ok:
        return False
    print(summary())
    from anomaly_assets.alert_lifecycle import fault_routing_report
    from anomaly_assets.definitions import resources, settings

    print("\n" + fault_routing_report(settings.warehouse, out / "faults.csv", resources()["alert_rules"].load())[0])
    reports = sorted((out / "reports").glob("daily-*.html"))
    env = "" if out == default else f"ANOMALY_DATA_DIR={_short(out)} "
    print(f"\nnext: {env}make ui (http://127.0.0.1:3000)"
          + (f" · report: {_short(reports[-1])}" if reports else "")
          + f" · analysts: duckdb -readonly {_short(settings.analyst_copy)}")
    if overridden:
        print(f"note: {', '.join(overridden)} set in this shell were ignored by the demo; `make ui` will use them")
    return ok


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    p = argparse.ArgumentParser(prog="anomaly-assets", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="print Dagster's event log instead of one line per step")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backfill", parents=[common], help="materialize every partition the landing folder covers (or a range)")
    b.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD")
    b.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (inclusive)")
    d = sub.add_parser("demo", parents=[common], help="generate a demo fleet into the data folder and run the whole chain")
    d.add_argument("--kind", choices=["industrial", "storage", "retail"], default="industrial",
                   help="industrial: hourly pumps (200 x 35 days); storage: self-storage facilities, daily "
                        "(40 x 730 days); retail: store-SKUs, daily (12 x 25 x 365 days); see docs/demo.md")
    d.add_argument("--entities", type=int, help="pumps, facilities or store-SKUs (default: the kind's)")
    d.add_argument("--days", type=int, help="default: the kind's")
    d.add_argument("--freq", help="industrial only (default 1h)")
    d.add_argument("--out", type=Path, default=None,
                   help="data folder for the demo (default: data/, ANOMALY_DATA_DIR; a previous demo there is replaced)")
    sub.add_parser("summary", help="print tables, top anomalies, evaluation and alerts of the warehouse")
    pb = sub.add_parser("publish", help="copy the warehouse to the analysts' read-only copy (ANOMALY_ANALYST_COPY) now")
    pb.add_argument("--full", action="store_true",
                    help="copy from scratch instead of refreshing the last copy with the changed slices (compacts it)")
    r = sub.add_parser("release", help="list refused landing files, or release some so that runs go on without them")
    r.add_argument("files", nargs="*", help="paths relative to the landing folder, as raw.rejected_files names them")
    r.add_argument("--note", help="why (recorded with the release; required to release)")
    r.add_argument("--actor", help="who (default: $ANOMALY_ACTOR or the login name)")
    from anomaly_assets import alert_lifecycle, export, report

    report.add_cli(sub)
    export.add_cli(sub)
    alert_lifecycle.add_cli(sub)
    a = p.parse_args(argv)
    try:
        return _run(a)
    except Exception as e:  # a held warehouse: one clear line, not a traceback
        from anomaly_assets.warehouse_lock import WarehouseBusy, is_lock_error, lock_holder

        if isinstance(e, WarehouseBusy) or is_lock_error(e):
            holder = e.holder if isinstance(e, WarehouseBusy) else lock_holder(e)
            who = holder.describe() if holder else "another process"
            print(f"error: the warehouse is in use by {who}; try again when it has finished "
                  "(analysts: query the analysts' copy, ANOMALY_ANALYST_COPY)", file=sys.stderr)
            return 3
        raise


def release_files(files: list[str], note: str | None, actor: str | None) -> int:
    """`anomaly-assets release`: list the refused files, or release the ones named."""
    from anomaly_assets.refused_files import ReleaseError, list_refused, release
    from anomaly_assets.settings import load_settings

    warehouse = load_settings().warehouse
    if not warehouse.exists():
        print(f"no warehouse at {warehouse} (set ANOMALY_WAREHOUSE)", file=sys.stderr)
        return 1
    if not files:
        refused = list_refused(warehouse)
        print(f"{len(refused)} refused landing file(s); each blocks every run until it is fixed, removed or released")
        for row in refused.itertuples():
            print(f"  {row.source_file}\n      {row.reason}")
        return 0
    if not note:
        print("error: say why with --note (it is recorded with the release)", file=sys.stderr)
        return 2
    try:
        rows = release(warehouse, files, note=note, actor=actor, instance=_instance())
    except ReleaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for row in rows.itertuples():
        print(f"released {row.source_file}: the next run goes on without it (it is refused again if it changes)")
    return 0


def _run(a) -> int:
    if a.cmd == "alerts":
        from anomaly_assets import alert_lifecycle
        from anomaly_assets.settings import load_settings

        return alert_lifecycle.run_cli(a, load_settings().warehouse)
    if a.cmd == "report":
        from anomaly_assets import report

        return report.run_cli(a)
    if a.cmd == "export":
        from anomaly_assets import export

        return export.run_cli(a)
    if a.cmd == "release":
        return release_files(a.files, a.note, a.actor)
    if a.cmd == "backfill":
        ok = backfill(a.date_from, a.date_to, verbose=a.verbose)
        if ok:
            print(summary())
        return 0 if ok else 1
    if a.cmd == "demo":
        return 0 if demo(a.entities, a.days, a.freq, a.out, a.kind, verbose=a.verbose) else 1
    if a.cmd == "publish":
        return 0 if publish(full=a.full) else 1
    print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
