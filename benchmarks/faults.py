"""Fault injection: bad input, kill -9 at every step, a reader on the warehouse, two runs at once,
malformed secrets and symbolic links, each through the real `anomaly-assets backfill`.

Every scenario runs the shell backfill in subprocesses on a small demo fleet, with its own
warehouse, analysts' copy and Dagster instance (the project's dagster.yaml), and prints one table
row per case: the kind, the outcome, rows read / stored / quarantined, and what was left over
(temp copies, runs not ended, processes). ``tests/e2e/test_faults.py`` runs the short form (bad
input, then a release) in CI; this script runs everything:

    .venv/bin/python benchmarks/faults.py                      # every scenario (~20-30 min on 2 cores)
    .venv/bin/python benchmarks/faults.py --scenario inputs --scenario symlinks
    .venv/bin/python benchmarks/faults.py --kills 24           # kill -9 at every step, 24 kills

Figures go to benchmarks/RESULTS.md ("Fault injection").
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FIRST_DAY = "2026-09-07"  # the demo fleet's first day
T0, T1, T2 = "2026-09-10T00:00:00Z", "2026-09-10T01:00:00Z", "2026-09-11T05:00:00Z"
LONG = "entity_id,timestamp,metric,value\n"
WALL_CLOCK = {"ingested_at", "read_at", "trained_at", "evaluated_at", "artifact_path", "at", "mtime_ns"}
SECRET = "SECRET123token"


# ------------------------------------------------------------------------------------ the cases


@dataclass
class Row:
    """One line of the table."""

    kind: str
    outcome: str
    read: int | str = "-"
    stored: int | str = "-"
    quarantined: int | str = "-"
    leftovers: str = "none"
    ok: bool = True
    note: str = ""


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return sink.getvalue()


def _long_lines(n: int, entity: str = "q1") -> list[str]:
    start = pd.Timestamp(T0)
    return [f"{entity},{(start + pd.Timedelta(minutes=i)).strftime('%Y-%m-%dT%H:%M:%SZ')},temp,{i % 50}.5"
            for i in range(n)]


def _stray_quote() -> bytes:
    lines = _long_lines(1440)
    lines[10] = '"' + lines[10]
    return (LONG + "\n".join(lines) + "\n").encode()


def _paired_quotes() -> bytes:
    lines = _long_lines(30, "q2")
    lines[10] = '"' + lines[10]
    lines[18] = lines[18].replace(",temp,", '",temp,', 1)
    return (LONG + "\n".join(lines) + "\n").encode()


def _ns_parquet() -> bytes:
    import pyarrow as pa

    ns = pd.Timestamp(T0).value
    return _parquet({"entity_id": ["n2", "n2"], "metric": ["temp", "temp"], "value": [1.0, 2.0],
                     "timestamp": pa.array(np.array([ns + 1, ns + 2], dtype="datetime64[ns]"), type=pa.timestamp("ns"))})


# name -> (content, expected (stored, quarantined) or "refused"); content None: made by a builder below
INPUTS: dict[str, tuple[object, object]] = {
    "good.csv": (LONG + f"g1,{T0},temp,20.5\ng1,{T1},temp,21\ng1,{T2},temp,22\n", (3, 0)),
    "bad_timestamps.csv": (LONG + f"a,{T0},temp,1\na,2026-13-45,temp,2\na,yesterday,temp,3\na,,temp,4\n", (1, 3)),
    "text_in_numbers.csv": (f"entity_id,timestamp,temp,rpm\nb,{T0},1.5,abc\nb,{T1},n/a,1200\n", (2, 2)),
    "empty.csv": (b"", "refused"),
    "only_header.csv": (LONG, (0, 0)),
    "semicolons.csv": (f"entity_id;timestamp;metric;value\nc;{T0};temp;1\n", "refused"),
    "duplicated_rows.csv": (LONG + f"d,{T0},temp,1\nd,{T0},temp,1\n", (1, 1)),
    "mixed_zones.csv": (LONG + "e,2026-09-10T12:00:00+02:00,temp,1\ne,2026-09-10T12:00:00Z,temp,2\n", (2, 0)),
    "nan_and_inf.csv": (LONG + f"f,{T0},temp,NaN\nf,{T1},temp,inf\nf,{T2},temp,7\n", (1, 2)),
    "unknown_shape.csv": ("host,when,reading\nh1,2026-09-10,3\n", "refused"),
    "missing_columns.csv": ("entity_id,metric,value\ng,temp,1\n", "refused"),
    "huge_values.csv": (LONG + f"h,{T0},temp,1e308\nh,{T1},temp,1e400\n", (0, 2)),
    "latin1_line.csv": (LONG.encode() + f"i,{T0},temp,1\n".encode() + b"caf\xe9,2026-09-10T01:00:00Z,temp,2\n", (1, 1)),
    "hostile_names.csv": (LONG + f"'; DROP TABLE raw.observations; --,{T0},temp,1\n\"Robert \"\"B\"\" T\",{T0},temp,2\n",
                          (2, 0)),
    "ragged.csv": (LONG + f"k,{T0},temp,1\nk,{T1},temp,2,extra\nk,{T2}\n", (1, 2)),
    "bom.csv": (b"\xef\xbb\xbf" + (LONG + f"l,{T0},temp,1\n").encode(), (1, 0)),
    "epoch_millis.csv": ("timestamp,value\n1789000000000,1\n", (0, 1)),
    "year_2100.csv": (LONG + f"m,{T0},temp,1\nm,2100-01-01T00:00:00Z,temp,2\n", (1, 1)),
    "year_1900.csv": (LONG + f"n,{T0},temp,1\nn,1900-01-01T00:00:00Z,temp,2\n", (1, 1)),
    "negative_epoch.csv": ("timestamp,value\n-86400,1\n1789000000,2\n", (1, 1)),
    "compact_date.csv": ("timestamp,value\n20260910,1\n", (0, 1)),
    "stray_quote_1440.csv": (_stray_quote(), (1439, 1)),
    "paired_stray_quotes.csv": (_paired_quotes(), (28, 2)),
    "corrupt.csv.gz": (b"\x1f\x8b\x08\x00" + bytes(range(40)), "refused"),
    "good.csv.gz": (gzip.compress((LONG + f"o,{T0},temp,1\n").encode()), (1, 0)),
    "utf16.csv": ((LONG + f"p,{T0},temp,1\n").encode("utf-16"), "refused"),
    "missing_value.csv": (LONG + f"r,{T0},temp,\nr,{T1},,2\n", (0, 2)),
    "crlf.csv": (LONG.replace("\n", "\r\n") + f"s,{T0},temp,1\r\n", (1, 0)),
    "bool_values.parquet": (_parquet({"entity_id": ["t"], "timestamp": [T0], "metric": ["temp"], "value": [True]}),
                            "refused"),
    "text_values.parquet": (_parquet({"entity_id": ["u", "u"], "timestamp": [T0, T1], "metric": ["temp", "temp"],
                                      "value": ["1.5", "abc"]}), (1, 1)),
    "corrupt.parquet": (b"PAR1 not really parquet", "refused"),
    "long_without_metric.parquet": (_parquet({"entity_id": ["v"], "timestamp": [T0], "value": [1.0]}), "refused"),
    "integer_entity.parquet": (_parquet({"entity_id": [7], "timestamp": [T0], "metric": ["temp"], "value": [1.0]}),
                               "refused"),
    "nanoseconds.csv": (LONG + "n1,2026-09-10T00:00:00.000000001Z,temp,1\nn1,2026-09-10T00:00:00.000000002Z,temp,2\n",
                        (1, 1)),
    "nanoseconds.parquet": (_ns_parquet(), (1, 1)),
    "control_names.csv": ((LONG + f"nul\x00x,{T0},temp,1\nevil\u202ecod,{T0},temp,2\nzero\u200bw,{T0},temp,3\n"
                           f"w1,{T0},te\u2066mp,4\n").encode(), (0, 4)),
    "control_header.csv": (f"entity_id,timestamp,te\u200bmp\nx1,{T0},1\n", "refused"),
    "binary.csv": (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\n\x00\x00\xff\xfe\n", "refused"),
    "zz_copy_of_good.csv": (LONG + f"g1,{T0},temp,20.5\ng1,{T1},temp,99\n", (0, 2)),
    "passwd.csv": (None, "refused"),  # -> /etc/passwd
    "stolen.csv": (None, "refused"),  # -> a CSV outside the folder
    "elsewhere": (None, "refused"),  # -> a directory outside the folder
    "pipe.csv": (None, "refused"),  # a FIFO
}


def write_inputs(landing: Path, outside: Path, names=None) -> None:
    """The bad (and a few good) inputs of :data:`INPUTS` into ``landing/bad/``."""
    bad = landing / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.csv").write_text(LONG + f"x9,{T0},temp,1\n")
    for name in names or INPUTS:
        content = INPUTS[name][0]
        if name == "passwd.csv":
            (bad / name).symlink_to("/etc/passwd")
        elif name == "stolen.csv":
            (bad / name).symlink_to(outside / "secret.csv")
        elif name == "elsewhere":
            (bad / name).symlink_to(outside, target_is_directory=True)
        elif name == "pipe.csv":
            os.mkfifo(bad / name)
        else:
            (bad / name).write_bytes(content.encode() if isinstance(content, str) else content)


# ------------------------------------------------------------------------------------ plumbing


@dataclass
class Site:
    """One isolated installation: landing folder, warehouse, analysts' copy, Dagster instance."""

    root: Path
    env: dict = field(default_factory=dict)

    def __post_init__(self):
        home = self.root / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
        self.env = {**os.environ, "DAGSTER_HOME": str(home), "ANOMALY_DATA_DIR": str(self.root),
                    "ANOMALY_LANDING_DIR": str(self.landing),
                    "ANOMALY_WAREHOUSE": str(self.warehouse), "ANOMALY_ANALYST_COPY": str(self.copy),
                    "GX_ANALYTICS_ENABLED": "false", "DAGSTER_DISABLE_TELEMETRY": "1", **self.env}
        for k in ("ANOMALY_LABELS", "ANOMALY_SPLITS", "ANOMALY_ENTITIES", "ANOMALY_PARTITION_START",
                  "ANOMALY_FAILURE_WEBHOOK_URL", "ANOMALY_ALERT_WEBHOOK_URL"):
            self.env.pop(k, None)

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse.duckdb"

    @property
    def copy(self) -> Path:
        return self.root / "analytics.duckdb"

    def cli(self, *args, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "anomaly_assets.cli", *args], cwd=REPO, env=env or self.env,
                              capture_output=True, text=True, timeout=timeout)

    def start(self, *args) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "anomaly_assets.cli", *args], cwd=REPO, env=self.env,
                                start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def instance(self):
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef  # no public way to open a given DAGSTER_HOME

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(self.env["DAGSTER_HOME"]))

    def query(self, sql: str, path: Path | None = None) -> pd.DataFrame:
        con = duckdb.connect(str(path or self.warehouse), read_only=True)
        try:
            return con.execute(sql).df()
        finally:
            con.close()


