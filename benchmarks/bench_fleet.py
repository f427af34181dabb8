"""Fleet scale: the whole Dagster chain against the per-series way, on the same generated fleet.

    .venv/bin/python benchmarks/bench_fleet.py --entities 1000 --days 35 --repeat 3
    .venv/bin/python benchmarks/bench_fleet.py --mode nightly --entities 100000      # one night, 100k entities
    .venv/bin/python benchmarks/bench_fleet.py --mode smd --machines 8               # SMD-like, 1-minute, 38 metrics
    .venv/bin/python benchmarks/bench_fleet.py --mode micro --entities 1000          # one landed hour, as the sensor runs it

``--mode chain`` (default) generates ``--entities`` pumps x 4 metrics x ``--days`` + 1 days with
``anomaly_assets.demo.fleet.generate_fleet`` (wide CSV per site per day, like the nightly feed)
under ``--workdir``, then times, each case in its own process (so peak memory is per case) and
``--repeat`` times (medians printed):

* **backfill**: the real ``anomaly_chain`` job of ``anomaly_assets.definitions``, ingest through
  marts (ingest, decomposition, models, scores and explanations, their GX checks, marts,
  evaluation; with ``--full`` also the alerts branch and the analysts' copy), one run over the
  first ``--days`` days, on a fresh warehouse;
* **nightly**: the same job for the last day, on a copy of the backfilled warehouse;
* **baseline**: the per-series way on the same landing files, what a careful user would write:
  pandas ``read_csv`` of every file, one pivot to (entity, metric) arrays, then for every day
  with at least 7 days of history, per series ``statsmodels.tsa.seasonal.STL(period=24,
  robust=True)`` on the 14 days before it, the day forecast seasonal-naive from it (last trend
  + last cycle), residuals scaled by the MAD of the fit, and per entity one
  ``sklearn.ensemble.IsolationForest`` fitted on the residual features of the 28 days before
  the day and scoring it. The same windows and the same amount of output as the chain (a
  causal model per day). It is timed on a random sample of ``--baseline-sample`` entities and
  extrapolated linearly to the fleet (the output says so); reading is timed on all files.

Printed per case: wall time of the run (the Dagster job, without the Python start-up and
definitions import, which are printed apart), observation rows per second, peak memory (the
resident memory of the case's whole process tree, worker processes included, sampled every
0.2 s; and the largest single process, from ``wait4``'s rusage) and the slowest steps; then the
ratio baseline / chain.

``--mode nightly`` builds the history of a ``--entities`` fleet (default 100,000) chunk by chunk
with the chain's own core functions straight into the warehouse (raw.observations for 14 days,
features.decomposition for 28 days: what previous nights leave), lands the last day as CSV, and
times the nightly job run. With ``--refit-days`` above 1 (carried models), detection alone first
runs the day before the night (not timed; every series is new to it, so it refits them all and
keeps their models), and the timed night refits only the series that are due; the night's refits
by reason and the models carried are printed. So it does with ``--select-days`` above 1, for
the calendar choices the night before keeps (how many were kept is printed). With ``--full`` the
night's publish refreshes the analysts' copy of the history (made first, not timed), as it would
after the nights before; ``--copy-from-scratch`` leaves none, so it copies the whole warehouse.
``--mode smd``
lands ``--machines`` copies of the shared SMD machines (38 metrics, 1-minute, ~47k rows each)
under new names and times the full backfill.

The machine is shared: the load average is printed with every figure; compare medians.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


# ----------------------------------------------------------------------------------------------
# child processes: one timed case each
# ----------------------------------------------------------------------------------------------
def _child_chain(a: dict) -> dict:
    """Run anomaly_chain over [a.start, a.end] with the given landing folder and warehouse."""
    env = {"ANOMALY_LANDING_DIR": a["landing"], "ANOMALY_WAREHOUSE": a["warehouse"],
           # a data folder of its own: data/'s labels and entities (a demo's) must not leak in
           "ANOMALY_DATA_DIR": str(Path(a["warehouse"]).parent),
           "ANOMALY_PARTITION_START": a.get("partition_start", "2013-01-01")}
    os.environ.update(env)
    for k in ("ANOMALY_LABELS", "ANOMALY_SPLITS"):
        os.environ.pop(k, None)
    if a.get("labels"):
        os.environ["ANOMALY_LABELS"] = a["labels"]
    t_import = time.perf_counter()
    import dagster as dg
    import pandas as pd

    if a.get("open_day"):  # the generated day is scored as today's open partition (micro-batches)
        from anomaly_assets.defs import detection, sql_models
        detection.open_day_start = sql_models.open_day_start = lambda: pd.Timestamp(a["open_day"], tz="UTC")

    from anomaly_assets.definitions import defs
    job = defs.resolve_job_def(a.get("job", "anomaly_chain"))
    keys = sorted(job.asset_layer.executable_asset_keys)
    if not a.get("full"):  # ingest through marts; the alerts branch and the analysts' copy only with --full
        keys = [k for k in keys if k.path[0] != "alerts" and k.path not in (["evaluation", "alert_precision"],
                                                                            ["analyst_copy"])]
    if a.get("assets"):  # only these (e.g. detection alone, to leave the models a night carries)
        keys = [k for k in keys if "/".join(k.path) in a["assets"]]
        if not keys:  # an empty selection would run the whole job
            raise ValueError(f"none of {a['assets']} is an asset of {a.get('job', 'anomaly_chain')}")
    t0 = time.perf_counter()
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(
        instance=instance, asset_selection=keys,
        run_config={"ops": {"detection": {"config": {
            "refit_days": a.get("refit_days", 1),
            **({"select_days": a["select_days"]} if a.get("select_days") else {})}}}},
        tags={"dagster/asset_partition_range_start": a["start"], "dagster/asset_partition_range_end": a["end"]},
        raise_on_error=False,
    )
    wall = time.perf_counter() - t0
    steps, started, spans = {}, {}, {}
    for entry in instance.all_logs(result.run_id):
        ev = entry.dagster_event
        if ev is None:
            continue
        if ev.event_type_value == "STEP_START":
            started[ev.step_key] = entry.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in started:
            steps[ev.step_key] = entry.timestamp - started[ev.step_key]
            spans[ev.step_key] = (started[ev.step_key], entry.timestamp)
    failures = [str(ev.event_specific_data.error.message)[:400] for ev in result.all_events
                if ev.event_type_value == "STEP_FAILURE"]
    copied = [m.metadata for m in result.asset_materializations_for_node("analyst_copy")] \
        if result.success and ["analyst_copy"] in [k.path for k in keys] else []
    copy = {k: copied[0][k].value for k in ("seconds", "refreshed", "slices_refreshed", "copied_from_scratch_because",
                                             "bytes")} if copied else None
    return {"wall": wall, "import": t0 - t_import, "success": result.success, "steps": steps, "spans": spans,
            "failures": failures, "refits": {**_refits(a["warehouse"], a["end"]), **_kept(a["warehouse"], a["end"])},
            "copy": copy}


def _refits(warehouse: str, day: str) -> dict:
    """The last day's refits by reason and the entities that carried their model (ml.model_versions)."""
    import duckdb

    try:  # a run that failed early may have left no warehouse or no table
        with duckdb.connect(warehouse, read_only=True) as con:
            row = con.execute("SELECT refits, carried FROM ml.model_versions WHERE day = ?", [day]).fetchone()
    except (duckdb.Error, OSError):
        return {}
    return {**json.loads(row[0] or "{}"), "carried": int(row[1] or 0)} if row else {}


