"""`anomaly-assets`: backfill the landing folder, or generate and run the demo fleet."""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _instance():
    os.environ.setdefault("DAGSTER_HOME", str(REPO / "dagster_home"))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    import dagster as dg

    return dg.DagsterInstance.get()


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


def landing_range(landing_dir: Path, skip: set[Path]) -> tuple[str, str] | None:
    """First and last day that the landing folder's files hold accepted rows for."""
    from anomaly_assets.landing import discover_files, read_file

    lo = hi = None
    for f in discover_files(landing_dir):
        if f.resolve() in skip:
            continue
        obs = read_file(f, root=landing_dir).observations
        if len(obs):
            a, b = obs["ts"].min(), obs["ts"].max()
            lo = a if lo is None or a < lo else lo
            hi = b if hi is None or b > hi else hi
    if lo is None:
        return None
    return str(lo.date()), str(hi.date())


def backfill(date_from: str | None = None, date_to: str | None = None) -> bool:
    """Materialize every partition in range (default: what the landing folder covers) in one run."""
    from anomaly_assets.definitions import defs, resources, settings
    from anomaly_assets.recovery import release_dead_runs

    landing = resources()["landing"]
    if date_from is None or date_to is None:
        covered = landing_range(settings.landing_dir, landing.sidecars())
        if covered is None:
            print(f"no usable rows in {settings.landing_dir}: nothing to backfill", file=sys.stderr)
            return False
        date_from = date_from or covered[0]
        date_to = date_to or covered[1]
    keys = defs.resolve_job_def("anomaly_chain").partitions_def.get_partition_keys()
    lo, hi = keys[0], keys[-1]
    if date_from < lo or date_to > hi:
        print(f"range {date_from}..{date_to} is outside the partitions {lo}..{hi} "
              f"(set ANOMALY_PARTITION_START to an earlier date; the last partition is yesterday)", file=sys.stderr)
        return False
    print(f"backfilling {date_from} .. {date_to} from {settings.landing_dir} into {settings.warehouse}", flush=True)
    t0 = time.perf_counter()
    with one_backfill_at_a_time(settings.warehouse):
        instance = _instance()
        for run_id in release_dead_runs(instance):  # else they hold the duckdb_writer pool forever
            print(f"run {run_id} died without ending (killed or crashed): marked failed, pool slot freed", file=sys.stderr)
        result = defs.resolve_job_def("anomaly_chain").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": date_from, "dagster/asset_partition_range_end": date_to},
            raise_on_error=False,
        )
    print(f"run {result.run_id} {'succeeded' if result.success else 'FAILED'} in {time.perf_counter() - t0:.1f} s", flush=True)
    return result.success