def fleet(site: Site, entities: int = 2, days: int = 15) -> None:
    from anomaly_assets.demo.fleet import generate_fleet

    generate_fleet(site.landing, entities=entities, days=days, start=FIRST_DAY)


def leftovers(site: Site) -> str:
    """Temp copies beside the analysts' copy, runs that never ended, in words ('none' when clean)."""
    found = []
    tmps = [p.name for p in site.copy.parent.glob(f".{site.copy.name}.*")]
    if tmps:
        found.append(f"{len(tmps)} temp cop{'y' if len(tmps) == 1 else 'ies'}")
    import dagster as dg

    instance = site.instance()
    try:
        open_runs = instance.get_runs(filters=dg.RunsFilter(statuses=[
            dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]))
    finally:
        instance.dispose()
    if open_runs:
        found.append(f"{len(open_runs)} run(s) {'/'.join(sorted({r.status.value for r in open_runs}))}")
    return ", ".join(found) or "none"


def tables(path: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        out = {}
        for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
            df = con.execute(f'SELECT * FROM "{schema}"."{table}"').df()
            out[f"{schema}.{table}"] = df.drop(columns=[c for c in df.columns if c in WALL_CLOCK])
        return out
    finally:
        con.close()


def differences(got: dict, want: dict) -> list[str]:
    """Tables that differ (floats to 1e-9 of the column's scale, as tests/tolerances.py)."""
    problems = []
    if sorted(got) != sorted(want):
        return [f"tables {sorted(set(got) ^ set(want))}"]
    for name, w in want.items():
        g = got[name]
        if list(g.columns) != list(w.columns) or len(g) != len(w):
            problems.append(f"{name}: {len(g)} rows vs {len(w)}")
            continue
        floats = [c for c in w.columns if pd.api.types.is_float_dtype(w[c])]
        keys = [c for c in w.columns if c not in floats]
        g2 = g.astype({c: str for c in keys}).sort_values(keys, ignore_index=True) if keys else g
        w2 = w.astype({c: str for c in keys}).sort_values(keys, ignore_index=True) if keys else w
        if keys and not g2[keys].equals(w2[keys]):
            problems.append(f"{name}: values differ")
            continue
        for c in floats:
            a, b = g2[c].to_numpy(float), w2[c].to_numpy(float)
            scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 0.0
            if not np.allclose(a, b, rtol=0, atol=1e-9 * scale, equal_nan=True):
                problems.append(f"{name}.{c}: differs")
    return problems


# ------------------------------------------------------------------------------------ scenarios


def scenario_inputs(work: Path, names=None) -> list[Row]:
    """Every bad input beside a good fleet, one backfill: each kind read, stored, quarantined or
    refused as expected, rows balanced, nothing from outside the folder in any table. Refused files
    block the run; releasing them lets the next run go on."""
    site = Site(work / "inputs")
    fleet(site)
    write_inputs(site.landing, work / "outside", names)
    first = site.cli("backfill")
    acc = site.query("""
        SELECT m.source_file, m.rows_read, m.shape,
               (SELECT count(*) FROM raw.observations o WHERE o.source_file = m.source_file) AS stored,
               (SELECT count(*) FROM raw.rejected_rows r WHERE r.source_file = m.source_file) AS quarantined,
               (SELECT any_value(reason) FROM raw.rejected_files f WHERE f.source_file = m.source_file) AS refused
        FROM raw.landing_files m WHERE m.source_file LIKE 'bad/%'""").set_index("source_file")
    everything = "\n".join(t.astype(str).to_csv() for t in tables(site.warehouse).values())
    rows = []
    for name in names or INPUTS:
        want = INPUTS[name][1]
        a = acc.loc[f"bad/{name}"] if f"bad/{name}" in acc.index else None
        if a is None:
            rows.append(Row(f"input: {name}", "not read", ok=False))
            continue
        read, stored, quarantined = int(a.rows_read), int(a.stored), int(a.quarantined)
        if isinstance(a.refused, str):
            outcome = "refused: " + a.refused.split(": ", 1)[1][:60]
            ok = want == "refused" and a.refused.isprintable()
        else:
            outcome = ("nothing to read" if not read else "stored" if not quarantined
                       else "quarantined" if not stored else "stored + quarantined")
            ok = want == (stored, quarantined) and read == stored + quarantined
        rows.append(Row(f"input: {name}", outcome, read, stored, quarantined, ok=ok,
                        note="" if ok else f"expected {want}"))
    leaked = [s for s in ("root:x:0:0", "x9,2026") if s in everything]
    blocked = first.returncode != 0 and "no_rejected_files" in first.stdout + first.stderr
    refused = site.cli("release")
    names_refused = [ln.strip() for ln in refused.stdout.splitlines()[1:] if ln.startswith("  ") and not ln.startswith("      ")]
    release = site.cli("release", *names_refused, "--note", "fault suite: known bad inputs")
    second = site.cli("backfill")
    rows.append(Row("run with refused files", "blocked by no_rejected_files" if blocked else f"rc {first.returncode}",
                    int(acc.rows_read.sum()), int(acc.stored.sum()), int(acc.quarantined.sum()), leftovers(site),
                    ok=blocked and not leaked, note=f"leaked {leaked}" if leaked else ""))
    rows.append(Row("release + rerun", f"released {len(names_refused)}, rerun rc {second.returncode}",
                    leftovers=leftovers(site), ok=release.returncode == 0 and second.returncode == 0,
                    note=(second.stdout + second.stderr)[-300:] if second.returncode else ""))
    return rows


def _step_order(site: Site, run_id: str) -> list[str]:
    import dagster as dg

    instance = site.instance()
    try:
        return [e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START)]
    finally:
        instance.dispose()


