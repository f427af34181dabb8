"""A backfill killed mid-run (SIGKILL) and run again ends exactly where a clean run ends.

The shell backfill (``python -m anomaly_assets.cli backfill``) runs in a real subprocess with its
own DAGSTER_HOME (the project's instance config, writer pool of 1) and warehouse. It is killed
once the first model artifact appears (ingest and decomposition committed, model_versions half
done), then run again. Every table must equal that of a clean run of the same job in another
warehouse, ignoring only wall-clock columns and artifact paths (floats to rounding,
tests/tolerances.py: DuckDB's parallel sums may differ in the last bits from run to run); no key may repeat. Re-running a
single partition is covered by tests/defs/test_chain.py.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from anomaly_assets import definitions
from anomaly_assets.demo.fleet import generate_fleet
from anomaly_assets.settings import REPO_ROOT, load_settings
from tests.tolerances import ROUNDING, assert_close

FIRST, LAST = "2026-09-07", "2026-09-21"
WALL_CLOCK = {"ingested_at", "read_at", "trained_at", "evaluated_at", "artifact_path"}
KEYS = {"raw.observations": ["entity_id", "metric", "ts"], "features.decomposition": ["entity_id", "metric", "ts"],
        "scoring.anomaly_scores": ["entity_id", "ts"], "scoring.explanations": ["entity_id", "ts", "metric"],
        "ml.model_versions": ["day"]}


def _env(root: Path, name: str) -> dict:
    home = root / name / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dagster_home" / "dagster.yaml", home)
    return {"ANOMALY_LANDING_DIR": str(root / "landing"), "ANOMALY_WAREHOUSE": str(root / name / "wh.duckdb"),
            "ANOMALY_LABELS": str(root / "labels.csv"), "DAGSTER_HOME": str(home)}


def _instance(env: dict) -> dg.DagsterInstance:
    from dagster._core.instance.ref import InstanceRef  # no public way to open a given DAGSTER_HOME

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(env["DAGSTER_HOME"]))


def _backfill(env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "anomaly_assets.cli", "backfill", "--from", FIRST, "--to", LAST],
        env={**os.environ, "GX_ANALYTICS_ENABLED": "false", **env}, cwd=REPO_ROOT, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _tables(db: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        out = {}
        for schema, table in con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall():
            if (schema, table) == ("meta", "slice_changes"):  # the log of writes: a re-run adds its own
                continue
            df = con.execute(f'SELECT * FROM "{schema}"."{table}"').df()
            out[f"{schema}.{table}"] = df.drop(columns=[c for c in df.columns if c in WALL_CLOCK])
        return out
    finally:
        con.close()


def _close(a, b) -> bool:
    """Equal, floats inside JSON to rounding (tests/tolerances.py): parallel float sums may differ in the
    last bits."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=ROUNDING, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def _assert_same(got: pd.DataFrame, want: pd.DataFrame, name: str) -> None:
    assert list(got.columns) == list(want.columns) and len(got) == len(want), name
    if not len(want):
        return
    floats = [c for c in want.columns if pd.api.types.is_float_dtype(want[c])]
    text = [c for c in want.columns if c not in floats]
    is_json = {c: want[c].astype(str).str.match(r"^[\[{]").any() for c in text}
    keys = [c for c in text if not is_json[c]]
    got, want = (d.sort_values(keys, ignore_index=True) for d in (got, want))
    pd.testing.assert_frame_equal(got[keys], want[keys], obj=name)
    for c in floats:
        assert_close(got[c], want[c], f"{name}.{c}")
    for c in text:
        if is_json[c]:
            for a, b in zip(got[c], want[c]):
                assert _close(json.loads(a), json.loads(b)), (name, c, a, b)


@pytest.fixture(scope="module")
def landing(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash")
    generate_fleet(root / "landing", entities=4, days=15, labels_path=root / "labels.csv",
                   entities_path=root / "entities.csv")
    # some quarantine too: a malformed row, and a row that 2026-09-08/site-01.csv already has
    (root / "landing" / "zz_extra.csv").write_text(
        "entity_id,timestamp,metric,value\npump-0001,2026-09-08T01:00:00Z,bearing_temp_c,not-a-number\n"
        "pump-0001,2026-09-08T00:00:00Z,bearing_temp_c,60.0\n")
    return root


def test_killed_backfill_rerun_equals_a_clean_run(landing):
    root = landing
    clean_env = _env(root, "clean")
    res = definitions.resources(load_settings(clean_env))
    clean_defs = dg.Definitions(assets=definitions.defs.assets, asset_checks=definitions.defs.asset_checks,
                                jobs=definitions.defs.jobs, resources=res)
    clean = clean_defs.resolve_job_def("anomaly_chain").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        tags={"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST})
    assert clean.success

    env = _env(root, "killed")
    models = Path(env["ANOMALY_WAREHOUSE"]).parent / "models"
    proc = _backfill(env)
    deadline = time.monotonic() + 120
    while not (models.exists() and any(models.iterdir())):
        assert proc.poll() is None, f"backfill ended before it could be killed:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "no model artifact within 120 s"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with _instance(env) as instance:
        [killed_run] = instance.get_runs()
        assert killed_run.status == dg.DagsterRunStatus.STARTED  # nobody told Dagster it died
        # what the daemon's dead_run_release sensor does once a minute under `dagster dev`
        sensor = next(x for x in definitions.defs.sensors if x.name == "dead_run_release")
        sensor(dg.build_sensor_context(instance=instance))
        assert instance.get_run_by_id(killed_run.run_id).status == dg.DagsterRunStatus.FAILURE
        assert sensor(dg.build_sensor_context(instance=instance)).skip_message == "no dead runs"

    rerun = _backfill(env)
    try:
        out, _ = rerun.communicate(timeout=180)
    finally:
        if rerun.poll() is None:
            os.killpg(rerun.pid, signal.SIGKILL)
    assert rerun.returncode == 0, out[-3000:]

    with _instance(env) as instance:
        assert instance.get_run_by_id(killed_run.run_id).status == dg.DagsterRunStatus.FAILURE
        last = instance.get_runs(limit=1)[0]
        assert last.status == dg.DagsterRunStatus.SUCCESS
        checks = [e.dagster_event.event_specific_data for e in
                  instance.all_logs(last.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
        # the shell backfill runs the asset checks too (a range run records each on every day)
        assert len({(c.asset_key, c.check_name) for c in checks}) == 12
        assert all(c.passed for c in checks if c.blocking)

    want, got = _tables(Path(clean_env["ANOMALY_WAREHOUSE"])), _tables(Path(env["ANOMALY_WAREHOUSE"]))
    assert sorted(got) == sorted(want)
    for name in want:
        _assert_same(got[name], want[name], name)
    for name, key in KEYS.items():
        assert not got[name].duplicated(key).any(), name
    assert len(got["raw.observations"]) == 4 * 4 * 15 * 24
    rejected = got["raw.rejected_rows"]["reason"].tolist()
    assert len(rejected) == 2 and any(r.startswith("duplicate across files") for r in rejected)