def publish() -> bool:
    """Publish the analysts' read-only copy of the warehouse now (every chain run also does it).

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
    result = dg.materialize([analyst_copy], resources=resources(), instance=_instance(), raise_on_error=False)
    if result.success:
        md = result.asset_materializations_for_node(analyst_copy.op.name)[0].metadata
        print(f"published {md['tables'].value} tables ({md['dagster/row_count'].value:,} rows) "
              f"to {settings.analyst_copy} in {md['seconds'].value:.2f} s")
    return result.success


def summary(limit: int = 8) -> str:
    import duckdb

    from anomaly_assets.definitions import settings

    con = duckdb.connect(str(settings.warehouse), read_only=True)
    try:
        lines = ["", "tables:"]
        for schema, table in con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY schema_name, table_name"
        ).fetchall():
            n = con.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()[0]
            lines.append(f"  {schema}.{table:<18} {n:>10,} rows")
        top = con.execute(
            """SELECT entity_id, ts, severity, round(anomaly_score, 4), why FROM scoring.anomaly_scores
               WHERE is_anomaly QUALIFY row_number() OVER (PARTITION BY entity_id ORDER BY anomaly_score DESC, ts) = 1
               ORDER BY anomaly_score DESC, entity_id LIMIT ?""", [limit]).fetchall()
        lines += ["", "top anomalies:"] + [f"  {e}  {t:%Y-%m-%d %H:%M}  {s:<8} {sc}  {w}" for e, t, s, sc, w in top]
        ev = con.execute(
            "SELECT best_f1, f1, precision, recall, event_recall, event_precision FROM evaluation.metrics WHERE entity_id = '*'"
        ).fetchall()
        if ev:
            b, f, p, r, er, ep = ev[0]
            lines += ["", f"evaluation vs labels: best-F1 {b:.3f}, F1 {f:.3f} (precision {p:.3f}, recall {r:.3f}), "
                          f"event recall {er:.3f}, event precision {ep:.3f}"]
        from anomaly_assets.alert_lifecycle import summary_lines

        lines += summary_lines(con, limit)
        return "\n".join(lines)
    finally:
        con.close()


def demo(entities: int | None, days: int | None, freq: str | None, out: Path, kind: str = "industrial") -> bool:
    """Generate a demo kind (``anomaly_assets.demo``) under ``out``, then backfill and summarize it."""
    from anomaly_assets.demo import generate

    try:
        s = generate(kind, out, entities=entities, days=days, freq=freq)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return False
    landing = s.landing_dir
    print(f"demo {s.describe()}")
    os.environ["ANOMALY_LANDING_DIR"] = str(landing)
    os.environ["ANOMALY_LABELS"] = str(out / "labels.csv")
    os.environ.setdefault("ANOMALY_ENTITIES", str(out / "entities.csv"))  # sites and tags: alert peers, routing
    os.environ.setdefault("ANOMALY_WAREHOUSE", str(out / "warehouse.duckdb"))
    ok = backfill()
    if ok:
        print(summary())
        from anomaly_assets.alert_lifecycle import fault_routing_report
        from anomaly_assets.definitions import resources

        print("\n" + fault_routing_report(Path(os.environ["ANOMALY_WAREHOUSE"]), out / "faults.csv",
                                          resources()["alert_rules"].load())[0])
        print(f"\nopen the UI: ANOMALY_LANDING_DIR={landing} ANOMALY_LABELS={out / 'labels.csv'} "
              f"ANOMALY_ENTITIES={os.environ['ANOMALY_ENTITIES']} "
              f"ANOMALY_WAREHOUSE={os.environ['ANOMALY_WAREHOUSE']} make ui   (http://127.0.0.1:3000)")
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anomaly-assets", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("backfill", help="materialize every partition the landing folder covers (or a range)")
    b.add_argument("--from", dest="date_from", help="first day, YYYY-MM-DD")
    b.add_argument("--to", dest="date_to", help="last day, YYYY-MM-DD (inclusive)")
    d = sub.add_parser("demo", help="generate a demo fleet and run the whole chain")
    d.add_argument("--kind", choices=["industrial", "storage", "retail"], default="industrial",
                   help="industrial: hourly pumps (200 x 35 days); storage: self-storage facilities, daily "
                        "(40 x 730 days); retail: store-SKUs, daily (12 x 25 x 365 days); see docs/demo.md")
    d.add_argument("--entities", type=int, help="pumps, facilities or store-SKUs (default: the kind's)")
    d.add_argument("--days", type=int, help="default: the kind's")
    d.add_argument("--freq", help="industrial only (default 1h)")
    d.add_argument("--out", type=Path, help="default data/demo (industrial), data/demo-<kind> (the others)")
    sub.add_parser("summary", help="print tables, top anomalies and evaluation of the warehouse")
    sub.add_parser("publish", help="copy the warehouse to the analysts' read-only copy (ANOMALY_ANALYST_COPY) now")
    from anomaly_assets import alert_lifecycle

    alert_lifecycle.add_cli(sub)
    a = p.parse_args(argv)
    if a.cmd == "alerts":
        from anomaly_assets.settings import load_settings

        return alert_lifecycle.run_cli(a, load_settings().warehouse)
    if a.cmd == "backfill":
        ok = backfill(a.date_from, a.date_to)
        if ok:
            print(summary())
        return 0 if ok else 1
    if a.cmd == "demo":
        out = a.out or Path("data/demo" if a.kind == "industrial" else f"data/demo-{a.kind}")
        return 0 if demo(a.entities, a.days, a.freq, out.resolve(), a.kind) else 1
    if a.cmd == "publish":
        return 0 if publish() else 1
    print(summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