def _wait_for(site: Site, predicate, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def scenario_kills(work: Path, kills: int) -> list[Row]:
    """kill -9 at every step (at its start and part-way), then one rerun: every table equal to a
    clean run's, and nothing left over. The kills are sequential on one warehouse and instance."""
    import dagster as dg

    clean = Site(work / "kills_clean")
    fleet(clean)
    done = clean.cli("backfill")
    if done.returncode:
        return [Row("kill: clean run", f"rc {done.returncode}", ok=False, note=done.stdout[-300:])]
    instance = clean.instance()
    try:
        run_id = instance.get_runs(limit=1)[0].run_id
    finally:
        instance.dispose()
    steps = _step_order(clean, run_id)
    want = tables(clean.warehouse)
    site = Site(work / "kills")
    fleet(site)  # the same seeded fleet, with its labels and entities beside the landing folder
    # before the run exists, once created, then at each step's start and 1.5 s into it
    targets = [("imports", None, 2.0), ("run created", "created", 0.0)]
    targets += [(f"start of {s}", s, 0.0) for s in steps] + [(f"{s} +1.5 s", s, 1.5) for s in steps]
    rows = []
    for label, step, delay in targets[:kills]:
        proc = site.start("backfill")
        inst = site.instance()
        try:
            before = {r.run_id for r in inst.get_runs()}

            def started():
                runs = [r for r in inst.get_runs(limit=3) if r.run_id not in before]
                if step == "created" or step is None:
                    return bool(runs) or step is None
                return any(any(e.step_key == step for e in inst.all_logs(r.run_id, of_type=dg.DagsterEventType.STEP_START))
                           for r in runs)

            reached = _wait_for(site, started, proc, 300) if step is not None else True
            time.sleep(delay)
        finally:
            inst.dispose()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            outcome = "killed" if reached else "killed (step not reached)"
        else:
            outcome = f"ended before the kill (rc {proc.returncode})"
        rows.append(Row(f"kill -9: {label}", outcome, leftovers=leftovers(site)))
    final = site.cli("backfill")
    diff = differences(tables(site.warehouse), want) if final.returncode == 0 else ["rerun failed"]
    rows.append(Row(f"rerun after {len(rows)} kills", "tables equal a clean run" if not diff else "; ".join(diff)[:80],
                    int(site.query("SELECT sum(rows_read) AS n FROM raw.landing_files")["n"][0]),
                    int(site.query("SELECT count(*) AS n FROM raw.observations")["n"][0]),
                    int(site.query("SELECT count(*) AS n FROM raw.rejected_rows")["n"][0]),
                    left := leftovers(site), ok=not diff and left == "none",
                    note=(final.stdout + final.stderr)[-300:] if final.returncode else ""))
    return rows


def scenario_reader(work: Path) -> list[Row]:
    """A process holding a read-only connection on the main warehouse while a backfill runs: the run
    waits and says who holds it, `summary` reads the analysts' copy meanwhile, the run then succeeds."""
    site = Site(work / "reader")
    fleet(site)
    first = site.cli("backfill")
    code = (f"import duckdb, time; c = duckdb.connect({str(site.warehouse)!r}, read_only=True); "
            "print('held', flush=True); time.sleep(25)")
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    reader.stdout.readline()
    t0 = time.monotonic()
    proc = site.start("backfill")
    time.sleep(8)
    summary = site.cli("summary", timeout=120)
    out, _ = proc.communicate(timeout=900)
    took = time.monotonic() - t0
    reader.wait()
    instance = site.instance()
    try:
        run = instance.get_runs(limit=1)[0]
        logs = [e.user_message for e in instance.all_logs(run.run_id)]
    finally:
        instance.dispose()
    waits = [m for m in logs if m.startswith("waiting for warehouse")]
    return [
        Row("reader holds the warehouse 25 s", f"run rc {proc.returncode} after {took:.0f} s; {len(waits)} wait line(s)",
            leftovers=leftovers(site), ok=first.returncode == 0 and proc.returncode == 0 and bool(waits),
            note=waits[0][:120] if waits else out[-300:]),
        Row("summary during that run", "analysts' copy" if "analysts' copy" in summary.stdout else f"rc {summary.returncode}",
            ok=summary.returncode == 0 and "Traceback" not in summary.stderr, note=summary.stderr[-200:]),
    ]


def scenario_two_runs(work: Path) -> list[Row]:
    """Two backfills at once on one warehouse and instance: both succeed, the tables equal one clean run."""
    clean = Site(work / "two_clean")
    fleet(clean)
    clean.cli("backfill")
    site = Site(work / "two")
    fleet(site)  # the same seeded fleet, with its labels and entities beside the landing folder
    a, b = site.start("backfill"), site.start("backfill")
    outs = [p.communicate(timeout=1200)[0] for p in (a, b)]
    diff = differences(tables(site.warehouse), tables(clean.warehouse))
    return [Row("two backfills at once", f"rc {a.returncode} and {b.returncode}; "
                + ("tables equal a clean run" if not diff else "; ".join(diff)[:60]),
                leftovers=leftovers(site), ok=a.returncode == 0 and b.returncode == 0 and not diff,
                note="" if not (a.returncode or b.returncode) else (outs[0] + outs[1])[-300:])]


MALFORMED = {
    "no scheme": f"hooks.example/T000/{SECRET}",
    "a space": f"https://hooks.example/T000/{SECRET} x",
    "user:password@": f"https://user:{SECRET}@hooks.example/x",
    "port not a number": f"https://hooks.example:{SECRET}/x",
    "no host": f"https:///T000/{SECRET}",
}


def _secret_in(paths: list[Path]) -> list[str]:
    hits = []
    for base in paths:
        for p in ([base] if base.is_file() else base.rglob("*")):
            try:
                if p.is_file() and SECRET.encode() in p.read_bytes():
                    hits.append(str(p))
            except OSError:
                pass
    return hits


def scenario_secrets(work: Path, dagster_dev: bool = True) -> list[Row]:
    """Malformed webhook URLs: the load fails naming the variable; the value is in no output, log or
    instance file. With ``dagster_dev``, `dagster dev` is started with one for 30 s as well."""
    rows = []
    for what, url in MALFORMED.items():
        for var in ("ANOMALY_FAILURE_WEBHOOK_URL", "ANOMALY_ALERT_WEBHOOK_URL_OPS"):
            site = Site(work / f"secret_{len(rows)}")
            fleet(site, entities=1)
            run = site.cli("backfill", env={**site.env, var: url}, timeout=300)
            text = run.stdout + run.stderr
            named = f"{var} is not a usable webhook URL" in text
            hits = _secret_in([site.root]) + (["output"] if SECRET in text else [])
            rows.append(Row(f"secret {var}: {what}", f"load refused (rc {run.returncode})" if named else f"rc {run.returncode}",
                            ok=named and not hits and run.returncode != 0, note=f"found in {hits}" if hits else ""))
    if dagster_dev:
        site = Site(work / "secret_dev")
        env = {**site.env, "ANOMALY_FAILURE_WEBHOOK_URL": MALFORMED["a space"]}
        log = open(site.root / "dagster_dev.log", "wb")
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "dev", "-w", "workspace.yaml",
                                 "-h", "127.0.0.1", "-p", str(port)],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        time.sleep(30)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        text = (site.root / "dagster_dev.log").read_text(errors="replace")
        hits = _secret_in([site.root])
        rows.append(Row("secret under dagster dev (30 s)", "load error names the variable"
                        if "ANOMALY_FAILURE_WEBHOOK_URL is not a usable webhook URL" in text else "no load error seen",
                        ok=not hits, note=f"found in {hits}" if hits else ""))
    return rows