def _kept(warehouse: str, day: str) -> dict:
    """How many series refitted on ``day`` kept an earlier calendar selection (core/selection.py)."""
    import pyarrow.parquet as pq

    files = sorted((Path(warehouse).parent / "models" / "state").glob(f"{day}-selected_*.parquet"))
    if not files:
        return {}
    made = pq.read_table(files[-1], columns=["day"])["day"].to_numpy()
    return {"selections kept from earlier days": int((made < _day_number(day)).sum())}


def _day_number(day: str) -> int:
    import pandas as pd

    return int(pd.Timestamp(day, tz="UTC").value // 86_400_000_000_000)


def _child_baseline(a: dict) -> dict:
    return baseline(Path(a["landing"]), a["start"], a["end"], a["sample"], a["seed"])


def _child_analysts(a: dict) -> dict:
    """The analysts' copy of a history, as the nights before would have left it (the history gains
    the tables and models a night makes, so the night's publish can refresh the copy)."""
    import duckdb

    from anomaly_assets import warehouse
    from anomaly_assets.analyst_copy import publish

    from anomaly_assets.defs.sql_models import load_sql_models, rebuild

    con = duckdb.connect(a["warehouse"])
    try:
        # what the nights before made and the stand-in did not: every table of the contract (the
        # change log among them) and every SQL model, so the night's publish finds them in the copy
        warehouse.ensure_tables(con)
        for m in load_sql_models(REPO / "dbt_like_sql"):
            if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = ? "
                               "AND table_name = ?", [m.schema, m.table]).fetchone()[0]:
                with warehouse.transaction(con):
                    rebuild(con, m, None)
    finally:
        con.close()
    p = publish(Path(a["warehouse"]), Path(a["target"]), memory_limit="1GB")
    return {"seconds": p.seconds, "bytes": p.bytes}


def _child(spec: str) -> None:
    a = json.loads(spec)
    out = {"chain": _child_chain, "baseline": _child_baseline, "history": _child_history,
           "scores": lambda a: {"rows": _standin_scores(Path(a["warehouse"]), a["night"])},
           "marts": lambda a: _build_daily_marts(Path(a["warehouse"]), a["skip"]),
           "layout": lambda a: _night_by_night_layout(Path(a["warehouse"])),
           "analysts": _child_analysts}[a["kind"]](a)
    print("RESULT " + json.dumps(out), flush=True)


def _tree_rss_mb(root: int) -> float:
    """Resident memory of a process and all its descendants now (Linux /proc), in MB."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{d}/statm") as f:
                rss[int(d)] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    tree, todo = {root}, [root]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p and c not in tree:
                tree.add(c)
                todo.append(c)
    return sum(rss.get(p, 0) for p in tree) / 2**20


def run_case_measured(kind: str, **kw) -> dict:
    """One case in a fresh process: its result, peak RSS of the process (wait4) and of its whole
    process tree (worker processes included, sampled every 0.2 s), and the load average."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--_child", json.dumps({"kind": kind, **kw})],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    # read the pipes in threads so a chatty child cannot block, then reap with wait4
    import threading

    bufs = {"out": [], "err": []}
    threads = [threading.Thread(target=lambda s=s, k=k: bufs[k].append(s.read()), daemon=True)
               for s, k in ((proc.stdout, "out"), (proc.stderr, "err"))]
    for t in threads:
        t.start()
    samples = []  # (epoch seconds, MB of the process tree)

    def sample():
        while proc.returncode is None:
            samples.append((time.time(), _tree_rss_mb(proc.pid)))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, rusage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    for t in threads:
        t.join()
    total = time.perf_counter() - t0
    out, err = "".join(bufs["out"]), "".join(bufs["err"])
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"{kind} case failed (exit {proc.returncode}):\n{err[-4000:]}")
    res = json.loads(line[-1][7:])
    res["process_s"] = total
    sampler.join()
    res["process_peak_mb"] = rusage.ru_maxrss / 1024  # Linux: KiB; the largest single process
    res["peak_mb"] = max([mb for _, mb in samples] + [res["process_peak_mb"]])  # the process tree, workers included
    # the tree's peak while each step ran (Dagster's step start and end events)
    res["step_peak_mb"] = {k: max([mb for t, mb in samples if a <= t <= b] or [0.0])
                           for k, (a, b) in res.get("spans", {}).items()}
    res["cpu_s"] = {"user": rusage.ru_utime, "sys": rusage.ru_stime}  # the case and its reaped workers
    res["load"] = [round(x, 2) for x in load]
    return res