def scenario_symlinks(work: Path) -> list[Row]:
    """Links out of the folder refused and recorded (never read), links inside followed; the refusals
    block until the links are removed."""
    site = Site(work / "symlinks")
    fleet(site)
    names = ["passwd.csv", "stolen.csv", "elsewhere", "pipe.csv"]
    write_inputs(site.landing, work / "outside_links", names)
    first = (site.landing / FIRST_DAY)
    (site.landing / "bad" / "alias.csv").symlink_to(next(first.iterdir()))  # inside: followed
    run = site.cli("backfill")
    refused = site.query("SELECT source_file FROM raw.rejected_files ORDER BY 1")["source_file"].tolist()
    dump = "\n".join(t.astype(str).to_csv() for t in tables(site.warehouse).values())
    leaked = "root:x:0:0" in dump or "x9,2026" in dump
    alias = site.query("SELECT count(*) AS n FROM raw.rejected_rows WHERE source_file = 'bad/alias.csv'")["n"][0]
    for n in names:
        (site.landing / "bad" / n).unlink()
    again = site.cli("backfill")
    return [Row("symlinks: out of the folder x3, a FIFO, one inside", f"refused {len(refused)}; first run rc "
                f"{run.returncode}, after removing them rc {again.returncode}", quarantined=int(alias),
                leftovers=leftovers(site), ok=refused == [f"bad/{n}" for n in sorted(names)] and not leaked
                and run.returncode != 0 and again.returncode == 0,
                note="leaked" if leaked else "")]