# ----------------------------------------------------------------------------------------------
# the per-series baseline
# ----------------------------------------------------------------------------------------------
def baseline(landing: Path, start: str, end: str, sample: int, seed: int) -> dict:
    """Per-series STL + per-entity IsolationForest for every day in [start, end], timed on a sample."""
    import warnings

    import numpy as np
    import pandas as pd
    from sklearn.ensemble import IsolationForest
    from statsmodels.tsa.seasonal import STL

    t0 = time.perf_counter()
    files = sorted(p for p in landing.rglob("*.csv"))
    wide = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    wide["timestamp"] = pd.to_datetime(wide["timestamp"], utc=True)
    metrics = [c for c in wide.columns if c not in ("entity_id", "timestamp")]
    wide = wide.sort_values(["entity_id", "timestamp"])
    read_s = time.perf_counter() - t0
    entities = wide["entity_id"].unique()
    n_entities, n_rows = len(entities), len(wide) * len(metrics)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n_entities, size=min(sample, n_entities), replace=False))
    step = int(wide["timestamp"].diff().dt.total_seconds().mode().iloc[0])
    period = 86_400 // step
    days = pd.date_range(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), freq="D")
    stl_s = if_s = 0.0
    stl_fits = if_fits = 0
    nightly_stl = nightly_if = 0.0
    groups = dict(list(wide.groupby("entity_id", sort=True)))
    for e in entities[pick]:
        g = groups[e].set_index("timestamp")
        idx = pd.date_range(g.index.min(), g.index.max(), freq=f"{step}s")
        X = g.reindex(idx)[metrics].interpolate(limit_direction="both").to_numpy(float)  # (T, m)
        ts = idx
        resid_z = np.full_like(X, np.nan)
        for k, day in enumerate(days):
            d0 = int(ts.searchsorted(day))
            d1 = int(ts.searchsorted(day + pd.Timedelta(days=1)))
            h0 = max(0, d0 - 14 * period)
            if d1 <= d0 or d0 - h0 < 7 * period:
                continue
            t1 = time.perf_counter()
            for j in range(len(metrics)):
                y = X[h0:d0, j]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = STL(y, period=period, robust=True).fit()
                h = np.arange(d1 - d0)
                fc = res.trend[-1] + res.seasonal[len(y) - period + (h % period)]
                r = res.resid
                scale = max(1.4826 * np.median(np.abs(r - np.median(r))), 1e-9)
                resid_z[d0:d1, j] = (X[d0:d1, j] - fc) / scale
                stl_fits += 1
            dt_stl = time.perf_counter() - t1
            stl_s += dt_stl
            t2 = time.perf_counter()
            tr0 = max(0, d0 - 28 * period)
            train = resid_z[tr0:d0]
            train = train[~np.isnan(train).any(axis=1)]
            if len(train) >= 3 * period:
                forest = IsolationForest(n_estimators=100, random_state=0).fit(train)
                forest.score_samples(np.nan_to_num(resid_z[d0:d1]))
                if_fits += 1
            dt_if = time.perf_counter() - t2
            if_s += dt_if
            if k == len(days) - 1:
                nightly_stl += dt_stl
                nightly_if += dt_if
    scale = n_entities / len(pick)
    return {"read_s": read_s, "stl_s": stl_s, "if_s": if_s, "stl_fits": stl_fits, "if_fits": if_fits,
            "sampled_entities": int(len(pick)), "entities": int(n_entities), "metrics": len(metrics),
            "rows": int(n_rows), "period": int(period),
            "backfill_s": read_s + (stl_s + if_s) * scale,
            "nightly_s": read_s / max(1, len(days)) + (nightly_stl + nightly_if) * scale,
            "extrapolation": scale}


# ----------------------------------------------------------------------------------------------
# parent
# ----------------------------------------------------------------------------------------------
DETECTION_ASSETS = ["features/decomposition", "ml/model_versions", "scoring/anomaly_scores", "scoring/explanations"]


def _median(xs):
    return statistics.median(xs) if xs else float("nan")


def repeat_chain(work: Path, name: str, repeat: int, *, landing, start, end, full,
                 history: Path | None = None, keep: Path | None = None, refit_days: int = 1,
                 job: str = "anomaly_chain", open_day: str | None = None, assets: list[str] | None = None,
                 select_days: int | None = None, analysts: Path | None = None) -> list[dict]:
    """Run the chain ``repeat`` times, each on a fresh warehouse (a copy of ``history`` and the
    models kept beside it, if given, and of the analysts' copy ``analysts`` the nights before
    published); the first run's warehouse and models are kept at ``keep`` when asked and it
    succeeded."""
    runs = []
    for i in range(repeat):
        wh = work / f"{name}_{i}" / "warehouse.duckdb"
        shutil.rmtree(wh.parent, ignore_errors=True)
        wh.parent.mkdir(parents=True)
        if history is not None:
            shutil.copy(history, wh)
            if history.with_suffix(".models").exists():  # the models carried from the backfill
                shutil.copytree(history.with_suffix(".models"), wh.parent / "models")
        if analysts is not None:  # a link: publish never writes the copy in place, it replaces the file
            try:
                os.link(analysts, wh.parent / "analytics.duckdb")
            except OSError:
                shutil.copy(analysts, wh.parent / "analytics.duckdb")
        runs.append(run_case_measured("chain", landing=str(landing), warehouse=str(wh), start=start, end=end,
                                      full=full, refit_days=refit_days, job=job, open_day=open_day, assets=assets,
                                      select_days=select_days))
        if i == 0 and keep is not None and runs[-1]["success"]:
            _keep(wh.parent, keep)
        shutil.rmtree(wh.parent, ignore_errors=True)
    return runs