SCENARIOS = {"inputs": scenario_inputs, "kills": scenario_kills, "reader": scenario_reader,
             "two_runs": scenario_two_runs, "secrets": scenario_secrets, "symlinks": scenario_symlinks}


def table(rows: list[Row]) -> str:
    head = ["kind", "outcome", "read", "stored", "quarantined", "leftovers", "ok"]
    body = [[r.kind, r.outcome, str(r.read), str(r.stored), str(r.quarantined), r.leftovers, "yes" if r.ok else "NO"]
            for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    notes = [f"- {r.kind}: {r.note}" for r in rows if r.note and not r.ok]
    return "\n".join(lines + ([""] + notes if notes else []))


def main() -> int:
    import warnings

    warnings.filterwarnings("ignore")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="default: all")
    p.add_argument("--kills", type=int, default=24, help="kill -9 count for the kills scenario (>= 20)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    rows: list[Row] = []
    t0 = time.monotonic()
    try:
        for name in a.scenario or list(SCENARIOS):
            s0 = time.monotonic()
            got = SCENARIOS[name](work, a.kills) if name == "kills" else SCENARIOS[name](work)
            rows += got
            print(f"{name}: {sum(r.ok for r in got)}/{len(got)} as expected in {time.monotonic() - s0:.0f} s", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(table(rows))
    print(f"\n{sum(r.ok for r in rows)}/{len(rows)} as expected in {time.monotonic() - t0:.0f} s"
          + (f"; work folder {work}" if a.keep else ""))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