def _keep(run_dir: Path, keep: Path) -> None:
    """A run's warehouse and models kept at ``keep`` whole or not at all: the cached histories are
    reused whenever the file exists, so an interrupted copy must not leave one."""
    partial = keep.with_name(keep.stem + ".partial" + keep.suffix)
    shutil.copy(run_dir / "warehouse.duckdb", partial)
    shutil.rmtree(keep.with_suffix(".models"), ignore_errors=True)
    if (run_dir / "models").exists():
        shutil.copytree(run_dir / "models", keep.with_suffix(".models"))
    partial.replace(keep)


def _fmt_steps(steps: dict, n: int = 6) -> str:
    top = sorted(steps.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k.split('__')[-1] if '__' in k else k} {v:.1f}s" for k, v in top)


def _link_tree(src: Path, dst: Path, days: list[str] | None = None) -> None:
    """Hard-link the landing files of ``days`` (all when None) from src into dst."""
    for f in src.rglob("*"):
        if f.is_file() and (days is None or f.parent.name in days):
            out = dst / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                os.link(f, out)


def _report(name: str, runs: list[dict], rows: int) -> dict:
    walls = [r["wall"] for r in runs]
    peaks = [r["peak_mb"] for r in runs]
    med = _median(walls)
    print(f"{name:<9} wall {med:7.1f} s (median of {len(runs)}: {', '.join(f'{w:.1f}' for w in walls)})  "
          f"{rows / med:12,.0f} rows/s  peak {_median(peaks):6.0f} MB (process tree; largest process "
          f"{_median([r['process_peak_mb'] for r in runs]):.0f} MB)  "
          f"start-up {_median([r['import'] for r in runs]):.1f} s  load {runs[len(runs) // 2]['load']}", flush=True)
    mid = runs[len(runs) // 2]
    print(f"{'':<9} slowest steps: {_fmt_steps(mid['steps'])}", flush=True)
    if mid.get("step_peak_mb"):
        top = sorted(mid["step_peak_mb"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{'':<9} peak memory by step: " + ", ".join(f"{k.split('__')[-1]} {v:.0f} MB" for k, v in top)
              + f"; cpu user {mid['cpu_s']['user']:.0f} s, sys {mid['cpu_s']['sys']:.0f} s", flush=True)
    if mid.get("copy"):
        c = mid["copy"]
        how = f"refreshed {c['slices_refreshed']} slices" if c["refreshed"] else \
            f"from scratch ({c['copied_from_scratch_because']})"
        print(f"{'':<9} the analysts' copy: {c['seconds']:.1f} s, {how}, {c['bytes'] / 1e9:.2f} GB", flush=True)
    if mid.get("refits"):
        print(f"{'':<9} the last day's models: " + ", ".join(f"{k} {v:,}" for k, v in mid["refits"].items()), flush=True)
    for r in runs:
        if not r["success"]:
            print(f"{'':<9} RUN FAILED: {r['failures']}", flush=True)
    return {"wall": med, "peak_mb": _median(peaks), "walls": walls}


def mode_chain(a) -> None:
    from anomaly_assets.demo.fleet import generate_fleet

    import pandas as pd

    work = Path(a.workdir) / f"chain_{a.entities}x{a.days}_{a.freq}"
    gen = work / "generated"
    if not (gen / "done").exists():
        shutil.rmtree(gen, ignore_errors=True)
        t0 = time.perf_counter()
        s = generate_fleet(gen / "landing", entities=a.entities, days=a.days + 1, freq=a.freq, seed=a.seed,
                           labels_path=gen / "labels.csv", entities_path=gen / "entities.csv")
        (gen / "done").write_text("ok")
        print(f"generated {s.entities} entities x {len(s.metrics)} metrics x {s.periods} points "
              f"({s.files} files) in {time.perf_counter() - t0:.1f} s", flush=True)
    days = sorted(p.name for p in (gen / "landing").iterdir() if p.is_dir())
    backfill_days, night = days[:-1], days[-1]
    per_day = a.entities * 4 * int(pd.Timedelta("1D") / pd.Timedelta(a.freq))
    bf_landing, nt_landing = work / "landing_backfill", work / "landing_nightly"
    _link_tree(gen / "landing", bf_landing, backfill_days)
    _link_tree(gen / "landing", nt_landing)
    print(f"fleet {a.entities} entities x 4 metrics, {a.freq}: backfill {backfill_days[0]}..{backfill_days[-1]} "
          f"({len(backfill_days)} days, {per_day * len(backfill_days):,} rows), nightly {night} ({per_day:,} rows); "
          f"cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    history = work / "history.duckdb"
    runs = repeat_chain(work, "backfill", a.repeat, landing=bf_landing, start=backfill_days[0],
                        end=backfill_days[-1], full=a.full, keep=history, refit_days=a.refit_days)
    bf = _report("backfill", runs, per_day * len(backfill_days))
    runs = repeat_chain(work, "nightly", a.repeat, landing=nt_landing, start=night, end=night, full=a.full,
                        history=history, refit_days=a.refit_days)
    nt = _report("nightly", runs, per_day)
    if a.baseline_sample <= 0:
        return
    b = run_case_measured("baseline", landing=str(nt_landing), start=backfill_days[0], end=night,
                          sample=a.baseline_sample, seed=a.seed)
    # the baseline loop covers the backfill days and the night: split them as the chain's cases
    night_s = b["nightly_s"]
    backfill_s = b["backfill_s"] - (night_s - b["read_s"] / (len(backfill_days) + 1))
    print(f"baseline  per-series statsmodels STL(robust=True) + IsolationForest per entity, timed on "
          f"{b['sampled_entities']} of {b['entities']} entities ({b['stl_fits']} STL fits, {b['if_fits']} forest fits) "
          f"and extrapolated x{b['extrapolation']:.1f}; reading all files {b['read_s']:.1f} s (measured, not extrapolated); "
          f"peak {b['peak_mb']:.0f} MB; load {b['load']}", flush=True)
    print(f"baseline  backfill {backfill_s:9.1f} s   nightly {night_s:8.1f} s", flush=True)
    print(f"ratio     backfill baseline/chain = {backfill_s / bf['wall']:.0f}x   "
          f"nightly baseline/chain = {night_s / nt['wall']:.0f}x", flush=True)


def mode_micro(a) -> None:
    """Landed files of a day's first hours, run as the landing sensor runs today's files:
    ``anomaly_intraday`` (ingest, detection, alerts, marts and their checks; the report and the
    analysts' copy wait for the night) for that day's partition, the day scored as today's. Three
    cases: the day's first hour on a copy of the warehouse backfilled through the day before (the
    first batch of a day fits the day's models), then its second hour on a copy of what the first
    left (a later batch, which scores with them), then the first hour again on a warehouse whose
    last night fitted the day's models ahead (``docs/detection.md``, section 8)."""
    import pandas as pd

    from anomaly_assets.demo.fleet import generate_fleet

    work = Path(a.workdir) / f"micro_{a.entities}x{a.days}_{a.freq}" / f"refit_{a.refit_days}"
    gen = work / "generated"
    if not (gen / "done").exists():
        shutil.rmtree(gen, ignore_errors=True)
        generate_fleet(gen / "landing", entities=a.entities, days=a.days + 1, freq=a.freq, seed=a.seed,
                       labels_path=gen / "labels.csv", entities_path=gen / "entities.csv")
        (gen / "done").write_text("ok")
    days = sorted(p.name for p in (gen / "landing").iterdir() if p.is_dir())
    history_days, day = days[:-1], days[-1]
    hist_landing, micro_landing = work / "landing_history", work / "landing_micro"
    _link_tree(gen / "landing", hist_landing, history_days)
    _link_tree(gen / "landing", micro_landing, history_days)
    second_landing = work / "landing_micro_2"
    _link_tree(gen / "landing", second_landing, history_days)
    rows = 0
    midnight = pd.Timestamp(day, tz="UTC")
    for f in sorted((gen / "landing" / day).glob("*.csv")):  # the day's first hour, then its second
        frame = pd.read_csv(f)
        at = pd.to_datetime(frame["timestamp"], utc=True)
        hour, second = frame[at < midnight + pd.Timedelta(hours=1)], frame[
            (at >= midnight + pd.Timedelta(hours=1)) & (at < midnight + pd.Timedelta(hours=2))]
        for folder in (micro_landing, second_landing):
            (folder / day).mkdir(parents=True, exist_ok=True)
            hour.to_csv(folder / day / f.name, index=False)
        second.to_csv(second_landing / day / f"{f.stem}-h2.csv", index=False)
        rows += len(hour) * (hour.shape[1] - 2)
    # the backfilled histories are cached per CODE_VERSION: their stored models (and the night's
    # pre-fit of the day) are versioned, and a new version would refit them all
    from anomaly_assets.core.fleet import CODE_VERSION

    history = work / f"history_{CODE_VERSION}.duckdb"
    if not history.exists():
        print(f"backfilling {history_days[0]}..{history_days[-1]} once (not timed)", flush=True)
        repeat_chain(work, "history", 1, landing=hist_landing, start=history_days[0], end=history_days[-1],
                     full=True, keep=history, refit_days=a.refit_days)
    print(f"micro-batch: {a.entities} entities x 4 metrics, the first hour of {day} ({rows:,} rows); "
          f"cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    after_first = work / "after_first.duckdb"
    runs = repeat_chain(work, "micro", a.repeat, landing=micro_landing, start=day, end=day, full=True,
                        history=history, refit_days=a.refit_days, job="anomaly_intraday", open_day=day,
                        keep=after_first)
    _report("micro, the day's first", runs, rows)
    runs = repeat_chain(work, "micro2", a.repeat, landing=second_landing, start=day, end=day, full=True,
                        history=after_first, refit_days=a.refit_days, job="anomaly_intraday", open_day=day)
    _report("micro, a later one", runs, rows)
    # the night before fitted the day's models ahead (the backfill through it, run with the day open)
    ahead = work / f"history_ahead_{CODE_VERSION}.duckdb"
    if not ahead.exists():
        print("backfilling again, the day open, so that its last night fits the day ahead (not timed)", flush=True)
        repeat_chain(work, "history_ahead", 1, landing=hist_landing, start=history_days[0], end=history_days[-1],
                     full=True, keep=ahead, refit_days=a.refit_days, open_day=day)
    runs = repeat_chain(work, "micro3", a.repeat, landing=micro_landing, start=day, end=day, full=True,
                        history=ahead, refit_days=a.refit_days, job="anomaly_intraday", open_day=day)
    _report("micro, the day's first after a night that fitted it ahead", runs, rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["chain", "nightly", "smd", "micro"], default="chain")
    ap.add_argument("--entities", type=int, default=None)
    ap.add_argument("--days", type=int, default=35)
    ap.add_argument("--freq", default="1h")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--refit-days", type=int, default=1, help="the detector's refit_days (>1 carries models)")
    ap.add_argument("--select-days", type=int, default=None,
                    help="--mode nightly: the detector's select_days (default: its default)")
    ap.add_argument("--baseline-sample", type=int, default=20, help="entities the baseline is timed on (0: skip)")
    ap.add_argument("--machines", type=int, default=8, help="--mode smd: machines to land")
    ap.add_argument("--full", action="store_true",
                    help="time the whole anomaly_chain job: also the alerts branch and the analysts' copy "
                         "(default: ingest through marts)")
    ap.add_argument("--copy-from-scratch", action="store_true",
                    help="--mode nightly --full: no analysts' copy from the nights before, so the night's publish "
                         "copies the whole warehouse (default: it refreshes the copy the nights before left)")
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a._child:
        return _child(a._child)
    if a.mode == "chain":
        a.entities = a.entities or 1000
        return mode_chain(a)
    if a.mode == "nightly":
        a.entities = a.entities or 100_000
        return mode_nightly(a)
    if a.mode == "micro":
        a.entities = a.entities or 1000
        return mode_micro(a)
    return mode_smd(a)


def _child_history(a: dict) -> dict:
    """Build the warehouse a fleet of ``a.entities`` has after ``a.days`` nights, chunk by chunk.

    raw.observations holds the last ``history_days`` days, features.decomposition the last
    ``training_days``: what the nightly run reads (the detector's reference window and a day). The observations are the demo generator's;
    the decomposition history is a seasonal-naive stand-in (expected = the value a day earlier,
    residual_z scaled by the series' MAD of those residuals), not the chain's detector, which
    would make building it a 100k-entity backfill. The timed nightly run itself is the real chain.
    """
    import duckdb
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from anomaly_assets import warehouse as wh
    from anomaly_assets.demo.fleet import METRICS, simulate_fleet, write_fleet

    days, per_chunk = a["days"], a["chunk"]
    con = duckdb.connect(a["warehouse"])
    wh.ensure_tables(con)
    landing = Path(a["landing"])
    t0 = time.perf_counter()
    rows_obs = rows_dec = 0
    for c, first in enumerate(range(0, a["entities"], per_chunk)):
        n = min(per_chunk, a["entities"] - first)
        fleet = simulate_fleet(entities=n, days=days + 1, freq="1h", seed=1000 + c)
        names = np.array([f"c{c:03d}-{e}" for e in fleet.entity_ids], dtype=object)
        ts = fleet.timestamps
        ppd = 24
        T = len(ts)
        # the night itself lands as CSV (wide, one file per site), like every night
        night = dataclasses.replace(fleet, entity_ids=names, sites=np.array([f"c{c:03d}-{s}" for s in fleet.sites]),
                                    values=fleet.values[:, :, T - ppd:], timestamps=ts[T - ppd:], faults=(), clean=None)
        write_fleet(night, landing, labels_path=landing.parent / "labels.csv", entities_path=landing.parent / "entities.csv")
        v = fleet.values[:, :, :T - ppd]  # (n, metrics, t): the history
        e_idx, m_idx, t_idx = np.meshgrid(np.arange(n), np.arange(len(METRICS)), np.arange(v.shape[2]), indexing="ij")
        now = pd.Timestamp.now(tz="UTC")
        base = {"entity_id": pa.DictionaryArray.from_arrays(e_idx.ravel().astype(np.int32), pa.array(names.astype(str))),
                "metric": pa.DictionaryArray.from_arrays(m_idx.ravel().astype(np.int32), pa.array(list(METRICS))),
                "ts": pa.array(ts[:T - ppd].to_numpy()[t_idx.ravel()].astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
                "value": v.ravel()}
        # seasonal-naive stand-in for the decomposition history
        prev = np.concatenate([np.full(v.shape[:2] + (ppd,), np.nan), v[:, :, :-ppd]], axis=2)
        resid = v - prev
        scale = np.maximum(1.4826 * np.nanmedian(np.abs(resid), axis=2, keepdims=True), 1e-9)
        keep_obs = t_idx >= v.shape[2] - a["history_days"] * ppd
        keep_dec = t_idx >= v.shape[2] - a["training_days"] * ppd
        k = pa.array(keep_obs.ravel())
        o = pa.table({c: (base[c].filter(k) if c != "value" else base[c][keep_obs.ravel()]) for c in base})
        con.register("_o", o)
        con.execute("INSERT INTO raw.observations SELECT entity_id, metric, ts, value, 'history', ? FROM _o", [now])
        con.unregister("_o")
        k = pa.array(keep_dec.ravel())
        d = pa.table({"entity_id": base["entity_id"].filter(k), "metric": base["metric"].filter(k), "ts": base["ts"].filter(k),
                      "value": v.ravel()[keep_dec.ravel()], "expected": prev.ravel()[keep_dec.ravel()],
                      "residual": resid.ravel()[keep_dec.ravel()], "residual_z": (resid / scale).ravel()[keep_dec.ravel()]})
        con.register("_d", d)
        con.execute("INSERT INTO features.decomposition (entity_id, metric, ts, value, expected, trend, seasonal, "
                    "residual, residual_z, excluded) SELECT entity_id, metric, ts, value, expected, expected, 0.0, "
                    "residual, residual_z, false FROM _d")
        con.unregister("_d")
        rows_obs += o.num_rows
        rows_dec += d.num_rows
        print(f"history chunk {c}: {first + n} entities, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    con.close()
    return {"rows_obs": rows_obs, "rows_dec": rows_dec, "seconds": time.perf_counter() - t0,
            "night": str(ts[T - ppd].date())}


def _standin_scores(warehouse: Path, night: str) -> int:
    """Scores and explanations of the history before ``night``, from the stand-in decomposition:
    the largest |residual_z| of a point read as L = z^2 / (8 ln 10), flagged past the warning's
    0.75 (z >= 7.4: about 1 % of the stand-in's points, as the detector flags). Returns the score rows written."""
    import duckdb

    con = duckdb.connect(str(warehouse))
    try:
        con.execute("SET preserve_insertion_order = false")
        con.execute("""
            INSERT INTO scoring.anomaly_scores
            SELECT entity_id, ts, l / (1 + l), l / (1 + l) >= 0.75,
                   CASE WHEN l >= 5 THEN 'critical' WHEN l / (1 + l) >= 0.75 THEN 'warning' ELSE 'normal' END,
                   CASE WHEN l / (1 + l) >= 0.75 THEN 'stand-in: ' || top END, 'stand-in'
            FROM (SELECT entity_id, ts, coalesce(max(residual_z * residual_z), 0) / (8 * ln(10)) AS l,
                         arg_max(metric, abs(residual_z))::VARCHAR AS top
                  FROM features.decomposition WHERE ts < ?::TIMESTAMPTZ GROUP BY ALL)""", [night])
        con.execute("""
            INSERT INTO scoring.explanations
            SELECT s.entity_id, s.ts, d.metric, 1, 1.0, 'stand-in', d.expected, d.value
            FROM scoring.anomaly_scores AS s JOIN features.decomposition AS d
              ON d.entity_id = s.entity_id AND d.ts = s.ts AND d.metric = split_part(s.why, ': ', 2)
            WHERE s.model_version = 'stand-in' AND s.is_anomaly""")
        return con.execute("SELECT count(*) FROM scoring.anomaly_scores WHERE model_version = 'stand-in'").fetchone()[0]
    finally:
        con.close()


def _night_by_night_layout(warehouse: Path) -> dict:
    """Rewrite the stand-in's four time-sliced tables in the order nightly runs leave them: day
    after day, each day's rows by entity (a night writes its slice a chunk of entities at a
    time). The stand-in writes a chunk's whole history at once, so every row group would hold
    every day: replacing a stored day, refreshing the analysts' copy and reading a few days would
    touch the whole table, as on no real warehouse. A day is sorted at a time (sorting a 100k
    fleet's table at once spilled over 40 GB). Returns seconds per table."""
    import duckdb

    from anomaly_assets import warehouse as wh

    con = duckdb.connect(str(warehouse))
    out = {}
    try:
        con.execute("SET memory_limit = '6GB'; SET TimeZone = 'UTC'")
        if con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = '_by_night'").fetchone()[0]:
            raise SystemExit(f"{warehouse}: main._by_night is left from a stopped rewrite and may hold a "
                             "table's only rows; move them back or build the history again")
        for t in (wh.OBSERVATIONS, wh.DECOMPOSITION, wh.ANOMALY_SCORES, wh.EXPLANATIONS):
            t0 = time.perf_counter()
            cols = ", ".join(f'"{c}"' for c in t.column_names)
            by = "entity_id" + (", metric" if "metric" in t.column_names else "") + ", ts"
            days = [d for (d,) in con.execute(f"SELECT DISTINCT date_trunc('day', ts) FROM {t.qualified} ORDER BY 1").fetchall()]
            # a copy first, then the table recreated from the contract's DDL and filled from it
            # (deleting every row in one transaction needs more memory than the copy)
            con.execute(f"CREATE TABLE main._by_night AS SELECT {cols} FROM {t.qualified} LIMIT 0")
            for d in days:
                con.execute(f"INSERT INTO main._by_night SELECT {cols} FROM {t.qualified} "
                            f"WHERE ts >= ? AND ts < ? + INTERVAL 1 DAY ORDER BY {by}", [d, d])
            con.execute(f"DROP TABLE {t.qualified}")
            wh.ensure_tables(con, (t,))
            con.execute(f"INSERT INTO {t.qualified} ({cols}) SELECT {cols} FROM main._by_night")
            con.execute("DROP TABLE main._by_night")
            con.execute("CHECKPOINT")
            out[t.qualified] = round(time.perf_counter() - t0, 1)
    finally:
        con.close()
    t0 = time.perf_counter()
    _compact(warehouse)
    out["compact"] = round(time.perf_counter() - t0, 1)
    return out


def _compact(warehouse: Path) -> None:
    """Copy ``warehouse`` into a new file and put it in its place: DuckDB keeps the blocks a
    rewrite freed inside the file (a 12 GB history grew to 28 GB) for later writes."""
    import duckdb

    tmp = warehouse.with_name(warehouse.name + ".compact")
    tmp.unlink(missing_ok=True)
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = '6GB'")
        con.execute(f"ATTACH '{warehouse}' AS src (READ_ONLY); ATTACH '{tmp}' AS dst")
        con.execute("COPY FROM DATABASE src TO dst")
    finally:
        con.close()
    os.replace(tmp, warehouse)


def _build_daily_marts(warehouse: Path, skip=()) -> dict:
    """Build the ``incremental: day`` marts (but ``skip``) whole on ``warehouse``, as the nights
    before the timed one would have left them; returns their row counts."""
    import duckdb

    from anomaly_assets.defs.sql_models import load_sql_models, rebuild

    built = {}
    con = duckdb.connect(str(warehouse))
    try:
        for m in load_sql_models(REPO / "dbt_like_sql"):
            if m.incremental and m.qualified_name not in skip:
                rebuild(con, m, None)
                built[m.qualified_name] = con.execute(f"SELECT count(*) FROM {m.qualified_name}").fetchone()[0]
    finally:
        con.close()
    return built


def mode_nightly(a) -> None:
    import pandas as pd

    work = Path(a.workdir) / f"nightly_{a.entities}"
    history, landing = work / "history.duckdb", work / "landing"
    if not (work / "done").exists():
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        h = run_case_measured("history", warehouse=str(history), landing=str(landing), entities=a.entities,
                              days=a.days, chunk=10_000, history_days=29, training_days=29)
        (work / "done").write_text(json.dumps(h))
        print(f"history of {a.entities} entities built in {h['seconds']:.0f} s: {h['rows_obs']:,} observations, "
              f"{h['rows_dec']:,} decomposition rows (seasonal-naive stand-in, see _child_history)", flush=True)
    h = json.loads((work / "done").read_text())
    night = h["night"]
    if not (work / "scores_done").exists():
        # the scores the nights before would have left, so that the marts over all scored history
        # (entity_health) read as much as they would (not timed). In a child process, as every step
        # here: what DuckDB held in this one would count in the peak of each case forked from it
        t0 = time.perf_counter()
        n = run_case_measured("scores", warehouse=str(history), night=night)["rows"]
        (work / "scores_done").write_text(json.dumps({"rows": n}))
        (work / "marts_done").unlink(missing_ok=True)
        print(f"stand-in scores of the history written in {time.perf_counter() - t0:.0f} s: {n:,} rows", flush=True)
    # what earlier nights leave: the day-keyed marts over the whole history (not timed), in the
    # history and in the carried copies made from it; a model added since is built where it is missing
    from anomaly_assets.defs.sql_models import load_sql_models

    done = json.loads((work / "marts_done").read_text()) if (work / "marts_done").exists() else {}
    missing = [m.qualified_name for m in load_sql_models(REPO / "dbt_like_sql") if m.incremental
               and m.qualified_name not in done]
    t0 = time.perf_counter()
    built = {}
    for wh in [history, *sorted(work.glob("history_refit*.duckdb"))] if missing else []:
        built = run_case_measured("marts", warehouse=str(wh), skip=list(done))
        built = {k: v for k, v in built.items() if k.startswith("marts.")}
    if built:
        (work / "marts_done").write_text(json.dumps({**done, **built}))
        print(f"day-keyed marts of the history built in {time.perf_counter() - t0:.0f} s: {built}", flush=True)
    if not (work / "layout_done").exists():
        t0 = time.perf_counter()
        took = run_case_measured("layout", warehouse=str(history))
        (work / "layout_done").write_text(json.dumps(took))
        for stale in [*work.glob("history_refit*.duckdb"), *work.glob("history*_analytics.duckdb")]:
            stale.unlink()  # made from the history before its rows were reordered
        print(f"history laid out night by night in {time.perf_counter() - t0:.0f} s", flush=True)
    rows = a.entities * 4 * 24
    print(f"nightly {night}: {a.entities} entities x 4 metrics, hourly ({rows:,} new rows; reads 14 days of observations "
          f"and 28 of features); cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    from anomaly_assets.core.detector import DetectorParams

    select = a.select_days or DetectorParams().select_days
    if a.refit_days > 1 or select > 1:
        # carried models and kept selections need what the night before left: detection alone runs
        # that day once (not timed; every series is new to it), so the timed night refits only the
        # series that are due, and selects anew only on their day of the week
        from anomaly_assets.core.fleet import CODE_VERSION

        before = str((pd.Timestamp(night) - pd.Timedelta(days=1)).date())
        carried = work / f"history_refit{a.refit_days}_select{select}_{CODE_VERSION}.duckdb"
        if not carried.exists():
            print(f"detection of {before} with refit_days={a.refit_days}, select_days={select}, for its models "
                  "(not timed)", flush=True)
            # it replaces a stored day: before the history was laid out night by night, every row
            # group held that day and DuckDB's delete markers needed ~4 GB at 100k entities (RESULTS.md)
            mine = os.environ.get("ANOMALY_DUCKDB_MEMORY")
            os.environ["ANOMALY_DUCKDB_MEMORY"] = mine or "6GB"
            try:
                runs = repeat_chain(work, "before", 1, landing=landing, start=before, end=before, full=False,
                                    history=history, keep=carried, refit_days=a.refit_days, assets=DETECTION_ASSETS,
                                    select_days=select)
            finally:
                if mine is None:
                    os.environ.pop("ANOMALY_DUCKDB_MEMORY", None)
            if not runs[0]["success"]:
                raise SystemExit(f"detection of {before} failed: {runs[0]['failures']}")
        history = carried
    analysts = None
    if a.full and not a.copy_from_scratch:
        # the analysts' copy the nights before published (not timed): the night's publish refreshes it
        analysts = history.with_name(history.stem + "_analytics.duckdb")
        if not analysts.exists():
            run_case_measured("analysts", warehouse=str(history), target=str(analysts))
    runs = repeat_chain(work, "run", a.repeat, landing=landing, start=night, end=night, full=a.full,
                        history=history, refit_days=a.refit_days, select_days=select, analysts=analysts)
    r = _report("nightly", runs, rows)
    print(f"target: <= 60 s and <= 4096 MB -> wall {'OK' if r['wall'] <= 60 else 'MISSED'}, "
          f"memory {'OK' if r['peak_mb'] <= 4096 else 'MISSED'} (peak of the run's process tree)", flush=True)


def _land_smd(landing: Path, machines: int) -> int:
    """``machines`` copies of the shared SMD machines under new names (wide csv.gz, 38 metrics, 1-minute)."""
    import gzip

    import pandas as pd

    sources = sorted((SHARED / "smd").glob("machine-*.csv.gz"))
    landing.mkdir(parents=True, exist_ok=True)
    rows = 0
    for i in range(machines):
        src = sources[i % len(sources)]
        df = pd.read_csv(src)
        df["entity_id"] = f"smd{i:02d}-{df['entity_id'].iloc[0]}"
        with gzip.open(landing / f"smd{i:02d}.csv.gz", "wt", compresslevel=1) as f:
            df.to_csv(f, index=False, lineterminator="\n")
        rows += len(df) * (df.shape[1] - 2)
    return rows


def mode_smd(a) -> None:
    import pandas as pd

    work = Path(a.workdir) / f"smd_{a.machines}"
    landing = work / "landing"
    if not (work / "done").exists():
        shutil.rmtree(work, ignore_errors=True)
        rows = _land_smd(landing, a.machines)
        (work / "done").write_text(str(rows))
    rows = int((work / "done").read_text())
    first = pd.Timestamp("2024-01-01")
    import gzip

    with gzip.open(sorted(landing.glob("*.csv.gz"))[0], "rt") as f:
        last = pd.Timestamp(f.readlines()[-1].split(",")[1])
    start, end = str(first.date()), str(last.date())
    print(f"SMD-like: {a.machines} machines x 38 metrics, 1-minute, {rows:,} observations, backfill {start}..{end}; "
          f"cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    runs = repeat_chain(work, "run", a.repeat, landing=landing, start=start, end=end, full=a.full)
    r = _report("backfill", runs, rows)
    print(f"target: <= 60 s -> {'OK' if r['wall'] <= 60 else 'MISSED'}", flush=True)


if __name__ == "__main__":
    main()
